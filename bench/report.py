# ruff: noqa: E402
"""One table, one run: what StationThis costs on the embedded stack, measured together.

Run with `make report` (= `.venv/bin/python bench/report.py`). It reuses the make-image
benchmark's stack and job helpers (bench/make_image.py) and, in one run on a fresh embedded dev
stack plus the Telegram bot against the Bot API stand-in (free loopback ports, a temporary
directory, every process stopped at the end, every loop bounded in count and time), measures:

1. latency of a direct `ComfyClient.run` + `view` against the same request through
   `MakeImageWorkflow`, sequentially, at a stand-in render time of 0 s and 2 s;
2. jobs/s with 1, 10 and 50 concurrent users (one job at a time each: the per-user cap is 3
   running jobs), make-image workflow against the trivial one-activity workflow
   (bench/trivial.py, worker inside this process) at the same concurrency;
3. peak RSS of each worker process and of the bot, sampled with psutil every 0.2 s through the
   whole run (the bot gets its own load: Telegram users sending /make through the stand-in);
4. history events (and JSON bytes) per job kind: make, upscale, rmbg, resize, convert, a small
   collection cook and a short LoRA training run (each of the last two skipped with a note
   when it does not finish in its time box);
5. MongoDB operations per job: the server's `serverStatus` opcounters before and after a batch
   of sequential jobs of one kind, minus the background rate measured with the stack idle.

It prints one markdown table and the machine line and rewrites the `bench:report` section of
docs/performance.md (the make-image section and the analysis are left as they are).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python bench/report.py` puts only bench/ on the path
    sys.path.insert(0, str(REPO_ROOT))

import argparse
import asyncio
import contextlib
import functools
import io
import logging
import os
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psutil
from PIL import Image
from temporalio.worker import Worker

from adapters.jobs import JobsClient
from bench.make_image import (
    Bench,
    Samples,
    embedded_stack,
    fmt,
    git_commit,
    machine,
    progress,
    reset_standin,
    run_users,
    set_render_time,
)
from bench.trivial import TrivialWorkflow, bench_echo
from comfy.client import ComfyClient
from domain.collections import CollectionConfig, TraitType, TraitValue
from domain.jobs import JobState, MediaRequest
from domain.training import TrainingParams, TrainRequest
from store.db import Stores
from tests.fixtures.telegram import TelegramStandin, start_telegram_standin
from workers.config import REPO_ROOT as CONFIG_ROOT
from workers.devstack import DevStack, stationthis_command
from workers.processes import ManagedProcess
from workers.runtime import connect_temporal, open_stores

log = logging.getLogger("bench.report")

BEGIN_MARK = "<!-- bench:report:begin"
END_MARK = "<!-- bench:report:end -->"
SECTION_TITLE = "## One-run report (`make report`)"
SECTION_INTRO = """\
Everything below comes from one run of `bench/report.py` on a fresh embedded stack (Temporal
dev server, MongoDB-compatible server, ComfyUI stand-in, the three workers, the Telegram bot
against the Bot API stand-in), all on loopback on the machine named. `make report` rewrites
this section only; the make-image section below (`make bench`) and the analysis are kept.
"""
MB = 1024 * 1024
SAMPLE_EVERY = 0.2  # seconds between RSS samples
OPCOUNTERS = ("insert", "query", "update", "delete", "getmore", "command")
WATCHED = ("worker", "comfy-worker", "media-worker", "bot")


# ------------------------------------------------------------------------------ RSS sampling


class RssSampler:
    """Peak resident memory of named processes (each with its children), sampled in a thread.

    Sampling runs for the whole benchmark, so each peak is taken under whatever load the run
    put on that process; the first sample is kept too, as the idle size after start-up.
    """

    def __init__(self, interval: float = SAMPLE_EVERY) -> None:
        self.interval = interval
        self.pids: dict[str, int] = {}
        self.first: dict[str, float] = {}
        self.peak: dict[str, float] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._lock = threading.Lock()

    def watch(self, name: str, pid: int | None) -> None:
        if pid is None:
            return
        with self._lock:
            self.pids[name] = pid
        self.sample_once()

    def sample_once(self) -> None:
        with self._lock:
            pids = dict(self.pids)
        for name, pid in pids.items():
            rss = tree_rss(pid)
            if rss is None:
                continue
            self.first.setdefault(name, rss)
            self.peak[name] = max(self.peak.get(name, 0.0), rss)
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample_once()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def tree_rss(pid: int) -> float | None:
    """RSS in bytes of a process and its descendants, None when it is gone."""
    try:
        proc = psutil.Process(pid)
        total = float(proc.memory_info().rss)
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        return total
    except psutil.Error:
        return None


# ------------------------------------------------------------------------------ MongoDB ops


def opcounters(stores: Stores) -> dict[str, int]:
    """The server's lifetime opcounters (secantusdb reports them like mongod)."""
    status = stores.db.client.admin.command("serverStatus")
    counters = status.get("opcounters") or {}
    return {k: int(counters.get(k, 0)) for k in OPCOUNTERS}


@dataclass
class OpsPerJob:
    """MongoDB operations per job for one batch, net of the idle background rate."""

    jobs: int
    seconds: float
    ops: dict[str, float] = field(default_factory=dict)  # per job, by opcounter bucket

    @property
    def total(self) -> float:
        return sum(self.ops.values())

    def describe(self) -> str:
        parts = [f"{k} {v:.1f}" for k, v in self.ops.items() if abs(v) >= 0.05]
        return ", ".join(parts)


class OpsMeter:
    """Counts server operations around a batch; the idle rate (pymongo monitors' `hello`,
    workers' periodic reads) and this meter's own `serverStatus` calls are subtracted."""

    def __init__(self, stores: Stores) -> None:
        self.stores = stores
        self.background: dict[str, float] = dict.fromkeys(OPCOUNTERS, 0.0)  # per second

    async def calibrate(self, seconds: float) -> None:
        before = await asyncio.to_thread(opcounters, self.stores)
        began = time.monotonic()
        await asyncio.sleep(seconds)
        after = await asyncio.to_thread(opcounters, self.stores)
        elapsed = time.monotonic() - began
        for k in OPCOUNTERS:
            own = 1 if k == "command" else 0  # the second serverStatus counts itself
            self.background[k] = max(0.0, (after[k] - before[k] - own) / elapsed)

    async def measure(self, jobs: int, batch: Callable[[], Awaitable[None]]) -> OpsPerJob:
        before = await asyncio.to_thread(opcounters, self.stores)
        began = time.monotonic()
        await batch()
        # A job's last writes (record, release) may land just after its result is out.
        await asyncio.sleep(0.5)
        after = await asyncio.to_thread(opcounters, self.stores)
        elapsed = time.monotonic() - began
        ops: dict[str, float] = {}
        for k in OPCOUNTERS:
            own = 1 if k == "command" else 0
            raw = after[k] - before[k] - own - self.background[k] * elapsed
            ops[k] = max(0.0, raw) / jobs
        return OpsPerJob(jobs, elapsed, ops)


# ------------------------------------------------------------------------------ results


@dataclass
class KindResult:
    """History size and MongoDB cost of one job kind."""

    kind: str
    events: int = 0
    history_bytes: int = 0
    ops: OpsPerJob | None = None
    note: str = ""
    seconds: float = 0.0


@dataclass
class Rate:
    users: int
    jobs: int
    make_per_s: float
    trivial_per_s: float
    make_p50: float
    trivial_p50: float


@dataclass
class Result:
    machine: str
    commit: str = ""
    latency: dict[str, tuple[Samples, Samples]] = field(default_factory=dict)
    rates: list[Rate] = field(default_factory=list)
    rss_first: dict[str, float] = field(default_factory=dict)
    rss_peak: dict[str, float] = field(default_factory=dict)
    rss_samples: int = 0
    bot_jobs: int = 0
    bot_note: str = ""
    kinds: list[KindResult] = field(default_factory=list)
    seconds: float = 0.0


# ------------------------------------------------------------------------------ the bot


def start_bot(stack: DevStack, standin: TelegramStandin, log_path: Path) -> ManagedProcess:
    """`stationthis bot` against the Bot API stand-in; ready once it long-polls getUpdates."""
    env = {
        **os.environ,
        **stack.endpoints.as_env(),
        "TELEGRAM_BOT_TOKEN": standin.token,
        "TELEGRAM_BASE_URL": standin.base_url,
        "TELEGRAM_BASE_FILE_URL": standin.base_file_url,
    }
    before = len(standin.calls("getUpdates"))

    def polling() -> None:
        if len(standin.calls("getUpdates")) <= before:
            raise RuntimeError("not polling yet")

    proc = ManagedProcess(
        "bot",
        stationthis_command("bot"),
        env=env,
        health=polling,
        log_path=log_path,
        cwd=CONFIG_ROOT,
        ready_timeout=60.0,
        stop_timeout=10.0,
    )
    proc.start()
    try:
        proc.wait_ready()
    except BaseException:
        proc.stop()
        raise
    return proc


@contextlib.contextmanager
def telegram_bot(stack: DevStack, root: Path) -> Iterator[tuple[TelegramStandin, ManagedProcess]]:
    standin = start_telegram_standin(root / "logs" / "telegram-standin.log")
    try:
        bot = start_bot(stack, standin, root / "logs" / "bot.log")
        try:
            yield standin, bot
        finally:
            bot.stop()
    finally:
        standin.close()
        if standin.process is not None:
            standin.process.stop()


async def bot_load(standin: TelegramStandin, users: int, each: int, timeout: float) -> int:
    """`users` Telegram users each send /make `each` times in turn; returns photos delivered."""
    delivered = 0

    def photos(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [m for m in msgs if m["from_bot"] and m["photo"] and not m["deleted"]]

    def more_than(k: int) -> Callable[[list[dict[str, Any]]], bool]:
        return lambda msgs: len(photos(msgs)) > k

    async def one_user(uid: int) -> None:
        nonlocal delivered
        await standin.send_async(uid, "/start")  # registers the user (starter points)
        await standin.wait_for_message_async(
            uid, lambda m: m["from_bot"] and "starter points" in (m["text"] or ""), timeout
        )
        for n in range(each):
            await standin.send_async(uid, f"/make a paper boat on a pond, take {n}")
            await standin.wait_for_async(uid, more_than(n), timeout=timeout, interval=0.2)
            delivered += 1

    base = 1_500_000_000 + int(time.time()) % 1_000_000 * 100
    await asyncio.gather(*(one_user(base + i) for i in range(users)))
    return delivered


# ------------------------------------------------------------------------------ job kinds


def sample_png(size: tuple[int, int] = (320, 240), seed: int = 0) -> bytes:
    """A small photo-like PNG (a gradient and a disc) for media jobs and datasets."""
    img = Image.new("RGB", size)
    px = img.load()
    assert px is not None
    w, h = size
    for y in range(h):
        for x in range(w):
            inside = (x - w / 2) ** 2 + (y - h / 2) ** 2 < (min(w, h) / 3) ** 2
            px[x, y] = (
                (200, 80 + seed * 20 % 150, 40) if inside else (x * 255 // w, y * 255 // h, 160)
            )
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


async def history_size(bench: Bench, wid: str) -> tuple[int, int]:
    history = await bench.temporal.get_workflow_handle(wid).fetch_history()
    return len(history.events), len(history.to_json().encode())


async def run_media(bench: Bench, user: str, kind: str, source: str, params: dict[str, Any]) -> str:
    started = await bench.jobs.start_media(
        MediaRequest(user=user, kind=kind, source_image_id=source, params=params)  # type: ignore[arg-type]
    )
    status = await bench.jobs.result(started.workflow_id)
    if status.state is not JobState.DONE or not status.outputs:
        raise RuntimeError(f"{started.workflow_id} ended {status.state} ({status.reason})")
    return started.workflow_id


async def per_kind(bench: Bench, meter: OpsMeter, args: argparse.Namespace) -> list[KindResult]:
    """Sequential batches of each job kind: history of the last job, ops per job."""
    n = args.kind_jobs
    user = await bench.new_user("kinds")
    source = await bench.jobs.store_source(user, sample_png(), "photo.png")
    media: dict[str, dict[str, Any]] = {
        "upscale": {"scale": 2},
        "rmbg": {},
        "resize": {"width": 100, "mode": "fit"},
        "convert": {"format": "webp", "quality": 85},
    }
    results: list[KindResult] = []
    set_render_time(bench.comfy_url, 0.0)

    async def measure(kind: str, one: Callable[[], Awaitable[str]]) -> None:
        await one()  # warm this path up; not counted
        wids: list[str] = []

        async def batch() -> None:
            for _ in range(n):
                wids.append(await one())

        began = time.monotonic()
        ops = await meter.measure(n, batch)
        sizes = [await history_size(bench, wid) for wid in wids]
        events = sorted(e for e, _ in sizes)
        note = f"median of {n} jobs" + (
            f" (range {events[0]}–{events[-1]}: progress signals vary)"
            if events[0] != events[-1]
            else ""
        )
        result = KindResult(
            kind,
            int(statistics.median_low(events)),
            int(statistics.median(b for _, b in sizes)),
            ops,
            note=note,
            seconds=time.monotonic() - began,
        )
        results.append(result)
        progress("  %s: %d events, %.1f MongoDB ops/job", kind, result.events, ops.total)

    async def make_one() -> str:
        return (await bench.workflow(user, bench.next_seed())).workflow_id

    progress("job kinds: %d sequential jobs each", n)
    await measure("make", make_one)
    for kind, params in media.items():
        await measure(kind, functools.partial(run_media, bench, user, kind, source, params))

    results.append(await _timeboxed("collection cook", args.box, cook(bench, meter, args)))
    results.append(await _timeboxed("LoRA training", args.box, train(bench, meter, args)))
    return results


async def _timeboxed(kind: str, seconds: float, job: Awaitable[KindResult]) -> KindResult:
    began = time.monotonic()
    try:
        return await asyncio.wait_for(job, seconds)
    except TimeoutError:
        note = f"skipped: not done within {seconds:.0f} s"
    except Exception as err:  # a measurement that failed is reported, not fatal to the table
        log.warning("%s failed", kind, exc_info=True)
        note = f"skipped: {type(err).__name__}: {err}"[:160]
    progress("  %s %s", kind, note)
    return KindResult(kind, note=note, seconds=time.monotonic() - began)


async def cook(bench: Bench, meter: OpsMeter, args: argparse.Namespace) -> KindResult:
    """A collection of `cook_pieces` pieces, 256×256, 4 steps: the cook's own history, and
    MongoDB ops per piece (the cook's bookkeeping included)."""
    pieces = args.cook_pieces
    user = await bench.new_user("cook")
    config = CollectionConfig(
        master_prompt="a [[Fur]] fox in a [[Place]]",
        traits=[
            TraitType(
                name="Fur",
                values=[TraitValue(name=c, prompt=c) for c in ("red", "grey", "white", "black")],
            ),
            TraitType(
                name="Place",
                values=[TraitValue(name=p, prompt=p) for p in ("meadow", "forest", "snow")],
            ),
        ],
        overrides={"width": 256, "height": 256, "steps": 4},
    )
    col = await bench.jobs.create_collection(user, "Bench foxes", supply=pieces, config=config)
    began = time.monotonic()
    progress("collection cook: %d pieces", pieces)
    started: list[str] = []

    async def batch() -> None:
        job = await bench.jobs.start_cook(col.id, user)
        started.append(job.workflow_id)
        done = await bench.jobs.wait_cook(col.id, user)
        if done.made != pieces:
            raise RuntimeError(f"cook made {done.made} of {pieces} ({done.state})")

    ops = await meter.measure(pieces, batch)
    events, size = await history_size(bench, started[0])
    child_events, _ = await history_size(bench, f"{started[0]}-piece-1")
    result = KindResult(
        f"collection cook ({pieces} pieces)",
        events,
        size,
        ops,
        note=f"cook workflow only; each piece is a child make job of {child_events} events; "
        "ops per piece",
        seconds=time.monotonic() - began,
    )
    progress("  cook: %d events, %.1f MongoDB ops/piece", events, ops.total)
    return result


async def train(bench: Bench, meter: OpsMeter, args: argparse.Namespace) -> KindResult:
    """A dataset of 4 small images (added and captioned first, not counted), then one training
    run of `train_steps` steps (one chunk): its history and MongoDB ops."""
    user = await bench.new_user("train")
    name = f"bench-{uuid.uuid4().hex[:6]}"
    began = time.monotonic()
    progress("LoRA training: dataset of 4, %d steps", args.train_steps)
    await bench.jobs.create_dataset(user, name, trigger_word=f"zxq{uuid.uuid4().hex[:4]}")
    files = [(sample_png((256, 256), seed=i), f"img{i}.png") for i in range(4)]
    await bench.jobs.add_dataset_images(user, name, files)
    await bench.jobs.caption_dataset(user, name)
    wids: list[str] = []

    async def batch() -> None:
        request = TrainRequest(
            user=user,
            dataset=name,
            params=TrainingParams(family="sdxl", steps=args.train_steps),
        )
        started = await bench.jobs.start_train(request)
        status = await bench.jobs.result(started.workflow_id)
        if status.state is not JobState.DONE:
            raise RuntimeError(f"training ended {status.state} ({status.reason})")
        wids.append(started.workflow_id)

    ops = await meter.measure(1, batch)
    events, size = await history_size(bench, wids[0])
    progress("  training: %d events, %.1f MongoDB ops", events, ops.total)
    return KindResult(
        f"LoRA training ({args.train_steps} steps, 4 images)",
        events,
        size,
        ops,
        note="training workflow only (dataset prep and captioning before it not counted)",
        seconds=time.monotonic() - began,
    )


# ------------------------------------------------------------------------------ the run


async def measure(stack: DevStack, root: Path, args: argparse.Namespace, result: Result) -> None:
    config, endpoints = stack.config, stack.endpoints
    temporal = await connect_temporal(config, endpoints)
    stores = open_stores(config, endpoints)
    try:
        with RssSampler() as rss, telegram_bot(stack, root) as (standin, bot):
            for name in WATCHED[:-1]:
                proc = stack.processes.get(name)
                rss.watch(name, proc.pid if proc else None)
            rss.watch("bot", bot.pid)
            async with ComfyClient(endpoints.comfyui_urls[0]) as comfy:
                bench = Bench(stack, temporal, stores, JobsClient(temporal, stores, config), comfy)
                await _measure(bench, standin, args, result)
            rss.sample_once()
            result.rss_first, result.rss_peak = dict(rss.first), dict(rss.peak)
            result.rss_samples = rss.samples
    finally:
        with contextlib.suppress(Exception):
            reset_standin(endpoints.comfyui_urls[0])
        stores.close()


async def _measure(
    bench: Bench, standin: TelegramStandin, args: argparse.Namespace, result: Result
) -> None:
    solo = await bench.new_user("solo")
    set_render_time(bench.comfy_url, 0.0)
    for _ in range(args.warmup):
        await bench.direct(bench.graph_for(solo, bench.next_seed()))
        await bench.workflow(solo, bench.next_seed())

    # 1. Latency, sequential, direct and workflow interleaved.
    for label, render, n in (("0 s", 0.0, args.jobs_0s), ("2 s", 2.0, args.jobs_2s)):
        set_render_time(bench.comfy_url, render)
        direct, wf = Samples("direct"), Samples("workflow")
        progress("latency, render %s: %d direct and %d workflow jobs", label, n, n)
        for _ in range(n):
            direct.ms.append(await bench.direct(bench.graph_for(solo, bench.next_seed())))
            wf.ms.append((await bench.workflow(solo, bench.next_seed())).total_ms)
        result.latency[label] = (direct, wf)
        progress("  direct p50 %.0f ms, workflow p50 %.0f ms", direct.p50, wf.p50)
    set_render_time(bench.comfy_url, 0.0)

    # 2. Throughput against the trivial workflow, same users, same concurrency.
    await throughput(bench, args, result)

    # 3. The bot under its own load (RSS is sampled all along).
    progress("bot: %d Telegram users, %d /make each", args.bot_users, args.bot_jobs)
    began = time.monotonic()
    try:
        result.bot_jobs = await asyncio.wait_for(
            bot_load(standin, args.bot_users, args.bot_jobs, timeout=60), args.box
        )
        result.bot_note = (
            f"{result.bot_jobs} photos delivered to {args.bot_users} Telegram users "
            f"in {time.monotonic() - began:.1f} s"
        )
    except (TimeoutError, AssertionError) as err:
        result.bot_note = f"bot load incomplete: {type(err).__name__}"
        log.warning("bot load incomplete", exc_info=True)
    progress("  %s", result.bot_note)

    # 4 and 5. History events and MongoDB operations per job kind.
    meter = OpsMeter(bench.stores)
    await asyncio.sleep(1.0)  # let the last bot jobs' bookkeeping settle
    await meter.calibrate(args.idle)
    idle = ", ".join(f"{k} {v:.1f}/s" for k, v in meter.background.items() if v) or "none"
    progress("MongoDB operations while idle: %s", idle)
    result.kinds = await per_kind(bench, meter, args)


async def throughput(bench: Bench, args: argparse.Namespace, result: Result) -> None:
    queue = f"bench-trivial-{uuid.uuid4().hex[:8]}"
    levels = [(int(u), int(j)) for u, j in (lvl.split(":") for lvl in args.levels.split(","))]
    crowd = [await bench.new_user(f"u{i:02d}") for i in range(max(u for u, _ in levels))]

    async def make_one(user: str, n: int) -> float:
        del n
        return (await bench.workflow(user, bench.next_seed())).total_ms

    async def trivial_one(user: str, n: int) -> float:
        return await bench.trivial(queue, user, n)

    async with Worker(
        bench.temporal, task_queue=queue, workflows=[TrivialWorkflow], activities=[bench_echo]
    ):
        for _ in range(2):
            await bench.trivial(queue, "warmup", 0)
        for users, jobs in levels:
            progress("throughput, %d users: %d make jobs, then %d trivial", users, jobs, jobs)
            make_s, make = await run_users(crowd[:users], jobs, make_one)
            triv_s, triv = await run_users(crowd[:users], jobs, trivial_one)
            rate = Rate(users, jobs, jobs / make_s, jobs / triv_s, make.p50, triv.p50)
            result.rates.append(rate)
            progress("  make %.1f jobs/s, trivial %.1f jobs/s", rate.make_per_s, rate.trivial_per_s)


# ------------------------------------------------------------------------------ the table


def batch_of(k: KindResult) -> str:
    """What the MongoDB ops of a kind were counted over, in words."""
    assert k.ops is not None
    if "cook" in k.kind:
        return f"one cook of {k.ops.jobs} pieces, 3 in flight"
    return f"{k.ops.jobs} sequential job{'s' if k.ops.jobs != 1 else ''}"


def render(result: Result) -> str:
    rows: list[tuple[str, str, str]] = []
    for label, (direct, wf) in result.latency.items():
        rows.append(
            (
                f"make-image latency, render {label} (n = {len(wf.ms)}, sequential)",
                f"direct {fmt(direct.p50)} / {fmt(direct.p95)} ms; "
                f"workflow {fmt(wf.p50)} / {fmt(wf.p95)} ms (p50 / p95)",
                f"overhead {fmt(wf.p50 - direct.p50)} / {fmt(wf.p95 - direct.p95)} ms, "
                f"ratio {wf.p50 / direct.p50:.2f}× (p50)",
            )
        )
    for r in result.rates:
        rows.append(
            (
                f"throughput, {r.users} concurrent user{'s' if r.users != 1 else ''} "
                f"({r.jobs} jobs, render 0 s)",
                f"make-image {r.make_per_s:.1f} jobs/s (p50 {fmt(r.make_p50)} ms)",
                f"trivial workflow {r.trivial_per_s:.1f} jobs/s (p50 {fmt(r.trivial_p50)} ms); "
                f"make = {r.make_per_s / r.trivial_per_s:.2f}× trivial",
            )
        )
    for name in WATCHED:
        if name not in result.rss_peak:
            rows.append((f"peak RSS, {name}", "not measured", "process not found"))
            continue
        note = f"{result.rss_first[name] / MB:.0f} MB right after start"
        if name == "bot":
            note += f"; {result.bot_note}"
        rows.append((f"peak RSS, {name}", f"{result.rss_peak[name] / MB:.0f} MB", note))
    for k in result.kinds:
        if not k.events:
            rows.append((f"history, {k.kind}", "–", k.note))
            continue
        rows.append(
            (
                f"history events per job, {k.kind}",
                f"{k.events} events ({k.history_bytes / 1024:.1f} KB JSON)",
                k.note,
            )
        )
    for k in result.kinds:
        if k.ops is None:
            continue
        rows.append(
            (
                f"MongoDB ops per {'piece' if 'cook' in k.kind else 'job'}, {k.kind}",
                f"{k.ops.total:.1f}",
                f"{k.ops.describe()} (serverStatus opcounters over {batch_of(k)}, "
                "idle background subtracted)",
            )
        )
    out = [
        "| measurement | result | compared with / note |",
        "|---|---|---|",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows),
    ]
    return "\n".join(out) + "\n"


def render_doc(result: Result, table: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    commit = f", commit {result.commit}" if result.commit else ""
    return (
        f"Measured {stamp}{commit} on {result.machine}. Whole run {result.seconds:.0f} s; "
        f"RSS sampled {result.rss_samples} times (every {SAMPLE_EVERY} s, process and its "
        "children).\n\n"
        f"{table}\n"
        "Notes: the trivial workflow's worker runs inside the benchmark process, the make-image "
        "workers are the stack's own subprocesses. MongoDB ops are the server's `serverStatus` "
        "opcounters (mongod's buckets: `find` = query, `findAndModify` = update, everything else "
        "= command) around a batch of sequential jobs, including the jobs client's own checks "
        "and slot; the background rate measured with the stack idle (driver heartbeats) is "
        "subtracted, so small fractions are noise. Media jobs reuse one stored source image "
        "(storing it is not counted).\n"
    )


def write_doc(path: Path, body: str) -> None:
    """Replace this report's marked section; insert it before the make-image results if new."""
    text = path.read_text() if path.exists() else "# Performance\n"
    section = (
        f"{BEGIN_MARK} (generated by bench/report.py: `make report` rewrites it) -->\n"
        f"{body}{END_MARK}\n"
    )
    start = text.find(BEGIN_MARK)
    end = text.find(END_MARK, start if start >= 0 else 0)
    if start >= 0 and end >= 0:
        text = text[:start] + section + text[end + len(END_MARK) :].lstrip("\n")
    else:
        block = f"{SECTION_TITLE}\n\n{SECTION_INTRO}\n{section}\n"
        anchor = text.find("## Latest results")
        if anchor >= 0:
            text = text[:anchor] + block + text[anchor:]
        else:
            text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--jobs-0s", type=int, default=20, help="sequential jobs per path, render 0 s")
    p.add_argument("--jobs-2s", type=int, default=6, help="sequential jobs per path, render 2 s")
    p.add_argument("--warmup", type=int, default=2, help="untimed jobs per path first")
    p.add_argument(
        "--levels",
        default="1:20,10:60,50:150",
        help="users:jobs per throughput level, comma-separated",
    )
    p.add_argument("--bot-users", type=int, default=10, help="Telegram users for the bot load")
    p.add_argument("--bot-jobs", type=int, default=2, help="/make per Telegram user")
    p.add_argument("--kind-jobs", type=int, default=5, help="sequential jobs per job kind")
    p.add_argument("--cook-pieces", type=int, default=6, help="pieces of the collection cook")
    p.add_argument("--train-steps", type=int, default=100, help="steps of the training run")
    p.add_argument("--idle", type=float, default=3.0, help="seconds to measure MongoDB idle ops")
    p.add_argument("--box", type=float, default=60.0, help="time box of cook, training, bot load")
    p.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "docs" / "performance.md",
        help="document whose report section is rewritten",
    )
    p.add_argument("--no-write", action="store_true", help="print the report only")
    p.add_argument("--keep-dir", action="store_true", help="keep the stack directory (logs)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    began = time.monotonic()
    result = Result(machine=machine(), commit=git_commit())
    root = Path(tempfile.mkdtemp(prefix="stationthis-report-"))
    try:
        progress("starting the dev stack in %s", root)
        with embedded_stack(root) as stack:
            progress("stack ready in %.1f s", stack.ready_seconds or 0.0)
            asyncio.run(measure(stack, root, args, result))
    finally:
        if args.keep_dir:
            progress("stack directory kept: %s", root)
        else:
            shutil.rmtree(root, ignore_errors=True)
    result.seconds = time.monotonic() - began
    table = render(result)
    print(table)
    print(f"Machine: {result.machine}; whole run {result.seconds:.0f} s.")
    if not args.no_write:
        write_doc(args.out, render_doc(result, table))
        progress("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
