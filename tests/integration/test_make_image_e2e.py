"""Make image end to end on the real stack: the promises a user and an operator rely on."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image

from adapters.jobs import JobsClient
from domain.errors import TooManyJobs, UserInputError
from domain.jobs import JobState, MakeImageRequest
from tests.integration.conftest import Stack

pytestmark = pytest.mark.stack


async def new_user(jobs: JobsClient, points: int = 500) -> str:
    identity = f"cli:e2e-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(jobs.stores.users.get_or_create, identity, points)
    return identity


def small(user: str, prompt: str = "a red fox in snow", **overrides: object) -> MakeImageRequest:
    return MakeImageRequest(
        user=user,
        platform="cli",
        prompt=prompt,
        overrides={"width": 256, "height": 256, "steps": 4, **overrides},
    )


async def wait_for(jobs: JobsClient, wid: str, state: JobState, timeout: float = 30) -> None:
    async def poll() -> None:
        while (await jobs.status(wid)).state is not state:
            await asyncio.sleep(0.1)

    await asyncio.wait_for(poll(), timeout)


async def test_the_cli_makes_an_image_end_to_end(dev_stack: Stack, jobs: JobsClient, tmp_path):
    user = await new_user(jobs)
    proc = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "adapters.cli.main",
            "make",
            "a lighthouse at dusk",
            "--user",
            user,
            "--steps",
            "4",
            "--width",
            "320",
            "--height",
            "256",
            "--seed",
            "7",
            "--out",
            str(tmp_path),
        ],
        env=dev_stack.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    saved = sorted(tmp_path.rglob("*.png"))
    assert len(saved) == 1
    with Image.open(saved[0]) as im:
        assert im.size == (320, 256)
    assert "price 15" in proc.stdout and "balance 500 -> 485" in proc.stdout
    assert "make-cli-" in proc.stdout


async def test_a_comfy_worker_killed_mid_render_still_delivers_once_charged_once(
    dev_stack: Stack, jobs: JobsClient
):
    user = await new_user(jobs)
    dev_stack.faults(render_time=4.0)
    started = await jobs.start_make(small(user))
    await wait_for(jobs, started.workflow_id, JobState.RUNNING)
    worker = dev_stack.stack.processes["comfy-worker"]
    worker.kill()
    await asyncio.sleep(0.5)
    worker.start()
    result = await asyncio.wait_for(jobs.result(started.workflow_id), 90)
    assert result.state is JobState.DONE, result.reason
    assert len(result.outputs) == 1
    totals = await asyncio.to_thread(jobs.stores.ledger.job_totals, started.workflow_id)
    assert (totals.charges, totals.refunds) == (1, 0)
    data = await asyncio.to_thread(jobs.image, result.outputs[0])
    assert Image.open(io.BytesIO(data)).size == (256, 256)


async def test_an_execution_error_fails_the_job_with_exactly_one_refund(
    dev_stack: Stack, jobs: JobsClient
):
    user = await new_user(jobs)
    dev_stack.faults(faults={"execution_error": {"next": 1}})
    started = await jobs.start_make(small(user))
    result = await asyncio.wait_for(jobs.result(started.workflow_id), 60)
    assert result.state is JobState.FAILED
    assert result.refund == result.price > 0
    totals = await asyncio.to_thread(jobs.stores.ledger.job_totals, started.workflow_id)
    assert (totals.charges, totals.refunds, totals.refundable) == (1, 1, 0)
    assert await asyncio.to_thread(jobs.stores.ledger.balance, user) == 500
    # The operator's query by search attribute finds it.
    for _ in range(50):
        rows = await jobs.list_jobs(user=user, state="failed")
        if rows:
            break
        await asyncio.sleep(0.2)
    assert [r.workflow_id for r in rows] == [started.workflow_id]


async def test_ten_simultaneous_starts_by_one_user_yield_exactly_three_jobs(
    dev_stack: Stack, jobs: JobsClient
):
    user = await new_user(jobs, points=2000)
    dev_stack.faults(render_time=3.0)
    outcomes = await asyncio.gather(
        *(jobs.start_make(small(user, f"fox {i}")) for i in range(10)), return_exceptions=True
    )
    started = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, TooManyJobs)]
    assert len(started) == 3, outcomes
    assert len(refused) == 7
    assert "3 jobs are already running (limit 3)" in refused[0].message
    cancels = await asyncio.gather(*(jobs.cancel(s.workflow_id) for s in started))
    assert all(c.state is JobState.CANCELLED for c in cancels)


async def test_the_same_request_twice_starts_one_job(dev_stack: Stack, jobs: JobsClient):
    user = await new_user(jobs)
    req = small(user).model_copy(update={"request_id": f"upd-{uuid.uuid4().hex[:6]}"})
    first, second = await asyncio.gather(jobs.start_make(req), jobs.start_make(req))
    assert first.workflow_id == second.workflow_id
    await jobs.result(first.workflow_id)
    third = await jobs.start_make(req)
    assert third.existing and third.workflow_id == first.workflow_id
    totals = await asyncio.to_thread(jobs.stores.ledger.job_totals, first.workflow_id)
    assert totals.charges == 1


async def test_bad_input_is_refused_before_anything_is_written(dev_stack: Stack, jobs: JobsClient):
    user = await new_user(jobs)
    bad = [
        small(user, prompt="   "),
        small(user, prompt="x" * 2001),
        small(user, steps=999),
        small(user).model_copy(update={"template": "no-such-template"}),
        small("cli:nobody-" + uuid.uuid4().hex[:6]),
        small(user).model_copy(update={"source_image_id": "0123456789abcdef01234567"}),
    ]
    for req in bad:
        with pytest.raises(UserInputError):
            await jobs.start_make(req)
    assert await asyncio.to_thread(jobs.stores.ledger.balance, user) == 500
    assert await jobs.list_jobs(user=user) == []


async def test_cancel_interrupts_the_render_and_refunds(dev_stack: Stack, jobs: JobsClient):
    user = await new_user(jobs)
    dev_stack.faults(render_time=5.0)
    started = await jobs.start_make(small(user))
    await wait_for(jobs, started.workflow_id, JobState.RUNNING)
    result = await jobs.cancel(started.workflow_id)
    assert result.state is JobState.CANCELLED and result.refund > 0
    assert await asyncio.to_thread(jobs.stores.ledger.balance, user) == 500


async def test_regen_and_again_repeat_recorded_runs(dev_stack: Stack, jobs: JobsClient):
    user = await new_user(jobs)
    first = await jobs.start_make(small(user, seed=1234))
    done = await jobs.result(first.workflow_id)
    assert done.seeds == [1234]
    regen = await jobs.result((await jobs.start_repeat(user, n=1)).workflow_id)
    assert regen.seeds == [1234] and regen.prompt == done.prompt
    again = await jobs.result((await jobs.start_repeat(user)).workflow_id)
    assert again.state is JobState.DONE and again.prompt == done.prompt


async def test_the_books_balance_after_the_suite(dev_stack: Stack, jobs: JobsClient):
    assert await asyncio.to_thread(jobs.stores.ledger.audit) == []


async def test_slots_left_by_starts_that_never_happened_are_freed(
    dev_stack: Stack, jobs: JobsClient
):
    """A client that died between taking a slot and starting its workflow must not block the
    user for ever: slots of unknown workflows older than the grace are pruned."""
    user = await new_user(jobs)
    found = await asyncio.to_thread(jobs.stores.users.get, user)
    old = datetime.now(UTC) - timedelta(minutes=5)
    await asyncio.to_thread(
        jobs.slots.coll.update_one,
        {"_id": found.id},
        {"$set": {"running": [{"wf": f"make-ghost-{i}", "at": old} for i in range(3)]}},
        True,
    )
    started = await jobs.start_make(small(user))
    assert (await jobs.result(started.workflow_id)).state is JobState.DONE
    assert await asyncio.to_thread(jobs.slots.running, found.id) == []


async def test_the_comfy_worker_records_its_servers_checkpoints(
    dev_stack: Stack, jobs: JobsClient
) -> None:
    """The inventory the planner checks a `checkpoint` setting against (store/inventory.py)."""

    async def recorded() -> set[str]:
        while not (found := await asyncio.to_thread(jobs.stores.inventory.checkpoints)):
            await asyncio.sleep(0.2)
        return found

    found = await asyncio.wait_for(recorded(), 30)
    assert {"sdxl-base-1.0.safetensors", "flux1-dev.safetensors"} <= found
