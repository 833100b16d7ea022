"""Issue 15 on the real stack: Temporal's statuses tell an operator the truth, and the operator
commands (`jobs terminate`, `jobs stuck`, `jobs save`) do what the UI cannot do safely.

- A failed job is a FAILED workflow (`ExecutionStatus="Failed"` finds it) and the jobs client
  still reads its full JobStatus (state failed, the refund).
- A job terminated from outside (the UI, `temporal workflow terminate`) reads as failed by an
  operator, never "rendering 48%"; `jobs terminate` refunds once and records the final state;
  a reset job lists once under its id.
- `jobs stuck` lists a job whose delivery waits on `deliver-telegram` with nobody polling, and
  not a healthy running job.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from typing import Any

import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError

from adapters.jobs import JobsClient
from domain.jobs import JobState, ReplyTarget
from tests.adversary.test_operator_and_delivery import new_user, small, wait_for
from tests.fixtures.devstack import Stack
from workflows.job_saga import JOB_FAILED_ERROR, status_from_failure

pytestmark = pytest.mark.stack

CLI = (sys.executable, "-m", "adapters.cli.main")


async def eventually(check: Any, timeout: float = 15) -> Any:
    """Visibility is eventually consistent: poll `check` until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await check()
        if found or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.2)


async def test_a_failed_job_is_a_failed_workflow_and_still_reads_as_its_status(
    dev_stack: Stack, jobs: JobsClient
) -> None:
    user = await new_user(jobs)
    dev_stack.faults(faults={"execution_error": {"next": 1}})
    wid = (await jobs.start_make(small(user))).workflow_id
    result = await asyncio.wait_for(jobs.result(wid), 60)
    assert result.state is JobState.FAILED and result.refund == result.price > 0
    handle = jobs.handle(wid)
    assert (await handle.describe()).status == WorkflowExecutionStatus.FAILED
    with pytest.raises(WorkflowFailureError) as caught:
        await handle.result()
    assert getattr(caught.value.cause, "type", None) == JOB_FAILED_ERROR
    assert status_from_failure(caught.value) == result
    shown = await jobs.status(wid)
    assert (shown.state, shown.refund, shown.reason) == (
        JobState.FAILED,
        result.refund,
        result.reason,
    )

    async def failed_ids() -> list[str]:
        query = f'ExecutionStatus="Failed" AND WorkflowId="{wid}"'
        return [wf.id async for wf in jobs.temporal.list_workflows(query)]

    assert await eventually(failed_ids) == [wid]
    assert await asyncio.to_thread(jobs.stores.ledger.balance, user) == 500


async def test_a_job_terminated_outside_reads_as_terminated_and_terminate_refunds_once(
    dev_stack: Stack, jobs: JobsClient
) -> None:
    user = await new_user(jobs)
    dev_stack.faults(render_time=30.0)
    try:
        wid = (await jobs.start_make(small(user))).workflow_id
        await wait_for(jobs, wid, JobState.RUNNING)
        handle = jobs.handle(wid)
        await handle.terminate(reason="stuck render")
    finally:
        dev_stack.reset_faults()
    shown = await jobs.status(wid)
    assert shown.state is JobState.FAILED, shown.headline()
    assert shown.reason == "terminated by an operator: stuck render"
    assert not shown.headline().startswith("rendering")

    done = await jobs.terminate(wid, "stuck render")
    assert done.refund == shown.price > 0
    assert done.status.state is JobState.FAILED and done.status.refund == done.refund
    again = await jobs.terminate(wid, "stuck render")
    assert again.refund == 0, "the refund is keyed by the run"
    assert await asyncio.to_thread(jobs.stores.ledger.balance, user) == 500
    record = await asyncio.to_thread(jobs.stores.jobs.get, wid)
    assert record is not None and record.state == "failed" and record.refund == done.refund
    assert (await jobs.status(wid)).headline() == (
        f"failed: terminated by an operator: stuck render, refunded {done.refund}"
    )

    async def failed_rows() -> list[str]:
        return [r.workflow_id for r in await jobs.list_jobs(user=user, state="failed")]

    assert await eventually(failed_rows) == [wid]


async def test_a_running_job_terminated_by_the_command_refunds_once(
    dev_stack: Stack, jobs: JobsClient
) -> None:
    user = await new_user(jobs)
    dev_stack.faults(render_time=30.0)
    try:
        wid = (await jobs.start_make(small(user))).workflow_id
        await wait_for(jobs, wid, JobState.RUNNING)
        proc = await asyncio.to_thread(
            subprocess.run,
            [*CLI, "jobs", "terminate", wid],
            env=dev_stack.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode != 0, "--reason is required"
        proc = await asyncio.to_thread(
            subprocess.run,
            [*CLI, "jobs", "terminate", wid, "--reason", "GPU wedged"],
            env=dev_stack.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        dev_stack.reset_faults()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "terminated by an operator: GPU wedged" in proc.stdout
    assert (await jobs.handle(wid).describe()).status == WorkflowExecutionStatus.TERMINATED
    totals = await asyncio.to_thread(jobs.stores.ledger.job_totals, wid)
    assert (totals.refunds, totals.refundable) == (1, 0)
    assert await asyncio.to_thread(jobs.slots.running, (await jobs.user(user)).id) == []


async def test_a_reset_job_lists_once_under_its_id(dev_stack: Stack, jobs: JobsClient) -> None:
    user = await new_user(jobs)
    dev_stack.faults(render_time=30.0)
    try:
        wid = (await jobs.start_make(small(user))).workflow_id
        await wait_for(jobs, wid, JobState.RUNNING)
        handle = jobs.handle(wid)
        first_run = (await handle.describe()).run_id
        await handle.terminate(reason="operator: stuck")
    finally:
        dev_stack.reset_faults()
    completed = [
        e.event_id
        async for e in handle.fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    ]
    client = jobs.temporal
    reset = await client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=wid, run_id=first_run),
            reason="operator re-run",
            workflow_task_finish_event_id=completed[0],
            request_id=uuid.uuid4().hex,
        )
    )
    await asyncio.wait_for(jobs.result(wid), 90)

    async def both_runs_visible() -> bool:
        runs = [wf.run_id async for wf in client.list_workflows(f'WorkflowId="{wid}"')]
        return len(runs) == 2

    assert await eventually(both_runs_visible), "the reset made a second run"
    rows = await jobs.list_jobs(user=user)
    assert [r.workflow_id for r in rows] == [wid], rows
    assert rows[0].status == "COMPLETED" and rows[0].state == "done"
    assert (await jobs.handle(wid).describe()).run_id == reset.run_id


async def test_stuck_lists_a_delivery_nobody_polls_for_and_not_a_healthy_job(
    dev_stack: Stack, jobs: JobsClient
) -> None:
    tg_user = await new_user(jobs, "telegram")
    reply = ReplyTarget(chat_id=tg_user.split(":")[1])
    stuck = (await jobs.start_make(small(tg_user, platform="telegram", reply=reply))).workflow_id
    healthy = ""
    try:
        await wait_for(jobs, stuck, JobState.DELIVERING, 60)
        dev_stack.faults(render_time=30.0)
        healthy = (await jobs.start_make(small(await new_user(jobs)))).workflow_id
        await wait_for(jobs, healthy, JobState.RUNNING)

        rows = await jobs.stuck()
        by_id = {r.workflow_id: r for r in rows}
        assert healthy not in by_id, by_id.get(healthy)
        row = by_id[stuck]
        assert (row.activity, row.task_queue) == ("deliver_result", "deliver-telegram")
        assert "nobody polls" in row.why

        proc = await asyncio.to_thread(
            subprocess.run,
            [*CLI, "jobs", "stuck"],
            env=dev_stack.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert stuck in proc.stdout and healthy not in proc.stdout
    finally:
        dev_stack.reset_faults()
        for wid in (stuck, healthy):
            if wid:
                await jobs.handle(wid).terminate("test cleanup")
