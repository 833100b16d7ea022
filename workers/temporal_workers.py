"""The Temporal workers: one process per role, each polling the queues of its resource.

- `stationthis worker`: the `stationthis` queue — every workflow, plus the light MongoDB
  activities (prepare, points, history, slots), run in a thread pool since pymongo blocks.
- `stationthis comfy-worker --url URL --slots N`: one per ComfyUI server (`ComfyServerWorkers`).
  It polls the base `comfy` queue and one queue per checkpoint its server has, holding at most
  N prompts running plus `COMFY_FEED_AHEAD` waiting in the server's own queue (a GPU runs one),
  so adding a GPU is starting one more of these; its `comfy-io` worker copies finished outputs
  into GridFS without holding a GPU slot.
- `stationthis media-worker`: the `media` queue — Pillow resize/convert as sync activities in a
  thread pool (Pillow releases the GIL), about two per CPU core.
- `stationthis safety-worker`: the `safety` queue — the output classifier (CPU, ONNX), one
  image per core; needs the `safety` extra unless `--classifier marker` (the stand-in's).

Shutdown is graceful: on SIGTERM/SIGINT the workers stop polling and give running activities
`graceful_shutdown_timeout` to finish; what does not finish is retried elsewhere by Temporal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from pymongo.errors import PyMongoError
from temporalio.client import Client
from temporalio.worker import (
    CustomSlotSupplier,
    FixedSizeSlotSupplier,
    PollerBehaviorSimpleMaximum,
    SlotMarkUsedContext,
    SlotPermit,
    SlotReleaseContext,
    SlotReserveContext,
    Worker,
    WorkerTuner,
)

from activities.collections import CollectionActivities
from activities.comfy import ComfyActivities, RenderPace
from activities.jobs import JobActivities
from activities.media import MediaActivities
from activities.media_jobs import MediaJobActivities
from activities.safety import SafetyActivities
from activities.training import DatasetMediaActivities, TrainingActivities, TrainingComfyActivities
from comfy.client import ComfyClient, ComfyError
from domain.inventory import Requirements, ServerInventory
from domain.routing import able_to_run, checkpoint_queue
from media.classifier import Classifier
from services.training_plans import TrainingPlanner
from store.db import Stores
from store.gpu_idle import IDLE_REFRESH, IDLE_SETTLE
from workers.config import Config
from workflows.registry import ALL_WORKFLOWS, sandbox_runner, warm_bytecode

log = logging.getLogger(__name__)

GRACE = timedelta(seconds=20)


def workflow_worker(
    client: Client, config: Config, stores: Stores, executor: ThreadPoolExecutor
) -> Worker:
    jobs = JobActivities(
        stores,
        routing=config.routing(),
        max_loras=config.max_loras_per_prompt,
        checkpoints=config.checkpoints,
    )
    media_jobs = MediaJobActivities(
        stores,
        routing=config.routing(),
        upscale_models={int(k): v for k, v in config.upscale_models.items()},
    )
    warm_bytecode()  # the sandbox re-imports workflow modules per run: from bytecode, not source
    return Worker(
        client,
        task_queue=config.task_queues.workflows,
        workflows=ALL_WORKFLOWS,
        workflow_runner=sandbox_runner(),
        activities=[
            *jobs.all(),
            *media_jobs.all(),
            *CollectionActivities(stores).all(),
            *training_activities(config, stores).all(),
        ],
        activity_executor=executor,
        max_concurrent_activities=config.workflow_worker_threads,
        graceful_shutdown_timeout=GRACE,
    )


FEED_AHEAD_PAUSE = 0.5  # seconds; see ServerSlots._feed_after
# Seconds a server that interrupted a render it had just started (an idle server ends it
# sooner) polls nothing, so that it does not take the retry straight back: the hand-back's
# retry delay, the other server's poll, and a margin (see ServerSlots.pause_polls).
MOVED_PAUSE = 1.0


class _QueuePermit(SlotPermit):
    """A reserved slot, remembering the queue whose poll reserved it."""

    def __init__(self, queue: str) -> None:
        self.queue = queue


class ServerSlots(CustomSlotSupplier):
    """The prompts one ComfyUI server holds at once, shared by the workers of all its queues.

    Capacity is the server's slots plus the feed-ahead: with one slot and a feed-ahead of 1 the
    worker holds two prompts, one running and the next waiting in ComfyUI's own queue, so the
    GPU starts it the moment the first ends (no Temporal round trip in between).

    A poll needs a reserved slot, and a reservation counts against the capacity until its
    poll brought nothing or its task is done (the SDK reserves the next poll's slot before it
    marks the last one used: counting only used slots let one more task in). So that no queue
    starves while the others' polls hold the reservations, a queue without a reservation of its
    own may still poll while fewer than `capacity` prompts are held; the server then holds at
    most `capacity - 1 + queues` (the extra ones wait in its queue and are handed back when the
    worker stops).

    Called from the SDK's core threads (mark and release) and from the worker's event loop
    (reserve): a lock guards the counts and waiters are woken through their loop.
    """

    def __init__(self, capacity: int, running: int | None = None) -> None:
        self.capacity = max(1, capacity)
        # Prompts the server runs at once (the rest of `capacity` is fed ahead).
        self.running = max(1, min(self.capacity, running or self.capacity))
        # Feed-ahead paused: a fed-ahead prompt was handed back to a server that was idle
        # (end of a backlog); polling only for what runs at once until a running one ends,
        # so this server does not take the same prompt straight back.
        self.held = False
        self.used = 0
        # Since when a GPU slot is free (wall clock, UTC), None while every one renders: the
        # server's "idle on its queues" record (store/gpu_idle.py) says it to busy servers.
        # None too until the first poll: a worker still starting (connecting, reading its
        # server's inventory) takes nothing yet, so nothing may be handed to it.
        self.idle_since: datetime | None = None
        self._polled = False
        self._watchers: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        # A server that leaves an idle spell (the end of a backlog: busy servers hand their
        # fed-ahead prompts back to it) polls no fed-ahead prompt for FEED_AHEAD_PAUSE, so a
        # second prompt handed back at the same moment goes to another idle server's waiting
        # poll instead of queueing behind this one's render. Costs nothing while renders are
        # longer than the pause (the fed-ahead prompt still arrives before the render ends).
        self._feed_after = 0.0  # monotonic time before which no fed-ahead poll is made
        self._poll_after = 0.0  # monotonic time before which no poll at all is made
        self._polls_resume = datetime.now(UTC)  # the same instant, wall clock (for the record)
        self.reserved: dict[str, int] = {}
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def _may_poll(self, queue: str) -> bool:
        if time.monotonic() < self._poll_after:
            return False  # it just gave a running render away (see pause_polls)
        capacity = self.running if self.held else self.capacity
        if self.used >= self.running and time.monotonic() < self._feed_after:
            return False  # just left an idle spell: no fed-ahead prompt yet (see __init__)
        if self.used + sum(self.reserved.values()) < capacity:
            return True
        return self.reserved.get(queue, 0) == 0 and self.used < capacity

    def watch(self, event: asyncio.Event) -> None:
        """Set `event` (through its loop) whenever `idle_since` changes."""
        with self._lock:
            self._watchers.append((asyncio.get_running_loop(), event))

    def _idle_changed(self) -> None:
        """Recompute `idle_since` from `used` (called holding the lock); tell the watchers."""
        idle = self.used < self.running and self._polled
        if idle == (self.idle_since is not None):
            return
        now = datetime.now(UTC)
        # Only a spell long enough to be claimed (store/gpu_idle.py) may have hand-backs
        # racing towards it; a short gap within a backlog does not pause the feed-ahead.
        if not idle and self.idle_since is not None and now - self.idle_since >= IDLE_SETTLE:
            self._feed_after = time.monotonic() + FEED_AHEAD_PAUSE
        self.idle_since = now if idle else None
        for loop, event in self._watchers:
            with contextlib.suppress(RuntimeError):  # its loop closed
                loop.call_soon_threadsafe(event.set)

    def hold_feed_ahead(self) -> None:
        """Poll no fed-ahead prompt until one of the running prompts ends."""
        with self._lock:
            self.held = True

    def pause_polls(self, seconds: float) -> None:
        """Poll nothing for `seconds`: this server interrupts a render it has just started so
        that an idle, faster server takes it; its own GPU slot frees at once, and a poll now
        would most likely bring that very render back."""
        with self._lock:
            if time.monotonic() + seconds > self._poll_after:
                self._poll_after = time.monotonic() + seconds
                self._polls_resume = datetime.now(UTC) + timedelta(seconds=seconds)

    def polls_paused(self) -> bool:
        """Whether polls are paused (`pause_polls`): a task that arrives now came from a poll
        made before the pause, and is handed back (activities/comfy.py)."""
        return time.monotonic() < self._poll_after

    def claimable_idle_since(self) -> datetime | None:
        """`idle_since` as other servers may rely on it: while polls are paused this server
        takes nothing, so its idle spell counts from the end of the pause (a fixed instant, so
        refreshing the record keeps the same spell)."""
        with self._lock:
            since = self.idle_since
            if since is None or time.monotonic() >= self._poll_after:
                return since
            return max(since, self._polls_resume)

    async def reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit:
        while True:
            event = asyncio.Event()
            with self._lock:
                if self._may_poll(ctx.task_queue):
                    self.reserved[ctx.task_queue] = self.reserved.get(ctx.task_queue, 0) + 1
                    if not self._polled:  # the first poll: idle from now (see __init__)
                        self._polled = True
                        self._idle_changed()
                    return _QueuePermit(ctx.task_queue)
                self._waiters.append((asyncio.get_running_loop(), event))
                pause = max(self._feed_after, self._poll_after) - time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), pause if pause > 0 else None)

    def try_reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit | None:
        return None  # eager dispatch never applies: no workflow runs on a comfy queue

    def _unreserve(self, permit: SlotPermit) -> None:
        queue = permit.queue if isinstance(permit, _QueuePermit) else ""
        if self.reserved.get(queue, 0) > 0:
            self.reserved[queue] -= 1

    def mark_slot_used(self, ctx: SlotMarkUsedContext) -> None:
        with self._lock:
            self._unreserve(ctx.permit)
            self.used += 1
            self._idle_changed()
        self._wake()

    def release_slot(self, ctx: SlotReleaseContext) -> None:
        with self._lock:
            if ctx.slot_info is None:
                self._unreserve(ctx.permit)  # reserved for a poll that brought nothing
            else:
                self.used = max(0, self.used - 1)
                if self.used < self.running:
                    self.held = False
                self._idle_changed()
        self._wake()

    def _wake(self) -> None:
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # its loop closed
                loop.call_soon_threadsafe(event.set)

    def tuner(self) -> WorkerTuner:
        """A tuner whose activity slots are these (the others unused by a comfy worker)."""
        return WorkerTuner.create_composite(
            workflow_supplier=FixedSizeSlotSupplier(2),
            activity_supplier=self,
            local_activity_supplier=FixedSizeSlotSupplier(1),
            nexus_supplier=FixedSizeSlotSupplier(1),
        )


INVENTORY_REFRESH = 600.0  # seconds between reads of a server's /object_info
CAPABILITY_RECHECK = 2.0  # seconds between reads of the capability queues planners recorded
MISSING_RECHECK = 2.0  # a lost model re-reads the server's list at most this often


class ComfyServerWorkers:
    """The workers of one ComfyUI server: model-aware, pull-based, fed ahead.

    It polls the base `comfy` queue (prompts that load no checkpoint), one queue per
    checkpoint its server has (`comfy:ckpt:<file>`, domain/routing.py) and every capability
    queue (`comfy:cap:<hash>`) whose needs its server meets, all sharing one `ServerSlots`; and
    `comfy-io` (copying outputs, off the GPU slot). The inventory is read from the server at
    start and every `refresh_every` seconds (and recorded), the capability queues planners
    recorded every `capability_every` seconds: a new file or capability starts a queue's
    worker, a lost one stops it, and an activity that finds its checkpoint gone hands its
    prompt back (activities/comfy.py). Its folder is
    `comfyui_dir`, else the configured one (COMFYUI_DIRS / COMFYUI_DIR); never what the server
    reports about itself.
    """

    def __init__(
        self,
        client: Client,
        config: Config,
        stores: Stores,
        url: str,
        slots: int,
        *,
        comfyui_dir: Path | None = None,
        feed_ahead: int | None = None,
        refresh_every: float = INVENTORY_REFRESH,
        capability_every: float = CAPABILITY_RECHECK,
    ) -> None:
        self.client = client
        self.config = config
        self.stores = stores
        self.url = url.rstrip("/")
        self.queues = config.task_queues
        ahead = config.comfy_feed_ahead if feed_ahead is None else feed_ahead
        self.slots = ServerSlots(slots + max(0, ahead), running=slots)
        # How long this server's renders take (activities/comfy.py), shared with its record.
        self.pace = RenderPace()
        # This server's pollers, told apart from other servers' on the same task queues.
        self.identity = f"{client.identity}|{self.url}"
        self.refresh_every = refresh_every
        self.capability_every = capability_every
        folder = comfyui_dir or config.comfyui_dir_for(url)
        if folder is None:
            log.error(
                "no folder configured for the ComfyUI server %s (COMFYUI_DIRS or COMFYUI_DIR): "
                "it renders, but training and LoRA files are refused on it",
                url,
            )
        self.training = TrainingComfyActivities(
            url, client, stores, comfyui_dir=folder, cache_bytes=config.lora_cache_bytes
        )
        self.acts = ComfyActivities(
            url,
            client,
            stores.blobs,
            ensure_loras=self.training.ensure_loras,
            max_output_bytes=config.comfy_max_output_bytes,
            missing_models=self.missing,
            better_elsewhere=self.better_elsewhere if ahead > 0 else None,
            pace=self.pace,
            polls_paused=self.slots.polls_paused,
        )
        self.checkpoints: set[str] | None = None  # None: the server's list was never read
        self.inventory: ServerInventory | None = None  # the server as last read
        self.capabilities: dict[str, list[Requirements]] = {}  # capability queue -> needs
        self._running: dict[str, tuple[Worker, asyncio.Task[None]]] = {}
        self._checked_at = 0.0
        self._lock = asyncio.Lock()
        self._stopping: set[asyncio.Task[None]] = set()  # workers of lost queues, shutting down

    def _gpu_worker(self, queue: str) -> Worker:
        return Worker(
            self.client,
            task_queue=queue,
            activities=[self.acts.run_comfy_prompt, self.training.train_lora_chunk],
            tuner=self.slots.tuner(),
            identity=self.identity,
            # One poll per queue: a poll holds a reservation of the shared slots.
            activity_task_poller_behavior=PollerBehaviorSimpleMaximum(1),
            # Progress must reach the server within about a second of ComfyUI reporting it.
            max_heartbeat_throttle_interval=timedelta(seconds=1),
            graceful_shutdown_timeout=GRACE,
        )

    async def better_elsewhere(self, queue: str, faster_than: float | None = None) -> bool:
        """Whether a prompt of this server should go back to `queue`: another live server has
        been idle on that queue for a moment (so its backlog is empty, and that GPU, idle at
        the end of a backlog, takes the prompt instead of waiting for this one); for a render
        already running here (`faster_than` given), one whose renders take at most that long.
        Read from the workers' own idle records (store/gpu_idle.py), not from Temporal's
        backlog count and poller list, which lag by seconds and minutes. The idle server is
        claimed, so it attracts no other hand-back this idle spell; and this server stops
        feeding ahead until its running prompt ends (or, giving its running render away,
        polls nothing for MOVED_PAUSE), so it does not take the prompt back."""
        claimed = await asyncio.to_thread(
            self.stores.gpu_idle.claim, queue, self.identity, faster_than=faster_than
        )
        if claimed is None:
            return False
        if faster_than is None:
            log.info(
                "%s: %s is idle on %s: handing a fed-ahead prompt back", self.url, claimed, queue
            )
            self.slots.hold_feed_ahead()
        else:
            log.info(
                "%s: %s is idle on %s and renders in <= %.2f s: handing a render just started back",
                self.url,
                claimed,
                queue,
                faster_than,
            )
            self.slots.pause_polls(MOVED_PAUSE)
        return True

    async def report_idle(self, stop: asyncio.Event) -> None:
        """Keep this worker's idle record (store/gpu_idle.py) current: at once when its
        server's free GPU slots change, and every IDLE_REFRESH seconds (so a dead worker's
        record goes stale and attracts nothing). MongoDB not answering is logged and retried:
        meanwhile the record ages out and this server attracts no hand-back."""
        changed = asyncio.Event()
        self.slots.watch(changed)
        while not stop.is_set():
            changed.clear()
            try:
                await asyncio.to_thread(
                    self.stores.gpu_idle.record,
                    self.identity,
                    sorted(self.polled),
                    self.slots.claimable_idle_since(),
                    render_seconds=self.pace.seconds,
                )
            except PyMongoError as err:
                log.warning("%s: idle record not written: %s", self.url, err)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), IDLE_REFRESH)

    def _io_worker(self) -> Worker:
        return Worker(
            self.client,
            task_queue=self.queues.comfy_io,
            activities=[self.acts.store_comfy_outputs],
            max_concurrent_activities=max(4, 2 * self.slots.capacity),
            graceful_shutdown_timeout=GRACE,
        )

    def wanted_queues(self) -> set[str]:
        """The base queue, one per checkpoint the server has, and every recorded capability
        queue the server can serve (all as last read)."""
        base = self.queues.comfy
        able = {
            queue
            for queue, alternatives in self.capabilities.items()
            if self.inventory is not None and able_to_run(self.inventory, alternatives)
        }
        return {base, *(checkpoint_queue(base, c) for c in self.checkpoints or ()), *able}

    @property
    def polled(self) -> set[str]:
        """The GPU queues polled now."""
        return set(self._running)

    async def refresh(self) -> None:
        """Read the server's checkpoints, record them, and poll exactly their queues."""
        async with self._lock:
            inv = await read_inventory(self.url)
            self._checked_at = time.monotonic()
            if inv is None:
                return  # the server did not answer: keep polling what we polled
            await asyncio.to_thread(self.stores.inventory.record_server, inv)
            self.inventory = inv
            self.checkpoints = set(inv.models.get("checkpoints", ()))
            await self._sync_queues()

    async def recheck_capabilities(self) -> None:
        """Re-read the capability queues planners recorded and poll those the server can run;
        MongoDB not answering keeps the queues polled now (tried again on the next tick)."""
        async with self._lock:
            try:
                await self._sync_queues()
            except PyMongoError as err:
                log.warning("%s: capability queues not read: %s", self.url, err)

    async def _sync_queues(self) -> None:
        """Poll exactly `wanted_queues()` (called holding the lock)."""
        if self.inventory is not None:
            self.capabilities = await asyncio.to_thread(
                self.stores.inventory.capabilities, self.queues.comfy
            )
        wanted = self.wanted_queues()
        for queue in sorted(wanted - set(self._running)):
            worker = self._gpu_worker(queue)
            self._running[queue] = (worker, asyncio.create_task(worker.run()))
            log.info("%s: polling %s", self.url, queue)
        lost = [q for q in self._running if q not in wanted]
        for queue in lost:
            worker, _task = self._running.pop(queue)
            log.warning("%s: model or node gone, no longer polling %s", self.url, queue)
            # Not awaited here: the activity that found the model gone may be running on
            # this very worker, and its shutdown waits for it (up to the grace).
            stopping = asyncio.create_task(worker.shutdown())
            self._stopping.add(stopping)
            stopping.add_done_callback(self._stopping.discard)

    async def missing(self, needed: list[str], fresh: bool = False) -> list[str]:
        """The files of `needed` the server lacks, by its last read list; with `fresh` (ComfyUI
        just refused the graph) or a file not on that list, the list is read again first (at
        most every MISSING_RECHECK seconds), which stops the polling of the queues it lost."""
        have = self.checkpoints
        known = have is not None and all(n in have for n in needed)
        if known and not fresh:
            return []
        if time.monotonic() - self._checked_at >= MISSING_RECHECK or fresh:
            await self.refresh()
        have = self.checkpoints
        if have is None:
            return []  # unknown: let ComfyUI's validation decide
        return [n for n in needed if n not in have]

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until `stop` is set, re-reading the inventory on schedule; then shut down
        gracefully (a fed-ahead prompt that has not started is handed back at once)."""
        io = self._io_worker()
        io_task = asyncio.create_task(io.run())
        await self.refresh()
        if not self._running:  # the server did not answer: at least the base queue
            worker = self._gpu_worker(self.queues.comfy)
            self._running[self.queues.comfy] = (worker, asyncio.create_task(worker.run()))
        reporting = asyncio.Event()  # set: stop reporting idleness
        reporter = asyncio.create_task(self.report_idle(reporting))
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        stop.wait(), min(self.refresh_every, self.capability_every)
                    )
                if stop.is_set():
                    break
                if time.monotonic() - self._checked_at >= self.refresh_every:
                    await self.refresh()
                else:
                    await self.recheck_capabilities()
                for _worker, task in list(self._running.values()):
                    if task.done():
                        task.result()  # a worker died: surface its error
        finally:
            # First of all: a stopping server must attract no hand-back.
            reporting.set()
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reporter
            try:
                await asyncio.to_thread(self.stores.gpu_idle.forget, self.identity)
            except PyMongoError as err:
                log.warning("%s: idle record not deleted (it ages out): %s", self.url, err)
            log.info("stopping comfy workers of %s (grace %ss)", self.url, GRACE.total_seconds())
            workers = [w for w, _t in self._running.values()] + [io]
            await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
            io_task.cancel()
        await self.acts.aclose()


async def read_inventory(url: str) -> ServerInventory | None:
    """What server `url` has: node types, each node's required inputs, the model files per
    folder and its version (its whole /object_info); None if it did not answer."""
    try:
        async with ComfyClient(url, timeout=10.0) as comfy:
            return (await comfy.inventory()).model_copy(update={"url": url})
    except (ComfyError, OSError, httpx.HTTPError) as err:
        log.warning("inventory of %s not read: %s", url, err)
        return None


async def record_inventory(stores: Stores, url: str) -> bool:
    """Record the node types and model files server `url` has (store/inventory.py), so a job
    no server can run is refused before its charge; False if the server did not answer (its
    last record stays and ages out)."""
    inv = await read_inventory(url)
    if inv is None:
        return False
    await asyncio.to_thread(stores.inventory.record_server, inv)
    log.info(
        "inventory of %s: %d node type(s), %d checkpoint(s)",
        url,
        len(inv.node_types),
        len(inv.models.get("checkpoints", ())),
    )
    return True


def training_activities(config: Config, stores: Stores) -> TrainingActivities:
    return TrainingActivities(stores, training_planner(config, stores))


def training_planner(config: Config, stores: Stores) -> TrainingPlanner:
    """The configured training planner: the prepare activities and the jobs client share it."""
    return TrainingPlanner(
        stores,
        routing=config.routing(),
        chunk_steps=config.training_chunk_steps,
        training_checkpoints=config.training_checkpoints,
    )


def media_slots() -> int:
    """Default concurrency of the media worker: two per CPU core (decoding and encoding release
    the GIL; reading and storing blobs wait on MongoDB)."""
    return 2 * (os.cpu_count() or 1)


def media_worker(
    client: Client,
    config: Config,
    stores: Stores,
    executor: ThreadPoolExecutor,
    slots: int | None = None,
) -> Worker:
    """The `media` queue worker; `executor` needs at least `slots` threads (default
    `media_slots()`)."""
    acts = MediaActivities(stores.blobs)
    dataset_acts = DatasetMediaActivities(stores.blobs)
    return Worker(
        client,
        task_queue=config.task_queues.media,
        activities=[*acts.all(), *dataset_acts.all()],
        activity_executor=executor,
        max_concurrent_activities=slots or media_slots(),
        graceful_shutdown_timeout=GRACE,
    )


def safety_worker(
    client: Client,
    config: Config,
    stores: Stores,
    executor: ThreadPoolExecutor,
    classifier: Classifier,
    slots: int,
) -> Worker:
    """The `safety` queue worker: the output classifier, on the CPU, off the GPU slot. One
    image per core at a time (`slots`); `executor` needs at least `slots` threads."""
    return Worker(
        client,
        task_queue=config.task_queues.safety,
        activities=SafetyActivities(stores, classifier).all(),
        activity_executor=executor,
        max_concurrent_activities=slots,
        graceful_shutdown_timeout=GRACE,
    )


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def run_until_signalled(workers: list[Worker]) -> None:
    """Run workers until SIGINT/SIGTERM, then shut them down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(w.run()) for w in workers]
    waiter = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
    if waiter not in done:
        for t in done:
            t.result()  # a worker died: surface its error
    log.info("stopping workers (grace %ss)", GRACE.total_seconds())
    await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
    waiter.cancel()
