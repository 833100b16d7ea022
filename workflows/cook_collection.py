"""CookCollectionWorkflow: make every piece of a collection, durably, a few at a time.

Each piece is a child `MakeImageWorkflow` with id `<cook id>-piece-<n>` (`-retry<k>` after a
refusal for points), so the paid-job saga charges it once and refunds it if it fails or is
cancelled, and a restart can never start piece n twice: the id is reused by nobody, and the
child's start lives in this workflow's history. Pieces are planned and recorded by number.

- `in_flight` pieces run at once (default 3); updates `pause`, `resume`, `cancel` (validated);
  query `progress`.
- A child refused for points parks its piece for a retry and the cook waits: every
  `balance_poll_seconds` an activity checks the balance and the cook resumes by itself once one
  more piece is affordable (or when the user resumes).
- After `continue_after` pieces started in one run, it lets the in-flight ones finish and
  continues as new with its cursor, so the history stays bounded for any supply.
- Cancel (update or `temporal workflow cancel`) cancels the in-flight children; their own saga
  refunds them.
- The cook holds ONE of its user's running-job slots for its whole life (the jobs client took
  it at start, under the cook's id; continue-as-new keeps the id, so the slot too). Its pieces
  take none: they are the cook's bounded parallelism (`in_flight`, capped by the client). The
  slot is given back before the cook reports its final state, so a cancel that has answered
  has freed it. A terminated cook cannot give it back; the jobs client frees the slots of ended
  workflows when the user next hits the cap (`JobsClient._take_slot`).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import (
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    WorkflowAlreadyStartedError,
)
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from domain.collections import (
        BalanceInput,
        BalanceResult,
        CookControl,
        CookCursor,
        CookInput,
        CookNames,
        CookProgress,
        CookState,
        PlanPieceInput,
        PlanPieceResult,
        RecordPieceInput,
        RecordPieceResult,
    )
    from domain.jobs import JobState, JobStatus, MakeImageRequest
    from domain.search_attributes import JOB_KIND, JOB_STATE, PARENT_JOB, PLATFORM, USER_ID

# Workflow modules are imported inside the sandbox (workflows/registry.py says why).
from workflows import policies
from workflows.job_saga import status_from_failure
from workflows.make_image import MakeImageWorkflow
from workflows.slots import HeldSlot

POINTS = "insufficient_points"


@workflow.defn(name="CookCollectionWorkflow")
class CookCollectionWorkflow:
    def __init__(self) -> None:
        self._regular_activities = True
        self._slot = HeldSlot()
        self._inp = CookInput(collection_id="", user="")
        self._c = CookCursor()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        # The child-workflow part of each piece task: cancel cancels only these, so planning
        # and recording always run to the end.
        self._children: dict[int, asyncio.Task[JobStatus]] = {}
        self._plan_lock = asyncio.Lock()
        self._cancel: CookControl | None = None
        self._state = CookState.RUNNING
        self._wake = 0
        self._started_this_run = 0

    # ---- queries and updates ----------------------------------------------------------------

    @workflow.query(name="progress")
    def progress(self) -> CookProgress:
        c = self._c
        return CookProgress(
            workflow_id=workflow.info().workflow_id,
            collection_id=self._inp.collection_id,
            state=self._state,
            supply=len(self._inp.numbers) if self._inp.numbers else self._inp.supply,
            made=c.made,
            failed=c.failed,
            cancelled=c.cancelled,
            skipped=c.skipped,
            duplicates=c.duplicates,
            in_flight=len(self._tasks),
            points_spent=c.points_spent,
            refunded=c.refunded,
            piece_price=self._inp.piece_price,
            reason=c.reason,
            note=c.note,
            runs=c.runs,
        )

    @workflow.update(name="pause")
    async def pause(self, ctl: CookControl) -> CookProgress:
        """Start no new pieces; the ones in flight finish."""
        self._c.paused = True
        self._c.reason = ctl.reason or "paused by the user"
        self._set_state()
        self._wake += 1
        return self.progress()

    @pause.validator
    def _validate_pause(self, ctl: CookControl) -> None:
        self._refuse_if_ended()
        if self._c.paused:
            raise ApplicationError("the cook is already paused", type="already_paused")

    @workflow.update(name="resume")
    async def resume(self, ctl: CookControl) -> CookProgress:
        """Start pieces again (after a pause, or before the balance check sees a top-up)."""
        self._c.paused = False
        self._c.waiting_for_points = False
        self._c.reason = None
        self._set_state()
        self._wake += 1
        return self.progress()

    @resume.validator
    def _validate_resume(self, ctl: CookControl) -> None:
        self._refuse_if_ended()
        if not (self._c.paused or self._c.waiting_for_points):
            raise ApplicationError("the cook is not paused", type="not_paused")

    @workflow.update(name="cancel")
    async def cancel(self, ctl: CookControl) -> CookProgress:
        """Stop: cancel the pieces in flight (refunded by their saga); returns at the end."""
        if self._cancel is None:
            self._cancel = ctl
        self._wake += 1
        await workflow.wait_condition(lambda: self._state.final)
        return self.progress()

    @cancel.validator
    def _validate_cancel(self, ctl: CookControl) -> None:
        self._refuse_if_ended()

    def _refuse_if_ended(self) -> None:
        if self._state.final:
            raise ApplicationError(f"the cook has ended: {self._state.value}", type="cook_ended")
        if self._cancel is not None:
            raise ApplicationError("the cook is being cancelled", type="cook_ended")

    # ---- the main loop ----------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: CookInput) -> CookProgress:
        self._inp = inp
        self._c = inp.cursor or CookCursor()
        # Patches: why, and when each is deprecated and removed, in docs/patches.md.
        self._regular_activities = workflow.patched("cook-regular-activities")
        if workflow.patched("cook-holds-a-slot") and inp.user_id:
            self._slot.hold(inp.user_id, local=False)
        self._set_state(force=True)
        try:
            await self._loop()
        except asyncio.CancelledError:
            # `temporal workflow cancel`: the same as the user's cancel, then end as cancelled.
            self._cancel = self._cancel or CookControl(reason="cancelled by an operator")
            await self._stop_all()
            await self._free_slot()
            self._finish(CookState.CANCELLED)
            raise
        if self._cancel is not None:
            await self._stop_all()
            self._c.reason = self._cancel.reason or "cancelled by the user"
            await self._free_slot()
            self._finish(CookState.CANCELLED)
        elif self._remaining():
            await workflow.wait_condition(workflow.all_handlers_finished)
            self._c.runs += 1
            workflow.continue_as_new(inp.model_copy(update={"cursor": self._c}))
        else:
            await self._free_slot()
            self._finish(CookState.DONE)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.progress()

    async def _loop(self) -> None:
        inp = self._inp
        while True:
            if self._cancel is not None:
                return
            remaining = self._remaining()
            if not remaining and not self._tasks:
                return
            budget = self._started_this_run < max(1, inp.continue_after)
            if (
                remaining
                and budget
                and not self._c.paused
                and not self._c.waiting_for_points
                and len(self._tasks) < max(1, inp.in_flight)
            ):
                self._launch(self._next_number())
                continue
            if remaining and not budget and not self._tasks:
                return  # continue as new
            if self._c.waiting_for_points and not self._c.paused and not self._tasks:
                await self._wait_for_points()
                continue
            await self._until_woken()

    async def _free_slot(self) -> None:
        """Give back the running-job slot the cook held (before the final state is shown, so
        whoever sees the cook ended can start the next job)."""
        await self._slot.release()

    async def _until_woken(self) -> None:
        """Wait for a piece to end or an update to arrive."""
        seen = self._wake
        await workflow.wait_condition(lambda: self._wake != seen)

    def _remaining(self) -> bool:
        total = len(self._inp.numbers) if self._inp.numbers else self._inp.supply
        return bool(self._c.retry) or self._c.next_index < total

    def _next_number(self) -> int:
        if self._c.retry:
            return self._c.retry.pop(0)
        i = self._c.next_index
        self._c.next_index += 1
        return self._inp.numbers[i] if self._inp.numbers else i + 1

    def _launch(self, number: int) -> None:
        self._started_this_run += 1
        task = asyncio.create_task(self._piece(number))
        self._tasks[number] = task

        def done(_: asyncio.Task[None]) -> None:
            # The piece's counters (made, failed, ...) were set before its task ended.
            self._tasks.pop(number, None)
            self._wake += 1
            self._show()

        task.add_done_callback(done)
        self._show()

    async def _wait_for_points(self) -> None:
        """Sleep, check the balance, resume once one more piece is affordable."""
        seen = self._wake
        try:
            await workflow.wait_condition(
                lambda: self._wake != seen,
                timeout=timedelta(seconds=self._inp.balance_poll_seconds),
            )
            return  # resumed, paused or cancelled meanwhile
        except TimeoutError:
            pass
        check = await self._step(
            CookNames.CHECK_BALANCE,
            BalanceInput(user=self._inp.user, need=self._inp.piece_price),
            result_type=BalanceResult,
            start_to_close_timeout=policies.LEDGER_TIMEOUT,
            retry_policy=policies.LEDGER_RETRY,
        )
        if check.enough and self._c.waiting_for_points:
            workflow.logger.info("balance %s is enough again: resuming", check.balance)
            self._c.waiting_for_points = False
            self._c.reason = None
            self._set_state()

    async def _stop_all(self) -> None:
        self._state = CookState.CANCELLING
        self._show()
        for t in list(self._children.values()):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    # ---- one piece --------------------------------------------------------------------------

    async def _piece(self, number: int) -> None:
        inp = self._inp
        wid = workflow.info().workflow_id
        async with self._plan_lock:  # one at a time: each plan sees the combinations before it
            plan = await self._plan(number)
        if plan.skip:
            self._c.skipped += 1
            return
        if plan.duplicate:
            self._c.duplicates += 1
            self._c.note = plan.note or "some combinations repeat: the space does not allow more"
        runs = self._c.retries.get(str(number), 0)
        child_id = f"{wid}-piece-{number}" + (f"-retry{runs}" if runs else "")
        request = MakeImageRequest(
            user=inp.user,
            platform="collection",
            prompt=plan.prompt,
            template=plan.template,
            overrides=dict(plan.overrides),
            request_id=child_id,
        )
        state, blob, reason = "failed", None, None
        if self._cancel is not None:
            return  # planned but never started: the next cook makes it with the same plan
        child = asyncio.create_task(
            workflow.execute_child_workflow(
                MakeImageWorkflow.run,
                request,
                id=child_id,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(USER_ID, inp.user),
                        SearchAttributePair(PLATFORM, inp.platform),
                        SearchAttributePair(JOB_KIND, "make"),
                        SearchAttributePair(JOB_STATE, JobState.STARTING.value),
                        # Lists and /status show the cook, not its pieces (`ParentJob IS NULL`).
                        SearchAttributePair(PARENT_JOB, workflow.info().workflow_id),
                    ]
                ),
                static_summary=f"piece {number} of {inp.collection_id}",
            )
        )
        self._children[number] = child
        try:
            status: JobStatus = await child
            if status.state is JobState.DONE and status.outputs:
                state, blob = "pending_review", status.outputs[0].blob_id
            elif status.state is JobState.REFUSED and status.refused_code == POINTS:
                state, reason = "refused", status.reason
            elif status.state is JobState.CANCELLED:
                state, reason = "cancelled", status.reason
            else:
                reason = status.reason or status.state.value
        except asyncio.CancelledError:
            state, reason = "cancelled", "cancelled with the cook"
        except ChildWorkflowError as err:
            failed = status_from_failure(err)  # a piece that failed (refunded) fails its child
            if isinstance(err.cause, CancelledError):
                state, reason = "cancelled", "cancelled with the cook"
            elif failed is not None:
                reason = failed.reason or failed.state.value
            else:
                reason = str(err.cause or err)
        except WorkflowAlreadyStartedError:
            # Only after an operator reset: the piece's child exists, so it is not made again.
            reason = "this piece was already started by an earlier run of the cook"
        finally:
            self._children.pop(number, None)
        recorded = await self._step(
            CookNames.RECORD_PIECE,
            RecordPieceInput(
                collection_id=inp.collection_id,
                number=number,
                cook_id=wid,
                child_id=child_id,
                state=state,
                blob_id=blob,
                reason=reason,
            ),
            result_type=RecordPieceResult,
            start_to_close_timeout=policies.LEDGER_TIMEOUT,
            retry_policy=policies.LEDGER_RETRY,
        )
        self._c.points_spent += recorded.charged - recorded.refunded
        self._c.refunded += recorded.refunded
        if state != "refused":
            self._c.retries.pop(str(number), None)  # the cursor keeps only parked pieces
        if state == "pending_review":
            self._c.made += 1
        elif state == "refused":
            self._c.retry.append(number)
            self._c.retries[str(number)] = runs + 1  # the next run gets a fresh child id
            if not self._c.waiting_for_points:
                self._c.waiting_for_points = True
                self._c.reason = f"waiting for points: {reason}"
                self._set_state()
        elif state == "cancelled":
            self._c.cancelled += 1
        else:
            self._c.failed += 1

    async def _step(self, name: str, arg: Any, **kw: Any) -> Any:
        """A MongoDB step of the cook. Pieces run concurrently, and local activities of
        concurrent pieces can resolve in another order on replay than they ran (a worker
        restart then decoded one piece's record as another's plan: "Failed decoding
        arguments"); regular activities are events, so replay sees them in their real order.
        Histories from before the change replay through the local branch."""
        if self._regular_activities:
            return await workflow.execute_activity(name, arg, **kw)
        return await workflow.execute_local_activity(name, arg, **kw)

    async def _plan(self, number: int) -> PlanPieceResult:
        inp = self._inp
        return await self._step(
            CookNames.PLAN_PIECE,
            PlanPieceInput(
                collection_id=inp.collection_id,
                number=number,
                cook_id=workflow.info().workflow_id,
                config_hash=inp.config_hash,
                regenerate=inp.regenerate,
            ),
            result_type=PlanPieceResult,
            start_to_close_timeout=policies.LEDGER_TIMEOUT,
            retry_policy=policies.LEDGER_RETRY,
        )

    # ---- state ------------------------------------------------------------------------------

    def _set_state(self, *, force: bool = False) -> None:
        if self._state.final or self._state is CookState.CANCELLING:
            return
        if self._c.paused:
            state = CookState.PAUSED
        elif self._c.waiting_for_points:
            state = CookState.WAITING_FOR_POINTS
        else:
            state = CookState.RUNNING
        self._put_state(state, force=force)

    def _finish(self, state: CookState) -> None:
        self._put_state(state)

    def _put_state(self, state: CookState, *, force: bool = False) -> None:
        changed = state is not self._state
        self._state = state
        if changed or force:
            workflow.upsert_search_attributes([JOB_STATE.value_set(state.value)])
        self._show()

    def _show(self) -> None:
        """The Temporal UI's "Current Details": the `progress` query's headline, set at every
        change that query shows (a piece started or ended, a state change), not only at state
        changes (a paused cook said "3 in flight" after its pieces had ended). Details are no
        command: setting them more often changes no history, old histories replay."""
        workflow.set_current_details(f"**{self.progress().headline()}**")
