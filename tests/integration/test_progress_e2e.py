"""Live progress on the real stack: it reaches `status()` through the render's heartbeat
details, and a job's history carries no progress signals (issue 15, issue 17 item 3)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import pytest
from temporalio.api.enums.v1 import EventType

from adapters.jobs import JobsClient
from comfy.client import ComfyClient
from domain.jobs import JobState, JobStatus, MakeImageRequest
from tests.contract.conftest import txt2img
from tests.integration.conftest import Stack

pytestmark = pytest.mark.stack


async def new_user(jobs: JobsClient, points: int = 500) -> str:
    identity = f"cli:progress-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(jobs.stores.users.get_or_create, identity, points)
    return identity


def small(user: str, batch: int = 1) -> MakeImageRequest:
    return MakeImageRequest(
        user=user,
        platform="cli",
        prompt="a heron in fog",
        overrides={"width": 256, "height": 256, "steps": 4, "batch": batch},
    )


async def watch(
    jobs: JobsClient,
    wid: str,
    timeout: float = 60,
    until: Callable[[JobStatus], bool] = lambda s: s.final,
) -> list[JobStatus]:
    """Every status() answer, five times a second, until `until` (the job is final)."""
    seen: list[JobStatus] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = await jobs.status(wid)
        seen.append(status)
        if until(status) or status.final:
            return seen
        await asyncio.sleep(0.2)
    raise AssertionError(f"{wid} not there after {timeout} s: {seen[-1]}")


async def signals_in(jobs: JobsClient, wid: str) -> tuple[int, int]:
    """(signals, all events) in the job's history."""
    history = await jobs.handle(wid).fetch_history()
    signalled = [
        e
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    ]
    return len(signalled), len(history.events)


async def test_status_during_a_render_shows_the_queue_position_then_a_rising_percent(
    dev_stack: Stack, jobs: JobsClient
):
    async with ComfyClient(dev_stack.comfy_url) as comfy:
        ckpt = (await comfy.combo_options("CheckpointLoaderSimple", "ckpt_name"))[0]
        dev_stack.faults(faults={"hang": {"next": 1}})
        ahead = (await comfy.submit(txt2img(ckpt, steps=1))).prompt_id  # runs until cancelled
        try:
            dev_stack.faults(render_time=3.0)
            user = await new_user(jobs)
            started = await jobs.start_make(small(user))
            seen = await watch(
                jobs, started.workflow_id, until=lambda s: s.queue_position is not None
            )
        finally:
            await comfy.cancel(ahead)
        try:
            seen += await watch(jobs, started.workflow_id)
        finally:
            dev_stack.reset_faults()
    assert seen[-1].state is JobState.DONE, seen[-1].reason
    queued = [s for s in seen if s.state is JobState.QUEUED and s.queue_position is not None]
    trail = [(s.state.value, s.queue_position, s.percent, s.detail) for s in seen]
    assert queued, f"the job waited behind another prompt: status() said where: {trail}"
    assert {s.queue_position for s in queued} == {1}
    running = [s.percent for s in seen if s.state is JobState.RUNNING]
    partial = sorted({p for p in running if 0 < p < 100})
    # Heartbeats reach the server at most once a second (throttled): a 3 s render shows at
    # least two partial values even on a loaded machine.
    assert len(partial) >= 2, f"percent while rendering: {running}"
    assert running == sorted(running), f"percent never goes back: {running}"
    assert all(
        s.detail.startswith("node ") for s in seen if s.state is JobState.RUNNING and s.percent
    )
    assert seen.index(queued[-1]) < min(
        i for i, s in enumerate(seen) if s.state is JobState.RUNNING
    ), "queued, then running"
    signals, events = await signals_in(jobs, started.workflow_id)
    assert signals == 0, f"{signals} signals in {events} events"


async def test_a_make_jobs_history_has_no_progress_signals(dev_stack: Stack, jobs: JobsClient):
    dev_stack.faults(render_time=1.5)
    try:
        user = await new_user(jobs, points=3000)
        started = await jobs.start_make(small(user, batch=2))
        seen = await watch(jobs, started.workflow_id)
    finally:
        dev_stack.reset_faults()
    assert seen[-1].state is JobState.DONE, seen[-1].reason
    assert any(s.state is JobState.RUNNING and 0 < s.percent < 100 for s in seen)
    signals, events = await signals_in(jobs, started.workflow_id)
    assert signals == 0, f"{signals} signals in {events} events"
