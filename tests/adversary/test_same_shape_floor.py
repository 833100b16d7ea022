"""The benchmark's floor has the make job's shape, read from the make job's own history.

Issue 17 item 4 holds the make job to "a no-op workflow of the same shape", and the saga's shape
changes (issue 17 item 3). So bench/same_shape.py reads the shape from a make job's history
instead of a hand-written list; this checks that the floor it builds really issues the same
commands, in the same order, on the same kinds of queue, against the saved make histories.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from bench.floor_workflow import (
    LOCAL,
    REGULAR,
    WORKFLOW_QUEUE,
    FloorInput,
    SameShapeWorkflow,
    noop_step,
)
from bench.same_shape import floor_queues, shape_of
from workflows.registry import sandbox_runner

HISTORIES = Path(__file__).parents[1] / "workflows" / "histories"
MAKE_HISTORIES = ["make_done.json", "make_partial.json", "make_refused.json"]


# The saga tests ran every activity on their one queue; production runs these on their own.
PRODUCTION_QUEUES = {"run_comfy_prompt": "comfy", "store_comfy_outputs": "comfy-io"}


def load(name: str) -> WorkflowHistory:
    """A saved make history, its GPU and storage activities moved to their production queues."""
    data = json.loads((HISTORIES / name).read_text())
    for event in data["events"]:
        attrs = event.get("activityTaskScheduledEventAttributes")
        if attrs and attrs["activityType"]["name"] in PRODUCTION_QUEUES:
            attrs["taskQueue"]["name"] = PRODUCTION_QUEUES[attrs["activityType"]["name"]]
    return WorkflowHistory.from_json(name.removesuffix(".json"), data)


def workflow_queue(history: WorkflowHistory) -> str:
    started = history.events[0].workflow_execution_started_event_attributes
    return started.task_queue.name


def commands(history: WorkflowHistory, queue_role: dict[str, str]) -> list[str]:
    """The history's commands, with each task queue named by its role, not its name."""
    out: list[str] = []
    for ev in history.events:
        if ev.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            out.append(ev.marker_recorded_event_attributes.marker_name)
        elif ev.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = ev.upsert_workflow_search_attributes_event_attributes.search_attributes
            out.append("upsert " + ",".join(sorted(set(fields.indexed_fields) - {"JobState"})))
        elif ev.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            queue = ev.activity_task_scheduled_event_attributes.task_queue.name
            out.append(f"activity on {queue_role.get(queue, '?')}")
    return out


def test_the_shape_of_a_finished_make_job_is_its_activities_in_order() -> None:
    history = load("make_done.json")
    shape = shape_of(history, workflow_queue(history))
    steps = [(s.kind, s.name, s.queue) for s in shape.steps if s.kind in (LOCAL, REGULAR)]
    assert steps[0] == (LOCAL, "prepare_make_image", WORKFLOW_QUEUE)
    assert (REGULAR, "charge_points", WORKFLOW_QUEUE) in steps
    assert (REGULAR, "run_comfy_prompt", "comfy") in steps
    # Since `saga-top-down` each render stores its own outputs (no store_comfy_outputs step),
    # and the settle (the charge step again) follows the render.
    assert all(name != "store_comfy_outputs" for _, name, _ in steps)
    charges = [i for i, step in enumerate(steps) if step[1] == "charge_points"]
    assert len(charges) == 2
    assert charges[0] < steps.index((REGULAR, "run_comfy_prompt", "comfy")) < charges[1]
    assert shape.other_queues() == ["comfy"]
    render = next(s for s in shape.steps if s.name == "run_comfy_prompt")
    assert render.input_bytes > 0 and render.result_bytes > 0, "payload sizes are mirrored"


@pytest.mark.parametrize("name", MAKE_HISTORIES)
async def test_the_floor_issues_the_make_jobs_commands_in_the_same_order(
    temporal_dev_env: WorkflowEnvironment, name: str
) -> None:
    make = load(name)
    shape = shape_of(make, workflow_queue(make))
    queues = floor_queues(f"floor-{uuid.uuid4().hex[:6]}", shape)
    client = temporal_dev_env.client
    workers = [
        Worker(
            client,
            task_queue=queues[WORKFLOW_QUEUE],
            workflows=[SameShapeWorkflow],
            activities=[noop_step],
            workflow_runner=sandbox_runner(),
        ),
        *(
            Worker(client, task_queue=queues[q], activities=[noop_step])
            for q in shape.other_queues()
        ),
    ]
    wid = f"floor-{uuid.uuid4().hex[:8]}"
    async with contextlib.AsyncExitStack() as running:
        for worker in workers:
            await running.enter_async_context(worker)
        await client.execute_workflow(
            SameShapeWorkflow.run,
            FloorInput(steps=shape.steps, queues=queues),
            id=wid,
            task_queue=queues[WORKFLOW_QUEUE],
        )
    floor = await client.get_workflow_handle(wid).fetch_history()
    make_roles = {workflow_queue(make): WORKFLOW_QUEUE, "comfy": "comfy", "comfy-io": "comfy-io"}
    floor_roles = {queue: role for role, queue in queues.items()}
    assert commands(floor, floor_roles) == commands(make, make_roles)
