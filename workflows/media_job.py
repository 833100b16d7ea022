"""MediaJobWorkflow: upscale, background removal, resize and format conversion of one image,
on the same saga as make image (quoted, charged once, refunded once, cancellable)."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from domain.jobs import ActivityNames, JobStatus, MediaPrepareInput, MediaRequest

from workflows.job_saga import PaidJobWorkflow


@workflow.defn(name="MediaJobWorkflow")
class MediaJobWorkflow(PaidJobWorkflow):
    kind = "media"
    prepare_activity = ActivityNames.PREPARE_MEDIA_JOB

    @workflow.run
    async def run(self, request: MediaRequest) -> JobStatus:
        return await self.run_job(
            user=request.user,
            platform=request.platform,
            reply=request.reply,
            prepare_input=MediaPrepareInput(
                workflow_id=workflow.info().workflow_id, request=request
            ),
            kind=request.kind,
        )
