"""A webhook whose receiver never answers 2xx gives up at its deadline (issue 18 item 3), and
the giving-up is in the webhook workflow's record (its result) and in the web process's log."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from domain.jobs import JobState, MakeImageRequest
from domain.webhooks import WebhookResult, WebhookWorkflowInput
from tests.fixtures.devstack import Stack
from tests.web.conftest import Api
from tests.web.test_webhooks import Receiver, receiver  # noqa: F401 (the fixture)

pytestmark = pytest.mark.stack

DEADLINE = 4.0


async def test_a_webhook_that_never_lands_gives_up_at_its_deadline(
    api: Api,
    receiver: Receiver,  # noqa: F811
    dev_stack: Stack,
) -> None:
    identity, _ = await api.new_key()
    jobs = api.jobs
    done = await jobs.start_make(
        MakeImageRequest(
            user=identity,
            platform="cli",
            prompt="a fox",
            overrides={"width": 256, "height": 256, "steps": 4},
        )
    )
    assert (await asyncio.wait_for(jobs.result(done.workflow_id), 60)).state is JobState.DONE
    receiver.fail_next = 10**6  # every POST answers 500
    owner = await jobs.user(identity)
    receiver.secret = await asyncio.to_thread(jobs.stores.webhook_secrets.secret, owner.id)
    queue = jobs.config.task_queues.deliver("webhook")
    began = time.monotonic()
    handle = await jobs.temporal.start_workflow(
        "JobWebhooksWorkflow",
        WebhookWorkflowInput(
            job_id=done.workflow_id,
            url=receiver.url,
            user_id=owner.id,
            identity=identity,
            queue=queue,
            deadline=DEADLINE,
        ),
        id=f"webhook-deadline-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
        result_type=WebhookResult,
    )
    result = await asyncio.wait_for(handle.result(), 60)
    took = time.monotonic() - began
    assert isinstance(result, WebhookResult)
    assert result.gave_up, result  # the record says it gave up, and why
    assert result.delivered == 0
    assert receiver.deliveries >= 2, "retried with backoff before giving up"
    assert receiver.seen == {}
    assert DEADLINE - 1 <= took < DEADLINE + 20, took
    # The web process (which hosts the webhook worker) logs it, naming the job.
    log = dev_stack.stack.log_dir / "web.log"
    for _ in range(50):
        if f"webhook of job {done.workflow_id} gave up" in log.read_text(errors="replace"):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"no give-up line in {log}")
    # Nothing is retried after the deadline.
    after = receiver.deliveries
    await asyncio.sleep(2.5)
    assert receiver.deliveries == after
