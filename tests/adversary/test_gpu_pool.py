"""The GPU pool (issue 16 items 3-5): model-aware routing, a fed server queue, fair share.

Every story runs the real saga (`MakeImageWorkflow` on a workflow worker, the jobs client) on
the session's Temporal dev server (with the project's tuning, task-queue fairness included)
and MongoDB-compatible server, against stand-in ComfyUI subprocesses of its own, each served
by a `ComfyServerWorkers` in this process, on fresh task queues. What is asserted is where each
prompt ran (the stand-ins' own /history), what the ledger holds, and in which order the GPU
took the jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pymongo.database import Database
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.comfy import prompt_id_for
from adapters.jobs import JobsClient
from domain.jobs import JobState, MakeImageRequest
from domain.routing import checkpoint_queue
from domain.rules import DomainRules
from store.db import Stores
from tests.fixtures.comfy import ComfyServer, standins_running
from workers.config import Config, TaskQueues
from workers.temporal_workers import ComfyServerWorkers, workflow_worker

SDXL = "sdxl-base-1.0.safetensors"
FLUX = "flux1-dev.safetensors"


@dataclass
class Pool:
    """One test's pool: its queues, stores, jobs client, and the comfy workers it started."""

    env: WorkflowEnvironment
    config: Config
    stores: Stores
    jobs: JobsClient
    servers: list[ComfyServer]
    running: list[tuple[ComfyServerWorkers, asyncio.Event, asyncio.Task[None]]]

    async def serve(
        self, server: ComfyServer, *, feed_ahead: int | None = None
    ) -> ComfyServerWorkers:
        """Start the comfy workers of `server` (what `stationthis comfy-worker` runs)."""
        # A client of its own, as a separate comfy-worker process has: the SDK refuses two
        # workers of one client on the same task queue.
        client = await Client.connect(
            self.env.client.service_client.config.target_host,
            namespace=self.env.client.namespace,
            data_converter=pydantic_data_converter,
        )
        workers = ComfyServerWorkers(
            client,
            self.config,
            self.stores,
            server.url,
            1,
            feed_ahead=feed_ahead,
            refresh_every=3600,  # only a lost model or a test re-reads the inventory
        )
        stop = asyncio.Event()
        task = asyncio.create_task(workers.run(stop))
        self.running.append((workers, stop, task))
        await wait_until(lambda: bool(workers.polled) or task.done())
        if task.done():
            task.result()  # it failed to start: say why
        return workers

    async def stop(self, workers: ComfyServerWorkers) -> asyncio.Task[None]:
        """What SIGTERM does to a comfy worker: the same event its signal handler sets."""
        for w, stop, task in self.running:
            if w is workers:
                stop.set()
                return task
        raise AssertionError("not running")

    async def user(self, points: int = 5000) -> str:
        identity = f"cli:{uuid.uuid4().int % 10**9}"
        await asyncio.to_thread(self.stores.users.get_or_create, identity, points)
        return identity

    async def make(self, user: str, template: str = "make") -> str:
        request = MakeImageRequest(
            user=user,
            prompt="a lighthouse at dusk",
            template=template,
            overrides={"width": 256, "height": 256, "steps": 4},
        )
        return (await self.jobs.start_make(request)).workflow_id

    def charges(self, wid: str) -> tuple[int, int]:
        totals = self.stores.ledger.job_totals(wid)
        return totals.charges, totals.charged


async def wait_until(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def wait_until_async(read: Any, check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check(await read()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


def prompts_run(server: ComfyServer) -> int:
    """Prompts the server finished (its own /history)."""
    return len(httpx.get(f"{server.url}/history", timeout=10).json())


def queue_of(server: ComfyServer) -> tuple[int, int]:
    q = httpx.get(f"{server.url}/queue", timeout=10).json()
    return len(q["queue_running"]), len(q["queue_pending"])


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[list[ComfyServer]]:
    with standins_running({tmp_path / f"gpu{i}": () for i in range(2)}) as servers:
        yield servers


@contextlib.asynccontextmanager
async def running_pool(
    env: WorkflowEnvironment, mongo_db: Database[Any], servers: list[ComfyServer]
) -> AsyncIterator[Pool]:
    """A workflow worker on queues of its own over `servers`; the test starts comfy workers
    (`Pool.running`), which are stopped at the end."""
    tag = uuid.uuid4().hex[:8]
    config = Config(
        max_running_jobs=50,
        task_queues=TaskQueues(
            workflows=f"wf-{tag}", comfy=f"comfy-{tag}", comfy_io=f"io-{tag}", media=f"m-{tag}"
        ),
        comfy_heartbeat_timeout=10,
    )
    stores = Stores(mongo_db, DomainRules(starter_grant=0, max_running_jobs=50))
    stores.ensure_indexes()
    stores.templates.load_bundled()
    p = Pool(
        env=env,
        config=config,
        stores=stores,
        jobs=JobsClient(env.client, stores, config),
        servers=servers,
        running=[],
    )
    with ThreadPoolExecutor(max_workers=config.workflow_worker_threads) as executor:
        worker = workflow_worker(env.client, config, stores, executor)
        async with worker:
            try:
                yield p
            finally:
                for _w, stop, _task in p.running:
                    stop.set()
                for _w, _stop, task in p.running:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(task, 30)


@pytest_asyncio.fixture
async def pool(
    temporal_dev_env: WorkflowEnvironment,
    mongo_db: Database[Any],
    two_servers: list[ComfyServer],
) -> AsyncIterator[Pool]:
    async with running_pool(temporal_dev_env, mongo_db, two_servers) as p:
        yield p


def remove_checkpoint(server: ComfyServer, name: str) -> None:
    assert server.root is not None
    (server.root / "models" / "checkpoints" / name).unlink()


# ---- routing ----------------------------------------------------------------------------


async def test_a_job_needing_a_checkpoint_never_lands_on_a_server_without_it(pool: Pool) -> None:
    with_flux, without = pool.servers
    remove_checkpoint(without, FLUX)
    a = await pool.serve(with_flux)
    b = await pool.serve(without)
    base = pool.config.task_queues.comfy
    assert checkpoint_queue(base, FLUX) in a.polled
    assert checkpoint_queue(base, FLUX) not in b.polled
    assert checkpoint_queue(base, SDXL) in b.polled

    users = [await pool.user() for _ in range(3)]
    wids = [await pool.make(u, template="make-flux") for u in users for _ in range(2)]
    results = await asyncio.gather(*(pool.jobs.result(w) for w in wids))
    assert [r.state for r in results] == [JobState.DONE] * len(wids)
    assert prompts_run(without) == 0, "a flux prompt ran on the server without flux"
    for wid in wids:  # nor was one sent there and handed back: every prompt ran at its 1st try
        assert max(await run_attempts(pool, wid)) == 1, f"{wid} was retried"
    assert prompts_run(with_flux) == len(wids)
    # sdxl jobs may run on either server: both poll its queue, and both take some.
    sdxl = [await pool.make(users[0]) for _ in range(3)]
    assert all(r.state is JobState.DONE for r in [await pool.jobs.result(w) for w in sdxl])
    assert prompts_run(without) >= 1


async def test_a_server_that_lost_the_model_hands_the_job_back_charged_once(pool: Pool) -> None:
    keeps, loses = pool.servers
    b = await pool.serve(loses)
    flux_queue = checkpoint_queue(pool.config.task_queues.comfy, FLUX)
    assert flux_queue in b.polled
    remove_checkpoint(loses, FLUX)  # after the worker read its inventory: it still polls flux

    user = await pool.user()
    before = pool.stores.ledger.balance(user)
    wid = await pool.make(user, template="make-flux")
    await wait_until(lambda: flux_queue not in b.polled)  # it found out, and stopped polling
    await pool.serve(keeps)
    status = await pool.jobs.result(wid)

    assert status.state is JobState.DONE
    assert prompts_run(loses) == 0 and prompts_run(keeps) == 1
    assert pool.charges(wid) == (1, status.price)
    assert pool.stores.ledger.balance(user) == before - status.price
    attempts = await run_attempts(pool, wid)
    assert attempts and max(attempts) >= 2, "the prompt was retried on the other server"


async def run_attempts(pool: Pool, wid: str) -> list[int]:
    """Attempts of run_comfy_prompt as the history records them (the started events)."""
    found = []
    async for event in pool.env.client.get_workflow_handle(wid).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            found.append(event.activity_task_started_event_attributes.attempt)
    return found


# ---- feed-ahead -------------------------------------------------------------------------


async def test_the_next_prompt_waits_in_the_servers_own_queue_and_can_be_cancelled_there(
    pool: Pool,
) -> None:
    gpu = pool.servers[0]
    gpu.set_faults(render_time=3.0)
    await pool.serve(gpu)  # one slot, feed-ahead 1 (the default)
    first = await pool.make(await pool.user())
    second_user = await pool.user()
    before = pool.stores.ledger.balance(second_user)
    second = await pool.make(second_user)
    third = await pool.make(await pool.user())

    # One prompt running, the next already queued on the server; the third waits in Temporal.
    await wait_until(lambda: queue_of(gpu) == (1, 1), timeout=10)
    await asyncio.sleep(1.0)
    assert queue_of(gpu) == (1, 1), "the worker holds one running and one fed-ahead prompt"
    # The job's status says where it waits: one prompt ahead of it on that server.
    await wait_until_async(lambda: pool.jobs.status(second), lambda s: s.queue_position == 1)

    cancelled = await pool.jobs.cancel(second)
    assert cancelled.state is JobState.CANCELLED
    assert pool.stores.ledger.balance(second_user) == before, "refunded in full"
    # The freed place is fed at once with the third job, while the first still runs.
    await wait_until(lambda: queue_of(gpu) == (1, 1), timeout=5)
    results = [await pool.jobs.result(first), await pool.jobs.result(third)]
    assert [r.state for r in results] == [JobState.DONE, JobState.DONE]
    assert prompts_run(gpu) == 2, "the cancelled prompt never ran"


async def test_a_stopping_worker_hands_its_queued_prompt_back_at_once_charged_once(
    pool: Pool,
) -> None:
    slow, other = pool.servers
    slow.set_faults(render_time=4.0)
    a = await pool.serve(slow)
    users = [await pool.user(), await pool.user()]
    wids = [await pool.make(u) for u in users]
    await wait_until(lambda: queue_of(slow) == (1, 1), timeout=10)

    stopped = await pool.stop(a)  # SIGTERM: stop polling, hand back what has not started
    started = time.monotonic()
    await pool.serve(other)
    results = await asyncio.gather(*(pool.jobs.result(w) for w in wids))
    await asyncio.wait_for(stopped, 30)

    assert [r.state for r in results] == [JobState.DONE, JobState.DONE]
    assert prompts_run(slow) == 1, "the running prompt finished on the stopping server"
    assert prompts_run(other) == 1, "the queued one was handed back and ran elsewhere"
    assert time.monotonic() - started < 15, "handed back at once, not after the 20 s grace"
    for wid, r in zip(wids, results, strict=True):
        assert pool.charges(wid) == (1, r.price)


# ---- fair share -------------------------------------------------------------------------


async def test_a_big_users_backlog_does_not_starve_a_small_users_single_job(pool: Pool) -> None:
    gpu = pool.servers[0]
    gpu.set_faults(render_time=0.3)
    big = await pool.user(points=50_000)
    small = await pool.user()
    backlog = [await pool.make(big) for _ in range(12)]
    await wait_until_queued(pool, backlog)
    single = await pool.make(small)
    await wait_until_queued(pool, [single])

    await pool.serve(gpu)
    await asyncio.gather(*(pool.jobs.result(w) for w in [*backlog, single]))
    order = execution_order(gpu)
    assert len(order) == 13
    mine = prompt_id_for(single, 0, 1, await run_id(pool, single))
    # In arrival order it would run 13th. Fair share dispatches it next after the big user's
    # first: at most the prompts the worker took at once (one running, one fed ahead) go first.
    assert order.index(mine) <= 2, f"the single job ran {order.index(mine) + 1}th"


def execution_order(server: ComfyServer) -> list[str]:
    """Prompt ids in the order the server started them (its own execution_start times)."""
    started: dict[str, int] = {}
    for prompt_id, entry in httpx.get(f"{server.url}/history", timeout=10).json().items():
        for name, data in entry["status"]["messages"]:
            if name == "execution_start":
                started[prompt_id] = int(data["timestamp"])
    return sorted(started, key=started.__getitem__)


async def run_id(pool: Pool, wid: str) -> str:
    desc = await pool.env.client.get_workflow_handle(wid).describe()
    return desc.run_id


async def wait_until_queued(pool: Pool, wids: list[str]) -> None:
    """Every job charged and its prompt scheduled (waiting in the GPU queue)."""

    async def all_queued() -> None:
        while True:
            states = [(await pool.jobs.status(w)).state for w in wids]
            if all(s is JobState.QUEUED for s in states):
                return
            await asyncio.sleep(0.1)

    await asyncio.wait_for(all_queued(), 30)
