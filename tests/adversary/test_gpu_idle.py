"""The end-of-backlog hand-back needs a signal that does not lag (issue 16, "the fast GPU never
waits while the slow one holds queued work").

Temporal's `approximate_backlog_count` reads stale after a long backlog (6 instead of 0 for
about 5 s in bench/gpu_pool.py: it counts dispatched tasks until they are cleared), and its
poller list names dead pollers for minutes. The stories here make the lag deterministic: the
busy server's Temporal client answers every `describe_task_queue` with a backlog of 6, as it
did in the bench; the hand-back must not depend on it. What it depends on instead, each comfy
worker's "idle on these queues since T" record (store/gpu_idle.py), must never point at a
dead server (a record not refreshed), nor at the server itself, nor attract more hand-backs
than the idle server can take.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import pytest_asyncio
from pymongo.database import Database
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest, DescribeTaskQueueResponse
from temporalio.testing import WorkflowEnvironment

from domain.jobs import JobState
from store.gpu_idle import IDLE_FRESH, IDLE_SETTLE, GpuIdle
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
from workers.temporal_workers import ComfyServerWorkers, ServerSlots

STALE_BACKLOG = 6  # what Temporal reported for ~5 s after the bench's backlog drained


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


def lagging_backlog(workers: ComfyServerWorkers) -> list[str]:
    """Make this worker's Temporal client report a stale backlog, as Temporal did after the
    bench's long backlog; returns the queues it was asked about."""
    service = workers.client.workflow_service
    real = service.describe_task_queue
    asked: list[str] = []

    async def stale(req: DescribeTaskQueueRequest, *args: Any, **kwargs: Any) -> Any:
        asked.append(req.task_queue.name)
        resp: DescribeTaskQueueResponse = await real(req, *args, **kwargs)
        resp.stats.approximate_backlog_count = max(
            resp.stats.approximate_backlog_count, STALE_BACKLOG
        )
        return resp

    service.describe_task_queue = stale  # type: ignore[method-assign]
    return asked


async def test_an_idle_server_takes_the_fed_ahead_prompt_while_the_backlog_count_lags(
    pool: Pool,
) -> None:
    slow, fast = pool.servers
    slow.set_faults(render_time=6.0)
    lagging_backlog(await pool.serve(slow))
    wids = [await pool.make(await pool.user()) for _ in range(2)]
    await wait_until(lambda: queue_of(slow) == (1, 1), timeout=15)  # one runs, one fed ahead

    started = time.monotonic()
    await pool.serve(fast)  # the backlog is empty; this server is idle
    second = await asyncio.wait_for(pool.jobs.result(wids[1]), 30)
    took = time.monotonic() - started
    first = await asyncio.wait_for(pool.jobs.result(wids[0]), 30)

    assert (first.state, second.state) == (JobState.DONE, JobState.DONE)
    assert prompts_run(fast) == 1, "the fed-ahead prompt was handed to the idle server"
    assert prompts_run(slow) == 1, "the running one finished where it ran"
    # Generous: the slow render is 6 s; the hand-back takes well under one of them.
    assert took < 5.0, f"the idle server waited for the busy one's render ({took:.1f} s)"
    assert max(await run_attempts(pool, wids[1])) == 2, "handed back once"
    for wid, r in zip(wids, (first, second), strict=True):
        assert pool.charges(wid) == (1, r.price), "charged once"


async def test_a_dead_servers_idle_record_attracts_no_hand_back(pool: Pool) -> None:
    gpu = pool.servers[0]
    gpu.set_faults(render_time=4.0)
    busy = await pool.serve(gpu)
    queues = sorted(busy.polled)
    # Another server's worker recorded "idle" on every queue, then died (no refresh since).
    dead_since = datetime.now(UTC) - IDLE_FRESH - timedelta(seconds=1)
    pool.stores.gpu_idle.record("dead-worker|http://gone:8188", queues, dead_since, now=dead_since)
    wids = [await pool.make(await pool.user()) for _ in range(2)]
    await wait_until(lambda: queue_of(gpu) == (1, 1), timeout=15)
    await asyncio.sleep(2.0)  # several checks: the only "idle" server is dead
    assert queue_of(gpu) == (1, 1)
    results = await asyncio.gather(*(pool.jobs.result(w) for w in wids))
    assert [r.state for r in results] == [JobState.DONE] * 2
    for wid in wids:
        assert max(await run_attempts(pool, wid)) == 1, "never handed back"


async def test_a_worker_records_its_idleness_and_deletes_it_when_it_stops(pool: Pool) -> None:
    gpu = pool.servers[1]
    gpu.set_faults(render_time=3.0)
    workers = await pool.serve(gpu)
    coll = pool.stores.gpu_idle.coll

    def record() -> dict[str, Any] | None:
        return coll.find_one({"_id": workers.identity})

    await wait_until(lambda: (r := record()) is not None and r.get("idle_since") is not None)
    assert sorted(workers.polled) == record()["queues"]  # type: ignore[index]
    wid = await pool.make(await pool.user())
    await wait_until(lambda: queue_of(gpu)[0] == 1, timeout=15)
    await wait_until(lambda: record()["idle_since"] is None, timeout=5)  # type: ignore[index]
    assert (await asyncio.wait_for(pool.jobs.result(wid), 30)).state is JobState.DONE
    await wait_until(lambda: record()["idle_since"] is not None, timeout=5)  # type: ignore[index]
    await asyncio.wait_for(await pool.stop(workers), 30)
    assert record() is None, "a stopped worker attracts no hand-back"


# ---- the record itself (store/gpu_idle.py) ---------------------------------------------------


@pytest.fixture
def idle(mongo_db: Database[Any]) -> GpuIdle:
    repo = GpuIdle(mongo_db)
    repo.ensure_indexes()
    return repo


def test_only_a_fresh_settled_unclaimed_record_of_another_server_on_the_queue_is_claimed(
    idle: GpuIdle,
) -> None:
    now = datetime.now(UTC)
    settled = now - IDLE_SETTLE - timedelta(milliseconds=50)
    idle.record("fast", ["comfy", "comfy:ckpt:a"], settled, now=now)
    assert idle.claim("comfy:ckpt:b", "slow", now=now) is None, "not polling that queue"
    assert idle.claim("comfy", "fast", now=now) is None, "never itself"
    assert idle.claim("comfy", "slow", now=now) == "fast"
    assert idle.claim("comfy", "slow-2", now=now) is None, "one hand-back per idle spell"

    idle.record("busy", ["comfy"], None, now=now)
    idle.record("just-idle", ["comfy"], now, now=now)
    assert idle.claim("comfy", "slow-2", now=now) is None, "busy, or idle too briefly"

    stale = now - IDLE_FRESH - timedelta(seconds=1)
    idle.record("dead", ["comfy"], stale - timedelta(seconds=5), now=stale)
    assert idle.claim("comfy", "slow-2", now=now) is None, "not refreshed: dead"


def test_an_idle_spell_that_ends_and_starts_again_may_be_claimed_again(idle: GpuIdle) -> None:
    t0 = datetime.now(UTC)
    idle.record("fast", ["comfy"], t0, now=t0)
    t1 = t0 + IDLE_SETTLE * 2
    assert idle.claim("comfy", "slow", now=t1) == "fast"
    idle.record("fast", ["comfy"], t0, now=t1)  # refreshed, still the same idle spell
    assert idle.claim("comfy", "slow", now=t1 + IDLE_SETTLE * 2) is None
    idle.record("fast", ["comfy"], None, now=t1)  # it took the prompt
    t2 = t1 + timedelta(seconds=1)
    idle.record("fast", ["comfy"], t2, now=t2)  # done with it: idle again
    assert idle.claim("comfy", "slow", now=t2 + IDLE_SETTLE * 2) == "fast"
    idle.forget("fast")  # its worker stops
    assert idle.claim("comfy", "slow", now=t2 + IDLE_SETTLE * 4) is None


# ---- the slots' side (workers/temporal_workers.py ServerSlots) ---------------------------------


def _reserve_ctx(queue: str) -> Any:
    return SimpleNamespace(task_queue=queue, slot_type="activity", is_sticky=False)


async def test_a_server_leaving_an_idle_spell_feeds_ahead_only_after_a_pause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two prompts handed back at once must reach two idle servers, not one (running one,
    holding the other fed ahead while the second idle server waits)."""
    monkeypatch.setattr(temporal_workers, "FEED_AHEAD_PAUSE", 60.0)
    slots = ServerSlots(2, running=1)  # one slot, feed-ahead 1
    changed = asyncio.Event()
    slots.watch(changed)
    first = await asyncio.wait_for(slots.reserve_slot(_reserve_ctx("q")), 1)
    assert slots.idle_since is not None, "a polling server with nothing to render is idle"
    await asyncio.sleep(IDLE_SETTLE.total_seconds() * 2)  # idle long enough to be claimed
    changed.clear()
    slots.mark_slot_used(cast(Any, SimpleNamespace(permit=first, slot_info=object())))
    await asyncio.wait_for(changed.wait(), 1)
    assert slots.idle_since is None, "its GPU slot is taken"

    fed_ahead = asyncio.create_task(slots.reserve_slot(_reserve_ctx("q")))
    await asyncio.sleep(0.3)
    assert not fed_ahead.done(), "no fed-ahead poll right after the idle spell ended"

    slots.release_slot(cast(Any, SimpleNamespace(permit=first, slot_info=object())))
    assert slots.idle_since is not None, "idle again"
    await asyncio.wait_for(fed_ahead, 1)  # an idle server polls at once


async def test_a_short_gap_within_a_backlog_does_not_pause_the_feed_ahead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A gap shorter than IDLE_SETTLE cannot have been claimed: pausing there would only add
    gaps when renders are short."""
    monkeypatch.setattr(temporal_workers, "FEED_AHEAD_PAUSE", 60.0)
    slots = ServerSlots(2, running=1)
    slots.idle_since = datetime.now(UTC)  # it became idle just now
    first = await asyncio.wait_for(slots.reserve_slot(_reserve_ctx("q")), 1)
    slots.mark_slot_used(cast(Any, SimpleNamespace(permit=first, slot_info=object())))
    await asyncio.wait_for(slots.reserve_slot(_reserve_ctx("q")), 1)  # fed ahead at once


def test_a_record_is_one_command_and_a_worker_gone_by_ttl_comes_back_claimable(
    mongo_server: Any, mongo_db: Database[Any]
) -> None:
    """Each render records its worker busy, then idle: one MongoDB command each (issue 17:
    they were two, 4 of a make job's 32). A record the TTL removed under a live worker comes
    back whole on its next refresh, claimable again."""
    from pymongo import MongoClient, monitoring

    class Count(monitoring.CommandListener):
        n = 0

        def started(self, event: monitoring.CommandStartedEvent) -> None:
            Count.n += event.command_name in {"update", "insert", "findAndModify"}

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            pass

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            pass

    client: MongoClient[dict[str, Any]] = MongoClient(mongo_server.uri, event_listeners=[Count()])
    try:
        idle = GpuIdle(client[mongo_db.name])
        t0 = datetime.now(UTC)
        idle.record("w", ["comfy"], None, now=t0)  # busy
        idle.record("w", ["comfy"], t0, now=t0)  # idle: a new spell
        idle.record("w", ["comfy"], t0, now=t0 + timedelta(seconds=1))  # refreshed
        assert Count.n == 3
        t1 = t0 + IDLE_SETTLE * 3
        assert idle.claim("comfy", "other", now=t1) == "w"
        idle.record("w", ["comfy"], t0, now=t1)  # the same spell keeps its claim
        assert idle.claim("comfy", "other-2", now=t1) is None

        idle.coll.delete_one({"_id": "w"})  # as the TTL index would
        idle.record("w", ["comfy"], t0, now=t1)
        assert idle.claim("comfy", "other-2", now=t1) == "w"
    finally:
        client.close()
