"""Regression tests for bugs the chaos harness (bench/chaos.py) found.

Each test rebuilds, with activities mocked at the boundary (tests/workflows/fakes.py) on the
local dev server, the exact interleaving the harness caught on the real stack, so it runs in
seconds and fails the same way every time.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
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


@pytest.mark.xfail(
    strict=True,
    reason="bug found by bench/chaos.py: refund_points runs as a local activity inside the "
    "cancel update's workflow task; when that task fails (UnhandledCommand) the job ends done "
    "but keeps the refund. Fix in workflows/job_saga.py `_refund` (see the chaos report).",
)
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
