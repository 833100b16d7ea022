"""The one skeleton every paid job kind runs on: prepare, charge, produce, settle, record, free
the slot, deliver (within a deadline), and refund on any failure or cancel after the charge.

The short MongoDB steps without consequences for the path taken (prepare reads, record and
release upsert) are local activities: they run inside the workflow worker's task, which saves a
round trip through the server per step (see docs/performance.md). Charge and refund are regular
activities: a local activity's side effect can outlive a workflow task that fails and is then
replayed down another path (see `_ledger_step`). The GPU, media and delivery steps are ordinary
activities on their own queues; a render stores its own outputs into GridFS (`store_for`), one
round trip per image.

`run_job` compensates only when the workflow exits (`is_workflow_exit_exception`), then records,
frees the slot (`workflows/slots.py`) and delivers, in that order, outside any `finally`. Patches
and their retirement: docs/patches.md.

How a job ends, in Temporal's words: done, refused and a user's cancel (the `cancel` update,
whose answer carries the refund) complete with the final JobStatus as the result; an
operator's `temporal workflow cancel` ends canceled; a failed job, after its refund, record,
slot release and delivery, fails with a non-retryable ApplicationError of type `JobFailed`
whose detail is the final JobStatus (`status_from_failure` reads it back). A user's cancel stays
completed on purpose: the SDK ends a workflow canceled only after a cancel request reached the
server, which skips the update's "can it still be cancelled" validator and its refund answer;
`JobState="cancelled"` finds those jobs.

A job kind is a subclass that names its prepare activity and defines `@workflow.run`; the
handlers (status query, progress signal, cancel update) and the saga live here, once.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, ClassVar

from temporalio import workflow
from temporalio.common import Priority
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    FailureError,
    TimeoutError,
)

with workflow.unsafe.imports_passed_through():
    from domain.jobs import (
        PUSH_PLATFORMS,
        ActivityNames,
        CancelRequest,
        CancelResult,
        ChargeInput,
        ChargeResult,
        ComfyRunInput,
        ComfyRunResult,
        ComfyWork,
        DeliverInput,
        JobPlan,
        JobRecordInput,
        JobState,
        JobStatus,
        MediaWork,
        ProcessImageInput,
        Progress,
        RefundInput,
        RefundResult,
        ReplyTarget,
        StoredOutput,
        StoreOutputsInput,
    )
    from domain.pricing import partial_refund
    from domain.queues import JobRoute, plan_route
    from domain.safety import (
        DEFAULT_THRESHOLD,
        Action,
        CheckOutputsInput,
        CheckOutputsResult,
        Policy,
        Verdict,
    )
    from domain.search_attributes import JOB_STATE

# Workflow modules are imported inside the sandbox (workflows/registry.py says why).
from workflows import policies
from workflows.slots import HeldSlot

# The `ApplicationError.type` a failed job's workflow fails with (after its refund, record,
# slot release and delivery ran). Its first detail is the final `JobStatus`; read it back with
# `status_from_failure`. A documented contract: operators filter failures by this type.
JOB_FAILED_ERROR = "JobFailed"


async def ledger_activity(name: str, arg: Any, result_type: type[Any]) -> Any:
    """Charge or refund as a regular activity, so it runs only once the decision is in history
    (why: `PaidJobWorkflow._ledger_step`). Every workflow that moves points uses this."""
    return await workflow.execute_activity(
        name,
        arg,
        result_type=result_type,
        start_to_close_timeout=policies.LEDGER_TIMEOUT,
        retry_policy=policies.LEDGER_RETRY,
    )


class JobFailed(Exception):
    """A unit of work failed for a reason the user is told."""


class PaidJobWorkflow:
    """Base class of every job workflow. Not a workflow itself: subclasses add `@workflow.run`."""

    kind: ClassVar[str] = "job"
    prepare_activity: ClassVar[str] = ""

    def __init__(self) -> None:
        self._status = JobStatus()
        self._cancel: CancelRequest | None = None
        self._progress: dict[int, Progress] = {}
        self._route = JobRoute()  # the plan's, once prepare made one (`_apply_plan`)
        self._kind = self.kind
        self._ledger_as_activities = True
        self._run_keys = True
        self._bounded_delivery = True
        self._failed_jobs_fail = True
        self._charge_started = False
        self._charged = False
        self._top_down = True
        self._indexed_state: JobState | None = None  # the JobState search attribute's value
        self._platform = ""
        self._slot = HeldSlot()
        self._units = 1
        self._plan_user_id = ""
        self._unit_outputs: list[list[StoredOutput]] = []
        self._withheld: str | None = None  # why the content filter withheld images
        self._checking = False  # the content check runs: its images are not shown yet

    # ---- handlers -------------------------------------------------------------------------

    @workflow.query(name="status")
    def status(self) -> JobStatus:
        """The job's status, with `units` and the percent of the units made so far.

        Running units report their progress in their activity's heartbeat details, not here
        (a signal per update wrote most of a job's history); `JobsClient.status()` adds them.
        Counting here, in the query, changes no command: old histories replay unchanged.
        """
        if self._status.final or self._status.stage == "training":
            return self._status
        units = max(1, len(self._plan_units()))
        update: dict[str, Any] = {"units": units}
        if self._progress:
            done = sum(p.percent for p in self._progress.values())
            update["percent"] = round(done / units, 1)
            made = any(p.percent >= 100.0 for p in self._progress.values())
            if made and self._status.state is JobState.QUEUED:
                update["state"] = JobState.RUNNING  # a unit is made: the job is under way
        return self._status.model_copy(update=update)

    @workflow.signal(name="report_progress")
    def report_progress(self, progress: Progress) -> None:
        """Where activities of earlier releases reported queue position and percent.

        Today's activities put progress in their heartbeat details instead (no history event;
        `JobsClient.status()` reads them, and derives queued → running from them too). The
        handler stays: a rolling deploy's older comfy workers still signal, and histories
        with these signals must replay.
        """
        if self._status.state not in (JobState.QUEUED, JobState.RUNNING):
            return
        self._progress[progress.index] = progress
        parts = list(self._progress.values())
        running = [p for p in parts if p.state is JobState.RUNNING]
        state = JobState.RUNNING if running else JobState.QUEUED
        positions = [p.queue_position for p in parts if p.queue_position is not None]
        self._status.queue_position = min(positions) if positions and not running else None
        units = max(1, len(self._plan_units()))
        self._status.percent = round(sum(p.percent for p in parts) / units, 1)
        self._status.detail = progress.detail
        if state is not self._status.state:
            self._set_state(state)

    @workflow.update(name="cancel")
    async def cancel(self, request: CancelRequest) -> CancelResult:
        """Ask the main loop to stop; returns once the refund is booked."""
        if self._cancel is None:
            self._cancel = request
        await workflow.wait_condition(lambda: self._status.final)
        return CancelResult(state=self._status.state, refund=self._status.refund)

    @cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        state = self._status.state
        if not state.cancellable:
            why = (
                "it is already being delivered"
                if state is JobState.DELIVERING
                else f"it is {state}"
            )
            raise ApplicationError(
                f"this job can no longer be cancelled: {why}", type="not_cancellable"
            )

    # ---- the saga -------------------------------------------------------------------------

    def _plan_units(self) -> list[int]:
        return list(range(self._units))

    async def run_job(
        self,
        *,
        user: str,
        platform: str,
        reply: ReplyTarget | None,
        prepare_input: Any,
        kind: str | None = None,
    ) -> JobStatus:
        """Prepare; charge; try to produce; compensate only when the workflow exits; then
        record, free the slot, deliver (the money-transfer saga's shape, laid out as
        samples-python message_passing/waiting_for_handlers_and_compensation/workflows.py).

        Not in a `finally`: an exception that fails the workflow *task* (a bug, a
        nondeterminism) is retried by the server on the same history, so it must not record
        the job, free its slot or tell the user anything; it re-raises untouched and the job
        shows as stuck in the UI, holding its slot, until fixed or reset.
        """
        wid = workflow.info().workflow_id
        self._units = 1
        self._kind = kind or self.kind
        self._status = JobStatus(workflow_id=wid, kind=self._kind, user=user)
        # Asked first, before any command (docs/patches.md). It implies every earlier saga
        # patch, which new runs therefore no longer ask (each ask wrote two events).
        self._top_down = workflow.patched("saga-top-down")
        if not self._top_down:
            return await self._run_job_before_top_down(platform, reply, prepare_input)
        self._indexed_state = self._start_state()
        self._platform = platform
        self._set_state(JobState.STARTING)
        plan: JobPlan | None = None
        try:
            plan = await self._prepare(prepare_input)
            if not self._refused_or_cancelled_before_charge(plan):
                await self._charge_and_produce(plan, wid)
        except BaseException as err:
            if not is_workflow_exit_exception(err):
                raise  # a workflow-task failure: retried on the same history, nothing written
            await self._compensate(plan, err)
            await self._after(plan, platform, reply)
            if isinstance(err, asyncio.CancelledError):
                raise  # an operator's cancel ends the workflow canceled
            raise job_failed_error(self._status) from err
        await self._after(plan, platform, reply)
        if self._status.state is JobState.FAILED:
            # Everything a failed job owes (refund, record, slot, the user's message) is done.
            raise job_failed_error(self._status)
        return self._status

    async def _prepare(self, prepare_input: Any) -> JobPlan:
        plan: JobPlan = await workflow.execute_local_activity(
            self.prepare_activity,
            prepare_input,
            result_type=JobPlan,
            start_to_close_timeout=policies.PREPARE_TIMEOUT,
            retry_policy=policies.PREPARE_RETRY,
        )
        self._apply_plan(plan)
        return plan

    def _refused_or_cancelled_before_charge(self, plan: JobPlan) -> bool:
        if plan.refused:
            self._status.refused_code = plan.refused_code or "bad_input"
            self._finish(JobState.REFUSED, reason=plan.refused)
        elif self._cancel is not None:
            self._finish(JobState.CANCELLED, reason=self._cancel.reason)
        return self._status.final

    async def _compensate(self, plan: JobPlan | None, err: BaseException) -> None:
        """Undo what the workflow's exit left undone: refund a charge that may have been booked
        (by key: a no-op if it was not) and give the job its final state.

        `_charge_and_produce` compensates the cancels and failures of the work itself; what
        reaches here is a cancel or failure around it (prepare, charge, settle, refund).
        """
        if self._status.final:
            return
        cancelled = isinstance(err, asyncio.CancelledError)
        reason = "cancelled by an operator" if cancelled else describe_failure(err)
        if plan is not None and (self._charged or (cancelled and self._charge_started)):
            await self._refund(plan, produced_units=0, reason=reason)
        self._finish(JobState.CANCELLED if cancelled else JobState.FAILED, reason=reason)

    def _start_state(self) -> JobState | None:
        """The JobState the starter indexed (the jobs client starts jobs as `starting`)."""
        value = workflow.info().typed_search_attributes.get(JOB_STATE)
        try:
            return JobState(value) if value else None
        except ValueError:
            return None

    async def _run_job_before_top_down(
        self, platform: str, reply: ReplyTarget | None, prepare_input: Any
    ) -> JobStatus:
        """`run_job` of histories without `saga-top-down` (docs/patches.md): the same commands
        as it issued, `_after` in a `finally`."""
        wid = workflow.info().workflow_id
        self._set_state(JobState.STARTING)
        # Asked before the first local activity: a patch first asked right after a local
        # activity's result cannot be replayed (the marker lands in the next task's events).
        self._ledger_as_activities = workflow.patched("ledger-as-activities")
        self._run_keys = workflow.patched("per-run-ledger-keys")
        self._bounded_delivery = workflow.patched("bounded-delivery")
        self._failed_jobs_fail = workflow.patched("failed-jobs-fail")
        plan: JobPlan | None = None
        try:
            plan = await workflow.execute_local_activity(
                self.prepare_activity,
                prepare_input,
                result_type=JobPlan,
                start_to_close_timeout=policies.PREPARE_TIMEOUT,
                retry_policy=policies.PREPARE_RETRY,
            )
            self._apply_plan(plan)
            if not self._refused_or_cancelled_before_charge(plan):
                await self._charge_and_produce(plan, wid)
        except asyncio.CancelledError:
            # `temporal workflow cancel`: the same compensation as the user's cancel. A charge
            # that was in flight may have been booked, so refund by key (a no-op if it was not).
            if not self._status.final:
                if plan is not None and self._charge_started:
                    await self._refund(plan, produced_units=0, reason="cancelled by an operator")
                self._finish(JobState.CANCELLED, reason="cancelled by an operator")
            raise
        finally:
            await self._after(plan, platform, reply)
        if self._failed_jobs_fail and self._status.state is JobState.FAILED:
            raise job_failed_error(self._status)
        return self._status

    def _ledger_key(self, step: str) -> str:
        """`<workflow id>:<run id>:<step>`: each run books its own charge and refund.

        A retried activity reuses its input, so a retry within the run stays idempotent. A
        reset run replays the steps before its reset point from history (nothing is booked
        again) and books the steps after it under its own run's keys; see `_settle`. Job
        workflows never continue as new; one that did would have to pass its charge key on.
        """
        info = workflow.info()
        if not self._run_keys:
            return f"{info.workflow_id}:{step}"
        return f"{info.workflow_id}:{info.run_id}:{step}"

    def _charge_input(self, plan: JobPlan) -> ChargeInput:
        wid = workflow.info().workflow_id
        return ChargeInput(
            user_id=plan.user_id,
            amount=plan.price,
            key=self._ledger_key("charge"),
            job_id=wid,
            reason=f"{self._kind}: {plan.summary}"[:200],
            top_up=self._run_keys,
        )

    async def _charge_and_produce(self, plan: JobPlan, wid: str) -> None:
        self._set_state(JobState.CHARGING)
        self._charge_started = True
        charge: ChargeResult = await self._ledger_step(
            ActivityNames.CHARGE_POINTS, self._charge_input(plan), ChargeResult
        )
        self._status.balance = charge.balance
        self._charged = charge.ok
        if not charge.ok:
            self._status.refused_code = "insufficient_points"
            self._finish(JobState.REFUSED, reason=charge.reason)
            return
        produced: list[StoredOutput] = []
        produced_units = 0
        failure: str | None = None
        operator_cancel: BaseException | None = None
        try:
            if self._cancel is None:
                self._set_state(JobState.QUEUED)
                produced, produced_units, failure = await self._produce(plan)
                produced, produced_units = await self._check_safety(plan, produced, produced_units)
                failure = failure or self._withheld
        except asyncio.CancelledError as err:
            operator_cancel = err
            if self._checking:  # cancelled during the content check: nothing was shown
                produced, produced_units = [], 0
        # A cancel that arrives once every unit is made (in the same workflow task as the last
        # result) has nothing left to stop: the job is done, and the cancel answers so.
        everything_made = produced_units >= plan.units
        cancelled = (self._cancel is not None and not everything_made) or (
            operator_cancel is not None
        )
        reason = failure or "cancelled"
        if cancelled:
            reason = self._cancel.reason if self._cancel else "cancelled by an operator"
        # A refusal by _settle withholds what was made; there is nothing to refund then.
        settled = produced_units == 0 or not self._run_keys or await self._settle(plan)
        if settled:
            await self._refund(plan, produced_units=produced_units, reason=reason)
            if cancelled:
                self._finish(JobState.CANCELLED, reason=reason)
            elif not produced and self._withheld:
                self._status.refused_code = "unsafe_output"  # our refusal: refunded in full
                self._finish(JobState.REFUSED, reason=self._withheld)
            elif not produced:
                self._finish(JobState.FAILED, reason=failure or "no output")
            else:
                self._status.reason = failure  # a partly failed batch says what failed
                self._set_state(JobState.DELIVERING)
        if operator_cancel is not None:
            raise operator_cancel

    async def _settle(self, plan: JobPlan) -> bool:
        """Make sure the job still holds its charge now that work was made; False if it cannot.

        In a plain run this replays the run's own charge key: nothing is booked. It matters in a
        run an operator reset to a point after the charge: the charge came from history, the
        earlier run may have been refunded since (`stationthis jobs refund`), and this run just
        rendered again. Under this run's key the job is topped up to its price (nothing if the
        earlier charge still stands). Always asked once work exists, never only in reset runs:
        a condition that differs between a run and its reset would change the commands of the
        history the reset copies. Too few points ends the job refused, its outputs withheld.
        """
        # `settle` changes only the activity's input, not the command: old histories replay.
        settle = self._charge_input(plan).model_copy(update={"settle": True})
        result: ChargeResult = await self._ledger_step(
            ActivityNames.CHARGE_POINTS, settle, ChargeResult
        )
        self._status.balance = result.balance
        if result.ok:
            return True
        self._status.outputs = []
        self._status.refused_code = "insufficient_points"
        self._finish(
            JobState.REFUSED,
            reason=f"this job was restarted after its refund, and {result.reason}",
        )
        return False

    async def _refund(self, plan: JobPlan, *, produced_units: int, reason: str) -> None:
        """Give back the share of the price that produced nothing, once, by key."""
        amount = partial_refund(plan.price, plan.units, produced_units)
        if amount <= 0:
            return
        wid = workflow.info().workflow_id
        result: RefundResult = await self._ledger_step(
            ActivityNames.REFUND_POINTS,
            RefundInput(
                user_id=plan.user_id,
                amount=amount,
                key=self._ledger_key("refund"),
                job_id=wid,
                reason=reason[:200],
            ),
            RefundResult,
        )
        self._status.refund = result.refunded
        self._status.balance = result.balance

    async def _ledger_step(self, name: str, arg: Any, result_type: type[Any]) -> Any:
        """Charge or refund. A regular activity, so it runs only once the decision is in history.

        They were local activities, which run inside a workflow task that can still fail (a
        cancel racing an activity completion gets the task rejected): the ledger then held a
        refund for a job that ended done, or a charge for a job that ended cancelled without
        one (found by bench/chaos.py; tests/chaos/test_found_by_chaos.py). Histories from
        before the change replay through the old branch.
        """
        if self._ledger_as_activities:
            return await ledger_activity(name, arg, result_type)
        return await workflow.execute_local_activity(
            name,
            arg,
            result_type=result_type,
            start_to_close_timeout=policies.LEDGER_TIMEOUT,
            retry_policy=policies.LEDGER_RETRY,
        )

    async def _produce(self, plan: JobPlan) -> tuple[list[StoredOutput], int, str | None]:
        """Run every unit in parallel; return what was made and the first failure, if any."""
        tasks = [
            asyncio.create_task(self._produce_comfy(i, work)) for i, work in enumerate(plan.comfy)
        ]
        offset = len(tasks)
        tasks += [
            asyncio.create_task(self._produce_media(offset + i, work))
            for i, work in enumerate(plan.media)
        ]
        try:
            await workflow.wait_condition(
                lambda: all(t.done() for t in tasks) or self._cancel is not None
            )
        finally:
            if not all(t.done() for t in tasks):
                for t in tasks:
                    t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        produced: list[StoredOutput] = []
        units = 0
        failure: str | None = None
        for t in tasks:
            if t.cancelled():
                failure = failure or "cancelled"
                continue
            exc = t.exception()
            if exc is None:
                produced.extend(t.result())
                self._unit_outputs.append(t.result())
                units += 1
            else:
                failure = failure or describe_failure(exc)
        self._status.outputs = produced
        return produced, units, failure

    async def _check_safety(
        self, plan: JobPlan, produced: list[StoredOutput], units: int
    ) -> tuple[list[StoredOutput], int]:
        """Run the output classifier under the place's policy (decided at prepare, in
        `plan.settings["safety"]`): withhold blocked images, flag blurred ones for a spoiler.

        A unit whose every image is withheld counts as not produced, so its share is refunded:
        the refusal is ours. If the safety worker does not answer within SAFETY_DEADLINE the
        images are withheld (fail closed) rather than shown unchecked. Plans without a policy
        (`off`, and every plan of an earlier release) ask nothing, so their histories are
        unchanged; the patch guards the new command for the others.
        """
        policy = str(plan.settings.get("safety", Policy.OFF.value))
        if not produced or policy == Policy.OFF.value or not workflow.patched("output-safety"):
            return produced, units
        self._status.outputs = []  # nothing is shown before it is checked
        self._checking = True
        try:
            result: CheckOutputsResult = await workflow.execute_activity(
                ActivityNames.CHECK_OUTPUTS,
                CheckOutputsInput(
                    workflow_id=workflow.info().workflow_id,
                    user_id=self._user_id,
                    policy=Policy(policy),
                    threshold=float(plan.settings.get("safety_threshold", DEFAULT_THRESHOLD)),
                    outputs=produced,
                ),
                result_type=CheckOutputsResult,
                task_queue=str(plan.settings.get("safety_queue", "safety")),
                start_to_close_timeout=policies.SAFETY_TIMEOUT,
                schedule_to_close_timeout=policies.SAFETY_DEADLINE,
                retry_policy=policies.SAFETY_RETRY,
            )
            verdicts = {v.blob_id: v for v in result.verdicts}
            unanswered: str | None = None
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):  # `temporal workflow cancel` reached it
                raise asyncio.CancelledError() from err
            workflow.logger.warning("content check failed, withholding: %s", err.cause or err)
            verdicts = {}
            unanswered = "the content check did not answer, so the result was withheld"
        self._checking = False
        blocked = {
            o.blob_id
            for o in produced
            if o.blob_id not in verdicts or verdicts[o.blob_id].action is Action.BLOCK
        }
        kept = [
            o.model_copy(update={"spoiler": verdicts[o.blob_id].action is Action.BLUR})
            for o in produced
            if o.blob_id not in blocked
        ]
        kept_units = sum(
            1 for outs in self._unit_outputs if any(o.blob_id not in blocked for o in outs)
        )
        if blocked:
            self._withheld = unanswered or _withheld_reason(
                [verdicts[b] for b in sorted(blocked) if b in verdicts], len(produced)
            )
        self._status.outputs = kept
        return kept, min(units, kept_units)

    async def _produce_comfy(self, index: int, work: ComfyWork) -> list[StoredOutput]:
        wid = workflow.info().workflow_id
        run = await workflow.execute_activity(
            ActivityNames.RUN_COMFY_PROMPT,
            ComfyRunInput(
                workflow_id=wid,
                index=index,
                work=work,
                timeout_seconds=self._render_timeout.total_seconds(),
                # stored by the render's own activity: one round trip per image, not two
                store_for=self._user_id if self._top_down else None,
            ),
            result_type=ComfyRunResult,
            task_queue=self._comfy_queue,
            start_to_close_timeout=self._render_timeout,
            heartbeat_timeout=self._heartbeat_timeout,
            retry_policy=policies.COMFY_RETRY,
            priority=self._comfy_priority,
        )
        self._status.gpu_seconds += run.gpu_seconds
        if not run.files:
            raise JobFailed("ComfyUI finished without producing an image")
        self._progress[index] = Progress(index=index, state=JobState.RUNNING, percent=100.0)
        if run.stored is not None:
            return run.stored
        # Older runs, and a comfy worker of an earlier release that ignored `store_for`.
        stored: list[StoredOutput] = await workflow.execute_activity(
            ActivityNames.STORE_COMFY_OUTPUTS,
            StoreOutputsInput(
                workflow_id=wid, index=index, user_id=self._user_id, files=run.files, seed=work.seed
            ),
            result_type=list[StoredOutput],
            task_queue=self._route.comfy_io_queue,
            start_to_close_timeout=policies.STORE_TIMEOUT,
            retry_policy=policies.STORE_RETRY,
        )
        return stored

    async def _produce_media(self, index: int, work: MediaWork) -> list[StoredOutput]:
        """A Pillow job on the `media` queue: one source blob in, one result blob out."""
        self._progress[index] = Progress(index=index, state=JobState.RUNNING, percent=0.0)
        self._set_state(JobState.RUNNING)
        out = await workflow.execute_activity(
            ActivityNames.PROCESS_IMAGE,
            ProcessImageInput(
                workflow_id=workflow.info().workflow_id,
                index=index,
                user_id=self._user_id,
                work=work,
            ),
            result_type=StoredOutput,
            task_queue=self._route.media_queue,
            start_to_close_timeout=policies.MEDIA_TIMEOUT,
            retry_policy=policies.MEDIA_RETRY,
        )
        self._progress[index] = Progress(index=index, state=JobState.RUNNING, percent=100.0)
        return [out]

    async def _after(self, plan: JobPlan | None, platform: str, reply: ReplyTarget | None) -> None:
        """Record, free the user's job slot, deliver: runs whatever happened before.

        The slot is freed before delivery: it caps GPU work, and the work is made by now. A
        delivery that fails for good or misses its deadline ends the job as it was (done, with
        its charge: the work was made) and says `not_delivered`; the outputs stay retrievable.
        """
        if self._status.state is JobState.DELIVERING and platform not in PUSH_PLATFORMS:
            self._status.state = JobState.DONE  # pull platforms fetch the result themselves
        await workflow.execute_local_activity(
            ActivityNames.RECORD_JOB,
            JobRecordInput(status=self._status, platform=platform, user_id=self._plan_user_id),
            start_to_close_timeout=policies.LEDGER_TIMEOUT,
            retry_policy=policies.LEDGER_RETRY,
        )
        if plan is not None and plan.user_id:
            self._slot.hold(plan.user_id, local=True)  # taken by the jobs client at start
        if self._bounded_delivery:
            await self._slot.release()
        if platform in PUSH_PLATFORMS:
            deadline = self._deliver_deadline(reply)
            try:
                await workflow.execute_activity(
                    ActivityNames.DELIVER_RESULT,
                    DeliverInput(platform=platform, reply=reply, status=self._status),
                    task_queue=self._route.deliver_to(platform),
                    start_to_close_timeout=policies.DELIVER_TIMEOUT,
                    heartbeat_timeout=policies.DELIVER_HEARTBEAT,
                    schedule_to_close_timeout=deadline,
                    retry_policy=policies.DELIVER_RETRY,
                )
            except ActivityError as err:
                workflow.logger.warning("delivery ended without success: %s", err.cause or err)
                if self._bounded_delivery:
                    self._status.not_delivered = describe_delivery_failure(err, deadline)
        delivered = self._status.state is JobState.DELIVERING
        if delivered:
            self._status.state = JobState.DONE
        self._set_state(self._status.state)
        # A pushed job's final state is recorded too (`record-after-delivery`, implied by
        # `saga-top-down`; docs/patches.md).
        if (delivered or self._status.not_delivered) and (
            self._top_down or workflow.patched("record-after-delivery")
        ):
            await workflow.execute_local_activity(
                ActivityNames.RECORD_JOB,
                JobRecordInput(status=self._status, platform=platform, user_id=self._plan_user_id),
                start_to_close_timeout=policies.LEDGER_TIMEOUT,
                retry_policy=policies.LEDGER_RETRY,
            )
        await self._slot.release()  # held through delivery only by runs before `bounded-delivery`
        await workflow.wait_condition(workflow.all_handlers_finished)

    def _deliver_deadline(self, reply: ReplyTarget | None) -> timedelta:
        """How long the result may wait for the delivery worker (the request's, else policy)."""
        if not self._bounded_delivery:
            return policies.DELIVER_DEADLINE_UNBOUNDED
        if reply is not None and reply.deliver_within:
            return timedelta(seconds=reply.deliver_within)
        return policies.DELIVER_DEADLINE

    # ---- state ----------------------------------------------------------------------------

    @property
    def _user_id(self) -> str:
        return self._plan_user_id

    def _apply_plan(self, plan: JobPlan) -> None:
        self._plan_user_id = plan.user_id
        self._units = max(1, plan.units)
        s = self._status
        s.price, s.clamps, s.seeds = plan.price, plan.clamps, plan.seeds
        s.prompt, s.template, s.settings = plan.prompt, plan.template, plan.settings
        s.balance = plan.balance
        self._route = plan_route(plan.route, plan.settings)

    @property
    def _comfy_queue(self) -> str:
        return self._route.comfy_queue

    @property
    def _render_timeout(self) -> timedelta:
        return timedelta(seconds=self._route.render_timeout)

    @property
    def _heartbeat_timeout(self) -> timedelta:
        return timedelta(seconds=self._route.heartbeat_timeout)

    @property
    def _comfy_priority(self) -> Priority:
        """Fair share between users (domain/routing.py): the plan's route names the user as
        the GPU queue's fairness key. A plan from before carries none and schedules as it did."""
        key = self._route.fairness_key
        return Priority(fairness_key=key) if key else Priority.default

    def _finish(self, state: JobState, *, reason: str | None = None) -> None:
        self._status.reason = reason
        self._status.queue_position = None
        self._set_state(state)

    def _set_state(self, state: JobState) -> None:
        """Show `state` in the query, the UI's details and the `JobState` search attribute.

        Runs with `saga-top-down` write the attribute only when its value changes, and not
        for a state over before anyone could search for it (`charging`, one ledger round trip;
        `delivering` on a pull platform, which ends done in the same workflow task): each
        write is a history event.
        """
        self._status.state = state
        passing = state is JobState.CHARGING or (
            state is JobState.DELIVERING and self._platform not in PUSH_PLATFORMS
        )
        index = not self._top_down or (state is not self._indexed_state and not passing)
        if index:
            self._indexed_state = state
            workflow.upsert_search_attributes([JOB_STATE.value_set(state.value)])
        workflow.set_current_details(self._details())

    def _details(self) -> str:
        s = self._status
        lines = [f"**{s.headline()}**", f"price: {s.price} points"]
        if s.refund:
            lines.append(f"refunded: {s.refund}")
        if s.clamps:
            lines.append("clamped: " + ", ".join(s.clamps))
        if s.seeds:
            lines.append("seeds: " + ", ".join(str(x) for x in s.seeds))
        if s.outputs:
            lines.append("outputs: " + ", ".join(o.blob_id for o in s.outputs))
        return "\n\n".join(lines)


def is_workflow_exit_exception(err: BaseException) -> bool:
    """Whether `err` ends the workflow (cancel, or a Temporal failure such as an activity's
    or an ApplicationError) rather than failing only its workflow task, which the server
    retries on the same history. Only the former may compensate (samples-python
    message_passing/waiting_for_handlers_and_compensation)."""
    return isinstance(err, (asyncio.CancelledError, FailureError))


def _withheld_reason(blocked: list[Verdict], total: int) -> str:
    """What the user reads about withheld images: how many, and the strongest finding."""
    what = "the image was" if total == 1 else f"{max(1, len(blocked))} of {total} images were"
    if not blocked:
        return f"{what} withheld by this chat's content filter and refunded"
    top = max(blocked, key=lambda v: v.score)
    label = top.label.lower().replace("_", " ") or "flagged"
    return (
        f"{what} withheld by this chat's content filter ({label}, score {top.score:.2f}) "
        "and refunded"
    )


def job_failed_error(status: JobStatus) -> ApplicationError:
    """The error a failed job's workflow fails with: non-retryable (a retry would charge
    again), of type JOB_FAILED_ERROR, carrying the final status as its only detail."""
    reason = status.reason or "unknown error"
    return ApplicationError(
        f"{status.kind} failed: {reason} (refunded {status.refund})",
        status,
        type=JOB_FAILED_ERROR,
        non_retryable=True,
    )


def status_from_failure(err: BaseException | None) -> JobStatus | None:
    """The final JobStatus a failed job's workflow carries, found anywhere in `err`'s cause
    chain (a client's WorkflowFailureError, a parent's ChildWorkflowError); None otherwise."""
    while err is not None:
        if isinstance(err, ApplicationError) and err.type == JOB_FAILED_ERROR and err.details:
            detail = err.details[0]
            if isinstance(detail, JobStatus):
                return detail
            return JobStatus.model_validate(detail)
        cause = getattr(err, "cause", None)
        err = cause if isinstance(cause, BaseException) else err.__cause__
    return None


def describe_delivery_failure(err: ActivityError, deadline: timedelta) -> str:
    """Why a result did not reach its chat, as `JobStatus.not_delivered` says it."""
    cause = err.cause
    if isinstance(cause, TimeoutError):
        return f"the chat's delivery worker did not deliver it within {_span(deadline)}"
    if isinstance(cause, CancelledError):
        return "the delivery was cancelled"
    if isinstance(cause, ApplicationError):
        return cause.message
    return str(cause or err)


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def describe_failure(exc: BaseException) -> str:
    """The reason a user reads, from the error chain of a failed activity."""
    cause: BaseException | None = exc
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, TimeoutError):
        return "ComfyUI did not finish in time"
    if isinstance(cause, CancelledError):
        return "cancelled"
    if isinstance(cause, ApplicationError):
        return cause.message
    return str(cause) if cause else "unknown error"
