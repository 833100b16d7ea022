"""How the saga ends (issue 15) and what it writes into history (issue 17 item 3).

- A workflow-task failure (a bug in workflow code) is not an exit: the server retries the task
  on the same history, so the job must not be recorded, its slot freed or its user told until
  it really ends. `run_job` compensates only for workflow-exit exceptions, the way
  samples-python's waiting_for_handlers_and_compensation does (it used to do all of that in a
  `finally`, on every failed attempt of the task).
- A job asks one patch (`saga-top-down`, which implies the earlier ones) and writes its
  `JobState` search attribute only when the value changes: each patch asked and each write is
  a history event.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from domain.jobs import (
    ActivityNames,
    JobPlan,
    JobState,
    MakeImageRequest,
    PrepareInput,
    ReplyTarget,
)
from tests.workflows.fakes import FakeActivities, failed_result
from workflows.make_image import MakeImageWorkflow

JOB_STATE = SearchAttributeKey.for_keyword("JobState")


class BuggyPlanActivities(FakeActivities):
    """Prepare returns a plan the workflow code cannot read (a bug, not a job failure)."""

    @activity.defn(name=ActivityNames.PREPARE_MAKE_IMAGE)
    async def prepare_make_image(self, inp: PrepareInput) -> JobPlan:
        plan = await super().prepare_make_image(inp)
        # An older plan's untyped route (domain/queues.py::plan_route): float("soon") raises
        # in workflow code.
        plan.route = None
        plan.settings["render_timeout"] = "soon"
        return plan


class PrepareFailsForGood(FakeActivities):
    """Prepare fails with an error no retry fixes (not a refusal it could phrase)."""

    @activity.defn(name=ActivityNames.PREPARE_MAKE_IMAGE)
    async def prepare_make_image(self, inp: PrepareInput) -> JobPlan:
        raise ApplicationError("the template file is corrupt", type="invalid_template")


def new_fakes(cls: type[FakeActivities], client: Client, **kw: Any) -> FakeActivities:
    return cls(client, queue=f"tq-{uuid.uuid4().hex[:8]}", **kw)


async def test_a_workflow_task_failure_records_nothing_and_keeps_the_slot(
    temporal_dev_env,
) -> None:
    env = temporal_dev_env
    fakes = new_fakes(BuggyPlanActivities, env.client)
    async with Worker(
        env.client, task_queue=fakes.queue, workflows=[MakeImageWorkflow], activities=fakes.all()
    ):
        handle = await env.client.start_workflow(
            MakeImageWorkflow.run,
            MakeImageRequest(user="telegram:5472638766", prompt="a red fox in snow"),
            id=f"make-test-{uuid.uuid4().hex[:8]}",
            task_queue=fakes.queue,
        )
        failed_tasks = 0
        for _ in range(100):  # until the task has failed (and been retried) at least twice
            history = await handle.fetch_history()
            failed_tasks = sum(
                e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED for e in history.events
            )
            if failed_tasks >= 1 and len(fakes.book.calls) == 0 and fakes.attempts == {}:
                await asyncio.sleep(1.5)  # the task's retry runs too
                break
            await asyncio.sleep(0.1)
        assert failed_tasks >= 1, "the bug must fail the workflow task"
        assert fakes.records == [], "a task that failed must not record the job"
        assert fakes.released == [], "a task that failed must not free the user's slot"
        assert fakes.book.calls == []
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        await handle.terminate("test over")


async def test_a_batch_asks_one_patch_and_indexes_each_state_once(temporal_dev_env) -> None:
    env = temporal_dev_env
    fakes = new_fakes(FakeActivities, env.client, units=6, price=6)
    async with Worker(
        env.client, task_queue=fakes.queue, workflows=[MakeImageWorkflow], activities=fakes.all()
    ):
        handle = await env.client.start_workflow(
            MakeImageWorkflow.run,
            MakeImageRequest(user="cli:someone", platform="cli", prompt="a red fox in snow"),
            id=f"make-test-{uuid.uuid4().hex[:8]}",
            task_queue=fakes.queue,
            # as the jobs client starts every job
            search_attributes=TypedSearchAttributes(
                [SearchAttributePair(JOB_STATE, JobState.STARTING.value)]
            ),
        )
        status = await handle.result()
        history = await handle.fetch_history()
    assert status.state is JobState.DONE and len(status.outputs) == 6
    patches = [
        e
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and e.marker_recorded_event_attributes.marker_name == "core_patch"
    ]
    assert len(patches) == 1
    states = [
        e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields[
            "JobState"
        ].data
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
        and "JobState"
        in e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
    ]
    assert states == [b'"queued"', b'"done"']


async def _make(env: Any, fakes: FakeActivities) -> tuple[Any, list[str]]:
    async with Worker(
        env.client, task_queue=fakes.queue, workflows=[MakeImageWorkflow], activities=fakes.all()
    ):
        handle = await env.client.start_workflow(
            MakeImageWorkflow.run,
            MakeImageRequest(user="cli:someone", platform="cli", prompt="a red fox in snow"),
            id=f"make-test-{uuid.uuid4().hex[:8]}",
            task_queue=fakes.queue,
        )
        status = await handle.result()
        history = await handle.fetch_history()
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    return status, scheduled


async def test_each_image_is_stored_by_its_render_one_round_trip_per_image(
    temporal_dev_env,
) -> None:
    fakes = new_fakes(FakeActivities, temporal_dev_env.client, units=3, price=3)
    status, scheduled = await _make(temporal_dev_env, fakes)
    assert status.state is JobState.DONE
    assert [o.blob_id for o in status.outputs] == [f"blob-{i}-o{i}.png" for i in range(3)]
    assert scheduled.count(ActivityNames.RUN_COMFY_PROMPT) == 3
    assert ActivityNames.STORE_COMFY_OUTPUTS not in scheduled
    assert fakes.stored_by_activity == []


async def test_a_comfy_worker_of_an_earlier_release_still_gets_its_outputs_stored(
    temporal_dev_env,
) -> None:
    """During a rolling deploy an older comfy worker ignores `store_for`: the job stores the
    outputs with `store_comfy_outputs` on `comfy-io`, as before."""
    fakes = new_fakes(FakeActivities, temporal_dev_env.client, units=2, price=2)
    fakes.store_in_render = False
    status, scheduled = await _make(temporal_dev_env, fakes)
    assert status.state is JobState.DONE
    assert [o.blob_id for o in status.outputs] == ["blob-0-o0.png", "blob-1-o1.png"]
    assert scheduled.count(ActivityNames.STORE_COMFY_OUTPUTS) == 2
    assert sorted(fakes.stored_by_activity) == [0, 1]


async def test_a_job_whose_prepare_fails_for_good_ends_failed_recorded_and_told(
    temporal_dev_env,
) -> None:
    """A workflow-exit exception (here the prepare activity's failure) is compensated: the job
    is recorded and delivered as failed, and fails with `JobFailed` carrying that status."""
    env = temporal_dev_env
    fakes = new_fakes(PrepareFailsForGood, env.client)
    async with (
        Worker(
            env.client,
            task_queue=fakes.queue,
            workflows=[MakeImageWorkflow],
            activities=fakes.all(),
        ),
        Worker(env.client, task_queue="deliver-telegram", activities=[fakes.deliver_result]),
    ):
        handle = await env.client.start_workflow(
            MakeImageWorkflow.run,
            MakeImageRequest(
                user="telegram:5472638766",
                platform="telegram",
                prompt="a red fox in snow",
                reply=ReplyTarget(chat_id="5472638766", message_id=7),
            ),
            id=f"make-test-{uuid.uuid4().hex[:8]}",
            task_queue=fakes.queue,
        )
        status = await failed_result(handle)
    assert status.reason == "the template file is corrupt"
    assert [r.status.state for r in fakes.records] == [JobState.FAILED]
    assert [d.status.state for d in fakes.delivered] == [JobState.FAILED]
    assert fakes.book.calls == [], "nothing was charged, so nothing is refunded"
