"""The `deliver-webhook` worker: JobWebhooksWorkflow and its activity, hosted by `stationthis
web` (the process that starts them), so webhooks need no process of their own."""

from __future__ import annotations

from typing import Any

from temporalio.worker import Worker

from activities.webhooks import WebhookActivities
from adapters.jobs import JobsClient
from workers.config import Config
from workflows.job_webhooks import JobWebhooksWorkflow
from workflows.registry import sandbox_runner


def webhook_queue(config: Config) -> str:
    return config.task_queues.deliver("webhook")


def webhook_worker(config: Config, jobs: JobsClient) -> Worker:
    """A worker of the webhook queue over the jobs client's Temporal client and stores."""
    from adapters.web.api import job_view

    async def final_view(job_id: str, identity: str) -> dict[str, Any]:
        status = await jobs.status(job_id, user=identity)
        return job_view(status).model_dump(mode="json", exclude={"existing"})

    acts = WebhookActivities(
        jobs.temporal,
        jobs.stores,
        allow_loopback=config.webhook_allow_loopback,
        status=final_view,
    )
    return Worker(
        jobs.temporal,
        task_queue=webhook_queue(config),
        workflows=[JobWebhooksWorkflow],
        workflow_runner=sandbox_runner(),
        activities=[acts.deliver_job_webhooks],
    )
