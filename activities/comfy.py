"""Activities that talk to ComfyUI: run one prompt (queue `comfy`) and store its outputs into
GridFS, in the same activity for jobs that ask (`ComfyRunInput.store_for`) or in a separate one
(queue `comfy-io`) for older jobs and captioning.

One `comfy` worker serves one ComfyUI server with as many slots as the server runs prompts at
once. Storing in the render's own activity holds its slot for the copy (tens of ms from the
server beside it) but saves a Temporal round trip per image: an activity's three history events
and the workflow task that schedules it (issue 17 item 3; docs/performance.md).

Crash safety: prompt ids are derived from (workflow id, unit, attempt), and the heartbeat
records which server and prompt an attempt submitted. A retry first re-attaches to the earlier
prompt (still queued, running or finished on the server) and only submits anew when the server
has no trace of it, so a worker killed mid-render does not render twice.

The GPU pool (README "GPU pool"): a worker holds more prompts than its server runs at once (the
feed-ahead), so the next prompt already waits in ComfyUI's own queue. Such a prompt is handed
back to Temporal (dequeued from the server, the attempt failed as retryable `ComfyHandedBack`)
when its worker shuts down, and so is any prompt whose checkpoint the server no longer has
(`ComfyModelMissing`): the retry is matched to another worker of the same queue, whose server
has the model. The charge is the workflow's, keyed per run, so a hand-back never charges again.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from PIL import Image
from pydantic import BaseModel
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities import metrics
from activities.heartbeat import heartbeat_forever
from comfy.client import ComfyClient
from comfy.errors import ComfyError, ComfyValidationError, PromptLost
from comfy.models import OutputFile, RunResult
from comfy.models import Progress as ComfyProgress
from domain.jobs import (
    COMFY_MAX_FAILED_ATTEMPTS,
    ActivityNames,
    ComfyRunInput,
    ComfyRunResult,
    LoraFile,
    OutputRef,
    RenderBeat,
    StoredOutput,
    StoreOutputsInput,
)
from domain.routing import checkpoints_needed
from store.blobs import BlobNotFound, BlobStore

log = logging.getLogger(__name__)

HEARTBEAT_EVERY = 2.0  # seconds, also while a prompt waits in ComfyUI's queue


# Heartbeat details of a render attempt: where its prompt is, and how far (domain.jobs).
Attempt = RenderBeat


def prompt_id_for(workflow_id: str, index: int, attempt: int, run_id: str | None = None) -> str:
    """The prompt id an attempt submits: derived, so the next attempt can find it.

    The run id is part of it: a run an operator reset (`temporal workflow reset`, a new run of
    the same workflow id, attempts counted from 1 again) must render anew, neither re-attach to
    the replaced run's prompt nor be interrupted when that run's activity is cancelled.
    """
    suffix = f":{run_id}" if run_id else ""
    return str(
        uuid.uuid5(uuid.NAMESPACE_URL, f"stationthis:{workflow_id}:{index}:{attempt}{suffix}")
    )


class PromptRef(Protocol):
    """Where an attempt submitted its prompt (the heartbeat details of every ComfyUI activity)."""

    server_url: str
    prompt_id: str


BeatT = TypeVar("BeatT", bound=BaseModel)
RefT = TypeVar("RefT", bound=PromptRef)


def earlier_prompts(model: type[BeatT], previous: BeatT | None) -> list[BeatT]:
    """The prompts earlier attempts of this activity may have left on a server: the one in the
    last heartbeat, then the one the previous attempt's derived id names (its heartbeat may
    not have reached the server before it died)."""
    found: list[BeatT] = []
    details = activity.info().heartbeat_details
    if details:
        with contextlib.suppress(Exception):
            found.append(model.model_validate(details[0]))
    if previous is not None:
        found.append(previous)
    return found


async def follow_earlier_prompt(
    comfy: ComfyClient,
    server_url: str,
    candidates: Sequence[RefT],
    *,
    remember: Callable[[RefT], None],
    on_progress: Callable[[ComfyProgress], Awaitable[None]],
    timeout: float,
) -> RunResult | None:
    """Re-attach to the first candidate this server still knows, instead of rendering again.

    A candidate on another server (the retry landed on another GPU) is asked to stop there;
    one the server has forgotten (restart) is skipped. None means: submit anew.
    """
    for earlier in candidates:
        if not earlier.prompt_id:
            continue  # the beat of a hand-back: no prompt left behind
        if earlier.server_url != server_url:
            with contextlib.suppress(Exception):
                async with ComfyClient(earlier.server_url, timeout=5) as other:
                    await other.cancel(earlier.prompt_id)
            continue
        remember(earlier)
        try:
            return await comfy.wait(earlier.prompt_id, on_progress=on_progress, timeout=timeout)
        except PromptLost:
            continue
    return None


def _handed_back_so_far() -> int:
    """How many earlier attempts of this activity handed their prompt back (their count is in
    the last heartbeat details; a lost beat undercounts, which only gives up sooner)."""
    details = activity.info().heartbeat_details
    if not details:
        return 0
    try:
        return Attempt.model_validate(details[0]).handed_back
    except Exception:
        return 0


def _handed_back_last() -> bool:
    """Whether the last attempt handed its prompt back (its beat names no prompt): that prompt
    was dequeued or interrupted, so a retry on the same server renders anew instead of
    re-attaching to it (an interrupted prompt would fail the retry)."""
    details = activity.info().heartbeat_details
    if not details:
        return False
    try:
        return Attempt.model_validate(details[0]).prompt_id == ""
    except Exception:
        return False


def to_application_error(err: ComfyError) -> ApplicationError:
    """Keep the client's verdict on retrying; the type names the failure for the workflow."""
    return ApplicationError(err.message, type=type(err).__name__, non_retryable=not err.retryable)


EnsureLoras = Callable[[list[LoraFile]], Awaitable[None]]
# Given the checkpoint files a graph loads, the ones the server does not have: from the worker's
# last read of its server's list, or (fresh=True) from a new read; a file found lost stops the
# worker polling its queue.
MissingModels = Callable[[list[str], bool], Awaitable[list[str]]]

# How soon a handed-back prompt is tried again (on another worker): at once, not after the
# policy's backoff, since nothing is wrong with the job.
HAND_BACK_DELAY = timedelta(milliseconds=100)
# Whether a prompt on this server would end sooner on another: another live server has been
# idle on its task queue for a moment, so that queue has no backlog left (the end of a backlog
# on a pool of unequal GPUs). Given the task queue and, for a render already running here, the
# most seconds the other server's renders may take (None: a prompt still waiting in this
# server's queue, which any idle server starts sooner); workers/temporal_workers.py,
# store/gpu_idle.py.
BetterElsewhere = Callable[[str, float | None], Awaitable[bool]]
FED_AHEAD_CHECK = 0.25  # seconds between such checks while a prompt waits or has just started
# What moving a running render costs, in seconds: the interrupt, the failed attempt, the retry
# delay, the other server's poll and submit, and a margin for the estimates. A render that has
# started here moves only when an idle server would end it at least this much sooner.
MOVE_COST = 0.75


class RenderPace:
    """How long this server's renders take (a moving average of ComfyUI's own execution
    times) and when each running prompt started: what lets a busy server tell whether an idle
    one would end a render it has just started sooner (the end of a backlog, README "GPU
    pool"). Unknown until the first render: no estimate, no such move."""

    WEIGHT = 0.3  # of the newest render in the average

    def __init__(self) -> None:
        self.seconds: float | None = None
        self._started: dict[str, float] = {}  # prompt id -> monotonic time it began running

    def observe(self, seconds: float | None) -> None:
        if seconds is None or seconds <= 0:
            return
        last = self.seconds
        self.seconds = seconds if last is None else last + self.WEIGHT * (seconds - last)

    def started(self, prompt_id: str) -> None:
        self._started.setdefault(prompt_id, time.monotonic())

    def ended(self, prompt_id: str) -> None:
        self._started.pop(prompt_id, None)

    def remaining(self, prompt_id: str) -> float | None:
        """Seconds the running prompt still needs by the average; None if it has not started
        (or nothing is known)."""
        began = self._started.get(prompt_id)
        if began is None or self.seconds is None:
            return None
        return self.seconds - (time.monotonic() - began)


class HandedBack(Exception):
    """The attempt gives its prompt back to the task queue (see the module docstring)."""

    def __init__(self, message: str, error_type: str) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type

    def to_application_error(self) -> ApplicationError:
        return ApplicationError(
            self.message, type=self.error_type, next_retry_delay=HAND_BACK_DELAY
        )


class ComfyActivities:
    def __init__(
        self,
        server_url: str,
        client: Client,
        blobs: BlobStore,
        *,
        ensure_loras: EnsureLoras | None = None,
        max_output_bytes: int | None = None,
        missing_models: MissingModels | None = None,
        better_elsewhere: BetterElsewhere | None = None,
        pace: RenderPace | None = None,
        polls_paused: Callable[[], bool] | None = None,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        # The largest output read from ComfyUI and so stored in GridFS (config
        # COMFY_MAX_OUTPUT_BYTES): a bigger /view answer fails the job, refunded.
        self.max_output_bytes = max_output_bytes
        self.client = client
        self.blobs = blobs
        # Puts the LoRA files a graph names into this server's loras folder (comfy/lora_cache.py)
        self.ensure_loras = ensure_loras
        # Which checkpoints of a graph the server lacks (workers/temporal_workers.py); None: not
        # checked, a missing one fails at ComfyUI's validation as before.
        self.missing_models = missing_models
        # None: a fed-ahead prompt stays on this server until it runs (or the worker stops).
        self.better_elsewhere = better_elsewhere
        self.pace = pace or RenderPace()
        # Whether this server's worker has paused its polls after moving a render that had
        # started here to a faster server: a task that still arrives goes back at once.
        self.polls_paused = polls_paused
        # One long-lived client per server: building an httpx client per call costs ~20 ms of
        # CPU (docs/performance.md). It keeps one WebSocket per prompt, so concurrent
        # activities do not share event streams.
        self.comfy = ComfyClient(self.server_url, max_view_bytes=max_output_bytes)

    async def aclose(self) -> None:
        await self.comfy.aclose()

    def _client_for(self, url: str) -> tuple[ComfyClient, bool]:
        """The shared client for our server, or a temporary one for another (caller closes)."""
        if url.rstrip("/") == self.server_url:
            return self.comfy, False
        return ComfyClient(url, max_view_bytes=self.max_output_bytes), True

    @activity.defn(name=ActivityNames.RUN_COMFY_PROMPT)
    async def run_comfy_prompt(self, inp: ComfyRunInput) -> ComfyRunResult:
        info = activity.info()
        reporter = _Reporter(inp.index)
        beat: dict[str, Any] = {}
        ticker = asyncio.create_task(heartbeat_forever(lambda: beat.get("attempt")))
        comfy = self.comfy
        prompt_id = prompt_id_for(inp.workflow_id, inp.index, info.attempt, info.workflow_run_id)
        handed_back = _handed_back_so_far()
        failed = info.attempt - 1 - handed_back
        if failed >= COMFY_MAX_FAILED_ATTEMPTS:
            ticker.cancel()
            raise ApplicationError(
                f"the render failed {failed} times (hand-backs to another server aside)",
                type="ComfyGaveUp",
                non_retryable=True,
            )
        try:
            result = await self._reattach(comfy, inp, info.attempt, beat, reporter)
            if result is None:
                if self.polls_paused is not None and self.polls_paused():
                    # This server just gave a running render away and polls nothing; a poll
                    # it had already made brought a task (most likely that very render) back.
                    raise HandedBack(
                        f"{self.server_url} has just handed a render to a faster server",
                        "ComfyHandedBack",
                    )
                await self._hand_back_if_missing(inp.work.graph, fresh=False)
                if inp.work.loras and self.ensure_loras is not None:
                    await self.ensure_loras(inp.work.loras)
                graph = await self._with_uploads(comfy, inp)
                beat["attempt"] = Attempt(
                    server_url=self.server_url,
                    prompt_id=prompt_id,
                    index=inp.index,
                    handed_back=handed_back,
                )
                activity.heartbeat(beat["attempt"])

                async def on_progress(p: ComfyProgress) -> None:
                    if p.stage == "running":
                        self.pace.started(prompt_id)
                    await reporter.report(p, beat)

                try:
                    result = await self._run_or_hand_back(
                        comfy,
                        comfy.run(
                            graph,
                            prompt_id=prompt_id,
                            on_progress=on_progress,
                            timeout=inp.timeout_seconds,
                        ),
                        prompt_id,
                    )
                except ComfyValidationError:
                    # Refused: if the server lost the model since its last read, hand back.
                    await self._hand_back_if_missing(inp.work.graph, fresh=True)
                    raise
        except HandedBack as back:
            log.info("prompt for %s[%d] handed back: %s", inp.workflow_id, inp.index, back)
            ticker.cancel()
            # The next attempt reads the count here and does not count this one as failed.
            activity.heartbeat(
                Attempt(server_url="", prompt_id="", index=inp.index, handed_back=handed_back + 1)
            )
            raise back.to_application_error() from None
        except asyncio.CancelledError:
            # The workflow cancelled (user, operator, or timeout): stop the GPU work.
            attempt = beat.get("attempt")
            with contextlib.suppress(Exception):
                await asyncio.shield(comfy.cancel(attempt.prompt_id if attempt else prompt_id))
            raise
        except ComfyError as err:
            log.info("prompt for %s[%d] failed: %s", inp.workflow_id, inp.index, err.message)
            raise to_application_error(err) from err
        finally:
            ticker.cancel()
            self.pace.ended(prompt_id)
        self.pace.observe(result.execution_seconds)
        metrics.render_finished(self.server_url, result.execution_seconds)
        run = _run_result(self.server_url, result)
        if inp.store_for is not None and run.files:
            # A failure here retries the activity, which re-attaches to the finished prompt
            # (no second render) and stores again under the same keys (no second blob).
            run.stored = await self._store(
                StoreOutputsInput(
                    workflow_id=inp.workflow_id,
                    index=inp.index,
                    user_id=inp.store_for,
                    files=run.files,
                    seed=inp.work.seed,
                ),
                # The copy's heartbeats keep the attempt's details: a retry finds its prompt
                # there, and `status()` keeps showing the image as made.
                beat=beat.get("attempt"),
            )
        return run

    async def _hand_back_if_missing(self, graph: dict[str, Any], *, fresh: bool) -> None:
        """Give the prompt back when this server lacks a checkpoint it loads (it was removed
        since the worker polled that checkpoint's queue): another server of the queue runs it."""
        needed = checkpoints_needed(graph)
        if not needed or self.missing_models is None:
            return
        missing = await self.missing_models(needed, fresh)
        if missing:
            raise HandedBack(
                f"{self.server_url} no longer has {', '.join(missing)}", "ComfyModelMissing"
            )

    async def _run_or_hand_back(
        self, comfy: ComfyClient, run: Awaitable[RunResult], prompt_id: str
    ) -> RunResult:
        """Await the run; if the worker shuts down while the prompt still waits in the
        server's queue (fed ahead), take it off that queue and hand it back at once instead of
        holding it through the shutdown grace. Likewise when, while it waits, the task queue
        it came from has run dry and another server polls it (`better_elsewhere`): a faster
        GPU that went idle at the end of a backlog takes it instead of waiting out this
        server's render. A prompt already running is left to finish, but for one case: it
        has only just started and an idle server is so much faster that it would end it
        `MOVE_COST` sooner (a fast GPU that went idle just after this slow one started its
        last prompt, bench/gpu_pool.py); then it is interrupted and handed back."""
        running = asyncio.ensure_future(run)
        stopping = asyncio.ensure_future(activity.wait_for_worker_shutdown())
        elsewhere = asyncio.ensure_future(self._until_better_elsewhere(comfy, prompt_id))
        try:
            await asyncio.wait({running, stopping, elsewhere}, return_when=asyncio.FIRST_COMPLETED)
            if not running.done() and await _dequeue_if_pending(comfy, prompt_id):
                running.cancel()
                with contextlib.suppress(BaseException):
                    await running
                why = (
                    "is shutting down"
                    if stopping.done()
                    else "is busy while another server is idle on its queue"
                )
                raise HandedBack(
                    f"{self.server_url} {why}; the prompt had not started", "ComfyHandedBack"
                )
            if (
                not running.done()
                and not stopping.done()
                and elsewhere.done()
                and elsewhere.result() == "running"
                and await _interrupt(comfy, prompt_id)
            ):
                running.cancel()
                with contextlib.suppress(BaseException):
                    await running
                raise HandedBack(
                    f"{self.server_url} had just started the render; an idle server ends it sooner",
                    "ComfyHandedBack",
                )
            return await running
        finally:
            stopping.cancel()
            elsewhere.cancel()
            if not running.done():
                running.cancel()

    async def _until_better_elsewhere(self, comfy: ComfyClient, prompt_id: str) -> str:
        """Return ("pending" or "running") once the prompt would end sooner on another server:
        while it waits behind another here, any server idle on its queue; once it runs, an
        idle server whose renders take `MOVE_COST` less than what is left of this one. Never
        for a render that has run long enough, and never without `better_elsewhere`."""
        if self.better_elsewhere is None or activity.info().attempt > 1:
            # At most one such hand-back per render: "another server is idle" can be wrong (its
            # record is up to IDLE_FRESH old, or it took other work meanwhile), and a retry
            # that came back here would be handed back again and again until its attempts ran
            # out.
            await asyncio.Event().wait()
        queue = activity.info().task_queue
        while True:
            await asyncio.sleep(FED_AHEAD_CHECK)
            left = self.pace.remaining(prompt_id)
            if left is not None:  # running: only a much faster idle server is worth the move
                budget = left - MOVE_COST
                if budget <= 0:
                    await asyncio.Event().wait()  # too late to gain anything by moving it
                assert self.better_elsewhere is not None
                with contextlib.suppress(Exception):
                    if await self.better_elsewhere(queue, budget):
                        return "running"
                continue
            try:
                position = await comfy.queue_position(prompt_id)
            except ComfyError:
                continue
            if position is None:
                await asyncio.Event().wait()  # done or unknown: nothing to give back
            if position == 0:
                if self.pace.seconds is None:
                    await asyncio.Event().wait()  # no estimate: a running render stays here
                continue  # running (its start not seen yet) or next: decided once it runs
            assert self.better_elsewhere is not None
            with contextlib.suppress(Exception):
                if await self.better_elsewhere(queue, None):
                    return "pending"

    async def _reattach(
        self,
        comfy: ComfyClient,
        inp: ComfyRunInput,
        attempt: int,
        beat: dict[str, Any],
        reporter: _Reporter,
    ) -> RunResult | None:
        """Follow the prompt an earlier attempt submitted, if this server still knows it."""
        previous = (
            Attempt(
                server_url=self.server_url,
                prompt_id=prompt_id_for(
                    inp.workflow_id, inp.index, attempt - 1, activity.info().workflow_run_id
                ),
            )
            if attempt > 1 and not _handed_back_last()
            else None
        )

        async def on_progress(p: ComfyProgress) -> None:
            await reporter.report(p, beat)

        found = await follow_earlier_prompt(
            comfy,
            self.server_url,
            earlier_prompts(Attempt, previous),
            remember=lambda earlier: beat.__setitem__(
                "attempt", earlier.model_copy(update={"index": inp.index})
            ),
            on_progress=on_progress,
            timeout=inp.timeout_seconds,
        )
        if found is not None:
            log.info("re-attached to prompt %s of %s", found.prompt_id, inp.workflow_id)
        return found

    async def _with_uploads(self, comfy: ComfyClient, inp: ComfyRunInput) -> dict[str, Any]:
        graph = {k: dict(v) for k, v in inp.work.graph.items()}
        owner = inp.work.owner_id
        for node_id, blob_id in inp.work.uploads.items():
            try:
                if owner:  # owner-checked again, and marked used by this (charged) job
                    data = await asyncio.to_thread(
                        self.blobs.get_owned, blob_id, owner, used_by=inp.workflow_id
                    )
                else:  # a plan made before uploads named their owner: prepare checked it
                    data = await asyncio.to_thread(self.blobs.get, blob_id)
            except BlobNotFound:
                raise ApplicationError(
                    f"source image {blob_id!r} not found", type="bad_input", non_retryable=True
                ) from None
            name = await comfy.upload_image(data, f"{blob_id}.png", overwrite=True)
            node = graph[node_id]
            node["inputs"] = {**node.get("inputs", {}), "image": name}
        return graph

    @activity.defn(name=ActivityNames.STORE_COMFY_OUTPUTS)
    async def store_comfy_outputs(self, inp: StoreOutputsInput) -> list[StoredOutput]:
        """Copy each output into GridFS once (keyed by workflow, unit and file name)."""
        return await self._store(inp)

    async def _store(self, inp: StoreOutputsInput, beat: Any | None = None) -> list[StoredOutput]:
        stored: list[StoredOutput] = []
        for ref in inp.files:
            comfy, temporary = self._client_for(ref.server_url)
            try:
                data = await comfy.view(
                    OutputFile(
                        node_id=ref.node_id,
                        filename=ref.filename,
                        subfolder=ref.subfolder,
                        type=ref.type,
                    )
                )
            except ComfyError as err:
                raise to_application_error(err) from err
            finally:
                if temporary:
                    await comfy.aclose()
            width, height, fmt = await asyncio.to_thread(_measure, data)
            content_type = Image.MIME.get(fmt, "application/octet-stream")
            key = f"{inp.workflow_id}:{inp.index}:{ref.node_id}:{ref.subfolder}/{ref.filename}"
            blob_id = await asyncio.to_thread(
                self.blobs.put,
                data,
                ref.filename,
                content_type,
                key=key,
                metadata={
                    "user_id": inp.user_id,
                    "kind": "output",
                    "workflow_id": inp.workflow_id,
                    "seed": inp.seed,
                    "width": width,
                    "height": height,
                },
            )
            stored.append(
                StoredOutput(
                    blob_id=blob_id,
                    seed=inp.seed,
                    width=width,
                    height=height,
                    content_type=content_type,
                )
            )
            activity.heartbeat(*([beat] if beat is not None else []))
        return stored


async def _interrupt(comfy: ComfyClient, prompt_id: str) -> bool:
    """Stop a running prompt (only that one); True if it was stopped before it finished."""
    try:
        return await comfy.cancel(prompt_id)
    except ComfyError:
        return False


async def _dequeue_if_pending(comfy: ComfyClient, prompt_id: str) -> bool:
    """Remove a prompt from the server's pending queue; True if it is gone without having run
    (False: it is running or finished, or the server did not answer)."""
    try:
        if (await comfy.queue_position(prompt_id)) in (None, 0):
            return False  # finished, unknown, running, or next (may start any moment)
        await comfy.delete_queued([prompt_id])
        return await comfy.queue_position(prompt_id) is None and not await comfy.history(prompt_id)
    except ComfyError:
        return False


def _measure(data: bytes) -> tuple[int, int, str]:
    with Image.open(io.BytesIO(data)) as im:
        return im.width, im.height, im.format or ""


def _run_result(server_url: str, result: RunResult) -> ComfyRunResult:
    files = [
        OutputRef(
            server_url=server_url,
            node_id=f.node_id,
            filename=f.filename,
            subfolder=f.subfolder,
            type=f.type,
        )
        for f in result.outputs
    ]
    return ComfyRunResult(
        prompt_id=result.prompt_id,
        server_url=server_url,
        files=files,
        texts=result.texts,
        gpu_seconds=result.execution_seconds or 0.0,
    )


class _Reporter:
    """Progress into the attempt's heartbeat details, never a signal to the workflow.

    A signal is a history event plus a workflow task (158 events for a 6-image make); heartbeat
    details are not history, the comfy worker sends them within a second
    (`max_heartbeat_throttle_interval`), and `JobsClient.status()` reads them with describe().
    """

    def __init__(self, index: int) -> None:
        self.index = index

    async def report(self, p: ComfyProgress, beat: dict[str, Any]) -> None:
        attempt: Attempt | None = beat.get("attempt")
        if attempt is None:
            return
        beat["attempt"] = attempt.model_copy(
            update={
                "index": self.index,
                "percent": 100.0 if p.stage == "done" else float(p.percent or 0.0),
                "queue_position": p.queue_position,
                "stage": p.stage,
                "detail": f"node {p.node}" if p.node else "",
            }
        )
        activity.heartbeat(beat["attempt"])
