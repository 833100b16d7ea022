# ruff: noqa: E402
"""Chaos and load harness: the promises of StationThis, measured under crashes.

`python bench/chaos.py --jobs 200 --users 20 --minutes 5` (or `make chaos`) starts its own
embedded dev stack (Temporal dev server, MongoDB-compatible server, ComfyUI stand-in and the
three worker processes, on free loopback ports in a temporary directory), then for `--minutes`:

- drives a mix of make / upscale / rmbg / resize jobs through `JobsClient` from `--users`
  users (some with too few points), with bounded concurrency, cancelling some of them;
- runs a fault schedule: kill -9 and restart of each worker kind, of the ComfyUI stand-in
  (losing its queue), of the Temporal dev server (same SQLite file) and of the MongoDB-compatible
  server (same data directory), while the stand-in fails ~30 % of prompts with a mix of
  HTTP 500, dropped WebSocket, execution_error and hang (a hang ends by the render timeout,
  set low with RENDER_TIMEOUT in the workers' environment).

Then it waits (bounded) for every job to end and prints one table: the job outcomes, the ledger
per job (charges, refunds, double charges, failed-or-cancelled jobs without a refund, refunds of
done jobs), `points audit` discrepancies, results stored more than once / never, p50/p95 time to
finish per job kind and the faults injected. Exit status 1 when a must-be-zero column is not 0.

Every client call survives a server restart: it is retried on connection errors until a
deadline. Every loop is bounded in count and time; every process is stopped at the end.

Telegram: the harness also starts the Bot API stand-in (standins.telegram) and
gives the stack its token and addresses, so the stack runs the bot (`stationthis bot`, the "bot"
process, which alone serves `deliver-telegram`). A share of the users (`--telegram-rate`) are
`telegram:<id>` users whose jobs run with platform "telegram" and a chat of their own per job
(`ReplyTarget(chat_id=...)`, no status message), so each chat holds exactly what that one job's
delivery sent. The schedule kills the bot like every other process and arms a few 429 RetryAfter
answers on sendPhoto. The check reads each chat from the stand-in: a done job has exactly one
photo per output; a refused, failed or cancelled one has none (it gets one text instead).

Discord likewise: the harness starts the Discord stand-in (standins.discord) and gives the stack
its token and addresses, so the stack runs `stationthis discord-bot` (the "discord-bot" process,
which alone serves `deliver-discord`), killed by the schedule like the Telegram bot. A share of
the users (`--discord-rate`) are `discord:<id>` users whose jobs run with platform "discord" and a
channel of their own per job (a DM channel the stand-in makes for a made-up user per job), checked
the same way: one image attachment per output of a done job, none otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python bench/chaos.py` puts only bench/ on the path
    sys.path.insert(0, str(REPO_ROOT))

import argparse
import asyncio
import contextlib
import io
import json
import logging
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import httpx
import psutil
from PIL import Image
from pydantic import SecretStr
from pymongo.errors import ConnectionFailure, PyMongoError
from temporalio.client import Client, WorkflowFailureError
from temporalio.service import RPCError, RPCStatusCode

from adapters.jobs import JobNotFound, JobsClient, NotCancellable
from domain.errors import StationError, TooManyJobs
from domain.jobs import (
    FINAL_STATES,
    JobState,
    JobStatus,
    MakeImageRequest,
    MediaRequest,
    ReplyTarget,
)
from standins.discord.state import DEFAULT_TOKEN as DISCORD_TOKEN
from standins.process import start_platform_standin
from standins.telegram.server import DEFAULT_TOKEN
from store.db import Stores
from workers.config import ComfyDev, Config, TemporalDev
from workers.devstack import DevStack
from workers.processes import ManagedProcess, free_port
from workers.runtime import connect_temporal, open_stores
from workflows.job_saga import status_from_failure

log = logging.getLogger("bench.chaos")

T = TypeVar("T")

JOB_KINDS: tuple[str, ...] = ("make", "upscale", "rmbg", "resize")
JOB_WEIGHTS: tuple[float, ...] = (0.4, 0.2, 0.2, 0.2)
WORKER_KINDS: tuple[str, ...] = ("worker", "comfy-worker", "media-worker")
SERVICE_KINDS: tuple[str, ...] = ("comfyui", "temporal", "mongodb")
PROCESS_FAULTS: tuple[str, ...] = WORKER_KINDS + SERVICE_KINDS
# Killed too when the stack runs them: the stack runs the bot since the harness gives it a token.
OPTIONAL_FAULTS: tuple[str, ...] = ("bot", "discord-bot")
TELEGRAM_429 = "telegram 429"  # a schedule entry that arms a RetryAfter answer on sendPhoto
TELEGRAM_USER_BASE = 700_000_000  # telegram:<base + user index>
TELEGRAM_CHAT_BASE = 5_000_000_000  # chat of job #i: base + i (a private chat id, one per job)
DISCORD_USER_BASE = 800_000_000_000_000_000  # discord:<base + user index> (a snowflake)
# The channel of job #i is the DM channel of this made-up user (base + i), one per job.
DISCORD_CHANNEL_USER_BASE = 900_000_000_000_000_000
STANDIN_FAULTS: tuple[str, ...] = ("http_500", "ws_drop", "execution_error", "hang")
RICH_POINTS = 1_000_000
POOR_POINTS = 12  # one upscale or rmbg (10) or a few resizes (1); never a make (15)
MUST_BE_ZERO: tuple[str, ...] = (
    "lost",
    "double charges",
    "failed/cancelled without refund",
    "refunds without failure",
    "audit discrepancies",
    "results stored more than once",
    "results never stored",
    "results delivered more than once",
    "results never delivered",
    "results delivered for jobs not done",
    "orphan processes",
)

TRANSIENT_RPC = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.UNKNOWN,
        RPCStatusCode.INTERNAL,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.CANCELLED,
        RPCStatusCode.ABORTED,
    }
)


@dataclass
class ChaosOptions:
    """Knobs of one run; the defaults are the issue's full run."""

    jobs: int = 200
    users: int = 20
    minutes: float = 5.0
    seed: int = 7
    concurrency: int = 12
    cancel_rate: float = 0.1
    poor_rate: float = 0.2
    fault_rate: float = 0.3  # share of prompts the stand-in fails
    faults_per_kind: int = 0  # kills per process kind; 0 = one per 100 s of run, at least 1
    render_timeout: float = 20.0
    heartbeat_timeout: float = 4.0
    comfy_slots: int = 2
    render_time: float = 1.0  # seconds every stand-in prompt takes, so kills hit jobs mid-render
    telegram_rate: float = 0.35  # share of users on Telegram (their results are pushed)
    telegram_429: int = 0  # sendPhoto RetryAfter faults armed; 0 = one per 60 s of run, at least 2
    discord_rate: float = 0.35  # share of users on Discord (their results are pushed too)
    bot_kills: bool = True  # kill -9 the bot like the other processes
    settle_seconds: float = 240.0  # how long to wait after the driving window for the last jobs
    call_deadline: float = 90.0  # how long one client call keeps retrying through restarts
    keep_dir: bool = False


@dataclass
class JobRun:
    """What the harness knows about one requested job."""

    index: int
    kind: str
    user: str
    platform: str = "cli"
    chat_id: int = 0  # telegram/discord jobs: the chat (channel) that receives this job's result
    workflow_id: str = ""
    started_at: float = 0.0
    ended_at: float | None = None
    state: str = ""  # final JobState value, "refused" at start, or "lost"
    refused_at_start: str = ""
    cancel_asked: bool = False
    cancel_answer: str = ""
    lost_reason: str = ""
    outputs: list[str] = field(default_factory=list)
    refund: int = 0
    photos: int = 0  # pushed jobs: photos, image documents or attachments the bot sent
    texts: int = 0  # pushed jobs: text messages the bot sent to the chat


@dataclass
class FaultEvent:
    kind: str
    at: float
    down_seconds: float
    ready_seconds: float
    error: str = ""


@dataclass
class ChaosReport:
    options: dict[str, Any]
    counts: dict[str, int]
    latency: dict[str, dict[str, float]]
    faults: dict[str, int]
    problems: dict[str, list[str]]
    unplanned_exits: dict[str, int]
    seconds: float
    devstack_dir: str = ""
    jobs: list[dict[str, Any]] = field(default_factory=list)  # every JobRun, for post-mortems

    @property
    def ok(self) -> bool:
        return all(self.counts.get(k, 0) == 0 for k in MUST_BE_ZERO)

    def table(self) -> str:
        """The issue's table, as plain text."""
        c = self.counts
        rows: list[tuple[str, str]] = [
            ("jobs started", str(c["started"])),
            ("  done", str(c["done"])),
            ("  failed", str(c["failed"])),
            ("  cancelled", str(c["cancelled"])),
            (
                "  refused",
                f"{c['refused']} ({c['refused at start']} at start, "
                f"{c['refused'] - c['refused at start']} by the workflow)",
            ),
            ("  lost (must be 0)", str(c["lost"])),
            ("charges", str(c["charges"])),
            ("refunds", str(c["refunds"])),
            ("double charges (must be 0)", str(c["double charges"])),
            (
                "failed/cancelled without refund (must be 0)",
                str(c["failed/cancelled without refund"]),
            ),
            ("refunds without failure (must be 0)", str(c["refunds without failure"])),
            ("points audit discrepancies (must be 0)", str(c["audit discrepancies"])),
            ("results stored more than once (must be 0)", str(c["results stored more than once"])),
            ("results never stored (must be 0)", str(c["results never stored"])),
            (
                "telegram jobs (done / photos sent)",
                f"{c.get('telegram jobs', 0)} ({c.get('telegram done', 0)} / "
                f"{c.get('telegram photos', 0)})",
            ),
            (
                "discord jobs (done / images sent)",
                f"{c.get('discord jobs', 0)} ({c.get('discord done', 0)} / "
                f"{c.get('discord images', 0)})",
            ),
            (
                "results delivered more than once (must be 0)",
                str(c["results delivered more than once"]),
            ),
            ("results never delivered (must be 0)", str(c["results never delivered"])),
            (
                "results delivered for jobs not done (must be 0)",
                str(c["results delivered for jobs not done"]),
            ),
            (
                "final texts missing or repeated (should be 0)",
                str(c.get("final texts missing or repeated", 0)),
            ),
            ("orphan processes (must be 0)", str(c["orphan processes"])),
            ("cancels asked / accepted", f"{c['cancels asked']} / {c['cancels accepted']}"),
            (
                "history record missing or wrong (should be 0)",
                str(c.get("history record missing or wrong", 0)),
            ),
            ("job slots still held (should be 0)", str(c.get("job slots still held", 0))),
        ]
        for kind, lat in sorted(self.latency.items()):
            rows.append(
                (
                    f"time to finish {kind} p50 / p95",
                    f"{lat['p50']:.1f} s / {lat['p95']:.1f} s (n={int(lat['n'])})",
                )
            )
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items()) if v)
        rows.append(("faults injected", faults or "none"))
        unplanned = ", ".join(f"{k} {v}" for k, v in sorted(self.unplanned_exits.items()))
        rows.append(("unplanned process exits (restarted)", unplanned or "none"))
        rows.append(("run time", f"{self.seconds:.0f} s"))
        width = max(len(r[0]) for r in rows)
        lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
        for name, items in self.problems.items():
            if items:
                lines.append(f"\n{name}:")
                lines.extend(f"  {item}" for item in items[:20])
        lines.append("\nresult: " + ("OK, every must-be-zero column is 0" if self.ok else "FAIL"))
        return "\n".join(lines)


# ------------------------------------------------------------------------------ retries


def is_transient(err: BaseException) -> bool:
    """A connection-level failure a restart explains: worth retrying until the deadline."""
    if isinstance(err, RPCError):
        return err.status in TRANSIENT_RPC
    if isinstance(err, ConnectionFailure):
        return True
    if isinstance(err, PyMongoError):
        return err.has_error_label("TransientTransactionError") or err.has_error_label(
            "RetryableWriteError"
        )
    return isinstance(err, (httpx.TransportError, ConnectionError, asyncio.TimeoutError))


async def retrying(
    what: str,
    call: Callable[[], Awaitable[T]],
    *,
    deadline: float,
    also: tuple[type[BaseException], ...] = (),
) -> T:
    """`await call()` again after each transient error (or one of `also`) until `deadline`."""
    delay = 0.2
    while True:
        try:
            return await call()
        except Exception as err:
            if not (is_transient(err) or isinstance(err, also)):
                raise
            if time.monotonic() + delay >= deadline:
                raise
            log.debug("%s: %r; retrying in %.1fs", what, err, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 1.6, 3.0)


# ------------------------------------------------------------------------------ the stack


@contextlib.contextmanager
def chaos_env(
    options: ChaosOptions, standin: BotApiStandin, discord: DiscordApiStandin
) -> Iterator[None]:
    """The workers and the bots (children of the stack) read Config from the environment: short
    timeouts, and the stand-ins' tokens and addresses instead of Telegram's and Discord's."""
    wanted = {
        "DISCORD_BOT_TOKEN": discord.token,
        "DISCORD_API_BASE": discord.api_base,
        "DISCORD_GATEWAY_URL": discord.gateway_url,
        "COMFY_HEARTBEAT_TIMEOUT": str(options.heartbeat_timeout),
        "RENDER_TIMEOUT": str(options.render_timeout),
        "TELEGRAM_BOT_TOKEN": standin.token,
        "TELEGRAM_BASE_URL": standin.base_url,
        "TELEGRAM_BASE_FILE_URL": standin.base_file_url,
    }
    dropped = (
        "TEMPORAL_ADDRESS",
        "MONGODB_URI",
        "COMFYUI_URLS",
        "TELEGRAM_WEBHOOK_SECRET",  # polling, never a webhook
        "ADMIN_IDS",
    )
    saved = {k: os.environ.get(k) for k in (*wanted, *dropped)}
    os.environ.update(wanted)
    for k in dropped:
        os.environ.pop(k, None)  # the harness breaks its own stack, never an external one
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def build_stack(
    root: Path, options: ChaosOptions, standin: BotApiStandin, discord: DiscordApiStandin
) -> DevStack:
    """The embedded stack plus both bots (`worker_commands` adds each once its token is set)."""
    config = Config(
        devstack_dir=root,
        temporal=TemporalDev(port=free_port(), ui_port=free_port()),
        comfyui=ComfyDev(step_delay=0.01, slots=options.comfy_slots),
        comfy_heartbeat_timeout=options.heartbeat_timeout,
        render_timeout=options.render_timeout,
        telegram_bot_token=SecretStr(standin.token),
        telegram_base_url=standin.base_url,
        telegram_base_file_url=standin.base_file_url,
        discord_bot_token=SecretStr(discord.token),
        discord_api_base=discord.api_base,
        discord_gateway_url=discord.gateway_url,
    )
    return DevStack(config, supervise=False, ready_timeout=90.0, stop_timeout=10.0)


class _PlatformStandin:
    """A platform stand-in process the harness starts (standins/process.py) and reads back.

    It plays a platform that does not crash, so it is never killed; it runs outside the stack
    and is stopped after it."""

    module = ""

    def __init__(self, root: Path, token: str) -> None:
        self.token = token
        self.url = ""
        self.log_path = root / f"{self.module.rsplit('.', 1)[-1]}-standin.log"
        self.process: ManagedProcess | None = None

    def start(self) -> None:
        self.url, self.process = start_platform_standin(self.module, self.log_path, self.token)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def _get(self, path: str) -> Any:
        resp = httpx.get(f"{self.url}{path}", timeout=30)
        resp.raise_for_status()
        return resp.json()


class BotApiStandin(_PlatformStandin):
    """The Bot API stand-in (Telegram, as the bot sees it) and the few controls the harness uses.

    See standins/telegram/server.py for the control API.
    """

    module = "standins.telegram"

    def __init__(self, root: Path, token: str = DEFAULT_TOKEN) -> None:
        super().__init__(root, token)

    @property
    def base_url(self) -> str:
        return f"{self.url}/bot"

    @property
    def base_file_url(self) -> str:
        return f"{self.url}/file/bot"

    def messages(self, chat_id: int) -> list[dict[str, Any]]:
        """Every message of the chat, deleted ones included (see the server's `_message_view`)."""
        found: list[dict[str, Any]] = self._get(f"/_control/chats/{chat_id}/messages")
        return found

    def calls(self, method: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._get(f"/_control/calls?method={method}")
        return found

    def arm_retry_after(self, method: str, retry_after: int) -> None:
        """The next `method` call (any chat) answers 429 Too Many Requests: retry after N s."""
        body = {"method": method, "error_code": 429, "retry_after": retry_after, "count": 1}
        httpx.post(f"{self.url}/_control/faults", json=body, timeout=10).raise_for_status()


class DiscordApiStandin(_PlatformStandin):
    """The Discord stand-in (Gateway v10 and REST, as discord.py sees them) and the controls the
    harness uses. See standins/discord/server.py for the control API."""

    module = "standins.discord"

    def __init__(self, root: Path, token: str = DISCORD_TOKEN) -> None:
        super().__init__(root, token)

    @property
    def api_base(self) -> str:
        return f"{self.url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "/"

    def channel_of_job(self, index: int) -> int:
        """A channel of job #index's own: the DM channel of a made-up user, made on first use."""
        found = self._get(f"/_control/dm/{DISCORD_CHANNEL_USER_BASE + index}")
        return int(found["channel_id"])

    def messages(self, channel_id: int) -> list[dict[str, Any]]:
        """Every message of the channel, deleted ones included (the server's `message_view`)."""
        found: list[dict[str, Any]] = self._get(f"/_control/channels/{channel_id}/messages")
        return found


def standin_rules(rate: float) -> dict[str, Any]:
    """Per-mode rates so that about `rate` of all prompts get one of the four faults.

    The stand-in tries each mode in turn, so the chance of none is (1 - r)^4.
    """
    per_mode = 1.0 - (1.0 - rate) ** (1.0 / len(STANDIN_FAULTS)) if rate > 0 else 0.0
    return {mode: {"rate": round(per_mode, 4)} for mode in STANDIN_FAULTS}


class FaultInjector:
    """Runs the kill -9 / restart schedule in a thread and keeps every process up meanwhile.

    Between faults it restarts any process that died by itself (counted as an unplanned exit:
    each one is a finding). All starts and kills happen in this one thread, so nothing races.
    """

    def __init__(
        self,
        stack: DevStack,
        options: ChaosOptions,
        rng: random.Random,
        telegram: BotApiStandin | None = None,
    ) -> None:
        self.stack = stack
        self.options = options
        self.rng = rng
        self.telegram = telegram
        self.telegram_armed = 0
        self.telegram_fired = 0
        self.comfy_url = stack.endpoints.comfyui_urls[0]
        self.events: list[FaultEvent] = []
        self.unplanned: Counter[str] = Counter()
        self.standin_injected: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._faults_on = options.fault_rate > 0

    # -- stand-in faults

    def apply_standin_faults(self) -> None:
        if not self._faults_on:
            return
        body = {
            "faults": standin_rules(self.options.fault_rate),
            "seed": self.rng.randrange(1 << 30),
        }
        httpx.post(f"{self.comfy_url}/_standin/faults", json=body, timeout=5).raise_for_status()

    def collect_standin_counts(self) -> None:
        """Add what the stand-in injected since its last start (before it is killed / reset)."""
        try:
            resp = httpx.get(f"{self.comfy_url}/_standin/faults", timeout=5)
            resp.raise_for_status()
            injected = resp.json().get("injected", {})
        except (httpx.HTTPError, ValueError) as err:
            log.warning("could not read the stand-in's fault counts: %r", err)
            return
        self.standin_injected.update({str(k): int(v) for k, v in injected.items()})

    def clear_standin_faults(self) -> None:
        """Stop failing prompts (end of the driving window), keeping the counts."""
        self.collect_standin_counts()
        self._faults_on = False
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(f"{self.comfy_url}/_standin/reset", timeout=5).raise_for_status()
            self.apply_standin_faults()  # the render time only

    # -- schedule

    def schedule(self, window: float) -> list[tuple[float, str]]:
        """(seconds after start, process kind): each kind `per_kind` times, spread and shuffled."""
        per_kind = self.options.faults_per_kind or max(1, round(window / 100.0))
        optional = OPTIONAL_FAULTS if self.options.bot_kills else ()
        present = [k for k in PROCESS_FAULTS + optional if k in self.stack.processes]
        kinds = [k for k in present for _ in range(per_kind)]
        if self.telegram is not None and "bot" in self.stack.processes:
            # One more is armed at once by `start`, so the first photo of the run meets it.
            n_429 = self.options.telegram_429 or max(2, round(window / 60.0))
            kinds += [TELEGRAM_429] * (n_429 - 1)
        self.rng.shuffle(kinds)
        begin, end = min(5.0, window * 0.1), window * 0.85
        step = (end - begin) / max(1, len(kinds))
        return [
            (begin + i * step + self.rng.uniform(0, step * 0.5), k) for i, k in enumerate(kinds)
        ]

    def start(self, window: float) -> None:
        plan = self.schedule(window)
        if self.telegram is not None and "bot" in self.stack.processes:
            self.arm_telegram_429()
        self._thread = threading.Thread(target=self._run, args=(plan,), name="chaos-faults")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=180)
        self.heal()

    def _run(self, plan: list[tuple[float, str]]) -> None:
        began = time.monotonic()
        for at, kind in plan:
            while not self._stop.is_set() and time.monotonic() - began < at:
                self.heal()
                self._stop.wait(0.5)
            if self._stop.is_set():
                return
            self.crash(kind, time.monotonic() - began)
        while not self._stop.wait(0.5):
            self.heal()

    def crash(self, kind: str, at: float) -> None:
        """kill -9 one process, leave it down a moment, start it again on the same ports."""
        if kind == TELEGRAM_429:
            self.arm_telegram_429()
            return
        proc = self.stack.processes[kind]
        if kind == "comfyui":
            self.collect_standin_counts()
        down = self.rng.uniform(0.5, 3.0)
        log.info("fault: kill -9 %s (pid %s) for %.1fs", kind, proc.pid, down)
        began = time.monotonic()
        proc.kill()
        time.sleep(down)
        error = ""
        try:
            self._start(proc)
            if kind == "comfyui":
                self.apply_standin_faults()
        except Exception as err:  # a failed restart is reported, and heal() tries again
            error = repr(err)
            log.error("restart of %s failed: %r", kind, err)
        ready = time.monotonic() - began - down
        self.events.append(FaultEvent(kind, round(at, 1), round(down, 1), round(ready, 1), error))

    def arm_telegram_429(self) -> None:
        """The next sendPhoto, whichever job it is for, gets Telegram's flood control answer."""
        assert self.telegram is not None
        retry_after = self.rng.randint(1, 3)
        try:
            self.telegram.arm_retry_after("sendPhoto", retry_after)
        except httpx.HTTPError as err:
            log.error("could not arm a sendPhoto 429: %r", err)
            return
        self.telegram_armed += 1
        log.info("fault: next sendPhoto answers 429 retry after %d s", retry_after)

    def collect_telegram_counts(self) -> None:
        """How many armed 429s the bot really met (one armed late may never fire)."""
        if self.telegram is None:
            return
        try:
            calls = self.telegram.calls("sendPhoto")
        except httpx.HTTPError as err:
            log.warning("could not read the Bot API stand-in's calls: %r", err)
            return
        self.telegram_fired = sum(1 for c in calls if c.get("fault") == 429)

    def _start(self, proc: ManagedProcess) -> None:
        proc.start()
        proc.wait_ready(90.0)

    def heal(self) -> None:
        """Restart whatever died without being asked to (and count it)."""
        for name, proc in self.stack.processes.items():
            if not proc.exited_unexpectedly():
                continue
            self.unplanned[name] += 1
            log.warning(
                "%s exited by itself (status %s); restarting. log tail:\n%s",
                name,
                proc.returncode,
                proc.log_tail(15),
            )
            try:
                self._start(proc)
                if name == "comfyui":
                    self.apply_standin_faults()
            except Exception as err:
                log.error("restart of %s failed: %r", name, err)

    def fault_counts(self) -> dict[str, int]:
        counts: Counter[str] = Counter(f"kill -9 {e.kind}" for e in self.events)
        counts.update({f"comfy {k}": v for k, v in self.standin_injected.items()})
        if self.telegram_armed:
            counts["telegram sendPhoto 429 (armed)"] = self.telegram_armed
            counts["telegram sendPhoto 429 (met)"] = self.telegram_fired
        return dict(counts)


# ------------------------------------------------------------------------------ the jobs


def small_png(rng: random.Random, size: int = 64) -> bytes:
    """A small distinct PNG (gradient plus a random colour), fit for every media job kind."""
    base = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    im = Image.new("RGB", (size, size), base)
    px = im.load()
    assert px is not None
    for x in range(size):
        for y in range(0, size, 4):
            px[x, y] = ((base[0] + x * 3) % 256, (base[1] + y * 3) % 256, base[2])
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


class Driver:
    """Starts, cancels and follows the jobs; every call is retried through restarts."""

    def __init__(
        self,
        jobs: JobsClient,
        temporal: Client,
        stores: Stores,
        options: ChaosOptions,
        rng: random.Random,
    ) -> None:
        self.jobs = jobs
        self.temporal = temporal
        self.stores = stores
        self.options = options
        self.rng = rng
        self.users: list[str] = []
        self.sources: dict[str, str] = {}
        self.runs: list[JobRun] = []
        self.user_limits: dict[str, asyncio.Semaphore] = {}
        self.tag = uuid.uuid4().hex[:6]

    def deadline(self) -> float:
        return time.monotonic() + self.options.call_deadline

    def is_telegram_user(self, i: int) -> bool:
        """Every k-th user from the first on, so Telegram has both poor and rich users."""
        rate = self.options.telegram_rate
        return rate > 0 and i % max(1, round(1 / rate)) == 0

    def is_discord_user(self, i: int) -> bool:
        """Every k-th user from the second on, never a Telegram one (poor and rich users too)."""
        rate = self.options.discord_rate
        return rate > 0 and not self.is_telegram_user(i) and i % max(1, round(1 / rate)) == 1

    def identity(self, i: int) -> str:
        if self.is_telegram_user(i):
            return f"telegram:{TELEGRAM_USER_BASE + i}"
        if self.is_discord_user(i):
            return f"discord:{DISCORD_USER_BASE + i}"
        return f"cli:chaos-{self.tag}-{i}"

    async def create_users(self) -> None:
        n_poor = round(self.options.users * self.options.poor_rate)
        for i in range(self.options.users):
            identity = self.identity(i)
            points = POOR_POINTS if i < n_poor else RICH_POINTS
            await retrying(
                "create user",
                lambda identity=identity, points=points: asyncio.to_thread(  # type: ignore[misc]
                    self.stores.users.get_or_create, identity, points
                ),
                deadline=self.deadline(),
            )
            data = small_png(self.rng)
            self.sources[identity] = await retrying(
                "store source",
                lambda identity=identity, data=data: self.jobs.store_source(  # type: ignore[misc]
                    identity, data, "source.png"
                ),
                deadline=self.deadline(),
            )
            self.users.append(identity)
            self.user_limits[identity] = asyncio.Semaphore(self.jobs.config.max_running_jobs)

    def plan(self, discord: DiscordApiStandin | None = None) -> list[JobRun]:
        kinds = self.rng.choices(JOB_KINDS, weights=JOB_WEIGHTS, k=self.options.jobs)
        self.runs = [
            JobRun(index=i, kind=k, user=self.rng.choice(self.users)) for i, k in enumerate(kinds)
        ]
        for run in self.runs:
            if run.user.startswith("telegram:"):
                run.platform = "telegram"
                run.chat_id = TELEGRAM_CHAT_BASE + run.index
            elif run.user.startswith("discord:") and discord is not None:
                run.platform = "discord"
                run.chat_id = discord.channel_of_job(run.index)
        return self.runs

    def request(self, run: JobRun) -> MakeImageRequest | MediaRequest:
        rid = f"chaos{self.tag}n{run.index}"  # a retried start finds the same workflow
        # Telegram and Discord jobs push their result to a chat of their own (no status message).
        pushed = run.platform in ("telegram", "discord")
        reply = ReplyTarget(chat_id=str(run.chat_id)) if pushed else None
        if run.kind == "make":
            return MakeImageRequest(
                user=run.user,
                platform=run.platform,
                reply=reply,
                prompt=f"a lighthouse in a storm, take {run.index}",
                overrides={"width": 256, "height": 256, "steps": 4, "seed": run.index + 1},
                request_id=rid,
            )
        params: dict[str, Any] = {}
        if run.kind == "upscale":
            params = {"scale": 2}
        elif run.kind == "resize":
            params = {"width": 32, "height": 32, "mode": "fit"}
        return MediaRequest(
            user=run.user,
            platform=run.platform,
            reply=reply,
            kind=run.kind,  # type: ignore[arg-type]
            source_image_id=self.sources[run.user],
            params=params,
            request_id=rid,
        )

    async def drive(self, run: JobRun, not_before: float, gate: asyncio.Semaphore) -> None:
        """Start one job at its time, maybe cancel it, and wait for its end."""
        await asyncio.sleep(max(0.0, not_before - time.monotonic()))
        async with gate, self.user_limits[run.user]:
            run.started_at = time.monotonic()
            try:
                await self._start(run)
            except StationError as err:
                run.state = JobState.REFUSED.value
                run.refused_at_start = f"{err.code}: {err}"
                run.ended_at = time.monotonic()
                return
            except Exception as err:
                run.state = "lost"
                run.lost_reason = f"could not start: {err!r}"
                log.error("job %s could not be started: %r", run.index, err)
                return
            if self.rng.random() < self.options.cancel_rate:
                await asyncio.sleep(self.rng.uniform(0.05, 2.0))
                await self._cancel(run)
            await self._wait(run, time.monotonic() + self.options.settle_seconds + 120)

    async def _start(self, run: JobRun) -> None:
        request = self.request(run)
        deadline = self.deadline()

        async def start() -> str:
            if isinstance(request, MakeImageRequest):
                return (await self.jobs.start_make(request)).workflow_id
            return (await self.jobs.start_media(request)).workflow_id

        # TooManyJobs: the user's previous job has not released its slot yet.
        run.workflow_id = await retrying("start", start, deadline=deadline, also=(TooManyJobs,))

    async def _cancel(self, run: JobRun) -> None:
        run.cancel_asked = True
        try:
            result = await retrying(
                "cancel",
                lambda: asyncio.wait_for(self.jobs.cancel(run.workflow_id), 60),
                deadline=self.deadline(),
                also=(JobNotFound,),
            )
            run.cancel_answer = f"{result.state.value}, refund {result.refund}"
        except NotCancellable as err:
            run.cancel_answer = f"not cancellable: {err}"
        except Exception as err:
            run.cancel_answer = f"cancel failed: {err!r}"
            log.warning("cancel of %s failed: %r", run.workflow_id, err)

    async def _wait(self, run: JobRun, deadline: float) -> None:
        """Follow the workflow to its end; a workflow that fails or never ends is lost."""
        handle = self.jobs.handle(run.workflow_id)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                run.state = "lost"
                run.lost_reason = "no final state before the deadline"
                return
            try:
                status: JobStatus = await asyncio.wait_for(handle.result(), remaining)
            except WorkflowFailureError as err:
                failed = status_from_failure(err)  # a failed job fails its workflow
                if failed is None:
                    run.state = "lost"
                    run.lost_reason = f"workflow failed: {err.cause!r}"
                    run.ended_at = time.monotonic()
                    return
                status = failed
            except TimeoutError:
                continue
            except Exception as err:
                if not is_transient(err):
                    run.state = "lost"
                    run.lost_reason = f"result: {err!r}"
                    return
                await asyncio.sleep(0.5)
                continue
            run.ended_at = time.monotonic()
            run.state = status.state.value
            run.outputs = [o.blob_id for o in status.outputs]
            run.refund = status.refund
            if status.state not in FINAL_STATES:
                run.state = "lost"
                run.lost_reason = f"workflow ended in non-final state {status.state}"
            return


# ------------------------------------------------------------------------------ checking


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def describe_status(temporal: Client, wid: str) -> str:
    try:
        desc = await temporal.get_workflow_handle(wid).describe()
    except RPCError as err:
        return f"describe failed: {err.status.name if err.status else err}"
    return desc.status.name if desc.status else "?"


async def check_pushed(
    runs: list[JobRun],
    platform: str,
    read: Callable[[int], list[dict[str, Any]]],
    is_image: Callable[[dict[str, Any]], bool],
    images_column: str,
    counts: Counter[str],
    problems: dict[str, list[str]],
) -> None:
    """Read each `platform` job's chat: one image per output of a done job, none otherwise.

    Every job has a chat of its own, so whatever the bot sent there belongs to that job. Final
    texts (refused, failed, cancelled) are checked too, as an informational column.
    """
    problems.setdefault("final texts missing or repeated", [])
    for r in runs:
        if r.platform != platform:
            continue
        counts[f"{platform} jobs"] += 1
        msgs = await asyncio.to_thread(read, r.chat_id)
        sent = [m for m in msgs if m.get("from_bot")]
        r.photos = sum(1 for m in sent if is_image(m))
        r.texts = sum(1 for m in sent if not is_image(m))
        counts[f"{platform} {images_column}"] += r.photos
        tag = f"#{r.index} {r.kind} {r.workflow_id or '-'} ({r.state}) {platform} chat {r.chat_id}"
        if r.state == "done":
            counts[f"{platform} done"] += 1
            want = len(r.outputs)
            if r.photos > want:
                problems["results delivered more than once"].append(
                    f"{tag}: {r.photos} images for {want} outputs"
                )
            elif r.photos < want or not want:
                problems["results never delivered"].append(
                    f"{tag}: {r.photos} images for {want} outputs"
                )
            if r.texts:
                problems["final texts missing or repeated"].append(
                    f"{tag}: {r.texts} texts besides the images"
                )
            continue
        if r.photos:
            problems["results delivered for jobs not done"].append(f"{tag}: {r.photos} images")
        # Refused before a workflow existed: the caller (here the harness) answers, not the bot.
        want_texts = 1 if r.workflow_id and r.state in {s.value for s in FINAL_STATES} else 0
        if r.texts != want_texts:
            problems["final texts missing or repeated"].append(
                f"{tag}: {r.texts} texts, expected {want_texts}"
            )
    counts["final texts missing or repeated"] = len(problems["final texts missing or repeated"])


async def check_telegram(
    runs: list[JobRun],
    telegram: BotApiStandin,
    counts: Counter[str],
    problems: dict[str, list[str]],
) -> None:
    """Telegram's chats: a photo too large for sendPhoto goes as a document; both count."""
    await check_pushed(
        runs,
        "telegram",
        telegram.messages,
        lambda m: bool(m.get("photo") or m.get("document")),
        "photos",
        counts,
        problems,
    )


async def check_discord(
    runs: list[JobRun],
    discord: DiscordApiStandin,
    counts: Counter[str],
    problems: dict[str, list[str]],
) -> None:
    """Discord's channels: a result is a message with an attachment (or, over the upload
    limit, a link to the job; the harness's images are far below it)."""
    await check_pushed(
        runs,
        "discord",
        discord.messages,
        lambda m: bool(m.get("attachments")),
        "images",
        counts,
        problems,
    )


async def check(
    driver: Driver,
    temporal: Client,
    stores: Stores,
    telegram: BotApiStandin | None = None,
    discord: DiscordApiStandin | None = None,
) -> tuple[dict[str, int], dict[str, list[str]], dict[str, dict[str, float]]]:
    """Read the books, GridFS and the Telegram chats after the run; fill the table's columns."""
    runs = driver.runs
    counts: Counter[str] = Counter()
    problems: dict[str, list[str]] = {k: [] for k in MUST_BE_ZERO}
    counts["started"] = len(runs)
    for r in runs:
        counts[r.state or "lost"] += 1
        if r.refused_at_start:
            counts["refused at start"] += 1
        if r.cancel_asked:
            counts["cancels asked"] += 1
            if r.cancel_answer.startswith("cancelled"):
                counts["cancels accepted"] += 1
        if r.state == "lost" or not r.state:
            why = r.lost_reason or "never ended"
            if r.workflow_id:
                why += f"; Temporal says {await describe_status(temporal, r.workflow_id)}"
            problems["lost"].append(f"#{r.index} {r.kind} {r.workflow_id}: {why}")

    # Ledger, per job that reached a workflow.
    for r in runs:
        if not r.workflow_id:
            continue
        totals = await asyncio.to_thread(stores.ledger.job_totals, r.workflow_id)
        counts["charges"] += totals.charges
        counts["refunds"] += totals.refunds
        tag = f"#{r.index} {r.kind} {r.workflow_id} ({r.state})"
        if totals.charges > 1:
            problems["double charges"].append(f"{tag}: {totals.charges} charges")
        if r.state in ("failed", "cancelled") and totals.charged > 0 and totals.refunded == 0:
            problems["failed/cancelled without refund"].append(
                f"{tag}: charged {totals.charged}, refunded 0; cancel answer "
                f"{r.cancel_answer or '-'}; outputs {r.outputs}"
            )
        # Every job here is one unit (batch 1), so a done job has no partial-batch refund.
        if r.state == "done" and totals.refunds > 0:
            problems["refunds without failure"].append(
                f"{tag}: charged {totals.charged}, refunded {totals.refunded}"
            )
    discrepancies = await asyncio.to_thread(stores.ledger.audit)
    problems["audit discrepancies"] = [
        f"{d.user_id} {d.identities}: balance {d.balance}, expected {d.expected}"
        for d in discrepancies
    ]

    # Results: exactly one stored blob per (workflow, unit) for done jobs.
    wids = {r.workflow_id for r in runs if r.workflow_id}
    blobs: dict[tuple[str, str], list[str]] = {}
    files = stores.db["images.files"]
    docs = await asyncio.to_thread(
        lambda: list(files.find({"metadata.workflow_id": {"$in": sorted(wids)}}))
    )
    for doc in docs:
        meta = doc.get("metadata") or {}
        wid = str(meta.get("workflow_id"))
        key = str(meta.get("key", ""))
        unit = key[len(wid) + 1 :].split(":", 1)[0] if key.startswith(wid + ":") else "?"
        blobs.setdefault((wid, unit), []).append(str(doc["_id"]))
    for (wid, unit), ids in sorted(blobs.items()):
        if len(ids) > 1:
            problems["results stored more than once"].append(f"{wid} unit {unit}: blobs {ids}")
    stored_ids = {i for ids in blobs.values() for i in ids}
    for r in runs:
        if r.state != "done":
            continue
        missing = [b for b in r.outputs if b not in stored_ids]
        if not r.outputs or missing:
            problems["results never stored"].append(
                f"#{r.index} {r.kind} {r.workflow_id}: outputs {r.outputs}, missing {missing}"
            )

    if telegram is not None:
        await check_telegram(runs, telegram, counts, problems)
    if discord is not None:
        await check_discord(runs, discord, counts, problems)

    # Informational (the issue does not list them, but each one is a bug): every job that
    # reached a workflow and ended has its history record in the state it ended in, and no
    # job slot is still held once every job has ended.
    problems["history record missing or wrong"] = []
    for r in runs:
        if not r.workflow_id or r.state not in {s.value for s in FINAL_STATES}:
            continue
        record = await asyncio.to_thread(stores.jobs.get, r.workflow_id)
        if record is None or str(record.state) != r.state:
            got = "none" if record is None else str(record.state)
            problems["history record missing or wrong"].append(
                f"#{r.index} {r.kind} {r.workflow_id}: ended {r.state}, record {got}"
            )
    slots = await asyncio.to_thread(lambda: list(stores.db["job_slots"].find({})))
    problems["job slots still held"] = [
        f"user {doc['_id']}: {[e.get('wf') for e in doc.get('running', [])]}"
        for doc in slots
        if doc.get("running")
    ]
    counts["history record missing or wrong"] = len(problems["history record missing or wrong"])
    counts["job slots still held"] = len(problems["job slots still held"])
    for k in MUST_BE_ZERO:
        counts[k] = len(problems.get(k, []))
    latency: dict[str, dict[str, float]] = {}
    groups: list[tuple[str, list[JobRun]]] = [
        (kind, [r for r in runs if r.kind == kind]) for kind in JOB_KINDS
    ]
    groups.append(("via telegram (all kinds)", [r for r in runs if r.platform == "telegram"]))
    groups.append(("via discord (all kinds)", [r for r in runs if r.platform == "discord"]))
    for kind, members in groups:
        times = [
            r.ended_at - r.started_at for r in members if r.ended_at is not None and r.workflow_id
        ]
        if times:
            latency[kind] = {
                "p50": percentile(times, 50),
                "p95": percentile(times, 95),
                "n": float(len(times)),
            }
    for key in (
        "done",
        "failed",
        "cancelled",
        "refused",
        "refused at start",
        "lost",
        "charges",
        "refunds",
        "cancels asked",
        "cancels accepted",
        "telegram jobs",
        "telegram done",
        "telegram photos",
        "discord jobs",
        "discord done",
        "discord images",
    ):
        counts.setdefault(key, 0)
    return dict(counts), problems, latency


def orphans(before: set[int]) -> list[str]:
    """Processes started during the run that still live after the stack stopped."""
    left = []
    for child in psutil.Process().children(recursive=True):
        if child.pid in before:
            continue
        with contextlib.suppress(psutil.Error):
            cmd = " ".join(child.cmdline())
            if "-I -S -c" in cmd:  # the process guardian of workers.processes: exits with us
                continue
            left.append(f"pid {child.pid}: {cmd[:120]}")
    return left


# ------------------------------------------------------------------------------ the run


async def run_chaos(options: ChaosOptions) -> ChaosReport:
    """One full run: start the stack, drive and break it, check the books, stop everything."""
    began = time.monotonic()
    rng = random.Random(options.seed)
    root = Path(tempfile.mkdtemp(prefix="stationthis-chaos-"))
    before = {c.pid for c in psutil.Process().children(recursive=True)}
    window = options.minutes * 60.0
    telegram = BotApiStandin(root)
    discord = DiscordApiStandin(root)
    with contextlib.ExitStack() as cleanup:
        await asyncio.to_thread(telegram.start)
        cleanup.callback(telegram.stop)  # after the stack: the bots are stopped first
        await asyncio.to_thread(discord.start)
        cleanup.callback(discord.stop)
        cleanup.enter_context(chaos_env(options, telegram, discord))
        stack = build_stack(root, options, telegram, discord)
        await asyncio.to_thread(stack.start)
        injector: FaultInjector | None = None
        temporal: Client | None = None
        stores: Stores | None = None
        try:
            endpoints = stack.endpoints
            log.info("stack ready in %.1fs under %s", stack.ready_seconds or 0, root)
            temporal = await connect_temporal(stack.config, endpoints)
            stores = open_stores(stack.config, endpoints)
            jobs = JobsClient(temporal, stores, stack.config)
            driver = Driver(jobs, temporal, stores, options, rng)
            await driver.create_users()
            runs = await asyncio.to_thread(driver.plan, discord)
            injector = FaultInjector(stack, options, rng, telegram)
            injector.apply_standin_faults()
            injector.start(window)
            t0 = time.monotonic()
            gate = asyncio.Semaphore(options.concurrency)
            spread = window * 0.7
            tasks = [
                asyncio.create_task(driver.drive(r, t0 + spread * i / max(1, len(runs)), gate))
                for i, r in enumerate(runs)
            ]
            await asyncio.sleep(max(0.0, t0 + window - time.monotonic()))
            await asyncio.to_thread(injector.stop)
            injector.clear_standin_faults()
            log.info("driving window over; waiting for the last jobs")
            await asyncio.wait(tasks, timeout=options.settle_seconds + 150)
            for t in tasks:
                if not t.done():
                    t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            counts, problems, latency = await check(driver, temporal, stores, telegram, discord)
            job_runs = [asdict(r) for r in driver.runs]
            await asyncio.to_thread(injector.collect_telegram_counts)
            faults = injector.fault_counts()
            unplanned = dict(injector.unplanned)
        finally:
            if injector is not None:
                await asyncio.to_thread(injector.stop)
            if stores is not None:
                stores.close()
            await asyncio.to_thread(stack.stop)
    left = orphans(before)
    problems["orphan processes"] = left
    counts["orphan processes"] = len(left)
    for item in left:
        with contextlib.suppress(psutil.Error, ValueError):
            psutil.Process(int(item.split()[1].rstrip(":"))).kill()
    if injector is not None:
        problems["fault restarts that failed"] = [
            f"{e.kind} at {e.at}s: {e.error}" for e in injector.events if e.error
        ]
    report = ChaosReport(
        options=asdict(options),
        counts=counts,
        latency=latency,
        faults=faults,
        problems=problems,
        unplanned_exits=unplanned,
        seconds=time.monotonic() - began,
        devstack_dir=str(root),
        jobs=job_runs,
    )
    if options.keep_dir or not report.ok:
        log.warning("logs and data kept in %s", root)
    else:
        shutil.rmtree(root, ignore_errors=True)
    return report


def parse_args(argv: list[str] | None = None) -> tuple[ChaosOptions, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=200)
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--concurrency", type=int, default=12, help="jobs in flight at most")
    p.add_argument("--cancel-rate", type=float, default=0.1)
    p.add_argument("--poor-rate", type=float, default=0.2, help="share of users with 12 points")
    p.add_argument("--fault-rate", type=float, default=0.3, help="share of prompts that fail")
    p.add_argument("--faults-per-kind", type=int, default=0, help="kills per process kind")
    p.add_argument("--render-timeout", type=float, default=20.0)
    p.add_argument("--render-time", type=float, default=1.0, help="seconds per stand-in prompt")
    p.add_argument(
        "--telegram-rate", type=float, default=0.35, help="share of users on Telegram (0: none)"
    )
    p.add_argument(
        "--telegram-429", type=int, default=0, help="sendPhoto 429s to arm (0: 1 per 60 s, >= 2)"
    )
    p.add_argument(
        "--discord-rate", type=float, default=0.35, help="share of users on Discord (0: none)"
    )
    p.add_argument("--no-bot-kill", action="store_true", help="never kill -9 either bot")
    p.add_argument("--settle", type=float, default=240.0, help="seconds to wait for last jobs")
    p.add_argument("--keep", action="store_true", help="keep the stack's data and logs")
    p.add_argument("--json", type=Path, help="also write the report as JSON here")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    options = ChaosOptions(
        jobs=args.jobs,
        users=args.users,
        minutes=args.minutes,
        seed=args.seed,
        concurrency=args.concurrency,
        cancel_rate=args.cancel_rate,
        poor_rate=args.poor_rate,
        fault_rate=args.fault_rate,
        faults_per_kind=args.faults_per_kind,
        render_timeout=args.render_timeout,
        render_time=args.render_time,
        telegram_rate=args.telegram_rate,
        telegram_429=args.telegram_429,
        discord_rate=args.discord_rate,
        bot_kills=not args.no_bot_kill,
        settle_seconds=args.settle,
        keep_dir=args.keep,
    )
    return options, args


def main(argv: list[str] | None = None) -> int:
    options, args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "temporalio", "store", "activities", "workers", "pymongo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    report = asyncio.run(run_chaos(options))
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2, default=str) + "\n")
    print(report.table())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
