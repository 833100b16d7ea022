# ruff: noqa: E402
"""Where a make job's CPU goes, per process: py-spy on the stack's Python processes.

Issue 17 asks for the workflow worker's CPU per job (and the others') to come down; the
benchmark (bench/make_image.py) says how much each process spends, this says on what. It
starts a fresh embedded stack like the benchmark, warms it up, then records every Python
process of the stack with `py-spy record --format raw` (CPU samples only, idle threads left
out) while `--users` concurrent users run `--jobs` make jobs at a render time of 0 s, and
prints for each process its top functions by self time and by inclusive time, as a share of
its samples. The raw stacks stay in `--out` for a closer look (`flamegraph.pl` reads them).

Needs py-spy (`.venv/bin/pip install py-spy`) and permission to read other processes'
memory (ptrace; same user is enough where `kernel.yama.ptrace_scope` is 0 or 1 for
children). A measurement tool, not a test: nothing here asserts.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import argparse
import asyncio
import collections
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence

from adapters.jobs import JobsClient
from bench.make_image import Bench, embedded_stack, run_users, set_render_time
from comfy.client import ComfyClient
from workers.runtime import connect_temporal, open_stores

PROFILED = ("worker", "comfy-worker", "mongodb", "comfyui")


def summarize(raw: Path, top: int, focus: str = "") -> str:
    """Top functions of one raw py-spy file by self and inclusive share of its samples."""
    self_ms: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack:
            continue
        n = int(count_s)
        frames = stack.split(";")
        if focus and not any(focus in f for f in frames):
            total += n
            continue
        total += n
        self_ms[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    lines = [f"  {total} samples"]
    lines.append("  self:")
    for f, n in self_ms.most_common(top):
        lines.append(f"    {100.0 * n / max(1, total):5.1f} %  {f}")
    lines.append("  inclusive:")
    for f, n in incl.most_common(top):
        lines.append(f"    {100.0 * n / max(1, total):5.1f} %  {f}")
    return "\n".join(lines)


Spy = tuple[str, Path, "subprocess.Popen[bytes]"]


def start_spies(spy: str, pids: dict[str, int], out: Path, args: argparse.Namespace) -> list[Spy]:
    """One `py-spy record` per profiled process of the stack."""
    spies: list[Spy] = []
    for name, pid in pids.items():
        if name not in PROFILED:
            continue
        raw = out / f"{name}.txt"
        cmd = [spy, "record", "--format", "raw", "--rate", str(args.rate)]
        cmd += ["--pid", str(pid), "--output", str(raw), "--nonblocking"]
        if args.subprocesses:
            cmd.append("--subprocesses")
        if args.gil:
            cmd.append("--gil")  # only the thread holding the GIL: Python's CPU
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        spies.append((name, raw, p))
    return spies


def stop_spies(spies: list[Spy]) -> None:
    """SIGINT makes py-spy write its file."""
    for _, _, p in spies:
        p.send_signal(signal.SIGINT)
    for _, _, p in spies:
        p.wait(timeout=30)


async def run(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="stationthis-prof-"))
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy") or str(REPO_ROOT / ".venv" / "bin" / "py-spy")
    try:
        with embedded_stack(root) as stack:
            config, endpoints = stack.config, stack.endpoints
            temporal = await connect_temporal(config, endpoints)
            stores = open_stores(config, endpoints)
            async with ComfyClient(endpoints.comfyui_urls[0]) as comfy:
                bench = Bench(stack, temporal, stores, JobsClient(temporal, stores, config), comfy)
                set_render_time(bench.comfy_url, 0.0)
                users = []
                for i in range(args.users):
                    users.append(await bench.new_user(f"p{i:02d}"))
                for _ in range(3):
                    await bench.workflow(users[0], bench.next_seed())
                pids = {n: p.pid for n, p in stack.processes.items() if p.pid is not None}
                spies = start_spies(spy, pids, out, args)
                await asyncio.sleep(1.0)  # py-spy attaches

                async def one(user: str, n: int) -> float:
                    del n
                    return (await bench.workflow(user, bench.next_seed())).total_ms

                began = time.perf_counter()
                _, samples = await run_users(users, args.jobs, one)
                took = time.perf_counter() - began
                stop_spies(spies)
                print(f"{args.jobs} jobs, {args.users} users: {took:.1f} s")
                print(f"latency p50 {samples.p50:.0f} ms")
                for name, raw, p in spies:
                    err = (p.stderr.read() if p.stderr else b"").decode(errors="replace")
                    if not raw.exists():
                        print(f"{name}: no profile ({err.strip()[-300:]})")
                        continue
                    print(f"== {name}")
                    print(summarize(raw, args.top, args.focus))
            stores.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--jobs", type=int, default=100)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--focus", default="", help="count only stacks with a frame containing this")
    p.add_argument("--subprocesses", action="store_true")
    p.add_argument("--gil", action="store_true", help="sample only the GIL holder (CPU)")
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "stationthis-prof")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    asyncio.run(run(parse_args(argv)))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
