"""Issue 15 leftovers on the real stack: what an operator reads is the latest run's truth.

- A job whose failed run an operator reset (`temporal workflow reset`) to a run that succeeded
  is not found by `jobs list --state failed`; it lists once, as done, under its id.
- A job that got `report_progress` signals (older comfy workers still send them) ends without
  "percent 91.7, detail node 3" in `jobs show`: a final status carries no live progress.
- A job that timed out (its execution timeout) reads as such in `jobs show` and `jobs list`,
  never as "rendering".
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from datetime import timedelta

import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import WorkflowExecutionStatus
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from adapters.jobs import JobsClient
from domain.jobs import JobState, JobStatus, Progress, new_job_id
from domain.search_attributes import JOB_KIND, JOB_STATE, PLATFORM, USER_ID
from tests.adversary.test_operator_and_delivery import new_user, small, wait_for
from tests.adversary.test_operator_status import eventually
from tests.fixtures.devstack import Stack

pytestmark = pytest.mark.stack

CLI = (sys.executable, "-m", "adapters.cli.main")


async def cli(dev_stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [*CLI, *args],
        env=dev_stack.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_a_failed_job_reset_to_success_is_not_listed_as_failed(
    dev_stack: Stack, jobs: JobsClient
) -> None:
    user = await new_user(jobs)
    dev_stack.faults(faults={"execution_error": {"next": 1}})
    try:
        wid = (await jobs.start_make(small(user))).workflow_id
        failed = await asyncio.wait_for(jobs.result(wid), 60)
    finally:
        dev_stack.reset_faults()
    assert failed.state is JobState.FAILED
    handle = jobs.handle(wid)
    first = await handle.describe()
    assert first.status == WorkflowExecutionStatus.FAILED
    completed = [
        e.event_id
        async for e in handle.fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    ]
    client = jobs.temporal
    reset = await client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=wid, run_id=first.run_id),
            reason="operator re-run after the GPU was fixed",
            workflow_task_finish_event_id=completed[0],
            request_id=uuid.uuid4().hex,
        )
    )
    done = await asyncio.wait_for(
        client.get_workflow_handle(wid, run_id=reset.run_id, result_type=JobStatus).result(), 90
    )
    assert done.state is JobState.DONE

    async def both_runs_closed() -> bool:
        query = f'WorkflowId="{wid}" AND ExecutionStatus!="Running"'
        return len([wf async for wf in client.list_workflows(query)]) == 2

    assert await eventually(both_runs_closed), "the failed run and the reset run"
    assert [r.workflow_id for r in await jobs.list_jobs(user=user, state="failed")] == []
    rows = await jobs.list_jobs(user=user, state="done")
    assert [(r.workflow_id, r.state, r.status) for r in rows] == [(wid, "done", "COMPLETED")]
    assert [r.workflow_id for r in await jobs.list_jobs(user=user)] == [wid]

    proc = await cli(dev_stack, "jobs", "list", "--user", user, "--state", "failed")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert wid not in proc.stdout
    proc = await cli(dev_stack, "jobs", "list", "--user", user)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(wid) == 1 and "COMPLETED" in proc.stdout


async def test_a_done_job_keeps_no_progress_its_old_signals_reported(
    dev_stack: Stack, jobs: JobsClient
) -> None:
    user = await new_user(jobs)
    dev_stack.faults(render_time=3.0)
    try:
        wid = (await jobs.start_make(small(user))).workflow_id
        await wait_for(jobs, wid, JobState.RUNNING)
        # What a comfy worker of an earlier release sends while it renders.
        await jobs.handle(wid).signal(
            "report_progress",
            Progress(index=0, state=JobState.RUNNING, percent=91.7, detail="node 3"),
        )
        result = await asyncio.wait_for(jobs.result(wid), 60)
    finally:
        dev_stack.reset_faults()
    assert result.state is JobState.DONE
    shown = await jobs.status(wid)
    assert (shown.state, shown.percent, shown.detail) == (JobState.DONE, 100.0, "")
    assert shown.queue_position is None
    proc = await cli(dev_stack, "jobs", "show", wid, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    assert (data["state"], data["percent"], data["detail"]) == ("done", 100.0, "")


async def test_a_job_that_timed_out_reads_as_timed_out_not_rendering(
    dev_stack: Stack, jobs: JobsClient
) -> None:
    """An execution timeout ends the workflow with no code of ours running, like a terminate."""
    user = await new_user(jobs)
    request = small(user, request_id=uuid.uuid4().hex[:8])
    wid = new_job_id("make", user, request.request_id)
    attrs = TypedSearchAttributes(
        [
            SearchAttributePair(USER_ID, user),
            SearchAttributePair(PLATFORM, "cli"),
            SearchAttributePair(JOB_KIND, "make"),
            SearchAttributePair(JOB_STATE, JobState.STARTING.value),
        ]
    )
    dev_stack.faults(render_time=30.0)
    try:
        await jobs.temporal.start_workflow(
            "MakeImageWorkflow",
            request,
            id=wid,
            task_queue=jobs.config.task_queues.workflows,
            execution_timeout=timedelta(seconds=6),
            search_attributes=attrs,
        )
        await wait_for(jobs, wid, JobState.RUNNING)

        async def timed_out() -> bool:
            desc = await jobs.handle(wid).describe()
            return desc.status == WorkflowExecutionStatus.TIMED_OUT

        assert await eventually(timed_out, 30)
    finally:
        dev_stack.reset_faults()
    shown = await jobs.status(wid)
    assert shown.state is JobState.FAILED, shown.headline()
    assert shown.reason == "timed out"
    assert (shown.percent, shown.detail) == (0.0, "")
    proc = await cli(dev_stack, "jobs", "show", wid)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "failed: timed out" in proc.stdout and "rendering" not in proc.stdout

    async def failed_rows() -> list[tuple[str, str, str]]:
        rows = await jobs.list_jobs(user=user, state="failed")
        return [(r.workflow_id, r.state, r.status) for r in rows]

    assert await eventually(failed_rows) == [(wid, "failed", "TIMED_OUT")]
