# ruff: noqa: E402
"""History events per make job, by event type: what a job writes into Temporal's history.

Run with `.venv/bin/python bench/history_events.py` (about a minute). On a fresh embedded dev
stack (free loopback ports, a temporary directory, every process stopped at the end) it runs a
1-image and a 6-image make at a stand-in render time of 0 s and 2 s per image, one after the
other, and prints one markdown table: events, signals, workflow tasks and activity tasks per job.

Why render time matters: before issue 17 item 3 each progress update was a `report_progress`
signal (throttled to 2/s per image) and each signal a workflow task, so a job's history grew
with its render time. Progress now travels in heartbeat details, which write no history.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python bench/history_events.py` puts only bench/ on the path
    sys.path.insert(0, str(REPO_ROOT))

import argparse
import asyncio
import contextlib
import tempfile
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from temporalio.api.enums.v1 import EventType

from adapters.jobs import JobsClient
from bench.make_image import embedded_stack, reset_standin, set_render_time
from domain.jobs import JobState, MakeImageRequest
from workers.devstack import DevStack
from workers.runtime import connect_temporal, open_stores

POINTS = 100_000  # a 6-image batch needs a balance of 6000 points or more


@dataclass
class Row:
    images: int
    render: float
    events: int
    kinds: Counter[str]

    def count(self, *names: str) -> int:
        return sum(self.kinds[n] for n in names)


async def one_job(jobs: JobsClient, user: str, images: int, seed: int) -> Row:
    request = MakeImageRequest(
        user=user,
        platform="cli",
        prompt="a lighthouse on a cliff at dusk",
        overrides={"width": 256, "height": 256, "steps": 4, "batch": images, "seed": seed},
    )
    started = await jobs.start_make(request)
    status = await jobs.result(started.workflow_id)
    if status.state is not JobState.DONE:
        raise RuntimeError(f"{started.workflow_id} ended {status.state} ({status.reason})")
    history = await jobs.handle(started.workflow_id).fetch_history()
    kinds = Counter(
        EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in history.events
    )
    return Row(images, 0.0, len(history.events), kinds)


async def measure(stack: DevStack, renders: Sequence[float]) -> list[Row]:
    config, endpoints = stack.config, stack.endpoints
    temporal = await connect_temporal(config, endpoints)
    stores = open_stores(config, endpoints)
    comfy_url = endpoints.comfyui_urls[0]
    rows: list[Row] = []
    try:
        jobs = JobsClient(temporal, stores, config)
        user = f"cli:bench-history-{uuid.uuid4().hex[:6]}"
        await asyncio.to_thread(stores.users.get_or_create, user, POINTS)
        seed = 1000
        set_render_time(comfy_url, 0.0)
        await one_job(jobs, user, 1, seed)  # warm up; not counted
        for render in renders:
            set_render_time(comfy_url, render)
            for images in (1, 6):
                seed += 10
                row = await one_job(jobs, user, images, seed)
                row.render = render
                rows.append(row)
                print(f"  {images} image(s), render {render:g} s: {row.events} events", flush=True)
    finally:
        with contextlib.suppress(Exception):
            reset_standin(comfy_url)
        stores.close()
    return rows


def render_table(rows: list[Row]) -> str:
    lines = [
        "| make job | render per image | events | signals | workflow tasks | activity tasks |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.images} image{'s' if r.images > 1 else ''} | {r.render:g} s | {r.events} | "
            f"{r.count('WORKFLOW_EXECUTION_SIGNALED')} | "
            f"{r.count('WORKFLOW_TASK_SCHEDULED')} | {r.count('ACTIVITY_TASK_SCHEDULED')} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--render", type=float, nargs="+", default=[0.0, 2.0], help="stand-in seconds per image"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="st-history-") as tmp, embedded_stack(Path(tmp)) as s:
        rows = asyncio.run(measure(s, args.render))
    print(render_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
