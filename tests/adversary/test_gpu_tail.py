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
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pymongo.database import Database
from temporalio.testing import WorkflowEnvironment

from activities.comfy import prompt_id_for
from domain.jobs import JobState
from tests.adversary.test_gpu_pool import (
    Pool,
    prompts_run,
    queue_of,
    run_attempts,
    running_pool,
    wait_until,
)
from tests.fixtures.comfy import ComfyServer, standins_running

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


async def fast_server_measured_and_full(pool: Pool, pace: float) -> list[str]:
    """The fast server renders one job at `pace` (its worker learns how long its renders
    take), then two long ones that fill it (one running, one fed ahead), so that the slow
    server, started now, takes the next job alone. Returns the two long jobs: cancelling them
    leaves the fast server idle with nothing in the backlog."""
    slow, fast = pool.servers
    fast.set_faults(render_time=pace)
    await pool.serve(fast)
    warm = await pool.make(await pool.user())
    assert (await asyncio.wait_for(pool.jobs.result(warm), 30)).state is JobState.DONE
    fast.set_faults(render_time=60.0)
    blockers = [await pool.make(await pool.user()) for _ in range(2)]
    await wait_until(lambda: queue_of(fast) == (1, 1), timeout=15)
    fast.set_faults(render_time=pace)
    slow.set_faults(render_time=SLOW)
    await pool.serve(slow)
    return blockers


async def test_a_render_just_started_on_a_slow_server_moves_to_an_idle_fast_one(
    pool: Pool,
) -> None:
    slow, fast = pool.servers
    blockers = await fast_server_measured_and_full(pool, FAST)
    wid = await pool.make(await pool.user())
    await wait_until(lambda: queue_of(slow) == (1, 0), timeout=15)  # it runs on the slow GPU
    for blocker in blockers:
        await pool.jobs.cancel(blocker)  # the fast GPU goes idle, the backlog is empty

    result = await asyncio.wait_for(pool.jobs.result(wid), 30)

    assert result.state is JobState.DONE
    desc = await pool.env.client.get_workflow_handle(wid).describe()
    first = prompt_id_for(wid, 0, 1, desc.run_id)
    second = prompt_id_for(wid, 0, 2, desc.run_id)
    on_fast = await history_of(fast)
    on_slow = await history_of(slow)
    assert second in on_fast, "the render moved to the idle fast server"
    assert first in on_slow, "it had started on the slow one"
    assert on_slow[first]["status"]["status_str"] != "success", "and was stopped there"
    assert max(await run_attempts(pool, wid)) == 2, "handed back once"
    assert pool.charges(wid) == (1, result.price), "charged once"


async def test_a_render_no_faster_elsewhere_is_left_to_finish(pool: Pool) -> None:
    """An idle server as slow as this one would not end the render sooner: no interrupt."""
    slow, _fast = pool.servers
    blockers = await fast_server_measured_and_full(pool, SLOW)
    wid = await pool.make(await pool.user())
    await wait_until(lambda: queue_of(slow) == (1, 0), timeout=15)
    for blocker in blockers:
        await pool.jobs.cancel(blocker)
    result = await asyncio.wait_for(pool.jobs.result(wid), 30)
    assert result.state is JobState.DONE
    assert max(await run_attempts(pool, wid)) == 1, "never handed back"
    assert prompts_run(slow) == 1, "it ran where it started"
