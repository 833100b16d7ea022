# ruff: noqa: E402
"""Benchmark of the GPU pool: busy GPUs, idle gaps, throughput, fair share, hand-back.

Run with `.venv/bin/python bench/gpu_pool.py` (`--help` lists the knobs). A measurement, not a
test: it checks only that every job ended done with one charge. It prints one table, measured
in one run, and writes it into docs/performance.md between its own markers.

One embedded dev stack (Temporal dev server with the project's tuning, task-queue fairness
included; MongoDB-compatible server; the workflow worker as a subprocess), plus four ComfyUI
stand-ins of its own with fixed render times: two fast, two three times slower (1 s and 3 s in
the issue; scaled by `--scale`, default 0.25, so the whole run stays under five minutes on two
cores). Each comfy worker is a real `stationthis comfy-worker` subprocess (one slot, the
default feed-ahead), so SIGTERM is a real signal.

Scenarios, each on a backlog of `--jobs` make jobs (200) from 20 users of unequal size (the
biggest submits first, the smallest — one job — last), submitted while no comfy worker runs, so
the pool starts on a full backlog:

- **direct**: the same prompts (the graphs prepare builds) POSTed straight to one fast server's
  own queue: ComfyUI's own gap between prompts, the floor.
- **1, 2, 4 servers**: fast; fast + slow; fast, fast, slow, slow. **1 server, feed-ahead 0**:
  the one-server row again with `COMFY_FEED_AHEAD=0`, the pool as it was before (the next
  prompt polled only once the last one completed).
- **add a server mid-run**: one fast server, a second one started after `--add-after` seconds;
  jobs/s in the window before and after it took its first prompt.
- **SIGTERM**: a slow and a fast server, the slow one's worker signalled mid-run while its
  server runs one prompt and holds one fed ahead (read from its /queue at the signal): where
  each of the two then ran is read from the /history of both (the fed-ahead one should be
  handed back and run on the other server, the running one finish); every job done, charged
  once.

Per server, from the server's own `execution_start` / `execution_success` timestamps in its
/history (ms): busy fraction (rendering time / the span from its first start to its last end),
idle gaps between consecutive prompts (p50 / p95, all servers of the row), jobs/s (prompts /
the span from the first start to the last end of the row), and the wait of the smallest user's
first job against the biggest user's (its start − the row's first start). Rows of unequal
servers also sample every server's /queue every 50 ms (`QueueSampler`): the seconds a fast
server sat idle while another held a prompt pending in its own queue, the issue's target "the
fast GPU never waits while the slow one holds queued work" (0 is met).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from activities.comfy import prompt_id_for
from adapters.jobs import JobsClient
from bench.make_image import machine, percentile
from comfy.client import ComfyClient
from domain.jobs import JobState, MakeImageRequest, PrepareInput
from services.job_plans import MakePlanner
from workers.config import ComfyDev, Config, TemporalDev
from workers.devstack import DevStack, ExtraCommand, stationthis_command
from workers.processes import free_port
from workers.runtime import connect_temporal, open_stores

log = logging.getLogger("bench.gpu_pool")

BEGIN_MARK = "<!-- bench:gpu_pool:begin"
END_MARK = "<!-- bench:gpu_pool:end -->"
SIZE = {"width": 256, "height": 256, "steps": 4}
USERS = 20


def progress(msg: str, *args: object) -> None:
    print("# " + (msg % args if args else msg), file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ processes


@dataclass
class Standin:
    url: str
    process: subprocess.Popen[str]
    render: float = 0.0

    def set_render(self, seconds: float) -> None:
        self.render = seconds
        httpx.post(
            f"{self.url}/_standin/faults", json={"render_time": seconds}, timeout=5
        ).raise_for_status()

    def queue(self) -> tuple[int, int]:
        running, pending = self.queue_ids()
        return len(running), len(pending)

    def queue_ids(self) -> tuple[list[str], list[str]]:
        """The prompt ids running and pending on the server now (ComfyUI's /queue rows are
        [number, prompt_id, ...])."""
        q = httpx.get(f"{self.url}/queue", timeout=10).json()
        return [e[1] for e in q["queue_running"]], [e[1] for e in q["queue_pending"]]

    def history(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{self.url}/history", timeout=30).json()
        return data


def start_standin(root: Path) -> Standin:
    root.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "standins.comfyui", "--port", "0", "--root", str(root)]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT, start_new_session=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("ready "):
        proc.kill()
        raise RuntimeError(f"stand-in did not start: {line!r}")
    return Standin(url=line.split(" ", 1)[1].strip(), process=proc)


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def start_comfy_worker(env: dict[str, str], url: str, log_dir: Path) -> subprocess.Popen[str]:
    out = (log_dir / f"comfy-worker-{url.rsplit(':', 1)[-1]}.log").open("a")
    return subprocess.Popen(
        stationthis_command("comfy-worker", "--url", url, "--slots", "1"),
        env={**env, "COMFYUI_URLS": url},
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO_ROOT,
        start_new_session=True,
    )


# ------------------------------------------------------------------------------ measuring


@dataclass
class Run:
    """One prompt as its server recorded it."""

    server: str
    prompt_id: str
    start: float  # seconds (server clock, same host)
    end: float


def stopped_of(server: Standin, prompt_ids: set[str]) -> int:
    """Prompts of `prompt_ids` the server started but did not finish (interrupted: a render
    moved to a faster idle server after it had started)."""
    return sum(
        1
        for pid, entry in server.history().items()
        if pid in prompt_ids and entry.get("status", {}).get("status_str") != "success"
    )


def runs_of(server: Standin, prompt_ids: set[str]) -> list[Run]:
    out: list[Run] = []
    for pid, entry in server.history().items():
        if pid not in prompt_ids:
            continue
        start = end = None
        for name, data in entry.get("status", {}).get("messages", []):
            if name == "execution_start":
                start = data["timestamp"] / 1000.0
            elif name == "execution_success":
                end = data["timestamp"] / 1000.0
        if start is not None and end is not None:
            out.append(Run(server.url, pid, start, end))
    return sorted(out, key=lambda r: r.start)


@dataclass
class Row:
    name: str
    servers: list[str]  # render time per server, e.g. "0.25 s"
    busy: list[float] = field(default_factory=list)
    gaps_ms: list[float] = field(default_factory=list)
    jobs: int = 0
    jobs_per_s: float = 0.0
    small_wait: float | None = None
    big_wait: float | None = None
    small_rank: int | None = None  # 1-based place of the smallest user's job in start order
    # Seconds the fast server(s) sat idle while another server held a prompt waiting in its
    # own queue (sampled, `QueueSampler`); None for a row of equal servers. Target: 0.
    fast_idle_held: float | None = None
    note: str = ""


def summarise(row: Row, runs: list[Run], first_of: dict[str, str] | None = None) -> Row:
    """Fill `row` from the servers' own records of its prompts."""
    by_server: dict[str, list[Run]] = {}
    for r in runs:
        by_server.setdefault(r.server, []).append(r)
    for rs in by_server.values():
        rs.sort(key=lambda r: r.start)
        span = rs[-1].end - rs[0].start
        row.busy.append(sum(r.end - r.start for r in rs) / span if span > 0 else 1.0)
        row.gaps_ms += [(b.start - a.end) * 1000.0 for a, b in itertools.pairwise(rs)]
    t0 = min(r.start for r in runs)
    t1 = max(r.end for r in runs)
    row.jobs = len(runs)
    row.jobs_per_s = len(runs) / (t1 - t0)
    if first_of:
        starts = {r.prompt_id: r.start for r in runs}
        if first_of.get("small") in starts:
            row.small_wait = starts[first_of["small"]] - t0
            row.small_rank = 1 + sorted(starts.values()).index(starts[first_of["small"]])
        if first_of.get("big") in starts:
            row.big_wait = starts[first_of["big"]] - t0
    return row


class QueueSampler:
    """Samples every server's /queue every `every` seconds while a scenario runs, to measure
    what the servers' /history cannot say: how long a fast server was idle (nothing running,
    nothing pending) while another server had a prompt pending in its own queue (fed ahead,
    not started). The issue's target "the fast GPU never waits while the slow one holds
    queued work" is that sum being 0; its resolution is one sample interval per episode."""

    def __init__(self, servers: Sequence[Standin], fast: Sequence[Standin], every: float = 0.05):
        self.servers = list(servers)
        self.fast = {s.url for s in fast}
        self.every = every
        self.idle_held = 0.0
        self.episodes = 0  # separate stretches of such idleness
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=5) as http:

            async def read(s: Standin) -> tuple[int, int]:
                q = (await http.get(f"{s.url}/queue")).json()
                return len(q["queue_running"]), len(q["queue_pending"])

            last = time.monotonic()
            was = False
            while not self._stop.is_set():
                try:
                    states = await asyncio.gather(*(read(s) for s in self.servers))
                except (httpx.HTTPError, ValueError):
                    states = []
                now = time.monotonic()
                by = {s.url: st for s, st in zip(self.servers, states, strict=False)}
                idle = {u for u in self.fast if by.get(u) == (0, 0)}
                # Pending on any other server (a fast one's counts too: it holds a prompt
                # an idle fast server could run now).
                held = any(st[1] > 0 for u, st in by.items() if idle - {u})
                now_held = bool(idle) and held
                if now_held:
                    self.idle_held += now - last
                    self.episodes += 0 if was else 1
                was = now_held
                last = now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.every)


# ------------------------------------------------------------------------------ the bench


class Pool:
    def __init__(self, stack: DevStack, standins: list[Standin], args: argparse.Namespace):
        self.stack = stack
        self.standins = standins
        self.args = args
        self.env = {**os.environ, **stack.endpoints.as_env(), "MAX_RUNNING_JOBS": "1000"}
        self.workers: dict[str, subprocess.Popen[str]] = {}
        self.seed = int(time.time()) % 1_000_000 * 1000

    async def open(self) -> None:
        config = self.stack.config
        self.temporal = await connect_temporal(config, self.stack.endpoints)
        self.stores = open_stores(config, self.stack.endpoints)
        self.jobs = JobsClient(self.temporal, self.stores, config)
        self.planner = MakePlanner(self.stores)

    def serve(self, s: Standin, feed_ahead: int | None = None) -> None:
        env = self.env if feed_ahead is None else {**self.env, "COMFY_FEED_AHEAD": str(feed_ahead)}
        self.workers[s.url] = start_comfy_worker(env, s.url, self.stack.log_dir)

    def stop_all(self) -> None:
        for proc in self.workers.values():
            stop(proc)
        self.workers.clear()

    def sizes(self, n: int) -> list[int]:
        """Jobs per user: the biggest a fifth of the backlog, the smallest one job."""
        big = max(1, n // 5)
        rest = n - big - 1
        middle = [rest // (USERS - 2) + (1 if i < rest % (USERS - 2) else 0) for i in range(18)]
        return [big, *middle, 1]

    def request(self, user: str) -> MakeImageRequest:
        self.seed += 1
        return MakeImageRequest(
            user=user, prompt="a lighthouse at dusk", overrides={**SIZE, "seed": self.seed}
        )

    async def users(self) -> list[str]:
        out = []
        for i in range(USERS):
            identity = f"cli:pool-{i}-{uuid.uuid4().hex[:6]}"
            await asyncio.to_thread(self.stores.users.get_or_create, identity, 1_000_000)
            out.append(identity)
        return out

    async def backlog(self, n: int) -> tuple[list[str], dict[str, str]]:
        """Start n jobs (biggest user first, smallest last) and wait until all are queued for
        a GPU; returns the workflow ids and the first job of the biggest / smallest user."""
        users = await self.users()
        wids: list[str] = []
        first: dict[str, str] = {}
        for user, count in zip(users, self.sizes(n), strict=True):
            for _ in range(count):
                started = await self.jobs.start_make(self.request(user))
                wids.append(started.workflow_id)
                if user == users[0] and "big" not in first:
                    first["big"] = started.workflow_id
                if user == users[-1]:
                    first["small"] = started.workflow_id
        await self.wait_state(wids, {JobState.QUEUED})
        return wids, first

    async def wait_state(
        self, wids: list[str], states: set[JobState], timeout: float = 600
    ) -> None:
        deadline = time.monotonic() + timeout
        pending = list(wids)
        while pending:
            pending = [w for w in pending if (await self.jobs.status(w)).state not in states]
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(pending)} jobs not {states} in time")
            if pending:
                await asyncio.sleep(0.5)

    async def finish(self, wids: list[str]) -> None:
        results = await asyncio.gather(*(self.jobs.result(w) for w in wids))
        bad = [r for r in results if r.state is not JobState.DONE]
        if bad:
            raise RuntimeError(f"{len(bad)} jobs not done: {bad[0].state} {bad[0].reason}")
        for w, r in zip(wids, results, strict=True):
            totals = self.stores.ledger.job_totals(w)
            if totals.charges != 1 or totals.charged != r.price or totals.refunded:
                raise RuntimeError(f"{w}: charged {totals}, price {r.price}")

    async def prompt_ids(self, wids: list[str]) -> dict[str, str]:
        """The prompt id each job's (last) attempt submitted: workflow id -> prompt id."""
        out: dict[str, str] = {}
        for w in wids:
            desc = await self.temporal.get_workflow_handle(w).describe()
            for attempt in range(1, 6):
                out.setdefault(w, prompt_id_for(w, 0, attempt, desc.run_id))
                out[f"{w}#{attempt}"] = prompt_id_for(w, 0, attempt, desc.run_id)
        return out

    async def all_runs(self, wids: list[str], servers: Sequence[Standin]) -> list[Run]:
        ids = await self.prompt_ids(wids)
        wanted = set(ids.values())
        runs: list[Run] = []
        for s in servers:
            runs += runs_of(s, wanted)
        return runs

    async def scenario(
        self, name: str, servers: list[Standin], feed_ahead: int | None = None
    ) -> Row:
        progress("%s: backlog of %d jobs", name, self.args.jobs)
        wids, first = await self.backlog(self.args.jobs)
        fastest = min(s.render for s in servers)
        fast = [s for s in servers if s.render == fastest]
        sampler = QueueSampler(servers, fast) if len(fast) < len(servers) else None
        if sampler is not None:
            sampler.start()
        for s in servers:
            self.serve(s, feed_ahead)
        await self.finish(wids)
        if sampler is not None:
            await sampler.stop()
        self.stop_all()
        ids = await self.prompt_ids(wids)
        runs = await self.all_runs(wids, servers)
        row = Row(name, [f"{s.render:g} s" for s in servers])
        firsts = {k: ids[w] for k, w in first.items()}
        summarise(row, runs, firsts)
        if sampler is not None:
            row.fast_idle_held = sampler.idle_held
        retried = {pid for key, pid in ids.items() if "#" in key and not key.endswith("#1")}
        moved = sum(1 for r in runs if r.prompt_id in retried)
        stopped = sum(stopped_of(s, set(ids.values())) for s in servers)
        if len({r.server for r in runs}) > 1:
            fast_end = max(r.end for r in runs if r.server == servers[0].url)
            tail = max(r.end for r in runs) - fast_end
            # Prompts another server started after the fast one's last end: queued work the
            # idle fast GPU waited for (what the tail hand-back removes); 0 is the target.
            held = sum(1 for r in runs if r.server != servers[0].url and r.start > fast_end)
            row.note = (
                f"the fast server idle at the end while another still rendered: {tail:.2f} s; "
                f"prompts started elsewhere after its last end (queued work it waited for): {held}"
            )
            if sampler is not None:
                row.note += (
                    f"; sampled every {sampler.every * 1000:.0f} ms: a fast server idle while "
                    f"another held a prompt in its queue {sampler.idle_held:.2f} s in "
                    f"{sampler.episodes} stretch(es)"
                )
            row.note += (
                f"; renders handed back and run on another server: {moved} ({stopped} of them "
                "interrupted just after they had started)"
            )
        return row

    async def direct(self, server: Standin) -> Row:
        progress("direct: %d prompts straight into one server's queue", self.args.jobs)
        user = (await self.users())[0]
        graphs = [
            self.planner.plan_make_image(PrepareInput(workflow_id="", request=self.request(user)))
            .comfy[0]
            .graph
            for _ in range(self.args.jobs)
        ]
        ids = {str(uuid.uuid4()) for _ in graphs}
        async with ComfyClient(server.url) as comfy:
            for g, pid in zip(graphs, sorted(ids), strict=True):
                await comfy.submit(g, prompt_id=pid)
            deadline = time.monotonic() + 600
            while len(runs_of(server, ids)) < len(ids) and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
        return summarise(
            Row("direct to one ComfyUI queue", [f"{server.render:g} s"]), runs_of(server, ids)
        )

    async def add_server(self, a: Standin, b: Standin) -> Row:
        progress("add a server after %.0f s", self.args.add_after)
        wids, _first = await self.backlog(self.args.jobs // 2)
        self.serve(a)
        await asyncio.sleep(self.args.add_after)
        added_at = time.time()
        self.serve(b)
        await self.finish(wids)
        self.stop_all()
        runs = await self.all_runs(wids, [a, b])
        row = summarise(
            Row("add a 2nd server mid-run", [f"{a.render:g} s", f"+{b.render:g} s"]), runs
        )
        on_b = sorted(r.start for r in runs if r.server == b.url)
        before = [r for r in runs if r.end <= on_b[0]] if on_b else runs
        after = [r for r in runs if r.start >= on_b[0]] if on_b else []

        def rate(rs: list[Run]) -> float:
            return (
                len(rs) / (max(r.end for r in rs) - min(r.start for r in rs))
                if len(rs) > 1
                else 0.0
            )

        row.note = (
            f"{rate(before):.2f} jobs/s before, {rate(after):.2f} after; the new server's first "
            f"prompt started {on_b[0] - added_at:.1f} s after its worker was launched"
            if on_b
            else "the added server took nothing"
        )
        return row

    async def sigterm(self, a: Standin, b: Standin) -> Row:
        """SIGTERM on `a`'s worker while its server runs one prompt and holds one fed ahead,
        both read from the server's /queue at the moment of the signal; what happened to each
        is read afterwards from both servers' /history (which attempt ran where)."""
        progress("SIGTERM one of two servers mid-run")
        wids, _first = await self.backlog(self.args.jobs // 4)
        self.serve(a)
        self.serve(b)
        # Signal once the worker holds a running and a fed-ahead prompt on its server.
        deadline = time.monotonic() + 60
        held: tuple[list[str], list[str]] = ([], [])
        while time.monotonic() < deadline:
            held = a.queue_ids()
            if len(held[0]) == 1 and len(held[1]) == 1:
                break
            await asyncio.sleep(0.02)
        worker = self.workers.pop(a.url)
        signalled = time.time()

        def stop_and_time() -> float:
            stop(worker)
            return time.time() - signalled

        stop_task = asyncio.create_task(asyncio.to_thread(stop_and_time))
        await self.finish(wids)
        stopped = await stop_task
        self.stop_all()
        runs = await self.all_runs(wids, [a, b])
        ids = await self.prompt_ids(wids)
        handed = sum(1 for w in wids if ids[f"{w}#2"] in {r.prompt_id for r in runs})
        where = {r.prompt_id: r.server for r in runs}
        first_attempt = {ids[f"{w}#1"]: w for w in wids}

        def fate(prompt_id: str) -> str:
            wid = first_attempt.get(prompt_id)
            if wid is None:
                return "not one of the row's prompts"
            if where.get(prompt_id) == a.url:
                return "finished on the signalled server"
            for attempt in range(2, 6):
                if where.get(ids[f"{wid}#{attempt}"]) == b.url:
                    return f"handed back, ran on the other server (attempt {attempt})"
            return "lost"  # finish() would have failed first

        running = ", ".join(fate(p) for p in held[0]) or "none"
        pending = ", ".join(fate(p) for p in held[1]) or "none"
        row = summarise(Row("SIGTERM one of two", [f"{a.render:g} s", f"{b.render:g} s"]), runs)
        row.note = (
            f"at the signal its server ran {len(held[0])} prompt(s) and held {len(held[1])} "
            f"fed ahead (read from its /queue); the running one: {running}; the fed-ahead "
            f"one: {pending}; {handed} prompt(s) ran as a second attempt in all; the signalled "
            f"worker exited {stopped:.1f} s after SIGTERM; {len(wids)} jobs done, each charged "
            "once"
        )
        return row


# ------------------------------------------------------------------------------ report


def render(rows: list[Row], args: argparse.Namespace, seconds: float) -> str:
    fast, slow = args.scale * 1.0, args.scale * 3.0
    out = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}, one run "
        f"of {seconds:.0f} s; render times scaled by {args.scale:g} (fast {fast:g} s, slow "
        f"{slow:g} s: the issue's 1 s and 3 s); {args.jobs} jobs from {USERS} users (biggest "
        f"{max(1, args.jobs // 5)} jobs submitted first, smallest 1 job last); one slot, "
        "feed-ahead 1 per server.",
        "",
        "| row | servers (render) | busy per server | idle gap p50 / p95 | jobs/s | wait: smallest "
        "user's 1st / biggest's 1st | fast idle while another held queued work |",
        "|---|---|---|---:|---:|---|---:|",
    ]
    for r in rows:
        busy = ", ".join(f"{b * 100:.1f} %" for b in r.busy)
        gaps = (
            f"{percentile(r.gaps_ms, 50):.1f} / {percentile(r.gaps_ms, 95):.1f} ms"
            if r.gaps_ms
            else "—"
        )
        wait = (
            f"{r.small_wait:.2f} s ({r.small_rank}th of {r.jobs}) / {r.big_wait:.2f} s"
            if r.small_wait is not None and r.big_wait is not None
            else "—"
        )
        held = f"{r.fast_idle_held:.2f} s" if r.fast_idle_held is not None else "—"
        out.append(
            f"| {r.name} | {', '.join(r.servers)} | {busy} | {gaps} | {r.jobs_per_s:.2f} | {wait} "
            f"| {held} |"
        )
    notes = [f"- **{r.name}**: {r.note}" for r in rows if r.note]
    if notes:
        out += ["", *notes]
    return "\n".join(out) + "\n"


def write_doc(path: Path, body: str) -> None:
    text = path.read_text() if path.exists() else "# Performance\n"
    section = f"{BEGIN_MARK} (generated by bench/gpu_pool.py) -->\n{body}{END_MARK}\n"
    start = text.find(BEGIN_MARK)
    end = text.find(END_MARK)
    if start >= 0 and end >= 0:
        text = text[:start] + section + text[end + len(END_MARK) :].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n## GPU pool (bench/gpu_pool.py)\n\n" + section
    path.write_text(text)


@contextlib.contextmanager
def stack_in(root: Path) -> Iterator[DevStack]:
    for key in ("TEMPORAL_ADDRESS", "MONGODB_URI", "COMFYUI_URLS"):
        os.environ.pop(key, None)
    os.environ["MAX_RUNNING_JOBS"] = "1000"  # 200 jobs from 20 users: no per-user cap here
    config = Config(
        devstack_dir=root,
        temporal=TemporalDev(port=free_port(), ui_port=free_port()),
        comfyui=ComfyDev(step_delay=0.0),
        max_running_jobs=1000,
    )
    extra = [ExtraCommand("worker", stationthis_command("worker"))]
    stack = DevStack(config, extra=extra, supervise=False)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


async def measure(stack: DevStack, args: argparse.Namespace) -> list[Row]:
    standins = [start_standin(stack.config.devstack_dir / f"gpu{i}") for i in range(4)]
    try:
        fast = [standins[0], standins[1]]
        slow = [standins[2], standins[3]]
        for s in fast:
            s.set_render(args.scale * 1.0)
        for s in slow:
            s.set_render(args.scale * 3.0)
        pool = Pool(stack, standins, args)
        await pool.open()
        wanted = set(args.rows.split(","))
        rows: list[Row] = []
        if "direct" in wanted:
            rows.append(await pool.direct(fast[0]))
        if "1" in wanted:
            rows.append(await pool.scenario("1 server", [fast[0]]))
        if "1-no-feed" in wanted:  # the A/B: what the pool did before the feed-ahead
            rows.append(await pool.scenario("1 server, feed-ahead 0", [fast[0]], feed_ahead=0))
        if "2" in wanted:
            rows.append(await pool.scenario("2 servers, unequal", [fast[0], slow[0]]))
        if "4" in wanted:
            rows.append(await pool.scenario("4 servers, unequal", [*fast, *slow]))
        if "add" in wanted:
            rows.append(await pool.add_server(fast[0], fast[1]))
        if "sigterm" in wanted:
            # The signalled server renders slowly enough (3x) that its fed-ahead prompt is still
            # waiting when the worker handles the signal; at 0.25 s it had often started.
            rows.append(await pool.sigterm(slow[0], fast[0]))
        pool.stop_all()
        return rows
    finally:
        for s in standins:
            stop(s.process, timeout=5)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=200, help="backlog per scenario")
    p.add_argument("--scale", type=float, default=0.25, help="render times: fast=scale, slow=3x")
    p.add_argument("--add-after", type=float, default=4.0, help="seconds before the change")
    p.add_argument(
        "--rows",
        default="direct,1,1-no-feed,2,4,add,sigterm",
        help="rows to measure (comma-separated; the default is all)",
    )
    p.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "performance.md")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--keep-dir", action="store_true", help="keep the stack directory (logs)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    began = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="stationthis-pool-"))
    try:
        with stack_in(root) as stack:
            progress("stack ready in %s", root)
            rows = asyncio.run(measure(stack, args))
    finally:
        if args.keep_dir:
            progress("stack directory kept: %s", root)
        else:
            shutil.rmtree(root, ignore_errors=True)
    body = render(rows, args, time.monotonic() - began)
    print(body)
    if not args.no_write:
        write_doc(args.out, body)
        progress("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
