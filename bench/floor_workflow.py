"""The same-shape floor workflow and its no-op activity (bench/same_shape.py runs them).

A module of its own with nothing but the SDK and dataclasses in it: the workflow sandbox
re-imports a workflow's module for every run, as it re-imports the make job's, so this one is
as small as the make job's modules and, like them, read from bytecode.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import SearchAttributeKey

LOCAL = "local"  # a local activity (a `core_local_activity` marker)
REGULAR = "regular"  # an activity task on a queue
UPSERT = "upsert"  # an UpsertWorkflowSearchAttributes command
PATCH = "patch"  # a `workflow.patched` marker
WORKFLOW_QUEUE = "workflow"  # in a Step: the workflow's own task queue
NOOP_ACTIVITY = "bench_same_shape_step"
JOB_STATE = SearchAttributeKey.for_keyword("JobState")  # the upsert the make job does


@dataclass
class Step:
    """One command of the make job, as the floor repeats it.

    `queue` is WORKFLOW_QUEUE or the make job's name of another queue (`comfy`, `comfy-io`);
    the floor runs its own queue for each. `sleep` is set at run time on the render step.
    """

    kind: str
    name: str = ""
    queue: str = ""
    input_bytes: int = 0
    result_bytes: int = 0


@dataclass
class Shape:
    """The make job's commands in order: the one description the floor workflow follows."""

    steps: list[Step] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(1 for s in self.steps if s.kind == kind)

    def other_queues(self) -> list[str]:
        seen: list[str] = []
        for s in self.steps:
            if s.kind == REGULAR and s.queue != WORKFLOW_QUEUE and s.queue not in seen:
                seen.append(s.queue)
        return seen

    def describe(self) -> str:
        """`local prepare_make_image → charge_points (workflow queue) → ...` (activities only;
        upserts and patch markers are counted after)."""
        parts = []
        for s in self.steps:
            if s.kind == LOCAL:
                parts.append(f"local {s.name}")
            elif s.kind == REGULAR:
                where = "workflow queue" if s.queue == WORKFLOW_QUEUE else f"queue {s.queue}"
                parts.append(f"{s.name} ({where})")
        return (
            " → ".join(parts)
            + f"; {self.count(UPSERT)} search-attribute upserts, {self.count(PATCH)} patch markers"
        )


@dataclass
class NoopInput:
    pad: str = ""  # as many bytes as the make job's input of this step
    result_bytes: int = 0
    sleep: float = 0.0


@dataclass
class FloorInput:
    steps: list[Step]
    queues: dict[str, str]  # Step.queue -> the floor's task queue
    render_step: str = ""  # name of the step that sleeps `render` seconds
    render: float = 0.0


@activity.defn(name=NOOP_ACTIVITY)
async def noop_step(inp: NoopInput) -> str:
    """Nothing but the answer, of the size the make job's step answered with."""
    if inp.sleep > 0:
        await asyncio.sleep(inp.sleep)
    return "x" * inp.result_bytes


@workflow.defn(name="BenchSameShapeWorkflow")
class SameShapeWorkflow:
    """Runs a `Shape`'s commands with no work behind them."""

    @workflow.run
    async def run(self, inp: FloorInput) -> int:
        done = 0
        for i, step in enumerate(inp.steps):
            arg = NoopInput(
                pad="x" * step.input_bytes,
                result_bytes=step.result_bytes,
                sleep=inp.render if step.name == inp.render_step else 0.0,
            )
            if step.kind == LOCAL:
                await workflow.execute_local_activity(
                    noop_step, arg, start_to_close_timeout=timedelta(seconds=30)
                )
            elif step.kind == REGULAR:
                await workflow.execute_activity(
                    noop_step,
                    arg,
                    task_queue=inp.queues[step.queue],
                    start_to_close_timeout=timedelta(seconds=60),
                )
            elif step.kind == UPSERT:
                workflow.upsert_search_attributes([JOB_STATE.value_set(f"step-{i}")])
            elif step.kind == PATCH:
                workflow.patched(f"floor-{i}")
            done += 1
        return done
