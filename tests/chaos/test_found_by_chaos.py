"""Regression tests for bugs the chaos harness (bench/chaos.py) found.

Each test rebuilds, with activities mocked at the boundary (tests/workflows/fakes.py) on the
local dev server, the exact interleaving the harness caught on the real stack, so it runs in
seconds and fails the same way every time.
"""

from __future__ import annotations

import asyncio
import uuid

from temporalio import activity
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from domain.jobs import (
    ActivityNames,
    CancelRequest,
    CancelResult,
    JobState,
    MakeImageRequest,
    RefundInput,
    RefundResult,
    StoredOutput,
    StoreOutputsInput,
)
from tests.workflows.fakes import FakeActivities
from workflows.make_image import MakeImageWorkflow


class StoreRacesTheCancel(FakeActivities):
    """Storing the outputs finishes while the cancel's workflow task is running its refund.

    This is what the harness saw (full run, job #108, `make-cli-chaos-020c71-13-...n108`): the
    cancel update arrives while `store_comfy_outputs` runs; the workflow task that handles it
    cancels the store and runs the `refund_points` local activity, which books the refund; the
    store completes meanwhile, so the server fails that task with UnhandledCommand and drops the
    update; the retried task sees the stored output and ends the job `done`, refund 0 in its
    result, while the ledger keeps the refund: a delivered job refunded in full.
    """

    def __init__(self, client: Client, queue: str) -> None:
        super().__init__(client, queue=queue)
        self.storing = asyncio.Event()
        self.release_store = asyncio.Event()

    @activity.defn(name=ActivityNames.STORE_COMFY_OUTPUTS)
    async def store_comfy_outputs(self, inp: StoreOutputsInput) -> list[StoredOutput]:
        self.storing.set()
        await self.release_store.wait()
        return await super().store_comfy_outputs(inp)

    @activity.defn(name=ActivityNames.REFUND_POINTS)
    async def refund_points(self, inp: RefundInput) -> RefundResult:
        result = await super().refund_points(inp)
        # The store finishes now, and its completion reaches history before this task ends.
        self.release_store.set()
        await asyncio.sleep(1.5)
        return result


async def test_a_job_that_ends_done_keeps_no_refund_when_its_cancel_raced_the_store(
    temporal_dev_env: WorkflowEnvironment,
) -> None:
    env = temporal_dev_env
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    fakes = StoreRacesTheCancel(env.client, tq)
    worker = Worker(
        env.client, task_queue=tq, workflows=[MakeImageWorkflow], activities=fakes.all()
    )
    async with worker:
        handle = await env.client.start_workflow(
            MakeImageWorkflow.run,
            MakeImageRequest(user="cli:chaos-regression", prompt="a red fox in snow"),
            id=f"make-chaos-{uuid.uuid4().hex[:8]}",
            task_queue=tq,
        )
        await asyncio.wait_for(fakes.storing.wait(), 20)
        cancel: CancelResult | None = None
        try:
            cancel = await handle.execute_update(
                "cancel", CancelRequest(), result_type=CancelResult
            )
        except (WorkflowUpdateFailedError, RPCError):
            cancel = None  # dropped with the failed task, or refused: the job was past it
        result = await asyncio.wait_for(handle.result(), 30)

    booked_refund = sum(fakes.book.refunds())
    if result.state is JobState.DONE:
        assert booked_refund == 0, (
            f"the job ended done with its output, yet {booked_refund} points were refunded "
            f"(result says refund {result.refund}; cancel answer {cancel})"
        )
    else:
        assert result.state is JobState.CANCELLED
        assert booked_refund == result.refund == 35


class StoreWaitsForAGate(FakeActivities):
    """Storing the outputs finishes only when the test says so."""

    def __init__(self, client: Client, queue: str) -> None:
        super().__init__(client, queue=queue)
        self.storing = asyncio.Event()
        self.release_store = asyncio.Event()

    @activity.defn(name=ActivityNames.STORE_COMFY_OUTPUTS)
    async def store_comfy_outputs(self, inp: StoreOutputsInput) -> list[StoredOutput]:
        self.storing.set()
        await self.release_store.wait()
        return await super().store_comfy_outputs(inp)


async def test_a_cancel_that_arrives_with_the_finished_output_does_not_end_cancelled_unrefunded(
    temporal_dev_env: WorkflowEnvironment,
) -> None:
    """Harness full run 2, jobs #87 and #92 (`make-cli-chaos-10afd8-17-...n87`): the cancel
    was accepted ("cancelled, refund 0") and the job kept its stored image: a cancelled job
    the user paid for in full. Here the store's completion and the cancel update reach the
    workflow in one activation, as they did there while the workflow worker was busy."""
    env = temporal_dev_env
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    act_q = f"{tq}-act"
    fakes = StoreWaitsForAGate(env.client, act_q)
    activities = Worker(
        env.client,
        task_queue=act_q,
        activities=[fakes.run_comfy_prompt, fakes.store_comfy_outputs],
    )

    def workflow_worker() -> Worker:
        return Worker(
            env.client, task_queue=tq, workflows=[MakeImageWorkflow], activities=fakes.all()
        )

    async with activities:
        async with workflow_worker():
            handle = await env.client.start_workflow(
                MakeImageWorkflow.run,
                MakeImageRequest(user="cli:chaos-regression", prompt="a red fox in snow"),
                id=f"make-chaos-{uuid.uuid4().hex[:8]}",
                task_queue=tq,
            )
            await asyncio.wait_for(fakes.storing.wait(), 20)
        # No workflow worker now: the store's completion and the cancel wait in one task.
        fakes.release_store.set()
        await asyncio.sleep(1.0)
        cancel = asyncio.create_task(
            handle.execute_update("cancel", CancelRequest(), result_type=CancelResult)
        )
        await asyncio.sleep(1.0)
        async with workflow_worker():
            result = await asyncio.wait_for(handle.result(), 40)
            answer = await asyncio.wait_for(cancel, 10)

    if result.state is JobState.CANCELLED:
        assert result.refund == 35 and fakes.book.refunds() == [35], (
            f"cancelled but refunded {result.refund} (ledger {fakes.book.refunds()}), "
            f"outputs kept: {result.outputs}; cancel answer {answer}"
        )
    else:
        assert result.state is JobState.DONE and result.outputs
        assert fakes.book.refunds() == [] and answer.refund == 0
