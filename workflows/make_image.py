"""MakeImageWorkflow: one /make, charged once, refunded once if anything goes wrong."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from domain.jobs import ActivityNames, JobStatus, MakeImageRequest, PrepareInput

from workflows.job_saga import PaidJobWorkflow


@workflow.defn(name="MakeImageWorkflow")
class MakeImageWorkflow(PaidJobWorkflow):
    kind = "make"
    prepare_activity = ActivityNames.PREPARE_MAKE_IMAGE

    @workflow.run
    async def run(self, request: MakeImageRequest) -> JobStatus:
        return await self.run_job(
            user=request.user,
            platform=request.platform,
            reply=request.reply,
            prepare_input=PrepareInput(workflow_id=workflow.info().workflow_id, request=request),
        )
