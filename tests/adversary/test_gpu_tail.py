"""The end of a backlog on GPUs of unequal speed: the fast GPU must not wait a whole slow render
(issue 16, "the fast GPU never waits while the slow one holds queued work").

Found by bench/gpu_pool.py at the issue's render times (1 s and 3 s): in about one run in three
the fast server sat idle ~3 s at the very end. The workers' logs of a re-run (2026-12-04 05:20
UTC, 4-server row) showed no hand-back at all: the fast server's last render ended at
:26.67 and the slow one started the prompt it had fed ahead at :26.78, 0.11 s later, before the
fast server's idle spell had settled (0.1 s) and the next check (every 0.25 s) could claim it.
Once started, a render was never given away, so the fast GPU idled 3.12 s while the slow one
rendered the last prompt, which the fast one would have ended 2 s sooner. A render that has
only just started on a server much slower than an idle one is now interrupted and handed
back, once; one that has run long enough (or on a server as fast as the idle one) is not.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pymongo.database import Database
from temporalio.testing import WorkflowEnvironment

from activities import comfy as comfy_activities
from activities.comfy import RenderPace, prompt_id_for
from domain.jobs import JobState
from store.gpu_idle import IDLE_SETTLE, GpuIdle
from tests.adversary.test_gpu_pool import (
    Pool,
    prompts_run,
    queue_of,
    run_attempts,
    running_pool,
    wait_until,
)
from tests.fixtures.comfy import ComfyServer, standins_running
from workers import temporal_workers
from workers.temporal_workers import MOVED_PAUSE, ServerSlots

FAST = 0.3  # seconds per render on the fast server
SLOW = 6.0  # on the slow one: long enough for the story's steps to fit in its first part


@pytest.fixture
def slow_and_fast(tmp_path: Path) -> Iterator[list[ComfyServer]]:
    with standins_running({tmp_path / "slow": (), tmp_path / "fast": ()}) as servers:
        yield servers


@pytest_asyncio.fixture
async def pool(
    temporal_dev_env: WorkflowEnvironment,
    mongo_db: Database[Any],
    slow_and_fast: list[ComfyServer],
) -> AsyncIterator[Pool]:
    async with running_pool(temporal_dev_env, mongo_db, slow_and_fast) as p:
        yield p


async def history_of(server: ComfyServer) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as http:
        data: dict[str, Any] = (await http.get(f"{server.url}/history")).json()
        return data


async def fast_server_measured_and_full(pool: Pool, pace: float) -> str:
    """The fast server (one slot, no feed-ahead: it is only ever the idle one here) renders
    one job at `pace`, so its worker learns how long its renders take, then a long one that
    fills it, so that the slow server, started now, takes the next jobs alone (the first
    teaches it its own pace). Returns the long job: cancelling it leaves the fast server idle
    with nothing in the backlog."""
    slow, fast = pool.servers
    fast.set_faults(render_time=pace)
    await pool.serve(fast, feed_ahead=0)
    warm = await pool.make(await pool.user())
    assert (await asyncio.wait_for(pool.jobs.result(warm), 30)).state is JobState.DONE
    fast.set_faults(render_time=60.0)
    blocker = await pool.make(await pool.user())
    await wait_until(lambda: queue_of(fast) == (1, 0), timeout=15)
    fast.set_faults(render_time=pace)
    slow.set_faults(render_time=SLOW)
    await pool.serve(slow)
    warm = await pool.make(await pool.user())  # the slow server learns its pace too
    assert (await asyncio.wait_for(pool.jobs.result(warm), 30)).state is JobState.DONE
    return blocker


async def test_a_render_just_started_on_a_slow_server_moves_to_an_idle_fast_one(
    pool: Pool,
) -> None:
    slow, fast = pool.servers
    blocker = await fast_server_measured_and_full(pool, FAST)
    wid = await pool.make(await pool.user())
    await wait_until(lambda: queue_of(slow) == (1, 0), timeout=15)  # it runs on the slow GPU
    await pool.jobs.cancel(blocker)  # the fast GPU goes idle, the backlog is empty

    result = await asyncio.wait_for(pool.jobs.result(wid), 30)

    assert result.state is JobState.DONE
    desc = await pool.env.client.get_workflow_handle(wid).describe()
    first = prompt_id_for(wid, 0, 1, desc.run_id)
    on_fast = await history_of(fast)
    on_slow = await history_of(slow)
    assert first in on_slow, "it had started on the slow server"
    assert on_slow[first]["status"]["status_str"] != "success", "and was stopped there"
    retries = {prompt_id_for(wid, 0, a, desc.run_id): a for a in range(2, 5)}
    ran_on_fast = [a for pid, a in retries.items() if pid in on_fast]
    assert ran_on_fast, "the render moved to the idle fast server"
    assert not [pid for pid in retries if pid in on_slow], "and never came back to the slow one"
    # Attempt 2 may land on a poll the slow server made before it paused: handed straight back.
    assert max(await run_attempts(pool, wid)) == ran_on_fast[0] <= 3
    assert pool.charges(wid) == (1, result.price), "charged once"


async def test_a_render_no_faster_elsewhere_is_left_to_finish(pool: Pool) -> None:
    """An idle server as slow as this one would not end the render sooner: no interrupt."""
    slow, _fast = pool.servers
    blocker = await fast_server_measured_and_full(pool, SLOW)
    wid = await pool.make(await pool.user())
    await wait_until(lambda: queue_of(slow) == (1, 0), timeout=15)
    await pool.jobs.cancel(blocker)
    result = await asyncio.wait_for(pool.jobs.result(wid), 30)
    assert result.state is JobState.DONE
    assert max(await run_attempts(pool, wid)) == 1, "never handed back"
    assert prompts_run(slow) == 2, "it ran where it started (after the warm-up)"


# ---- the pieces: the idle record's pace, the slots' pause, the activity's estimate ------------


def test_a_started_render_moves_only_to_a_server_measured_fast_enough(
    mongo_db: Database[Any],
) -> None:
    idle = GpuIdle(mongo_db)
    idle.ensure_indexes()
    now = datetime.now(UTC)
    settled = now - IDLE_SETTLE * 2
    idle.record("unmeasured", ["comfy"], settled, now=now)
    idle.record("as-slow", ["comfy"], settled, render_seconds=3.0, now=now)
    assert idle.claim("comfy", "slow", faster_than=2.0, now=now) is None, "none fast enough"
    idle.record("fast", ["comfy"], settled, render_seconds=1.0, now=now)
    idle.record("faster", ["comfy"], settled, render_seconds=0.5, now=now)
    assert idle.claim("comfy", "slow", faster_than=2.0, now=now) == "faster", "the fastest first"
    assert idle.claim("comfy", "slow", faster_than=2.0, now=now) == "fast"
    assert idle.claim("comfy", "slow", faster_than=2.0, now=now) is None, "one per idle spell"
    # A prompt still waiting in the queue goes to any idle server, measured or not.
    assert idle.claim("comfy", "slow", now=now) in {"unmeasured", "as-slow"}


async def test_a_server_that_gave_a_render_away_polls_nothing_and_is_not_claimable_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(temporal_workers.time, "monotonic", lambda: clock[0])
    slots = ServerSlots(2, running=1)
    await slots.reserve_slot(_reserve_ctx("comfy"))  # it polls, with nothing to render
    idle_since = slots.idle_since
    assert idle_since is not None and slots._may_poll("comfy")
    slots.pause_polls(MOVED_PAUSE)
    assert slots.polls_paused() and not slots._may_poll("comfy")
    claimable = slots.claimable_idle_since()
    assert claimable is not None and claimable > idle_since, "idle only from the pause's end"
    assert slots.claimable_idle_since() == claimable, "the same spell on every refresh"
    clock[0] += MOVED_PAUSE + 0.01
    assert not slots.polls_paused() and slots._may_poll("comfy")
    assert slots.claimable_idle_since() == idle_since


def test_the_pace_is_unknown_until_a_render_and_counts_down_from_its_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [50.0]
    monkeypatch.setattr(comfy_activities.time, "monotonic", lambda: clock[0])
    pace = RenderPace()
    pace.started("p")
    assert pace.remaining("p") is None, "no render measured: never moved"
    pace.observe(3.0)
    clock[0] += 1.0
    assert pace.remaining("p") == pytest.approx(2.0)
    assert pace.remaining("q") is None, "not started"
    pace.observe(1.0)
    assert pace.seconds is not None and 1.0 < pace.seconds < 3.0
    pace.ended("p")
    assert pace.remaining("p") is None


async def test_a_starting_server_is_idle_only_from_its_first_poll() -> None:
    """Found in the bench's 4-server row at 05:39 UTC: a busy server handed its fed-ahead
    prompt back to a server whose worker was still starting (its record said idle since the
    worker object was built, before any poll), in the middle of a full backlog: the prompt
    went back behind the backlog instead of running next."""
    slots = ServerSlots(2, running=1)
    await asyncio.sleep(IDLE_SETTLE.total_seconds() * 2)  # the worker starts slowly
    assert slots.idle_since is None, "not polling yet: nothing could be handed to it"
    before = datetime.now(UTC)
    await asyncio.wait_for(slots.reserve_slot(_reserve_ctx("q")), 1)
    assert slots.idle_since is not None and slots.idle_since >= before, "idle from its poll"


def _reserve_ctx(queue: str) -> Any:
    return SimpleNamespace(task_queue=queue, slot_type="activity", is_sticky=False)
