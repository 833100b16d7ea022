"""The make-image saga's promises, with activities mocked at the boundary.

Timers and timeouts run on the time-skipping server; cancel updates and operator cancels run on
the local dev server, as temporal-testing.md suggests.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from domain.jobs import CancelRequest, CancelResult, JobState, JobStatus, MakeImageRequest
from tests.workflows.fakes import FakeActivities, failed_result
from workflows.make_image import MakeImageWorkflow

HISTORIES = Path(__file__).parent / "histories"


def request(**kw: Any) -> MakeImageRequest:
    return MakeImageRequest(user="telegram:5472638766", prompt="a red fox in snow", **kw)


@asynccontextmanager
async def running(
    env: WorkflowEnvironment, make: Callable[[Client, str], FakeActivities]
) -> AsyncIterator[tuple[FakeActivities, str]]:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    fakes = make(env.client, tq)
    workers = [
        Worker(env.client, task_queue=tq, workflows=[MakeImageWorkflow], activities=fakes.all()),
        Worker(env.client, task_queue="deliver-telegram", activities=[fakes.deliver_result]),
    ]
    async with workers[0], workers[1]:
        yield fakes, tq


async def start(env: WorkflowEnvironment, tq: str, req: MakeImageRequest, wid: str | None = None):
    return await env.client.start_workflow(
        MakeImageWorkflow.run,
        req,
        id=wid or f"make-test-{uuid.uuid4().hex[:8]}",
        task_queue=tq,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


async def wait_state(
    handle: WorkflowHandle[Any, Any], state: JobState, timeout: float = 10
) -> JobStatus:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status = await handle.query(MakeImageWorkflow.status)
        if status.state is state:
            return status
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"state stayed {status.state}, wanted {state}")
        await asyncio.sleep(0.1)


async def save_history(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """Keep a history of each path for the replay test (refresh with SAVE_HISTORIES=1)."""
    path = HISTORIES / f"{name}.json"
    if os.environ.get("SAVE_HISTORIES") or not path.exists():
        HISTORIES.mkdir(exist_ok=True)
        path.write_text((await handle.fetch_history()).to_json())


def fakes_with(**kw: Any) -> Callable[[Client, str], FakeActivities]:
    return lambda client, tq: FakeActivities(client, queue=tq, **kw)


# ---- time-skipping server: results, retries, timeouts -------------------------------------


async def test_a_made_image_is_charged_once_and_never_refunded(temporal_ts_env) -> None:
    env = temporal_ts_env
    async with running(env, fakes_with()) as (fakes, tq):
        handle = await start(env, tq, request())
        result = await handle.result()
        await save_history(handle, "make_done")
    assert result.state is JobState.DONE
    assert [o.blob_id for o in result.outputs] == ["blob-0-o0.png"]
    assert fakes.book.charges() == [35] and fakes.book.refunds() == []
    assert result.balance == 1000 - 35
    assert fakes.released == [handle.id]
    assert fakes.records[-1].status.state is JobState.DONE


async def test_only_the_settle_asks_the_ledger_to_expect_its_key_applied(temporal_ts_env) -> None:
    """The settle replays the run's own charge key in a plain run: it says so (`settle`), and
    the ledger answers it from one read instead of a transaction (issue 17, MongoDB per job).
    The first charge does not: it would pay the extra read for nothing."""
    env = temporal_ts_env
    async with running(env, fakes_with()) as (fakes, tq):
        result = await (await start(env, tq, request())).result()
    assert result.state is JobState.DONE
    assert [c.settle for c in fakes.charge_inputs] == [False, True]
    assert fakes.charge_inputs[0].key == fakes.charge_inputs[1].key


async def test_a_graph_comfyui_rejects_fails_and_is_refunded_in_full(temporal_ts_env) -> None:
    env = temporal_ts_env
    async with running(env, fakes_with(behaviour=["invalid"])) as (fakes, tq):
        handle = await start(env, tq, request())
        result = await failed_result(handle)
        await save_history(handle, "make_invalid")
    assert result.state is JobState.FAILED
    assert "smaller than min" in (result.reason or "")
    assert fakes.attempts[0] == 1, "a validation error must not be retried"
    assert fakes.book.charges() == [35] and fakes.book.refunds() == [35]
    assert result.refund == 35 and fakes.book.balance == 1000


async def test_transient_comfyui_errors_are_retried_and_charged_once(temporal_ts_env) -> None:
    env = temporal_ts_env
    async with running(env, fakes_with(behaviour=["transient:2"])) as (fakes, tq):
        handle = await start(env, tq, request())
        result = await handle.result()
    assert result.state is JobState.DONE
    assert fakes.attempts[0] == 3
    assert fakes.book.charges() == [35] and fakes.book.refunds() == []


async def test_a_render_that_times_out_is_refunded(temporal_ts_env) -> None:
    env = temporal_ts_env
    async with running(env, fakes_with(behaviour=["hang"], render_timeout=2)) as (fakes, tq):
        handle = await start(env, tq, request())
        result = await failed_result(handle)
        await save_history(handle, "make_timeout")
    assert result.state is JobState.FAILED
    assert result.reason == "ComfyUI did not finish in time"
    assert fakes.book.refunds() == [35] and fakes.book.balance == 1000


async def test_too_few_points_is_refused_and_nothing_is_charged(temporal_ts_env) -> None:
    env = temporal_ts_env
    async with running(env, fakes_with(balance=20)) as (fakes, tq):
        handle = await start(env, tq, request())
        result = await handle.result()
        await save_history(handle, "make_refused")
        # A refusal is an answer, not a failure: the workflow completes (issue 15).
        assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    assert result.state is JobState.REFUSED
    assert "costs 35 points and the balance is 20" in (result.reason or "")
    assert fakes.book.charges() == [] and fakes.attempts == {}
    assert fakes.book.balance == 20


async def test_bad_input_found_by_prepare_is_refused_before_any_charge(temporal_ts_env) -> None:
    env = temporal_ts_env
    async with running(env, fakes_with(refuse="unknown template 'nope'")) as (fakes, tq):
        result = await (await start(env, tq, request())).result()
    assert result.state is JobState.REFUSED and result.reason == "unknown template 'nope'"
    assert fakes.book.calls == []


async def test_a_partly_failed_batch_refunds_the_failed_share(temporal_ts_env) -> None:
    env = temporal_ts_env
    async with running(env, fakes_with(units=2, price=70, behaviour=["ok", "invalid"])) as (
        fakes,
        tq,
    ):
        handle = await start(env, tq, request())
        result = await handle.result()
        await save_history(handle, "make_partial")
    assert result.state is JobState.DONE
    assert len(result.outputs) == 1 and result.refund == 35
    assert fakes.book.charges() == [70] and fakes.book.refunds() == [35]


async def test_starting_the_same_request_twice_runs_one_workflow_and_charges_once(
    temporal_ts_env,
) -> None:
    env = temporal_ts_env
    async with running(env, fakes_with()) as (fakes, tq):
        wid = f"make-telegram-5472638766-{uuid.uuid4().hex[:6]}"
        first = await start(env, tq, request(request_id="u1"), wid)
        second = await start(env, tq, request(request_id="u1"), wid)
        assert first.result_run_id == second.result_run_id
        await first.result()
    assert fakes.book.charges() == [35]


# ---- local dev server: updates and operator cancels ---------------------------------------


@pytest.mark.parametrize("how", ["queued-hang", "hang"], ids=["while queued", "while rendering"])
async def test_a_cancelled_job_is_interrupted_and_refunded_once(temporal_dev_env, how) -> None:
    env = temporal_dev_env
    async with running(env, fakes_with(behaviour=[how])) as (fakes, tq):
        handle = await start(env, tq, request())
        state = JobState.QUEUED if how == "queued-hang" else JobState.RUNNING
        status = await wait_state(handle, state)
        # The state is set when the render is scheduled; its first report (queue position or
        # percent) follows with the activity's first beat, later on a loaded machine.
        for _ in range(100):
            if status.queue_position is not None or status.percent:
                break
            await asyncio.sleep(0.1)
            status = await handle.query(MakeImageWorkflow.status)
        if how == "queued-hang":
            assert status.queue_position == 2
        else:
            assert status.percent == 40.0
        cancel = await handle.execute_update(
            MakeImageWorkflow.cancel, CancelRequest(), result_type=CancelResult
        )
        result = await handle.result()
        await save_history(handle, f"make_cancel_{how}")
    assert cancel.state is JobState.CANCELLED and cancel.refund == 35
    assert result.state is JobState.CANCELLED and result.refund == 35
    assert fakes.interrupted == [0], "the ComfyUI prompt must be interrupted"
    assert fakes.book.refunds() == [35] and fakes.book.balance == 1000


async def test_a_job_whose_renders_only_heartbeat_reads_running_once_a_unit_is_made(
    temporal_dev_env,
) -> None:
    """Renders report progress in heartbeats (no signal, no history); the `status` query still
    says how many units the job has, and that it runs once one of them is made."""
    env = temporal_dev_env
    fakes_for = fakes_with(units=2, price=70, behaviour=["ok", "quiet-hang"])
    async with running(env, fakes_for) as (fakes, tq):
        handle = await start(env, tq, request())
        status = await wait_state(handle, JobState.RUNNING)
        assert (status.units, status.percent) == (2, 50.0)
        cancel = await handle.execute_update(
            MakeImageWorkflow.cancel, CancelRequest(), result_type=CancelResult
        )
        await handle.result()
        await save_history(handle, "make_cancel_quiet-hang")
        history = await handle.fetch_history()
    assert cancel.state is JobState.CANCELLED and cancel.refund == 35
    assert fakes.interrupted == [1]
    signalled = [
        e for e in history.events if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    assert signalled == []


async def test_an_operator_cancel_takes_the_same_compensation_path(temporal_dev_env) -> None:
    env = temporal_dev_env
    async with running(env, fakes_with(behaviour=["hang"])) as (fakes, tq):
        handle = await start(env, tq, request())
        await wait_state(handle, JobState.RUNNING)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        await save_history(handle, "make_operator_cancel")
        status = await handle.query(MakeImageWorkflow.status)
    assert status.state is JobState.CANCELLED and status.refund == 35
    assert fakes.interrupted == [0]
    assert fakes.book.refunds() == [35] and fakes.book.balance == 1000
    assert fakes.released == [handle.id]


async def test_a_job_being_delivered_cannot_be_cancelled_and_says_so(temporal_dev_env) -> None:
    env = temporal_dev_env
    gate = asyncio.Event()
    async with running(env, fakes_with(deliver_gate=gate)) as (fakes, tq):
        handle = await start(env, tq, request(platform="telegram"))
        await wait_state(handle, JobState.DELIVERING)
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await handle.execute_update(MakeImageWorkflow.cancel, CancelRequest())
        gate.set()
        result = await handle.result()
    assert isinstance(err.value.cause, ApplicationError)
    assert "already being delivered" in err.value.cause.message
    assert result.state is JobState.DONE and result.refund == 0
    assert len(fakes.delivered) == 1 and fakes.book.refunds() == []
