# ruff: noqa: E402
"""A no-op workflow of the make job's shape: Temporal's own floor for what the saga asks of it.

Issue 17 item 4. The floor the make job is held to is not "one activity" but the same commands
with nothing behind them: the same local activities, the same regular activities on the same
kinds of queue (the workflow's own, and each other queue served by another process), the same
search-attribute upserts and patch markers, in the same order and with payloads of the same
sizes. Whatever the make job costs above this floor is our own doing.

The shape has one description, `Shape`, and it is read from a real make job's history
(`shape_of`), never written by hand: when the saga changes (fewer round trips, issue 17 item 3)
the floor changes with it in the next run. `Shape.describe()` prints it in the report.

The floor's workers run as two subprocesses, like the make job's: `workflow` (the workflow,
its local activities and the regular ones on its own queue, sandboxed with the production
runner) and `other` (one worker per other queue, with the concurrency of the queue it stands
for). Started with `python bench/same_shape.py worker --role ...` by `FloorWorkers`.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python bench/same_shape.py` puts only bench/ on the path
    sys.path.insert(0, str(REPO_ROOT))

import argparse
import asyncio
import compileall
import contextlib
import json
import signal
from collections.abc import Iterator, Mapping, Sequence

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Worker

from bench import floor_workflow
from bench.floor_workflow import (
    LOCAL,
    PATCH,
    REGULAR,
    UPSERT,
    WORKFLOW_QUEUE,
    SameShapeWorkflow,
    Shape,
    Step,
    noop_step,
)


def _payload_bytes(payloads: Sequence[object]) -> int:
    return sum(len(getattr(p, "data", b"")) for p in payloads)


def shape_of(history: WorkflowHistory, workflow_queue: str) -> Shape:
    """The commands of one finished job, in the order its history recorded them."""
    shape = Shape()
    scheduled: dict[int, Step] = {}
    for ev in history.events:
        kind = ev.event_type
        if kind == EventType.EVENT_TYPE_MARKER_RECORDED:
            attrs = ev.marker_recorded_event_attributes
            if attrs.marker_name == "core_local_activity":
                data = attrs.details["data"].payloads
                name = str(json.loads(data[0].data).get("activity_type", "")) if data else ""
                result = attrs.details["result"].payloads if "result" in attrs.details else []
                shape.steps.append(
                    Step(LOCAL, name, WORKFLOW_QUEUE, 0, _payload_bytes(list(result)))
                )
            elif attrs.marker_name == "core_patch":
                shape.steps.append(Step(PATCH))
        elif kind == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = ev.upsert_workflow_search_attributes_event_attributes.search_attributes
            # A patch's own upsert (TemporalChangeVersion) comes with the floor's patch step.
            if set(fields.indexed_fields) - {"TemporalChangeVersion"}:
                shape.steps.append(Step(UPSERT))
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs_s = ev.activity_task_scheduled_event_attributes
            queue = attrs_s.task_queue.name
            step = Step(
                REGULAR,
                attrs_s.activity_type.name,
                WORKFLOW_QUEUE if queue == workflow_queue else queue,
                _payload_bytes(list(attrs_s.input.payloads)),
            )
            scheduled[ev.event_id] = step
            shape.steps.append(step)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            done = ev.activity_task_completed_event_attributes
            if done.scheduled_event_id in scheduled:
                step = scheduled[done.scheduled_event_id]
                step.result_bytes = _payload_bytes(list(done.result.payloads))
    return shape


# ------------------------------------------------------------------------------ the floor


# ------------------------------------------------------------------------------ its workers


def floor_queues(prefix: str, shape: Shape) -> dict[str, str]:
    """The floor's own task queue for each queue the shape names."""
    queues = {WORKFLOW_QUEUE: f"{prefix}-workflow"}
    for i, name in enumerate(shape.other_queues()):
        queues[name] = f"{prefix}-{i + 1}-{name}"
    return queues


@contextlib.contextmanager
def floor_workers(
    address: str,
    namespace: str,
    queues: Mapping[str, str],
    limits: Mapping[str, int],
    log_dir: Path,
) -> Iterator[dict[str, int]]:
    """The two floor worker processes, running until the block ends; yields their pids."""
    from workers.processes import ManagedProcess, stop_all

    base = [sys.executable, str(Path(__file__).resolve()), "worker", address, namespace]
    others = [f"{queues[q]}={limits.get(q, 0)}" for q in queues if q != WORKFLOW_QUEUE]
    procs = [
        ManagedProcess(
            "floor-worker",
            [*base, "workflow", queues[WORKFLOW_QUEUE]],
            log_path=log_dir / "floor-worker.log",
            health=lambda: None,
        ),
        ManagedProcess(
            "floor-other-worker",
            [*base, "other", *others],
            log_path=log_dir / "floor-other-worker.log",
            health=lambda: None,
        ),
    ]
    try:
        for p in procs:
            p.start()
        yield {p.name: p.pid for p in procs if p.pid is not None}
    finally:
        stop_all(procs)


async def serve(address: str, namespace: str, role: str, queues: Sequence[str]) -> None:
    """One floor worker process: `workflow QUEUE` or `other QUEUE=LIMIT ...` until SIGTERM."""
    from workflows.registry import sandbox_runner

    # The make job's workflow modules are read from bytecode (workflows/registry.py): so is this.
    compileall.compile_file(str(Path(floor_workflow.__file__)), quiet=1)
    client = await Client.connect(address, namespace=namespace)
    if role == WORKFLOW_QUEUE:
        workers = [
            Worker(
                client,
                task_queue=queues[0],
                workflows=[SameShapeWorkflow],
                activities=[noop_step],
                workflow_runner=sandbox_runner(),  # the make job's conditions: sandbox on
            )
        ]
    else:
        workers = []
        for spec in queues:
            name, _, limit = spec.partition("=")
            slots = int(limit or 0) or 100  # 0: the SDK's default
            workers.append(
                Worker(
                    client, task_queue=name, activities=[noop_step], max_concurrent_activities=slots
                )
            )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(w.run()) for w in workers]
    await stop.wait()
    await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
    for t in tasks:
        t.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="a worker of the same-shape floor workflow")
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker")
    w.add_argument("address")
    w.add_argument("namespace")
    w.add_argument("role", choices=[WORKFLOW_QUEUE, "other"])
    w.add_argument("queues", nargs="*")
    args = p.parse_args(argv)
    asyncio.run(serve(args.address, args.namespace, args.role, args.queues))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
