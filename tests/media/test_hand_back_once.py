"""A render is handed back "to a better server" at most once.

Found by CI: Temporal lists a task queue's pollers for minutes after their worker died, so a lone
busy server saw "another server polls it", handed its fed-ahead prompt back, got the retry
itself, handed it back again, and so on until the render's attempts ran out and the job failed.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from activities.comfy import FED_AHEAD_CHECK, ComfyActivities, RenderPace


class _Queued:
    """A ComfyUI client whose prompt always waits second in the server's queue."""

    async def queue_position(self, prompt_id: str) -> int:
        return 1


def _activities(asked: list[str]) -> ComfyActivities:
    async def better_elsewhere(queue: str, faster_than: float | None) -> bool:
        asked.append(queue)
        return True  # a (stale) other poller and no backlog: the false positive

    acts = ComfyActivities.__new__(ComfyActivities)
    acts.better_elsewhere = better_elsewhere
    acts.pace = RenderPace()
    return acts


async def _returns_within(attempt: int, seconds: float) -> tuple[bool, list[str]]:
    asked: list[str] = []
    acts = _activities(asked)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt, task_queue="comfy")

    async def check() -> Any:
        return await acts._until_better_elsewhere(_Queued(), "p1")  # type: ignore[arg-type]

    try:
        await asyncio.wait_for(env.run(check), seconds)
        return True, asked
    except TimeoutError:
        return False, asked


@pytest.mark.asyncio
async def test_the_first_attempt_hands_a_waiting_prompt_back_when_told_to() -> None:
    returned, asked = await _returns_within(1, FED_AHEAD_CHECK * 4)
    assert returned and asked == ["comfy"]


@pytest.mark.asyncio
async def test_a_retried_render_is_never_handed_back_again() -> None:
    returned, asked = await _returns_within(2, FED_AHEAD_CHECK * 4)
    assert not returned and asked == [], "a retry must stay where it landed"
