"""JobWebhooksWorkflow: deliver one job's webhook events, retried with backoff until a deadline.

Started by the API next to a job that names a `webhook_url` (id `webhook-<job id>`, so a
retried start finds the running one). It runs one activity on the `deliver-webhook` queue that
follows the job's history and POSTs each state (activities/webhooks.py); a failed POST fails
the attempt and Temporal retries it with exponential backoff, the attempt resuming after the
events its heartbeat says were acknowledged. After `deadline` seconds it gives up (the job
itself is never affected by its webhook).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from domain.webhooks import WebhookInput, WebhookResult, WebhookWorkflowInput

DELIVER_WEBHOOKS = "deliver_job_webhooks"


@workflow.defn(name="JobWebhooksWorkflow")
class JobWebhooksWorkflow:
    @workflow.run
    async def run(self, inp: WebhookWorkflowInput) -> WebhookResult:
        try:
            result: WebhookResult = await workflow.execute_activity(
                DELIVER_WEBHOOKS,
                WebhookInput.model_validate(inp.model_dump(exclude={"queue", "deadline"})),
                result_type=WebhookResult,
                task_queue=inp.queue,
                schedule_to_close_timeout=timedelta(seconds=inp.deadline),
                heartbeat_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    backoff_coefficient=2.0,
                    maximum_interval=timedelta(minutes=10),
                ),
            )
        except ActivityError as err:
            # A log line only (no command): histories of the earlier version replay unchanged.
            workflow.logger.warning(
                "webhook of job %s gave up after %.0f s: %s", inp.job_id, inp.deadline, err.cause
            )
            return WebhookResult(gave_up=str(err.cause or err))
        return result
