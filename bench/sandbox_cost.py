# ruff: noqa: E402
"""CPU one workflow run's sandbox costs the worker before its first command (issue 17 item 2).

Run with `.venv/bin/python bench/sandbox_cost.py` (a few seconds, no servers). The sandbox
builds a fresh module world for every workflow run: it imports the workflow's module and
whatever that imports, except what is passed through. This creates that world for a
`MakeImageWorkflow` run N times with the worker's runner (`workflows.registry.sandbox_runner`;
the SDK's default runner on a commit without it) and prints the CPU ms per run, with and
without bytecode for the workflow modules (`--no-bytecode` deletes it first, as a worker under
PYTHONDONTWRITEBYTECODE without `make install`'s compileall would have none).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python bench/sandbox_cost.py` puts only bench/ on the path
    sys.path.insert(0, str(REPO_ROOT))

import argparse
import asyncio
import shutil
import statistics
import time

import temporalio.workflow
from temporalio.worker import WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

import workers.temporal_workers  # noqa: F401  (the host's imports, as in the worker process)
from workflows.make_image import MakeImageWorkflow


def runner(bytecode: bool) -> WorkflowRunner:
    try:
        from workflows.registry import sandbox_runner, warm_bytecode
    except ImportError:  # a commit before issue 17 item 2: the SDK's default runner
        return SandboxedWorkflowRunner()
    if bytecode:
        warm_bytecode()
    return sandbox_runner()


async def measure(runs: int, rounds: int, bytecode: bool) -> list[float]:
    """CPU ms per sandboxed run, one figure per round (after one warm-up run)."""
    sandbox = runner(bytecode)
    defn = temporalio.workflow._Definition.must_from_class(MakeImageWorkflow)
    sandbox.prepare_workflow(defn)
    out = []
    for _ in range(rounds):
        began = time.process_time()
        for _ in range(runs):
            sandbox.prepare_workflow(defn)  # builds a full sandboxed instance, as a run does
        out.append((time.process_time() - began) * 1000.0 / runs)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--runs", type=int, default=30, help="sandboxed runs per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--no-bytecode", action="store_true", help="delete workflows/__pycache__ first")
    args = p.parse_args(argv)
    if args.no_bytecode:
        sys.dont_write_bytecode = True
        shutil.rmtree(REPO_ROOT / "workflows" / "__pycache__", ignore_errors=True)
    per_run = asyncio.run(measure(args.runs, args.rounds, not args.no_bytecode))
    print(
        f"sandbox CPU per MakeImageWorkflow run: median {statistics.median(per_run):.2f} ms "
        f"(rounds: {', '.join(f'{x:.2f}' for x in per_run)})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
