"""The suite itself: it paces itself to the server it meets and leaves nothing running
(issue 16 item 7: against a slow real server it failed on timing, and a failed test left its
blocker running, which failed six more)."""

from __future__ import annotations

import asyncio
import time

from comfy.client import ComfyClient
from tests.contract.conftest import Pace, start_blocker, stop_prompts, txt2img
from tests.fixtures.comfy import ComfyServer


def test_step_counts_and_timeouts_follow_the_measured_pace() -> None:
    fast = Pace(overhead=0.05, step=0.005)
    slow = Pace(overhead=20.0, step=2.0)  # a CPU ComfyUI at 64x64
    assert fast.steps_for(1.0) == 200
    assert slow.steps_for(1.0) == 3, "never a 200-step prompt on a 2 s/step server"
    assert slow.steps_for(600) == 300
    assert Pace(overhead=0.01, step=0.0001).steps_for(600) == 10_000, "KSampler's maximum"
    assert fast.timeout() == 30.0
    assert slow.timeout(20) > 4 * (20 + 20 * 2.0), "room for the server's own speed"


async def test_the_measured_pace_is_positive(pace: Pace) -> None:
    assert pace.step > 0 and pace.overhead > 0


async def test_stopping_a_tests_prompts_dequeues_and_interrupts_them(
    comfy: ComfyClient, comfy_faults_reset: ComfyServer, ckpt: str, pace: Pace
) -> None:
    blocker = await start_blocker(comfy, comfy_faults_reset, ckpt, pace)
    queued = await comfy.submit(txt2img(ckpt))
    assert await comfy.queue_position(blocker) == 0
    assert await comfy.queue_position(queued.prompt_id) == 1
    await stop_prompts(comfy_faults_reset.url, [blocker, queued.prompt_id, blocker])
    assert await comfy.queue_position(queued.prompt_id) is None
    assert await comfy.history(queued.prompt_id) is None, "dequeued, never run"
    # A real server sees the interrupt at its next sampler step: seconds apart on a loaded CPU
    # (6.4 s/step measured on one), so the wait follows the pace, not a fixed 5 s.
    deadline = time.monotonic() + pace.timeout(1)
    entry = await comfy.history(blocker)
    while entry is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        entry = await comfy.history(blocker)
    assert entry is not None and entry["status"]["status_str"] == "error", "interrupted"
