"""What a worker needs to host the workflows: the list to register and the sandbox to run them in.

Imported by the worker process (the host), never inside a workflow's sandbox: the sandbox
imports only the module of the workflow it runs, so listing every workflow here costs a run
nothing (issue 17 item 2).

The sandbox stays on. It re-imports each run's workflow module (`workflows.*`) so the
workflow's code runs with the restricted `datetime`, `random`, `time`, `os` ... proxies and
fails its workflow task on a non-deterministic call. What it passes through from the host, once
per process instead of once per run, is code that has no per-run state and no I/O:

- `domain`: pure rules and pydantic models (domain/__init__.py promises no I/O). Passing it
  through also keeps one class per model, which the pydantic data converter needs.
- `pydantic`, `pydantic_core`, `annotated_types`, `typing_extensions`: the SDK's defaults
  already; named here so the list says everything a workflow's input needs.

Workflow modules must not be passed through (nor imported inside
`workflow.unsafe.imports_passed_through()`): their module-level names would be the host's
unrestricted modules and the safety net would not see their calls.
"""

from __future__ import annotations

import compileall
import functools
import logging
from pathlib import Path
from types import CodeType
from typing import Any

import temporalio.converter
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker._command_aware_visitor import CommandInfo
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions
from temporalio.worker.workflow_sandbox._runner import _Instance

from workflows.cook_collection import CookCollectionWorkflow
from workflows.make_image import MakeImageWorkflow
from workflows.media_job import MediaJobWorkflow
from workflows.train_lora import CaptionDatasetWorkflow, DatasetImagesWorkflow, TrainLoraWorkflow

log = logging.getLogger(__name__)

# The workflows of the main worker's queue (`task_queues.workflows`), not every workflow:
# JobWebhooksWorkflow runs on `deliver-webhook`, registered by workers/webhook_worker.py with
# this module's sandbox_runner(); listing it here would also host it on the main queue.
ALL_WORKFLOWS: list[type] = [MakeImageWorkflow, MediaJobWorkflow, CookCollectionWorkflow]
ALL_WORKFLOWS += [TrainLoraWorkflow, CaptionDatasetWorkflow, DatasetImagesWorkflow]

# Modules (and their submodules) the sandbox takes from the host instead of importing per run.
PASSTHROUGH_MODULES: tuple[str, ...] = (
    "domain",
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "typing_extensions",
)

WORKFLOWS_DIR = Path(__file__).resolve().parent


def sandbox_restrictions() -> SandboxRestrictions:
    """The SDK's default restrictions plus `PASSTHROUGH_MODULES`."""
    return SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)


def sandbox_runner() -> SandboxedWorkflowRunner:
    """The runner every worker hosting these workflows uses: sandboxed, with the passthroughs."""
    return LeanSandboxedWorkflowRunner(restrictions=sandbox_restrictions())


@functools.lru_cache(maxsize=256)
def _compiled(code: str) -> CodeType:
    """The SDK's sandbox snippets are a handful of fixed strings per workflow class."""
    return compile(code, "<string>", "exec")


class _LeanInstance(_Instance):
    """The SDK's sandboxed instance without two costs per activation that run no workflow code.

    Measured with py-spy on the worker (bench/cpu_profile.py --gil, issue 17): 8 % of its CPU
    was `exec` compiling the same few-line snippets for every activation and every payload, and
    14 % was the round trip into the sandbox that `get_serialization_context` makes for every
    payload sequence the SDK visits (three passes to decode an activation, three to encode its
    completion), to ask the SDK's own `_WorkflowInstanceImpl` which context applies (and
    `get_external_store_context` once per completion).

    - `_run_code` executes the snippet compiled once (same code, same globals, same importer:
      only the compile is skipped).
    - `get_serialization_context` and `get_external_store_context` call the sandboxed
      instance's methods directly. They are SDK
      code that reads the instance's pending commands and builds a context dataclass; it runs
      no workflow code and imports nothing. Workflow code (`activate`, `_create_instance`)
      still runs only through `_run_code`, under the importer and the restrictions: the
      sandbox's safety net is unchanged (tests/adversary/test_sandbox.py).

    Private SDK API (temporalio 1.35): tests/adversary/test_sandbox.py fails if the hooks move.
    """

    def _run_code(self, code: str, **extra_globals: Any) -> None:
        super()._run_code(_compiled(code), **extra_globals)  # type: ignore[arg-type]

    def get_serialization_context(
        self, command_info: CommandInfo | None
    ) -> temporalio.converter.SerializationContext | None:
        in_sandbox = self.globals_and_locals.get("__temporal_in_sandbox")
        if in_sandbox is None:  # not created yet: the SDK's own path
            return super().get_serialization_context(command_info)
        context: temporalio.converter.SerializationContext | None = (
            in_sandbox.get_serialization_context(command_info)  # type: ignore[attr-defined]
        )
        return context

    def get_external_store_context(self, command_info: CommandInfo | None) -> Any:
        """Like `get_serialization_context`: SDK code asked once per completion."""
        in_sandbox = self.globals_and_locals.get("__temporal_in_sandbox")
        if in_sandbox is None:
            return super().get_external_store_context(command_info)
        return in_sandbox.get_external_store_context(command_info)  # type: ignore[attr-defined]


class LeanSandboxedWorkflowRunner(SandboxedWorkflowRunner):
    """`SandboxedWorkflowRunner` whose instances are `_LeanInstance`s (sandbox on)."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _LeanInstance(det, self.runner_class, self.restrictions)


def warm_bytecode() -> bool:
    """Write the bytecode of the workflow modules the sandbox re-imports each run, if stale.

    Python writes no `.pyc` when PYTHONDONTWRITEBYTECODE is set (it is in this environment),
    and then every run's sandbox compiled `workflows/*.py` from source again (issue 17: 20 % of
    the worker's time). `make install` compiles them too; this covers a source changed since.
    Reading `.pyc` files is never turned off. False if they could not be written (a read-only
    install): the worker still runs, only slower.
    """
    try:
        ok = bool(compileall.compile_dir(str(WORKFLOWS_DIR), maxlevels=0, quiet=1))
    except OSError as err:
        log.warning("workflow bytecode not written (%s): each run compiles from source", err)
        return False
    if not ok:
        log.warning("workflow bytecode not written: each run compiles from source")
    return ok
