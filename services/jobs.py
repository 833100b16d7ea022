"""Jobs: start, quote, watch, cancel and list jobs, and the operator's terminate and stuck.

The one way every adapter (CLI, Telegram, web) starts and inspects jobs: it checks input with
prepare's own planners, takes a running-job slot, starts the workflow with its search
attributes and summary, reads live status, cancels, and lists.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import (
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowHistoryEventFilterType,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    QueryRejectCondition,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from domain.collections import CookControl, CookProgress, CookState
from domain.errors import StationError, TooManyJobs, UserInputError
from domain.identity import id_fragment, normalise_identity, parse_identity
from domain.jobs import (
    FINAL_STATES,
    PUSH_PLATFORMS,
    ActivityNames,
    CancelRequest,
    CancelResult,
    JobPlan,
    JobState,
    JobStatus,
    MakeImageRequest,
    MediaPrepareInput,
    MediaRequest,
    PrepareInput,
    RenderBeat,
    ReplyTarget,
    StoredOutput,
    job_ref,
    new_job_id,
)
from domain.search_attributes import JOB_KIND, JOB_STATE, PLATFORM, USER_ID
from domain.training import ChunkBeat, TrainRequest
from domain.users import JobRecord
from services.base import ServiceBase
from store.jobs import record_of
from workflows.cook_collection import CookCollectionWorkflow
from workflows.job_saga import PaidJobWorkflow, status_from_failure
from workflows.make_image import MakeImageWorkflow
from workflows.media_job import MediaJobWorkflow
from workflows.train_lora import TrainLoraWorkflow

log = logging.getLogger(__name__)


# How long a slot may be held by a workflow id Temporal does not know yet (its start is on
# the way) before it counts as abandoned.
SLOT_START_GRACE = timedelta(seconds=30)


# Job kind (the JobKind search attribute and the first part of the workflow id) -> workflow.
# Each class is registered under its own name (`@workflow.defn(name=<class name>)`).
WORKFLOW_TYPES: dict[str, type[PaidJobWorkflow]] = {
    "make": MakeImageWorkflow,
    "upscale": MediaJobWorkflow,
    "rmbg": MediaJobWorkflow,
    "resize": MediaJobWorkflow,
    "convert": MediaJobWorkflow,
    "train": TrainLoraWorkflow,
}


JobRequest = MakeImageRequest | MediaRequest | TrainRequest


class JobNotFound(StationError):
    code = "job_not_found"


class NotCancellable(StationError):
    code = "not_cancellable"


@dataclass(frozen=True)
class StartedJob:
    workflow_id: str
    kind: str
    user: str
    existing: bool  # the same request had already started this job
    ui_url: str


@dataclass(frozen=True)
class JobListing:
    workflow_id: str
    kind: str
    user: str
    state: str
    status: str
    started: str


@dataclass(frozen=True)
class StuckJob:
    """A running job whose current activity cannot progress (`stationthis jobs stuck`)."""

    workflow_id: str
    kind: str
    user: str
    activity: str
    task_queue: str
    attempt: int
    why: str


@dataclass(frozen=True)
class Terminated:
    """What `stationthis jobs terminate` did: the refund it booked and the final status."""

    refund: int
    status: JobStatus


# Temporal statuses of a job that ended without its saga's compensation (no refund, record,
# slot release or final JobState ran): an operator's terminate or an execution timeout.
ENDED_BY_OPERATOR = (WorkflowExecutionStatus.TERMINATED, WorkflowExecutionStatus.TIMED_OUT)
# How many listed ids `list_jobs` reads as their current run at once.
LIST_BATCH = 25


def _static_details(request: MakeImageRequest) -> str:
    lines = [
        f"**user** {request.user} via {request.platform}",
        f"**prompt** {request.prompt[:500]}",
        f"**template** {request.template or '(saved setting)'}",
    ]
    if request.overrides:
        lines.append("**overrides** " + ", ".join(f"{k}={v}" for k, v in request.overrides.items()))
    if request.regen_of:
        lines.append(f"**repeats** {request.regen_of}")
    return "\n\n".join(lines)


def _media_details(request: MediaRequest) -> str:
    lines = [
        f"**user** {request.user} via {request.platform}",
        f"**job** {request.kind}",
        f"**source** {request.source_image_id}",
    ]
    if request.params:
        lines.append("**params** " + ", ".join(f"{k}={v}" for k, v in request.params.items()))
    return "\n\n".join(lines)


class JobService(ServiceBase):
    """Starting, watching, cancelling and listing jobs."""

    async def start_make(self, request: MakeImageRequest) -> StartedJob:
        """Check the request, take a slot and start the workflow; bad input raises at once."""
        # `platform` is where the request came from and where the result goes (the CLI may
        # act for a Telegram user; the result then stays with the CLI).
        request = request.model_copy(update={"user": normalise_identity(request.user)})
        # The same checks prepare runs, so bad input is refused before anything is written.
        plan = await asyncio.to_thread(
            self._planner.plan_make_image, PrepareInput(workflow_id="", request=request)
        )
        return await self._start(
            "make",
            request,
            summary=request.prompt,
            details=_static_details(request),
            user_id=plan.user_id,
        )

    async def quote_make(self, request: MakeImageRequest) -> JobPlan:
        """What `start_make` would charge for the request (the same checks, nothing written):
        the price a confirmation shows before anything is started."""
        request = request.model_copy(update={"user": normalise_identity(request.user)})
        plan: JobPlan = await asyncio.to_thread(
            self._planner.plan_make_image, PrepareInput(workflow_id="", request=request)
        )
        return plan

    async def start_media(self, request: MediaRequest) -> StartedJob:
        """Check a media request (the checks prepare runs), take a slot and start the job."""
        request = request.model_copy(update={"user": normalise_identity(request.user)})
        plan = await asyncio.to_thread(
            self._media_planner.plan_media_job,
            MediaPrepareInput(workflow_id="", request=request),
        )
        params = ", ".join(f"{k}={v}" for k, v in sorted(request.params.items()))
        return await self._start(
            request.kind,
            request,
            summary=f"{request.kind} {params}".strip(),
            details=_media_details(request),
            user_id=plan.user_id,
        )

    def _repeat(
        self,
        user: str,
        run: JobRecord | JobStatus,
        *,
        keep_seed: bool,
        rid: str | None,
        platform: str | None,
    ) -> MakeImageRequest:
        saved = run.settings
        keys = ("width", "height", "steps", "cfg", "batch", "sampler", "scheduler", "negative")
        overrides: dict[str, Any] = {k: saved[k] for k in keys if k in saved}
        overrides["seed"] = run.seeds[0] if keep_seed and run.seeds else -1
        if platform is None:
            platform, _ = parse_identity(normalise_identity(user))
        return MakeImageRequest(
            user=user,
            platform=platform,
            prompt=run.prompt or "",
            template=run.template or None,
            overrides=overrides,
            request_id=rid,
            regen_of=run.workflow_id,
        )

    def _delivery(self, request: JobRequest) -> JobRequest:
        """Where the result goes: the requester's platform, not the paying identity's.

        A push platform (Telegram) needs a chat to push to; a request without one (the CLI or a
        script acting for a Telegram user) is started as a pull job, so no delivery step waits
        for a bot. A pushed result waits at most `Config.delivery_deadline` for it.
        """
        if request.platform in PUSH_PLATFORMS and request.reply is None:
            return request.model_copy(update={"platform": "cli"})
        if request.reply is not None and request.reply.deliver_within is None:
            reply = request.reply.model_copy(
                update={"deliver_within": self.config.delivery_deadline}
            )
            return request.model_copy(update={"reply": reply})
        return request

    async def _start(
        self,
        kind: str,
        request: JobRequest,
        *,
        summary: str,
        details: str,
        user_id: str | None = None,
    ) -> StartedJob:
        """Start `WORKFLOW_TYPES[kind]` for the request, once per request id.

        `user_id`: the requester's id when the caller's plan already looked the user up (one
        MongoDB read fewer per job, issue 17); otherwise it is read here.
        """
        request = self._delivery(request)
        if not user_id:
            user_id = (await asyncio.to_thread(self.stores.users.get, request.user)).id
        wid = new_job_id(kind, request.user, request.request_id)
        await self._take_slot(user_id, wid)
        attrs = TypedSearchAttributes(
            [
                SearchAttributePair(USER_ID, request.user),
                SearchAttributePair(PLATFORM, request.platform),
                SearchAttributePair(JOB_KIND, kind),
                SearchAttributePair(JOB_STATE, JobState.STARTING.value),
            ]
        )
        existing = False
        try:
            await self.temporal.start_workflow(
                WORKFLOW_TYPES[kind].__name__,
                request,
                id=wid,
                result_type=JobStatus,
                task_queue=self.config.task_queues.workflows,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=attrs,
                static_summary=f"{kind} for {request.user}: {summary[:120]}",
                static_details=details,
            )
        except WorkflowAlreadyStartedError:
            existing = True  # this request already ran to the end; it is not started again
            await asyncio.to_thread(self.slots.release, user_id, wid)
        except BaseException:
            await asyncio.to_thread(self.slots.release, user_id, wid)
            raise
        await self.remember_job(wid, request.user)
        return StartedJob(wid, kind, request.user, existing, self.job_url(wid))

    async def _take_slot(self, user_id: str, wid: str) -> None:
        limit = self.config.max_running_jobs
        try:
            await asyncio.to_thread(self.slots.acquire, user_id, wid, limit)
            return
        except TooManyJobs:
            held = await asyncio.to_thread(self.slots.taken_at, user_id)
        alive = {w for w, at in held.items() if await self._is_running(w, at)}
        await asyncio.to_thread(
            self.slots.acquire, user_id, wid, limit, still_running=lambda _ids: alive
        )

    async def _is_running(self, wid: str, taken_at: datetime) -> bool:
        """Whether a held slot is still in use; frees slots of workflows that ended without
        releasing (terminated) or never started (the starting client died)."""
        try:
            desc = await self.temporal.get_workflow_handle(wid).describe()
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                return True  # cannot tell: keep the slot, the cap stays exact
            # A concurrent start may be between its slot and its workflow: a short grace.
            return datetime.now(UTC) - taken_at < SLOT_START_GRACE
        return desc.status == WorkflowExecutionStatus.RUNNING

    def handle(self, wid: str) -> WorkflowHandle[Any, JobStatus]:
        return self.temporal.get_workflow_handle(wid, result_type=JobStatus)

    async def _job_owners(self, wid: str, user: str) -> frozenset[str]:
        """The identities of `user` if `wid` can be one of their jobs, else JobNotFound.

        A job id names its user (`<kind>-<identity>-<request>`, domain.jobs.new_job_id), so
        an id of another user's job is refused here with no Temporal call at all: it costs the
        same as a missing id of that shape and says the same words. The caller compares the
        job's own user with these identities too (ids of odd shapes, identities containing
        `-`).
        """
        found = await asyncio.to_thread(self.stores.users.find, normalise_identity(user))
        owners = frozenset(found.identities) if found is not None else frozenset()
        rest = wid.partition("-")[2]
        if not any(rest.startswith(f"{id_fragment(i)}-") for i in owners):
            raise JobNotFound(f"no job {wid!r}")
        return owners

    async def status(self, wid: str, *, user: str | None = None) -> JobStatus:
        """Live status from the workflow; for jobs long gone, the history record.

        With `user` (any adapter acting for a person), another user's job is "no job", exactly
        like a missing one; without it (operators), any job.
        """
        if is_cook_id(wid):
            return await self._cook_status(wid, user)
        owners = await self._job_owners(wid, user) if user is not None else None
        status = await self._any_status(wid)
        if owners is not None and status.user not in owners:
            raise JobNotFound(f"no job {wid!r}")
        if status.final:  # images the content filter withheld and an operator released
            released = await asyncio.to_thread(self.stores.safety.released_blobs, wid)
            shown = {o.blob_id for o in status.outputs}
            status.outputs += [StoredOutput(blob_id=b) for b in released if b not in shown]
        return status.settled()

    async def _owners(self, user: str) -> frozenset[str]:
        found = await asyncio.to_thread(self.stores.users.find, normalise_identity(user))
        return frozenset(found.identities) if found is not None else frozenset()

    async def _cook_status(self, wid: str, user: str | None) -> JobStatus:
        """A cook as one job: its `progress` query (the cook has no `status`) read as a
        JobStatus. A cook id names its collection, not its user, so ownership is read from the
        cook's own `UserId` search attribute; another user's cook reads as a missing one."""
        handle = self.temporal.get_workflow_handle(wid, result_type=CookProgress)
        try:
            desc = await handle.describe()
            progress: CookProgress = await handle.query(CookCollectionWorkflow.progress)
        except (RPCError, WorkflowQueryFailedError) as err:
            raise JobNotFound(f"no job {wid!r}") from err
        owner = desc.typed_search_attributes.get(USER_ID) or ""
        if user is not None and owner not in await self._owners(user):
            raise JobNotFound(f"no job {wid!r}")
        return cook_job_status(wid, owner, progress)

    async def remember_job(self, wid: str, user: str) -> str:
        """Store the job's fixed-length ref (`job_ref`) with its owner, for buttons."""
        ref: str = await asyncio.to_thread(
            self.stores.button_tokens.remember, wid, normalise_identity(user)
        )
        return ref

    async def job_by_ref(self, ref: str, user: str) -> str:
        """The workflow id a button's `job_ref` names, if it is one of `user`'s jobs; another
        user's ref or an unknown one reads as "no job". Jobs started before refs were stored
        are found among the user's running jobs."""
        token = await asyncio.to_thread(self.stores.button_tokens.lookup, ref)
        owners = await self._owners(user)
        if token is not None:
            if token.owner in owners:
                return token.workflow_id
            raise JobNotFound(f"no job {ref!r}")
        for job in await self.list_jobs(user=user, running=True):
            if job_ref(job.workflow_id) == ref:
                return job.workflow_id
        raise JobNotFound(f"no job {ref!r}")

    async def _any_status(self, wid: str) -> JobStatus:
        """A running job answers its `status` query; an ended one reads its outcome, and one
        that was terminated or timed out reads as such (its last query would still say
        "rendering 48%")."""
        try:
            # Every job kind inherits the `status` query from the one saga.
            status = await self.handle(wid).query(
                PaidJobWorkflow.status, reject_condition=QueryRejectCondition.NOT_OPEN
            )
        except WorkflowQueryRejectedError as rejected:
            if rejected.status in ENDED_BY_OPERATOR:
                return await self._ended_by_operator(wid, rejected.status)
            try:
                return await self._final_status(self.handle(wid))
            except (RPCError, WorkflowFailureError):
                return await self._last_status(wid)  # cancelled: the saga's own final status
        except (RPCError, WorkflowQueryFailedError) as err:
            # A query fails (not RPCError) for an empty id or a workflow that is no job (a
            # cook has no `status` query): both read as "no such job", never as a crash.
            return await self._recorded_status(wid, err)
        if status.state not in LIVE_STATES:
            return status
        return with_live_progress(status, *await self._live_beats(wid))

    async def _live_beats(self, wid: str) -> tuple[list[RenderBeat], list[ChunkBeat]]:
        """The heartbeat details of the job's pending renders and training chunks.

        Activities report progress there, not by signal: heartbeats are no history events
        (docs/performance.md, "History events per job"). Best effort: a describe that fails
        leaves the query's status as it is.
        """
        renders: list[RenderBeat] = []
        chunks: list[ChunkBeat] = []
        try:
            desc = await self.handle(wid).describe()
        except RPCError as err:
            log.debug("no live progress for %s: %s", wid, err)
            return renders, chunks
        converter = self.temporal.data_converter
        for pending in desc.raw_description.pending_activities:
            details = pending.heartbeat_details.payloads
            if not details:
                continue
            kind = pending.activity_type.name
            try:
                if kind == ActivityNames.RUN_COMFY_PROMPT:
                    renders.extend(await converter.decode(details[:1], [RenderBeat]))
                elif kind == ActivityNames.TRAIN_LORA_CHUNK:
                    chunks.extend(await converter.decode(details[:1], [ChunkBeat]))
            except Exception as err:  # a beat of another shape: progress is best effort
                log.debug("heartbeat of %s on %s not read: %s", kind, wid, err)
        return renders, chunks

    async def _last_status(self, wid: str) -> JobStatus:
        """The status an ended workflow's replay answers, else the history record."""
        try:
            return await self.handle(wid).query(PaidJobWorkflow.status)
        except (RPCError, WorkflowQueryFailedError) as err:
            return await self._recorded_status(wid, err)

    async def _recorded_status(self, wid: str, err: BaseException | None = None) -> JobStatus:
        record = await asyncio.to_thread(self.stores.jobs.get, wid)
        if record is None:
            raise JobNotFound(f"no job {wid!r}") from err
        return _status_from_record(record)

    async def _final_status(self, handle: WorkflowHandle[Any, JobStatus]) -> JobStatus:
        """The one place a job's outcome is read: the result of a job that completed (done,
        refused, cancelled by its user), or the JobStatus a failed job's `JobFailed` error
        carries (workflows/job_saga.py). Other failures (an operator's cancel) raise."""
        try:
            return (await handle.result()).settled()
        except WorkflowFailureError as err:
            status = status_from_failure(err)
            if status is None:
                raise
            return status.settled()

    async def _ended_by_operator(self, wid: str, how: WorkflowExecutionStatus) -> JobStatus:
        """A terminated or timed-out job: failed (done, if its work was made) with why.

        `stationthis jobs terminate` records its final state; a job terminated another way
        (the UI, `temporal workflow terminate`) reads its last status with the state and the
        ledger's refund set here.
        """
        record = await asyncio.to_thread(self.stores.jobs.get, wid)
        if record is not None and record.finished_at is not None:
            return _status_from_record(record)
        status = (await self._last_status(wid)).model_copy(deep=True)
        why = "timed out"
        if how == WorkflowExecutionStatus.TERMINATED:
            why = "terminated by an operator"
            async for event in self.handle(wid).fetch_history_events(
                event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT
            ):
                said = event.workflow_execution_terminated_event_attributes.reason
                why += f": {said}" if said else ""
        made = status.state in (JobState.DELIVERING, JobState.DONE) and bool(status.outputs)
        if made:
            status.state = JobState.DONE
            status.not_delivered = status.not_delivered or f"{why} before delivery"
        elif not status.final:
            status.state, status.reason = JobState.FAILED, why
        status.queue_position = None
        totals = await asyncio.to_thread(self.stores.ledger.job_totals, wid)
        status.refund = totals.refunded
        return status.settled()

    async def watch(
        self, wid: str, *, interval: float = 0.25, user: str | None = None
    ) -> AsyncIterator[JobStatus]:
        """Yield the status each time it changes, ending with the final one (`user`: as in
        `status`)."""
        last: JobStatus | None = None
        while True:
            status = await self.status(wid, user=user)
            if status != last:
                yield status
                last = status
            if status.final:
                return
            await asyncio.sleep(interval)

    async def result(self, wid: str) -> JobStatus:
        """Wait for the job to end. A job an operator cancelled ends as `cancelled` too."""
        try:
            return await self._final_status(self.handle(wid))
        except Exception:
            return await self.status(wid)

    async def cancel(
        self, wid: str, *, reason: str = "cancelled by the user", user: str | None = None
    ) -> CancelResult:
        """Cancel with refund; a job that is delivering or finished says why it cannot be.

        With `user`, only their own job: another user's reads as "no job" and is not touched.
        """
        if user is not None:
            await self.status(wid, user=user)
        by = normalise_identity(user) if user is not None else ""
        if is_cook_id(wid):
            return await self._cancel_cook(wid, CookControl(reason=reason, by=by))
        for attempt in range(6):
            try:
                result: CancelResult = await self.handle(wid).execute_update(
                    "cancel", CancelRequest(reason=reason, by=by), result_type=CancelResult
                )
                return result
            except WorkflowUpdateFailedError as err:
                cause = err.cause
                msg = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
                raise NotCancellable(msg) from err
            except RPCError as err:
                # The server aborts an update when the workflow task it rode on failed (for
                # example a task that raced a new signal); the task is retried, so is the update.
                if err.status == RPCStatusCode.FAILED_PRECONDITION and attempt < 5:
                    log.info("cancel of %s not accepted yet (%s); retrying", wid, err.message)
                    await asyncio.sleep(0.2 * (attempt + 1))
                    continue
                status = await self.status(wid)
                raise NotCancellable(
                    f"this job can no longer be cancelled: it is {status.state}"
                ) from err
        raise AssertionError("unreachable")

    async def _cancel_cook(self, wid: str, ctl: CookControl) -> CancelResult:
        """Cancel a cook through its own `cancel` update: the pieces in flight are cancelled
        and refunded by their sagas; the answer comes when the cook has ended."""
        handle = self.temporal.get_workflow_handle(wid, result_type=CookProgress)
        try:
            progress: CookProgress = await handle.execute_update(
                "cancel", ctl, result_type=CookProgress
            )
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            msg = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
            raise NotCancellable(msg) from err
        except RPCError as err:
            raise NotCancellable("this cook has ended") from err
        return CancelResult(
            state=cook_job_status(wid, "", progress).state, refund=progress.refunded
        )

    async def list_jobs(
        self,
        *,
        user: str | None = None,
        state: str | None = None,
        running: bool = False,
        limit: int = 50,
        platform: str | None = None,
        pieces: bool = False,
    ) -> list[JobListing]:
        """Jobs by search attribute, newest first: what an operator's `temporal workflow list`
        query shows. A cook's pieces are left out (the cook is the job) unless `pieces`.

        One row per workflow id, with the latest run's truth. Visibility keeps every run: an
        operator's `temporal workflow reset` leaves the failed run there next to the run that
        succeeded, so a query for failed jobs finds the old run. A closed row is therefore
        read again as the id's current run (`describe` without a run id) and kept only if
        that run still matches; a running row is the current run already (one open run per
        id), so the bot's running-only lists cost no extra call. A terminated or timed-out
        job keeps the JobState its saga last set (no code runs after a terminate), so it
        lists as `failed` (found by `--state failed`, not as running)."""
        clauses = ["JobKind IS NOT NULL"]
        wanted = JobState(state) if state else None
        if not pieces:
            clauses.append("ParentJob IS NULL")
        if user:
            # Every identity of the account (Telegram, Discord, web, CLI linked by a code): a
            # job started on one platform is listed, and so cancellable, on the others.
            # Identities are `platform:[A-Za-z0-9_.@-]` (domain.identity): safe in quotes.
            ids = sorted(await self._owners(user)) or [normalise_identity(user)]
            clauses.append("UserId IN (" + ", ".join(f'"{i}"' for i in ids) + ")")
        if wanted is not None:
            clause = f'JobState="{wanted.value}"'
            if wanted is JobState.FAILED:
                clause = f'({clause} OR ExecutionStatus="Terminated" OR ExecutionStatus="TimedOut")'
            elif not wanted.final:
                clause += ' AND ExecutionStatus="Running"'
            clauses.append(clause)
        if running:
            clauses.append('ExecutionStatus="Running"')
        if platform:
            clauses.append(f'Platform="{platform}"')
        seen: set[str] = set()
        batch: list[WorkflowExecution] = []
        kept: list[tuple[datetime, JobListing]] = []
        async for wf in self.temporal.list_workflows(" AND ".join(clauses)):
            if wf.id in seen:
                continue  # another run of a job already read as its current run
            seen.add(wf.id)
            batch.append(wf)
            if len(batch) >= LIST_BATCH:
                kept += await self._current_rows(batch, wanted, running)
                batch = []
                if len(kept) >= limit:
                    break
        kept += await self._current_rows(batch, wanted, running)
        kept.sort(key=lambda pair: pair[0], reverse=True)
        return [row for _, row in kept[:limit]]

    async def _current_rows(
        self, runs: list[WorkflowExecution], wanted: JobState | None, running: bool
    ) -> list[tuple[datetime, JobListing]]:
        """The listing rows of `runs` as their ids' current runs, those that still match."""

        async def current(wf: WorkflowExecution) -> WorkflowExecution:
            if wf.status == WorkflowExecutionStatus.RUNNING:
                return wf
            try:
                return await self.handle(wf.id).describe()
            except RPCError as err:
                log.debug("listing %s as visibility has it: %s", wf.id, err)
                return wf

        rows = []
        for wf in await asyncio.gather(*(current(wf) for wf in runs)):
            row = _listing(wf)
            if running and wf.status != WorkflowExecutionStatus.RUNNING:
                continue
            if wanted is not None and row.state != wanted.value:
                continue
            if wanted is not None and not wanted.final and row.status != "RUNNING":
                continue
            rows.append((wf.start_time, row))
        return rows

    async def active(self, user: str) -> list[JobStatus]:
        """Every running job of the user, with live stage and progress."""
        listing = await self.list_jobs(user=user, running=True)
        # A cook is one job: its pieces (child workflows) are shown through its progress.
        jobs = [j for j in listing if not is_cook_piece_id(j.workflow_id)]
        return list(await asyncio.gather(*(self.status(j.workflow_id) for j in jobs)))

    async def recent_runs(self, user: str, n: int = 5) -> list[JobRecord]:
        found = await asyncio.to_thread(self.stores.users.get, user)
        return await asyncio.to_thread(
            self.stores.jobs.last_runs, found.id, n, kinds=["make"], states=["done"]
        )

    async def refund_terminated(self, wid: str) -> int:
        """Refund a job an operator terminated (no compensation ran), once, under a key of the
        terminated run (`<id>:<run id>:refund`, as that run's own refund would have been);
        refuses jobs that still run, ended normally, or had already made their work.

        A later `temporal workflow reset` of the job is a new run with keys of its own: it pays
        again (the saga's `_settle`), so a refund followed by a reset gives nothing away.
        """
        desc = await self.handle(wid).describe()
        if desc.status == WorkflowExecutionStatus.RUNNING:
            raise UserInputError(f"{wid} is still running: cancel it instead (refund included)")
        if desc.status not in (
            WorkflowExecutionStatus.TERMINATED,
            WorkflowExecutionStatus.TIMED_OUT,
        ):
            raise UserInputError(
                f"{wid} ended as {desc.status.name if desc.status else '?'}: "
                "its own compensation already ran"
            )
        job = await asyncio.to_thread(self.stores.jobs.get, wid)
        if job is not None and job.outputs and job.state in (JobState.DELIVERING, JobState.DONE):
            raise UserInputError(
                f"{wid} had made its {len(job.outputs)} output(s) before it ended: it keeps "
                "its charge (the result is retrievable with `stationthis jobs show`)"
            )
        totals = await asyncio.to_thread(self.stores.ledger.job_totals, wid)
        if totals.user_id is None or totals.refundable <= 0:
            return 0
        key = f"{wid}:{desc.run_id}:refund"
        res = await asyncio.to_thread(
            self.stores.ledger.refund,
            totals.user_id,
            totals.refundable,
            key,
            job_id=wid,
            reason="operator refund of a terminated job",
        )
        if res.replayed:
            return 0
        slot_user = totals.user_id
        await asyncio.to_thread(self.slots.release, slot_user, wid)
        return res.entry.amount

    async def terminate(self, wid: str, reason: str) -> Terminated:
        """Terminate a job that cannot be cancelled (a stuck activity, a wedged worker) and do
        what its saga would have done: refund what was not produced (`refund_terminated`, keyed
        by the run, so a repeat refunds nothing), free the slot, and record the final state
        (failed, or done if its work was made) so `jobs show`, `jobs list --state failed` and
        /regen tell the truth. Safe to repeat on a job it already terminated.
        """
        if not reason.strip():
            raise UserInputError("say why: --reason is written into the job's history")
        handle = self.handle(wid)
        try:
            desc = await handle.describe()
        except RPCError as err:
            raise JobNotFound(f"no job {wid!r}") from err
        if desc.status == WorkflowExecutionStatus.RUNNING:
            await handle.terminate(reason=reason)
        elif desc.status != WorkflowExecutionStatus.TERMINATED:
            raise UserInputError(
                f"{wid} already ended as {desc.status.name if desc.status else '?'}: "
                "its own compensation ran"
            )
        try:
            refund = await self.refund_terminated(wid)
        except UserInputError:
            refund = 0  # it made its work before it was stopped: it keeps its charge
        status = await self._ended_by_operator(wid, WorkflowExecutionStatus.TERMINATED)
        owner = await asyncio.to_thread(self.stores.users.find, status.user)
        if owner is not None:
            await asyncio.to_thread(self.slots.release, owner.id, wid)
            record = record_of(status, owner.id, datetime.now(UTC))
            await asyncio.to_thread(self.stores.jobs.record, record)
        return Terminated(refund=refund, status=status)

    async def stuck(self, *, limit: int = 200) -> list[StuckJob]:
        """Running jobs whose pending activity cannot progress: its task queue has no poller
        (no worker, no bot), or it is past its schedule-to-close deadline. What the UI shows
        only inside each job ("Attempt 1 / ∞" on a pending `deliver_result`)."""
        pollers: dict[str, bool] = {}
        now = datetime.now(UTC)
        out: list[StuckJob] = []
        for job in await self.list_jobs(running=True, limit=limit):
            try:
                desc = await self.handle(job.workflow_id).describe()
            except RPCError:
                continue  # ended between the list and now
            for pa in desc.raw_description.pending_activities:
                queue = pa.activity_options.task_queue.name or await self._activity_queue(
                    job.workflow_id, pa.activity_id
                )
                if queue not in pollers:
                    pollers[queue] = await self._has_pollers(queue)
                why = ""
                if not pollers[queue]:
                    why = f"nobody polls task queue {queue!r}"
                elif pa.HasField("expiration_time") and pa.expiration_time.ToDatetime(UTC) < now:
                    why = "past its deadline"
                if why:
                    out.append(
                        StuckJob(
                            job.workflow_id,
                            job.kind,
                            job.user,
                            pa.activity_type.name,
                            queue,
                            pa.attempt,
                            why,
                        )
                    )
        return out

    async def _activity_queue(self, wid: str, activity_id: str) -> str:
        """The task queue an activity was scheduled on (servers that do not report it in the
        pending activity's options): from its scheduled event."""
        async for event in self.handle(wid).fetch_history_events():
            attrs = event.activity_task_scheduled_event_attributes
            if event.HasField("activity_task_scheduled_event_attributes") and (
                attrs.activity_id == activity_id
            ):
                return attrs.task_queue.name
        return ""

    async def _has_pollers(self, queue: str) -> bool:
        """Whether any worker polled `queue` for activities recently (the server keeps pollers
        seen in the last minutes)."""
        resp = await self.temporal.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=self.temporal.namespace,
                task_queue=TaskQueue(name=queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
            )
        )
        return len(resp.pollers) > 0

    def job_url(self, wid: str) -> str:
        if not self.ui_url:
            return ""
        ns = quote(self.temporal.namespace, safe="")
        return f"{self.ui_url}/namespaces/{ns}/workflows/{quote(wid, safe='')}"

    async def start_repeat(
        self,
        user: str,
        *,
        n: int | None = None,
        platform: str | None = None,
        reply: ReplyTarget | None = None,
        request_id: str | None = None,
    ) -> StartedJob:
        """regen (`n` = run 1 … 5 of the last five, same seed) or again (`n` None: the last
        run, new seed), for every adapter; `reply` is the chat to push the result to (None: a
        pull job), `platform` the requester's (None: the paying identity's)."""
        runs = await self.recent_runs(user, 5)
        if not runs:
            raise UserInputError("no runs to repeat yet: make an image first")
        if n is not None and not 1 <= n <= len(runs):
            raise UserInputError(f"pick a run 1 … {len(runs)}")
        run = runs[(n or 1) - 1]
        req = self._repeat(user, run, keep_seed=n is not None, rid=request_id, platform=platform)
        return await self.start_make(req.model_copy(update={"reply": reply}))

    async def start_repeat_of(
        self,
        user: str,
        wid: str,
        *,
        keep_seed: bool,
        platform: str,
        reply: ReplyTarget | None,
        request_id: str | None,
    ) -> StartedJob:
        """Repeat the make job `wid` itself (the buttons under its image): with its seed (Regen)
        or a new one (Again). Read from the job's own status, so it works the moment the image
        arrives (the history record is written after delivery) and whatever ran since."""
        status = await self.status(wid, user=user)
        if status.kind != "make" or status.state not in (JobState.DELIVERING, JobState.DONE):
            raise UserInputError("only a finished image can be repeated")
        req = self._repeat(user, status, keep_seed=keep_seed, rid=request_id, platform=platform)
        return await self.start_make(req.model_copy(update={"reply": reply}))

    async def reply_target(self, wid: str, *, user: str | None = None) -> ReplyTarget | None:
        """Where a running job replies: read from its start input (nothing else to store).
        With `user`, only their own job (another user's reads as "no job")."""
        if user is not None:
            await self.status(wid, user=user)
        raw = (await self.start_input(wid)).get("reply")
        return ReplyTarget.model_validate(raw) if raw else None

    async def start_input(self, wid: str) -> dict[str, Any]:
        """The current run's start input, as plain JSON ({} when it has none): what a
        restarted bot reads to find its running jobs' and cooks' places again. No owner
        check: for the adapters' own bookkeeping, never shown to a user."""
        async for event in self.handle(wid).fetch_history_events():
            payloads = list(event.workflow_execution_started_event_attributes.input.payloads)
            if not payloads:
                return {}
            [value] = await self.temporal.data_converter.decode(payloads[:1], [dict[str, Any]])
            return value if isinstance(value, dict) else {}
        return {}


LIVE_STATES = frozenset({JobState.QUEUED, JobState.RUNNING})


def with_live_progress(
    status: JobStatus, renders: list[RenderBeat], chunks: list[ChunkBeat]
) -> JobStatus:
    """The `status` query's answer completed with the running activities' heartbeat details.

    The query knows the units made (`percent` counts them); each pending render adds its own
    percent (weighed by `units`), queue position and node. The workflow stays `queued` from
    its charge until delivery for renders (no signal tells it a render started), so the
    `running` a user reads is derived here: a pending render whose beat left ComfyUI's queue.
    Beats without `index` come from activities of an older release, which signalled instead.
    """
    update: dict[str, Any] = {}
    if status.stage == "training":
        beat = max(chunks, key=lambda c: c.step, default=None)
        if beat is not None and beat.total_steps and beat.step >= status.step:
            update["step"], update["total_steps"] = beat.step, beat.total_steps
            update["percent"] = round(100.0 * beat.step / beat.total_steps, 1)
        return status.model_copy(update=update) if update else status
    beats = sorted((b for b in renders if b.index is not None), key=lambda b: b.index or 0)
    if not beats:
        return status
    units = max(1, status.units)
    running = [b for b in beats if b.stage != "queued"]
    positions = [b.queue_position for b in beats if b.queue_position is not None]
    update["percent"] = min(100.0, round(status.percent + sum(b.percent for b in beats) / units, 1))
    update["queue_position"] = min(positions) if positions and not running else None
    update["detail"] = (running or beats)[-1].detail
    if running and status.state is JobState.QUEUED:
        update["state"] = JobState.RUNNING
    return status.model_copy(update=update)


def _listing(wf: WorkflowExecution) -> JobListing:
    """A `jobs list` row of one run: its JobState, or `failed` for a run that an operator
    terminated or that timed out before its saga set a final state."""
    sa = wf.typed_search_attributes
    job_state = sa.get(JOB_STATE) or ""
    if wf.status in ENDED_BY_OPERATOR and job_state not in FINAL_STATES:
        job_state = JobState.FAILED.value
    return JobListing(
        workflow_id=wf.id,
        kind=sa.get(JOB_KIND) or "",
        user=sa.get(USER_ID) or "",
        state=job_state,
        status=wf.status.name if wf.status else "",
        started=wf.start_time.isoformat(timespec="seconds"),
    )


def _status_from_record(record: JobRecord) -> JobStatus:
    return JobStatus(
        workflow_id=record.workflow_id,
        kind=record.kind,
        user=record.identity,
        state=JobState(str(record.state)),
        outputs=[StoredOutput(blob_id=b) for b in record.outputs],
        price=record.price,
        refund=record.refund,
        reason=record.error or None,
        not_delivered=record.not_delivered or None,
        seeds=record.seeds,
        prompt=record.prompt,
        template=record.template,
        settings=record.settings,
    )


def is_cook_id(wid: str) -> bool:
    """A cook workflow (`cook-<collection>-<n>`, store.collections.next_cook_id), not a piece."""
    return wid.startswith("cook-") and not is_cook_piece_id(wid)


def is_cook_piece_id(wid: str) -> bool:
    """A piece of a cook: a child workflow `<cook id>-piece-<n>[-retry<k>]`."""
    return wid.startswith("cook-") and "-piece-" in wid


COOK_STATES: dict[CookState, JobState] = {
    CookState.RUNNING: JobState.RUNNING,
    CookState.PAUSED: JobState.RUNNING,
    CookState.WAITING_FOR_POINTS: JobState.RUNNING,
    CookState.CANCELLING: JobState.RUNNING,
    CookState.DONE: JobState.DONE,
    CookState.CANCELLED: JobState.CANCELLED,
}


def cook_job_status(wid: str, owner: str, progress: CookProgress) -> JobStatus:
    """A cook's progress as the JobStatus /status and /cancel read: its cook state is the stage,
    its counts (made, failed, in flight, points) the detail."""
    handled = progress.made + progress.failed + progress.cancelled + progress.skipped
    return JobStatus(
        workflow_id=wid,
        kind="cook",
        user=owner,
        state=COOK_STATES[progress.state],
        percent=100.0 * handled / progress.supply if progress.supply else 0.0,
        stage=progress.state.value.replace("_", " "),
        detail=progress.headline(),
        price=progress.points_spent,
        refund=progress.refunded,
        reason=progress.reason,
        settings={"collection": progress.collection_id},
    )
