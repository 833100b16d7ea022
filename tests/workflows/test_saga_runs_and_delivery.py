"""The saga against operators and absent bots (issue 13, items 8 and 9), activities mocked.

- Each run books under keys of its own run: an operator's refund followed by a
  `temporal workflow reset` pays again, and a reset of a run whose charge stands pays nothing
  more — for a reset to before the charge and to after it (real resets on the dev server).
- Delivery never holds the user's slot or points: the slot is freed once the work is made, and
  a delivery nobody picks up, or one the platform refuses, ends the job done but not delivered
  with its charge kept (time-skipping server). The test server does not skip time to the
  deadline of an activity task no worker polls, so that test uses a 2-second deadline.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from domain.jobs import (
    ActivityNames,
    ChargeInput,
    ChargeResult,
    JobState,
    JobStatus,
    MakeImageRequest,
    ReplyTarget,
)
from tests.workflows.fakes import FakeActivities, failed_result
from tests.workflows.test_make_image_saga import save_history, wait_state
from workflows.make_image import MakeImageWorkflow


def telegram_request(deliver_within: float = 3600) -> MakeImageRequest:
    return MakeImageRequest(
        user="telegram:5472638766",
        platform="telegram",
        prompt="a red fox in snow",
        reply=ReplyTarget(chat_id="5472638766", message_id=7, deliver_within=deliver_within),
    )


@asynccontextmanager
async def workers(
    env: WorkflowEnvironment, fakes: FakeActivities, *, deliver: bool
) -> AsyncIterator[None]:
    """The job's worker, and the Telegram delivery worker only if `deliver` (a bot running)."""
    main = Worker(
        env.client, task_queue=fakes.queue, workflows=[MakeImageWorkflow], activities=fakes.all()
    )
    if not deliver:
        async with main:
            yield
        return
    bot = Worker(env.client, task_queue="deliver-telegram", activities=[fakes.deliver_result])
    async with main, bot:
        yield


def new_fakes(client: Client, **kw: Any) -> FakeActivities:
    return FakeActivities(client, queue=f"tq-{uuid.uuid4().hex[:8]}", **kw)


async def start(env: WorkflowEnvironment, fakes: FakeActivities, req: MakeImageRequest):
    return await env.client.start_workflow(
        MakeImageWorkflow.run, req, id=f"make-test-{uuid.uuid4().hex[:8]}", task_queue=fakes.queue
    )


# ---- delivery (time-skipping server) ------------------------------------------------------


async def test_a_result_no_bot_picks_up_frees_the_slot_then_ends_done_not_delivered(
    temporal_ts_env,
) -> None:
    env = temporal_ts_env
    fakes = new_fakes(env.client)
    async with workers(env, fakes, deliver=False):
        handle = await start(env, fakes, telegram_request(deliver_within=2))
        await wait_state(handle, JobState.DELIVERING)
        await asyncio.sleep(0.5)  # the slot is freed in the task that starts delivering
        assert fakes.released == [handle.id], "the slot must be free while delivery waits"
        result = await handle.result()
        await save_history(handle, "make_not_delivered")
    assert result.state is JobState.DONE
    assert result.not_delivered and "within 2 s" in result.not_delivered
    assert result.headline().startswith("done, not delivered")
    assert [o.blob_id for o in result.outputs] == ["blob-0-o0.png"], "still retrievable"
    assert fakes.book.charges() == [35] and fakes.book.refunds() == [], "the work was made"
    assert fakes.records[-1].status.not_delivered == result.not_delivered
    assert fakes.released == [handle.id]


async def test_a_delivery_the_platform_refuses_ends_done_not_delivered_and_keeps_the_charge(
    temporal_ts_env,
) -> None:
    env = temporal_ts_env
    fakes = new_fakes(env.client, deliver_error="not_delivered")
    async with workers(env, fakes, deliver=True):
        handle = await start(env, fakes, telegram_request())
        result = await handle.result()
        await save_history(handle, "make_delivery_refused")
    assert result.state is JobState.DONE
    assert result.not_delivered == "the bot may not send photos to this chat"
    assert fakes.events == [f"release:{handle.id}", f"deliver:{handle.id}"], "tried once"
    assert fakes.delivered == []
    assert fakes.book.charges() == [35] and fakes.book.refunds() == []
    assert fakes.records[-1].status.not_delivered == result.not_delivered


async def test_a_delivered_job_frees_its_slot_before_delivery_and_ends_plainly_done(
    temporal_ts_env,
) -> None:
    env = temporal_ts_env
    fakes = new_fakes(env.client)
    async with workers(env, fakes, deliver=True):
        handle = await start(env, fakes, telegram_request())
        result = await handle.result()
    assert result.state is JobState.DONE and result.not_delivered is None
    assert result.headline() == "done"
    assert fakes.events == [f"release:{handle.id}", f"deliver:{handle.id}"]


async def test_a_failed_telegram_job_is_refunded_recorded_freed_and_told_before_it_fails(
    temporal_ts_env,
) -> None:
    """Issue 15: the workflow fails (JobFailed) only after everything a failed job owes."""
    env = temporal_ts_env
    fakes = new_fakes(env.client, behaviour=["invalid"])
    async with workers(env, fakes, deliver=True):
        handle = await start(env, fakes, telegram_request())
        result = await failed_result(handle)
    assert result.refund == 35 and fakes.book.refunds() == [35]
    assert fakes.records[-1].status.state is JobState.FAILED
    assert fakes.events == [f"release:{handle.id}", f"deliver:{handle.id}"]
    [told] = fakes.delivered
    assert told.status.headline() == result.headline()
    assert result.headline().endswith(", refunded 35")


# ---- per-run ledger keys --------------------------------------------------------------------


class LostAnswerCharge(FakeActivities):
    """The first charge attempt books, then its answer is lost (the worker dies)."""

    lost = False

    def all(self) -> list[Callable[..., Any]]:
        return [self.charge_points_losing if f == self.charge_points else f for f in super().all()]

    @activity.defn(name=ActivityNames.CHARGE_POINTS)
    async def charge_points_losing(self, inp: ChargeInput) -> ChargeResult:
        result = await self.charge_points(inp)
        if not self.lost:
            self.lost = True
            raise RuntimeError("connection reset after the charge was booked")
        return result


async def test_a_charge_retried_after_a_lost_answer_books_once_under_the_runs_key(
    temporal_ts_env,
) -> None:
    env = temporal_ts_env
    fakes = LostAnswerCharge(env.client, queue=f"tq-{uuid.uuid4().hex[:8]}")
    async with workers(env, fakes, deliver=False):
        handle = await start(env, fakes, MakeImageRequest(user="cli:op", prompt="a red fox"))
        result = await handle.result()
    run_key = f"{handle.id}:{handle.result_run_id}:charge"
    assert result.state is JobState.DONE
    assert fakes.book.charges() == [35] and list(fakes.book.entries) == [run_key]
    assert fakes.book.calls.count(run_key) == 3, "two attempts, then the settle step"


async def reset(client: Client, handle: WorkflowHandle[Any, Any], to: str) -> str:
    """`temporal workflow reset --type FirstWorkflowTask|LastWorkflowTask`; the new run id."""
    completed = [
        e.event_id
        async for e in handle.fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    ]
    desc = await handle.describe()
    resp = await client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=handle.id, run_id=desc.run_id),
            reason="operator re-run",
            workflow_task_finish_event_id=completed[0] if to == "first" else completed[-1],
            request_id=uuid.uuid4().hex,
        )
    )
    return resp.run_id


def operator_refund(fakes: FakeActivities, wid: str, run_id: str, amount: int) -> None:
    """What `stationthis jobs refund` books for a terminated run (JobsClient.refund_terminated)."""
    key = f"{wid}:{run_id}:refund"
    fakes.book.entries[key] = ("refund", amount)
    fakes.book.job_of[key] = wid
    fakes.book.balance += amount


@pytest.mark.parametrize("refunded", [True, False], ids=["after a refund", "without a refund"])
@pytest.mark.parametrize("to", ["first", "last"], ids=["before the charge", "after the charge"])
async def test_a_reset_of_a_terminated_job_pays_for_it_exactly_once(
    temporal_dev_env, to: str, refunded: bool
) -> None:
    env = temporal_dev_env
    fakes = new_fakes(env.client, behaviour=["hang"])
    async with workers(env, fakes, deliver=False):
        handle = await start(env, fakes, MakeImageRequest(user="cli:op", prompt="a red fox"))
        await wait_state(handle, JobState.RUNNING)
        first_run = (await handle.describe()).run_id
        await handle.terminate("operator: stuck")
        if refunded:
            operator_refund(fakes, handle.id, first_run, 35)
        fakes.behaviour[0] = "ok"  # the re-run renders
        new_run = await reset(env.client, handle, to)
        result = await env.client.get_workflow_handle(
            handle.id, run_id=new_run, result_type=JobStatus
        ).result()
    wid = handle.id
    assert result.state is JobState.DONE and len(result.outputs) == 1
    net = fakes.book.total(wid, "charge") - fakes.book.total(wid, "refund")
    assert net == 35, f"the job must be paid once, not {net}: {fakes.book.entries}"
    assert fakes.book.balance == 1000 - 35
    new_charges = [k for k, (kind, _) in fakes.book.entries.items() if new_run in k]
    replayed_charge = to == "last"  # the charge is in the history the reset kept
    calls = [k for k in fakes.book.calls if new_run in k]
    assert calls == [f"{wid}:{new_run}:charge"] * (1 if replayed_charge else 2), calls
    if refunded:
        assert new_charges == [f"{wid}:{new_run}:charge"], "the reset run pays again"
    else:
        assert new_charges == [], "nothing more when the first charge stands"


async def test_a_reset_after_a_refund_that_cannot_pay_is_refused_with_nothing_given(
    temporal_dev_env,
) -> None:
    env = temporal_dev_env
    fakes = new_fakes(env.client, behaviour=["hang"])
    async with workers(env, fakes, deliver=False):
        handle = await start(env, fakes, MakeImageRequest(user="cli:op", prompt="a red fox"))
        await wait_state(handle, JobState.RUNNING)
        first_run = (await handle.describe()).run_id
        await handle.terminate("operator: stuck")
        operator_refund(fakes, handle.id, first_run, 35)
        fakes.book.balance = 10  # spent since
        fakes.behaviour[0] = "ok"
        new_run = await reset(env.client, handle, "last")
        result = await env.client.get_workflow_handle(
            handle.id, run_id=new_run, result_type=JobStatus
        ).result()
    assert result.state is JobState.REFUSED and result.refused_code == "insufficient_points"
    assert result.outputs == [], "what the unpaid run made is withheld"
    assert "restarted after its refund" in (result.reason or "")
    assert fakes.book.balance == 10
    assert fakes.records[-1].status.outputs == []
