# ruff: noqa: E402
"""Benchmark of the make-image path: what Temporal orchestration adds to one /make.

Run with `make bench` (= `.venv/bin/python bench/make_image.py`). It is a measurement, not a
test: it asserts only that every job it times really produced an image, and it writes what it
measured into docs/performance.md, between the markers of its section.

In one run, on a fresh embedded dev stack (Temporal dev server, MongoDB-compatible server,
ComfyUI stand-in, the worker processes; free ports, a temporary directory, all stopped at
the end) it measures three paths side by side:

- **direct**: `ComfyClient.run` + `view` of the very graph the job would send;
- **make**: the same request through `MakeImageWorkflow` (`JobsClient.start_make` + `result`);
- **floor**: a no-op workflow of the make job's shape (bench/same_shape.py): the same local
  and regular activities on the same kinds of queue, upserts and patch markers, in the same
  order with payloads of the same size, read from a warm-up make job's history, so it follows
  the saga when the saga changes. Its workers are two subprocesses, like the make job's.

1. Latency, sequentially, the three paths interleaved, at a stand-in render time of 0 s and
   2 s (`render_time` makes every prompt take that long; the floor's render step sleeps as
   long): make overhead = make − direct, floor overhead = floor − render time; back to back,
   and once more with the stack idle for a moment before each job.
2. Throughput at 1, 20 and 50 concurrent users (one job at a time each: the per-user cap is
   3), render 0 s: jobs/s of each path and the CPU each process spent per job.
3. History events per job kind (make with 1 and with 6 images, the media kinds, the floor).
4. Where the time of one make job goes, from its history: per activity the wait in its task
   queue and its run time, the workflow-task round trips between activities, and the
   client's share before the start and after the end.

Issue 17's targets (benchmark, not timed tests) are checked in the report: make overhead p50
≤ 1.25× the floor's and ≤ 100 ms at 0 s; throughput ≥ 0.8× the floor's at 20 and 50 users;
worker CPU ≤ 25 ms per job; ≤ 30 history events for a 6-image make.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python bench/make_image.py` puts only bench/ on the path
    sys.path.insert(0, str(REPO_ROOT))

import argparse
import asyncio
import contextlib
import io
import logging
import os
import platform
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import psutil
from PIL import Image
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from adapters.jobs import JobsClient
from bench.floor_workflow import FloorInput, SameShapeWorkflow
from bench.same_shape import Shape, floor_queues, floor_workers, shape_of
from bench.trivial import TrivialInput, TrivialWorkflow
from comfy.client import ComfyClient
from domain.jobs import ActivityNames, JobState, MakeImageRequest, MediaRequest, PrepareInput
from services.job_plans import MakePlanner
from store.db import Stores
from workers.config import ComfyDev, Config, TemporalDev
from workers.devstack import DevStack
from workers.processes import free_port
from workers.runtime import connect_temporal, open_stores

log = logging.getLogger("bench.make_image")

# Issue 17's targets: make overhead p50 at 0 s render against the same-shape floor and in
# absolute terms; throughput against the floor; worker CPU; history of a 6-image make.
TARGET_FLOOR_RATIO = 1.25
TARGET_OVERHEAD_MS = 100.0
TARGET_THROUGHPUT_RATIO = 0.8
TARGET_WORKER_CPU_MS = 25.0
TARGET_EVENTS_6 = 30
POINTS = 100_000  # every benchmark user can afford every job it runs
SIZE = {"width": 256, "height": 256, "steps": 4}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ZERO = "0 s"
MAKE = "make (MakeImageWorkflow)"
FLOOR = "same-shape no-op floor"
DIRECT = "direct ComfyClient (no Temporal)"
ZERO_IDLE = "0 s, idle first"
BEGIN_MARK = "<!-- bench:make_image:begin"
END_MARK = "<!-- bench:make_image:end -->"
DOC_HEADER = """# Performance

How much Temporal orchestration adds to one `/make`, and how many jobs per second the embedded
stack sustains. Reproduce with `make bench` (it runs `.venv/bin/python bench/make_image.py`;
`--help` lists the knobs). The script starts its own dev stack on free ports in a temporary
directory (workers included), runs everything below in one go (2–5 minutes), stops the
stack, and rewrites the section between the markers. Numbers from a 2-core machine with every
service on it are an upper bound of what a deployment with separate hosts would see.

- **direct**: `ComfyClient.run` of the exact graph the job sends (same template, 256×256,
  4 steps, a new seed per run so the stand-in cannot answer from its cache) plus `view()` of
  the output: the work with no orchestration at all.
- **make** (workflow): the same request through `JobsClient.start_make` + `result`, i.e.
  `MakeImageWorkflow`, with the client's own checks and slot before the start.
- **floor**: a no-op workflow of the make job's shape (bench/same_shape.py), read from a
  make job's history in the same run: Temporal's own floor for what the saga asks of it.
- **overhead** = make − direct, and floor − render time (p50 of each, p95 of each).
- **0 s** runs the jobs back to back; **0 s, idle first** leaves the stack idle for 0.5 s before
  each job, so a job does not wait for the server to finish the previous one's bookkeeping.
"""


# ------------------------------------------------------------------------------ statistics


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass
class Samples:
    """Latencies of one kind of job, in milliseconds."""

    name: str
    ms: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return percentile(self.ms, 50)

    @property
    def p95(self) -> float:
        return percentile(self.ms, 95)


@dataclass
class Throughput:
    name: str
    jobs: int
    seconds: float
    latency: Samples
    cpu_ms_per_job: dict[str, float] = field(default_factory=dict)
    users: int = 0

    @property
    def per_second(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class JobTiming:
    """One workflow job, measured by the client and read back from its history."""

    workflow_id: str
    wall_begin: float  # time.time() before start_make
    wall_end: float  # time.time() after result() returned
    segments: dict[str, float] = field(default_factory=dict)  # ms, filled from the history
    workflow_tasks: int = 0
    signals: int = 0
    wft_dispatch_ms: float = 0.0  # sum of workflow-task scheduled -> started
    wft_processing_ms: float = 0.0  # sum of workflow-task started -> completed

    @property
    def total_ms(self) -> float:
        return (self.wall_end - self.wall_begin) * 1000.0


@dataclass
class Latency:
    """One scenario's three paths, measured interleaved."""

    render: float
    direct: Samples
    floor: Samples
    make: Samples


@dataclass
class Events:
    """What one job wrote into its workflow history."""

    kind: str
    events: int
    kb: float
    workflow_tasks: int
    activity_tasks: int
    local_activities: int
    signals: int


@dataclass
class Report:
    machine: str
    latency: dict[str, Latency] = field(default_factory=dict)  # by scenario
    throughput: list[Throughput] = field(default_factory=list)
    breakdown: dict[str, list[JobTiming]] = field(default_factory=dict)
    events: list[Events] = field(default_factory=list)
    shape: str = ""
    run_seconds: float = 0.0
    commit: str = ""


# ------------------------------------------------------------------------------ the stack


@contextlib.contextmanager
def embedded_stack(root: Path) -> Iterator[DevStack]:
    """A dev stack like the integration tests': free ports, workers as subprocesses."""
    for key in ("TEMPORAL_ADDRESS", "MONGODB_URI", "COMFYUI_URLS"):
        os.environ.pop(key, None)  # the benchmark measures its own stack, never an external one
    config = Config(
        devstack_dir=root,
        temporal=TemporalDev(port=free_port(), ui_port=free_port()),
        comfyui=ComfyDev(step_delay=0.01),
    )
    stack = DevStack(config, supervise=False)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def set_render_time(comfy_url: str, seconds: float) -> None:
    """Every prompt takes `seconds` in the stand-in from now on, whatever its step count."""
    resp = httpx.post(f"{comfy_url}/_standin/faults", json={"render_time": seconds}, timeout=5)
    resp.raise_for_status()


def reset_standin(comfy_url: str) -> None:
    httpx.post(f"{comfy_url}/_standin/reset", timeout=5).raise_for_status()


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds used so far by each process and its children.

    This process's own children are the stack's services, counted under their own names.
    """
    out: dict[str, float] = {}
    for name, pid in pids.items():
        total = 0.0
        try:
            proc = psutil.Process(pid)
            children = [] if pid == os.getpid() else proc.children(recursive=True)
            for p in [proc, *children]:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    total += t.user + t.system
        except psutil.Error:
            total = float("nan")
        out[name] = total
    return out


# ------------------------------------------------------------------------------ the jobs


class Bench:
    """Everything one benchmark run needs: clients, users, and the two ways to make an image."""

    def __init__(
        self,
        stack: DevStack,
        temporal: Client,
        stores: Stores,
        jobs: JobsClient,
        comfy: ComfyClient,
    ) -> None:
        self.stack = stack
        self.comfy_url = stack.endpoints.comfyui_urls[0]
        self.comfy = comfy
        self.temporal = temporal
        self.stores = stores
        self.jobs = jobs
        self.planner = MakePlanner(stores)
        self._seed = int(time.time()) % 1_000_000 * 1000  # new seeds every run: no cache hits
        # The same-shape floor (`use_floor`): its client (the SDK's default converter, as its
        # workers use), the make job's shape and the floor's task queues.
        self.floor_client: Client | None = None
        self.shape = Shape()
        self.floor_queues: dict[str, str] = {}

    def next_seed(self) -> int:
        self._seed += 1
        return self._seed

    async def new_user(self, tag: str) -> str:
        identity = f"cli:bench-{tag}-{uuid.uuid4().hex[:6]}"
        await asyncio.to_thread(self.stores.users.get_or_create, identity, POINTS)
        return identity

    @staticmethod
    def request(user: str, seed: int) -> MakeImageRequest:
        return MakeImageRequest(
            user=user,
            platform="cli",
            prompt="a lighthouse on a cliff at dusk",
            overrides={**SIZE, "seed": seed},
        )

    def graph_for(self, user: str, seed: int) -> dict[str, Any]:
        """The graph the workflow would send for this request (prepare's own code builds it)."""
        plan = self.planner.plan_make_image(
            PrepareInput(workflow_id="", request=self.request(user, seed))
        )
        return plan.comfy[0].graph

    async def direct(self, graph: dict[str, Any]) -> float:
        """ComfyClient.run + view of one graph on a long-lived client, as a plain script would
        do it (the activities build a client per call: that cost counts as overhead); ms."""
        began = time.perf_counter()
        result = await self.comfy.run(graph)
        images = [await self.comfy.view(f) for f in result.outputs]
        elapsed = (time.perf_counter() - began) * 1000.0
        if not images or not all(img.startswith(PNG_MAGIC) for img in images):
            raise RuntimeError(f"direct run {result.prompt_id} produced no PNG")
        return elapsed

    async def workflow(self, user: str, seed: int, batch: int = 1) -> JobTiming:
        """start_make + result of one request; raises unless the job ended `done` with output."""
        wall_begin = time.time()
        request = self.request(user, seed)
        if batch > 1:
            request.overrides["batch"] = batch
        started = await self.jobs.start_make(request)
        status = await self.jobs.result(started.workflow_id)
        wall_end = time.time()
        if status.state is not JobState.DONE or not status.outputs:
            raise RuntimeError(
                f"{started.workflow_id} ended {status.state} ({status.reason}), not done"
            )
        return JobTiming(started.workflow_id, wall_begin, wall_end)

    async def floor(self, render: float) -> float:
        """One run of the same-shape no-op workflow, its render step sleeping `render` s; ms."""
        if self.floor_client is None:
            raise RuntimeError("the floor's workers are not running (use_floor)")
        began = time.perf_counter()
        done = await self.floor_client.execute_workflow(
            SameShapeWorkflow.run,
            FloorInput(
                steps=self.shape.steps,
                queues=self.floor_queues,
                render_step=ActivityNames.RUN_COMFY_PROMPT,
                render=render,
            ),
            id=f"bench-floor-{uuid.uuid4().hex[:12]}",
            task_queue=self.floor_queues["workflow"],
        )
        if done != len(self.shape.steps):
            raise RuntimeError(f"the floor ran {done} of {len(self.shape.steps)} steps")
        return (time.perf_counter() - began) * 1000.0

    async def events(self, kind: str, workflow_id: str) -> Events:
        """Count what one finished job wrote into its history."""
        history = await self.temporal.get_workflow_handle(workflow_id).fetch_history()
        kinds = [e.event_type for e in history.events]
        return Events(
            kind=kind,
            events=len(kinds),
            kb=len(history.to_json().encode()) / 1024,
            workflow_tasks=kinds.count(EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED),
            activity_tasks=kinds.count(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED),
            local_activities=sum(
                1
                for e in history.events
                if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
                and e.marker_recorded_event_attributes.marker_name == "core_local_activity"
            ),
            signals=kinds.count(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED),
        )

    async def trivial(self, task_queue: str, user: str, n: int) -> float:
        began = time.perf_counter()
        result = await self.temporal.execute_workflow(
            TrivialWorkflow.run,
            TrivialInput(user=user, n=n),
            id=f"bench-trivial-{user}-{n}-{uuid.uuid4().hex[:6]}",
            task_queue=task_queue,
        )
        if result.user != user or result.n != n:
            raise RuntimeError(f"trivial workflow answered {result}")
        return (time.perf_counter() - began) * 1000.0

    async def fill_breakdown(self, timing: JobTiming) -> None:
        """Split the job's time into segments from its history (server timestamps, same host)."""
        history = await self.temporal.get_workflow_handle(timing.workflow_id).fetch_history()
        sched: dict[int, tuple[str, float]] = {}
        started: dict[int, float] = {}
        wft_sched: dict[int, float] = {}
        wft_started: dict[int, float] = {}
        t_start = t_end = 0.0
        activities: list[tuple[str, float, float, float]] = []  # name, sched, start, done
        for ev in history.events:
            t = ev.event_time.ToMicroseconds() / 1e6
            kind = ev.event_type
            if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
                t_start = t
            elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
                t_end = t
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                name = ev.activity_task_scheduled_event_attributes.activity_type.name
                sched[ev.event_id] = (name, t)
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                started[ev.activity_task_started_event_attributes.scheduled_event_id] = t
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                sid = ev.activity_task_completed_event_attributes.scheduled_event_id
                name, t_sched = sched[sid]
                activities.append((name, t_sched, started.get(sid, t_sched), t))
            elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
                wft_sched[ev.event_id] = t
                timing.workflow_tasks += 1
            elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
                sid = ev.workflow_task_started_event_attributes.scheduled_event_id
                wft_started[ev.event_id] = t
                timing.wft_dispatch_ms += (t - wft_sched.get(sid, t)) * 1000.0
            elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                stid = ev.workflow_task_completed_event_attributes.started_event_id
                timing.wft_processing_ms += (t - wft_started.get(stid, t)) * 1000.0
            elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
                timing.signals += 1
        seg = timing.segments
        seg["client: checks, slot, start RPC"] = (t_start - timing.wall_begin) * 1000.0
        gaps = 0.0
        previous = t_start
        seen: dict[str, int] = {}
        for name, t_sched, t_run, t_done in activities:
            seen[name] = seen.get(name, 0) + 1
            label = name if seen[name] == 1 else f"{name} ({seen[name]})"  # the settle charge
            gaps += t_sched - previous
            seg[f"{label}: wait in queue"] = (t_run - t_sched) * 1000.0
            seg[f"{label}: run"] = (t_done - t_run) * 1000.0
            previous = t_done
        gaps += t_end - previous
        seg["workflow tasks between activities"] = gaps * 1000.0
        seg["client: result() after completion"] = (timing.wall_end - t_end) * 1000.0


async def run_users(
    users: Sequence[str], total: int, one: Callable[[str, int], Awaitable[float]]
) -> tuple[float, Samples]:
    """`total` jobs spread over `users` concurrent users, each running one job at a time."""
    counts = [total // len(users) + (1 if i < total % len(users) else 0) for i in range(len(users))]
    samples = Samples("concurrent")

    async def user_loop(user: str, count: int) -> None:
        for n in range(count):
            samples.ms.append(await one(user, n))

    began = time.perf_counter()
    await asyncio.gather(*(user_loop(u, c) for u, c in zip(users, counts, strict=True)))
    return time.perf_counter() - began, samples


# ------------------------------------------------------------------------------ the run


def progress(msg: str, *args: object) -> None:
    """Progress on stderr, so stdout carries only the report."""
    print(msg % args if args else msg, file=sys.stderr, flush=True)


def machine() -> str:
    cpu = os.cpu_count() or 0
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{cpu} CPU{'s' if cpu != 1 else ''}, {platform.machine()}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}; "
        f"load average before the run {load}"
    )


def git_commit() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    return ""


async def measure(stack: DevStack, args: argparse.Namespace, report: Report) -> None:
    config, endpoints = stack.config, stack.endpoints
    temporal = await connect_temporal(config, endpoints)
    stores = open_stores(config, endpoints)
    try:
        async with ComfyClient(endpoints.comfyui_urls[0]) as comfy:
            jobs = JobsClient(temporal, stores, config)
            bench = Bench(stack, temporal, stores, jobs, comfy)
            await _measure(bench, args, report)
    finally:
        with contextlib.suppress(Exception):
            reset_standin(stack.endpoints.comfyui_urls[0])
        stores.close()


async def _measure(bench: Bench, args: argparse.Namespace, report: Report) -> None:
    solo = await bench.new_user("solo")
    crowd = [await bench.new_user(f"u{i:02d}") for i in range(max(args.users))]

    # Warm up (imports, sandbox, connection pools, stand-in caches of fixed nodes); the last
    # make job's history is the shape the floor repeats.
    set_render_time(bench.comfy_url, 0.0)
    warm: JobTiming | None = None
    for _ in range(max(1, args.warmup)):
        await bench.direct(bench.graph_for(solo, bench.next_seed()))
        warm = await bench.workflow(solo, bench.next_seed())
    assert warm is not None
    history = await bench.temporal.get_workflow_handle(warm.workflow_id).fetch_history()
    bench.shape = shape_of(history, bench.stack.config.task_queues.workflows)
    report.shape = bench.shape.describe()
    progress("the make job's shape: %s", report.shape)

    async with use_floor(bench, args.log_dir) as floor_pids:
        for _ in range(max(1, args.warmup)):
            await bench.floor(0.0)
        await _latency(bench, args, report, solo)
        await _throughput(bench, args, report, crowd, floor_pids)
        await _events(bench, report, solo)

    progress("reading %d workflow histories", sum(len(t) for t in report.breakdown.values()))
    for timings_at in report.breakdown.values():
        for timing in timings_at:
            await bench.fill_breakdown(timing)


@contextlib.asynccontextmanager
async def use_floor(bench: Bench, log_dir: Path) -> AsyncIterator[dict[str, int]]:
    """Start the floor's two worker processes and its client; yields their pids."""
    config, endpoints = bench.stack.config, bench.stack.endpoints
    bench.floor_queues = floor_queues(f"bench-floor-{uuid.uuid4().hex[:6]}", bench.shape)
    slots = config.comfyui.slots
    # The concurrency of the queues the floor stands for (workers/temporal_workers.py).
    limits = {config.task_queues.comfy: slots, config.task_queues.comfy_io: max(4, 2 * slots)}
    with floor_workers(
        endpoints.temporal_address, endpoints.namespace, bench.floor_queues, limits, log_dir
    ) as pids:
        bench.floor_client = await Client.connect(
            endpoints.temporal_address, namespace=endpoints.namespace
        )
        try:
            yield pids
        finally:
            bench.floor_client = None


async def _latency(bench: Bench, args: argparse.Namespace, report: Report, solo: str) -> None:
    """The three paths, one after the other in each round, per scenario."""
    # Back to back is what the brief asks; "idle first" shows how much of the back-to-back
    # latency is the server still finishing the previous job (visibility, transfer tasks).
    scenarios = [
        (ZERO, 0.0, args.jobs_0s, 0.0),
        (ZERO_IDLE, 0.0, args.jobs_idle, args.idle),
        ("2 s", 2.0, args.jobs_2s, 0.0),
    ]
    for label, render, n, idle in scenarios:
        if n <= 0:
            continue
        set_render_time(bench.comfy_url, render)
        lat = Latency(render, Samples("direct"), Samples("floor"), Samples("make"))
        report.breakdown[label] = []
        progress("render %s: %d direct, floor and make jobs, interleaved", label, n)
        for _ in range(n):
            await asyncio.sleep(idle)
            lat.direct.ms.append(await bench.direct(bench.graph_for(solo, bench.next_seed())))
            await asyncio.sleep(idle)
            lat.floor.ms.append(await bench.floor(render))
            await asyncio.sleep(idle)
            timing = await bench.workflow(solo, bench.next_seed())
            lat.make.ms.append(timing.total_ms)
            report.breakdown[label].append(timing)
        report.latency[label] = lat
        progress(
            "  direct p50 %.0f ms, floor p50 %.0f ms, make p50 %.0f ms",
            lat.direct.p50,
            lat.floor.p50,
            lat.make.p50,
        )
    set_render_time(bench.comfy_url, 0.0)


async def _throughput(
    bench: Bench,
    args: argparse.Namespace,
    report: Report,
    crowd: list[str],
    floor_pids: dict[str, int],
) -> None:
    pids = {name: proc.pid for name, proc in bench.stack.processes.items() if proc.pid is not None}
    pids.update(floor_pids)
    pids["bench (client)"] = os.getpid()
    set_render_time(bench.comfy_url, 0.0)

    async def measured(
        name: str, users: list[str], total: int, one: Callable[[str, int], Awaitable[float]]
    ) -> Throughput:
        progress("throughput %s: %d jobs, %d users", name, total, len(users))
        before = cpu_seconds(pids)
        seconds, samples = await run_users(users, total, one)
        after = cpu_seconds(pids)
        cpu = {k: (after[k] - before[k]) * 1000.0 / total for k in pids}
        result = Throughput(name, total, seconds, samples, cpu, users=len(users))
        progress("  %.1f jobs/s, p50 %.0f ms", result.per_second, samples.p50)
        return result

    # Graphs are built up front: building one reads MongoDB synchronously, which would stall
    # the event loop the concurrent users share. Each run then gets a new seed, as a job would.
    graphs = {u: bench.graph_for(u, 0) for u in crowd}
    seed_ref = bench.stores.templates.get("make").inputs["seed"]

    async def direct_one(user: str, n: int) -> float:
        del n
        graph = {k: dict(v) for k, v in graphs[user].items()}
        node = graph[seed_ref.node]
        node["inputs"] = {**node["inputs"], seed_ref.input: bench.next_seed()}
        return await bench.direct(graph)

    async def make_one(user: str, n: int) -> float:
        del n
        return (await bench.workflow(user, bench.next_seed())).total_ms

    async def floor_one(user: str, n: int) -> float:
        del user, n
        return await bench.floor(0.0)

    for users in args.users:
        total = max(args.throughput_jobs, 3 * users) if users > 1 else args.jobs_0s
        group = crowd[:users]
        report.throughput.append(await measured(MAKE, group, total, make_one))
        report.throughput.append(await measured(FLOOR, group, total, floor_one))
        report.throughput.append(await measured(DIRECT, group, total, direct_one))


async def _events(bench: Bench, report: Report, user: str) -> None:
    """History events of one job of each kind (make with 1 and 6 images, media, the floor)."""
    progress("history events per job kind")
    set_render_time(bench.comfy_url, 0.0)
    one = await bench.workflow(user, bench.next_seed())
    report.events.append(await bench.events("make, 1 image", one.workflow_id))
    six = await bench.workflow(user, bench.next_seed(), batch=6)
    report.events.append(await bench.events("make, 6 images", six.workflow_id))
    source = await bench.jobs.store_source(user, sample_png(), "photo.png")
    media: dict[str, dict[str, Any]] = {
        "upscale": {"scale": 2},
        "rmbg": {},
        "resize": {"width": 100, "mode": "fit"},
        "convert": {"format": "webp", "quality": 85},
    }
    for kind, params in media.items():
        started = await bench.jobs.start_media(
            MediaRequest(user=user, kind=kind, source_image_id=source, params=params)  # type: ignore[arg-type]
        )
        status = await bench.jobs.result(started.workflow_id)
        if status.state is not JobState.DONE:
            raise RuntimeError(f"{started.workflow_id} ended {status.state} ({status.reason})")
        report.events.append(await bench.events(kind, started.workflow_id))
    assert bench.floor_client is not None
    wid = f"bench-floor-events-{uuid.uuid4().hex[:8]}"
    await bench.floor_client.execute_workflow(
        SameShapeWorkflow.run,
        FloorInput(steps=bench.shape.steps, queues=bench.floor_queues),
        id=wid,
        task_queue=bench.floor_queues["workflow"],
    )
    report.events.append(await bench.events("same-shape floor (make, 1 image)", wid))


def sample_png(size: tuple[int, int] = (160, 120)) -> bytes:
    """A small gradient PNG, the source of the media jobs."""
    img = Image.linear_gradient("L").resize(size).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------ the report


def fmt(ms: float) -> str:
    return f"{ms:,.0f}" if abs(ms) >= 10 else f"{ms:.1f}"


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def render_report(report: Report) -> str:
    out: list[str] = []
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    commit = f", commit {report.commit}" if report.commit else ""
    out += [f"Measured {stamp}{commit} on {report.machine}.", ""]
    if report.shape:
        out += [f"The make job's shape, which the floor repeats: {report.shape}.", ""]

    out += ["### Latency of one job, sequential, the three paths interleaved (ms)", ""]
    out += [
        "| render | n | direct p50 / p95 | floor p50 / p95 | make p50 / p95 "
        "| floor overhead p50 / p95 | make overhead p50 / p95 | make ÷ floor overhead (p50) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, lat in report.latency.items():
        render_ms = lat.render * 1000.0
        f50, f95 = lat.floor.p50 - render_ms, lat.floor.p95 - render_ms
        m50, m95 = lat.make.p50 - lat.direct.p50, lat.make.p95 - lat.direct.p95
        out.append(
            f"| {label} | {len(lat.make.ms)} | {fmt(lat.direct.p50)} / {fmt(lat.direct.p95)} "
            f"| {fmt(lat.floor.p50)} / {fmt(lat.floor.p95)} "
            f"| {fmt(lat.make.p50)} / {fmt(lat.make.p95)} | {fmt(f50)} / {fmt(f95)} "
            f"| **{fmt(m50)}** / {fmt(m95)} | {m50 / f50:.2f}× |"
        )
    out += [
        "",
        "Overhead: make − direct; floor − render time (the floor's render step sleeps that long).",
    ]

    verdicts: list[str] = []
    zero = report.latency.get(ZERO)
    if zero is not None:
        m50 = zero.make.p50 - zero.direct.p50
        ratio = m50 / zero.floor.p50
        verdicts.append(
            f"make overhead p50 at 0 s ≤ {TARGET_FLOOR_RATIO}× the floor's: {ratio:.2f}× — "
            f"{_verdict(ratio <= TARGET_FLOOR_RATIO)}"
        )
        verdicts.append(
            f"make overhead p50 at 0 s ≤ {TARGET_OVERHEAD_MS:.0f} ms: {fmt(m50)} ms — "
            f"{_verdict(m50 <= TARGET_OVERHEAD_MS)}"
        )

    if report.throughput:
        out += [
            "",
            "### Throughput, one job at a time per user, render 0 s",
            "",
            "| users | path | jobs | jobs/s | vs floor | latency p50 / p95 ms "
            "| CPU ms/job, all processes |",
            "|---:|---|---:|---:|---:|---:|---:|",
        ]
        floors = {t.users: t for t in report.throughput if t.name == FLOOR}
        for t in report.throughput:
            base = floors.get(t.users)
            rel = f"{t.per_second / base.per_second:.2f}×" if base else "–"
            out.append(
                f"| {t.users} | {t.name} | {t.jobs} | {t.per_second:.1f} | {rel} "
                f"| {fmt(t.latency.p50)} / {fmt(t.latency.p95)} "
                f"| {fmt(sum(t.cpu_ms_per_job.values()))} |"
            )
            if t.name == MAKE and base is not None and t.users >= 20:
                ratio = t.per_second / base.per_second
                verdicts.append(
                    f"throughput at {t.users} users ≥ {TARGET_THROUGHPUT_RATIO}× the floor's: "
                    f"{ratio:.2f}× — {_verdict(ratio >= TARGET_THROUGHPUT_RATIO)}"
                )
        mid = [t for t in report.throughput if t.users == sorted(floors)[len(floors) // 2]]
        if mid:
            names = [n for n in mid[0].cpu_ms_per_job]
            out += [
                "",
                f"CPU time per job by process (ms, user + system, children included) during "
                f"the {mid[0].users}-user runs:",
                "",
                "| process | " + " | ".join(t.name for t in mid) + " |",
                "|---|" + "---:|" * len(mid),
            ]
            for name in names:
                cells = " | ".join(fmt(t.cpu_ms_per_job.get(name, 0.0)) for t in mid)
                out.append(f"| {name} | {cells} |")
            totals = " | ".join(fmt(sum(t.cpu_ms_per_job.values())) for t in mid)
            out.append(f"| **total** | {totals} |")
        for t in report.throughput:
            if t.name == MAKE and "worker" in t.cpu_ms_per_job:
                cpu = t.cpu_ms_per_job["worker"]
                verdicts.append(
                    f"workflow worker CPU ≤ {TARGET_WORKER_CPU_MS:.0f} ms per make job "
                    f"({t.users} users): {fmt(cpu)} ms — {_verdict(cpu <= TARGET_WORKER_CPU_MS)}"
                )

    if report.events:
        out += [
            "",
            "### History events per job, render 0 s",
            "",
            "| job | events | JSON KB | workflow tasks | activity tasks | local activities "
            "| signals |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for e in report.events:
            out.append(
                f"| {e.kind} | {e.events} | {e.kb:.1f} | {e.workflow_tasks} | {e.activity_tasks} "
                f"| {e.local_activities} | {e.signals} |"
            )
            if e.kind == "make, 6 images":
                verdicts.append(
                    f"history of a 6-image make ≤ {TARGET_EVENTS_6} events: {e.events} — "
                    f"{_verdict(e.events <= TARGET_EVENTS_6)}"
                )

    if verdicts:
        out += ["", "Issue 17's targets in this run:", ""]
        out += [f"- {v}" for v in verdicts]

    for label, timings in report.breakdown.items():
        if not timings or not timings[0].segments:
            continue
        keys: list[str] = []
        for job in timings:
            keys += [k for k in job.segments if k not in keys]
        out += [
            "",
            f"### Where one make job's time goes, render {label} "
            f"(median of {len(timings)} jobs, ms)",
            "",
            "| segment | p50 | p95 |",
            "|---|---:|---:|",
        ]
        for key in keys:
            vals = [job.segments.get(key, 0.0) for job in timings]
            out.append(f"| {key} | {fmt(percentile(vals, 50))} | {fmt(percentile(vals, 95))} |")
        job_totals = [job.total_ms for job in timings]
        out.append(
            f"| **total (client)** | {fmt(percentile(job_totals, 50))} "
            f"| {fmt(percentile(job_totals, 95))} |"
        )
        wfts = statistics.median(t.workflow_tasks for t in timings)
        disp = statistics.median(t.wft_dispatch_ms for t in timings)
        proc = statistics.median(t.wft_processing_ms for t in timings)
        out += [
            "",
            f"Per job (median): {wfts:.0f} workflow tasks; they waited {fmt(disp)} ms in total "
            f"to be picked up and took {fmt(proc)} ms in total in the worker.",
        ]
    out += ["", f"Whole benchmark run: {report.run_seconds:.0f} s."]
    return "\n".join(out) + "\n"


def write_doc(path: Path, body: str) -> None:
    """Replace the generated section of `path` (created with its header if missing)."""
    text = path.read_text() if path.exists() else DOC_HEADER
    section = (
        f"{BEGIN_MARK} (generated by bench/make_image.py: `make bench` rewrites it) -->\n"
        f"{body}{END_MARK}\n"
    )
    start = text.find(BEGIN_MARK)
    end = text.find(END_MARK, start if start >= 0 else 0)
    if start >= 0 and end >= 0:
        rest = text[end + len(END_MARK) :].strip("\n")
        text = text[:start] + section + (f"\n{rest}\n" if rest else "")
    else:
        text = text.rstrip("\n") + "\n\n## Latest results\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--jobs-0s", type=int, default=20, help="sequential jobs per path, render 0 s")
    p.add_argument("--jobs-2s", type=int, default=8, help="sequential jobs per path, render 2 s")
    p.add_argument(
        "--jobs-idle", type=int, default=10, help="jobs per path, render 0 s, idle before each"
    )
    p.add_argument("--idle", type=float, default=0.5, help="seconds idle before an idle-first job")
    p.add_argument("--warmup", type=int, default=2, help="untimed jobs per path first")
    p.add_argument(
        "--users",
        type=int,
        nargs="+",
        default=[1, 20, 50],
        help="concurrent users of each throughput run",
    )
    p.add_argument(
        "--throughput-jobs",
        type=int,
        default=60,
        help="jobs per throughput run (at least 3 per user; 1 user runs --jobs-0s)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "docs" / "performance.md",
        help="document whose generated section is rewritten",
    )
    p.add_argument("--no-write", action="store_true", help="print the report only")
    p.add_argument("--keep-dir", action="store_true", help="keep the stack directory (logs)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    began = time.monotonic()
    report = Report(machine=machine(), commit=git_commit())
    root = Path(tempfile.mkdtemp(prefix="stationthis-bench-"))
    args.log_dir = root  # the floor workers' logs, next to the stack's
    try:
        progress("starting the dev stack in %s", root)
        with embedded_stack(root) as stack:
            progress("stack ready in %.1f s", stack.ready_seconds or 0.0)
            asyncio.run(measure(stack, args, report))
    finally:
        if args.keep_dir:
            progress("stack directory kept: %s", root)
        else:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
    report.run_seconds = time.monotonic() - began
    body = render_report(report)
    print(body)
    if not args.no_write:
        write_doc(args.out, body)
        progress("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
