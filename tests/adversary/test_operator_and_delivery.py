"""Issue 13, items 8 and 9, on the real stack: an operator cannot give images away by accident,
and a result nobody delivers holds neither the user's slots nor the CLI.

- Terminate, `stationthis jobs refund`, then `temporal workflow reset` (to before the charge
  and to after it): the reset run pays again, and `points audit` stays clean.
- `points audit` flags a done job with outputs whose charge was refunded in full.
- `stationthis make --user telegram:…` (the README's example) finishes with the result at the
  CLI: no `deliver_result` activity waits for a bot.
- Three Telegram jobs waiting for a bot that does not run leave the user's slots free.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo.database import Database
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest

from adapters.cli.main import main
from adapters.jobs import JobsClient
from domain.errors import UserInputError
from domain.jobs import ActivityNames, JobState, JobStatus, MakeImageRequest, ReplyTarget
from domain.users import JobRecord
from store.db import Stores
from tests.fixtures.devstack import Stack


async def new_user(jobs: JobsClient, platform: str = "cli", points: int = 500) -> str:
    identity = f"{platform}:{uuid.uuid4().int % 10**9}"
    await asyncio.to_thread(jobs.stores.users.get_or_create, identity, points)
    return identity


def small(user: str, **kw: Any) -> MakeImageRequest:
    return MakeImageRequest(
        user=user,
        prompt="a lighthouse at dusk",
        overrides={"width": 256, "height": 256, "steps": 4},
        **kw,
    )


async def wait_for(jobs: JobsClient, wid: str, state: JobState, timeout: float = 30) -> None:
    async def poll() -> None:
        while (await jobs.status(wid)).state is not state:
            await asyncio.sleep(0.1)

    await asyncio.wait_for(poll(), timeout)


async def activity_types(jobs: JobsClient, wid: str) -> list[str]:
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        async for e in jobs.handle(wid).fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]


# ---- item 8: per-run ledger keys ----------------------------------------------------------


@pytest.mark.stack
@pytest.mark.parametrize("to", ["first", "last"], ids=["before the charge", "after the charge"])
async def test_a_reset_after_an_operator_refund_charges_again(
    dev_stack: Stack, jobs: JobsClient, to: str
) -> None:
    user = await new_user(jobs)
    dev_stack.faults(render_time=30.0)
    started = await jobs.start_make(small(user, platform="cli"))
    wid = started.workflow_id
    await wait_for(jobs, wid, JobState.RUNNING)
    handle = jobs.handle(wid)
    first_run = (await handle.describe()).run_id
    await handle.terminate("operator: stuck render")
    refunded = await jobs.refund_terminated(wid)
    price = (await jobs.status(wid)).price or refunded
    assert refunded == price > 0
    assert await jobs.refund_terminated(wid) == 0, "the refund is keyed by the run"
    assert await asyncio.to_thread(jobs.stores.ledger.balance, user) == 500
    dev_stack.reset_faults()

    completed = [
        e.event_id
        async for e in handle.fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    ]
    client = jobs.temporal
    reset = await client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=wid, run_id=first_run),
            reason="operator re-run after a refund",
            workflow_task_finish_event_id=completed[0] if to == "first" else completed[-1],
            request_id=uuid.uuid4().hex,
        )
    )
    result: JobStatus = await asyncio.wait_for(
        client.get_workflow_handle(wid, run_id=reset.run_id, result_type=JobStatus).result(), 90
    )
    assert result.state is JobState.DONE and len(result.outputs) == 1, result.reason
    ledger = jobs.stores.ledger
    totals = await asyncio.to_thread(ledger.job_totals, wid)
    assert totals.refundable == price, f"the re-run must be paid: {totals}"
    assert await asyncio.to_thread(ledger.entry, f"{wid}:{reset.run_id}:charge") is not None
    assert await asyncio.to_thread(ledger.balance, user) == 500 - price
    unpaid = await asyncio.to_thread(ledger.unpaid_jobs, jobs.stores.jobs.done_with_outputs())
    assert wid not in [j.job_id for j in unpaid]


@pytest.mark.stack
async def test_a_job_that_made_its_work_is_not_refunded_by_the_operator_refund(
    dev_stack: Stack, jobs: JobsClient
) -> None:
    user = await new_user(jobs, "telegram")
    reply = ReplyTarget(chat_id=user.split(":")[1])
    started = await jobs.start_make(small(user, platform="telegram", reply=reply))
    await wait_for(jobs, started.workflow_id, JobState.DELIVERING, 60)
    await jobs.handle(started.workflow_id).terminate("operator: cleaning up")
    with pytest.raises(UserInputError, match="keeps its charge"):
        await jobs.refund_terminated(started.workflow_id)


@pytest.fixture
def cli_stores(
    mongo_db: Database[Any], mongo_server: Any, monkeypatch: pytest.MonkeyPatch
) -> Stores:
    """The CLI pointed at a fresh database, as an operator would point it."""
    monkeypatch.setenv("MONGODB_URI", mongo_server.uri)
    monkeypatch.setenv("MONGODB_DATABASE", mongo_db.name)
    stores = Stores(mongo_db)
    stores.ensure_indexes()
    return stores


def test_points_audit_flags_a_done_job_whose_charge_was_refunded_in_full(
    cli_stores: Stores, capsys: pytest.CaptureFixture[str]
) -> None:
    user, _ = cli_stores.users.get_or_create("telegram:5472638766")
    wid = "make-telegram-5472638766-77"
    cli_stores.ledger.charge(user, 35, f"{wid}:r1:charge", job_id=wid, reason="make")
    cli_stores.jobs.record(
        JobRecord(
            workflow_id=wid,
            user_id=user.id,
            identity="telegram:5472638766",
            kind="make",
            outputs=["665f1c2a9b1e8a0012345678"],
            price=35,
            state="done",
            created_at=datetime.now(UTC),
        )
    )
    assert main(["points", "audit"]) == 0
    capsys.readouterr()
    cli_stores.ledger.refund(user, 35, f"{wid}:r1:refund", job_id=wid, reason="operator")
    assert main(["points", "audit"]) == 1, "balances add up, but the image was free"
    captured = capsys.readouterr()
    assert wid in captured.out and "1 done jobs given away" in captured.err


# ---- item 9: delivery holds neither slots nor the CLI ---------------------------------------


@pytest.mark.stack
async def test_cli_make_for_a_telegram_identity_finishes_without_any_delivery(
    dev_stack: Stack, jobs: JobsClient, tmp_path
) -> None:
    user = await new_user(jobs, "telegram")
    proc = await asyncio.to_thread(
        subprocess.run,
        [
            *(sys.executable, "-m", "adapters.cli.main", "make", "a lighthouse at dusk"),
            *("--user", user, "--steps", "4", "--width", "256", "--height", "256"),
            *("--out", str(tmp_path)),
        ],
        env=dev_stack.env(),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(list(tmp_path.rglob("*.png"))) == 1
    found = re.search(r"job (\S+)", proc.stdout)
    assert found is not None
    wid = found.group(1)
    assert ActivityNames.DELIVER_RESULT not in await activity_types(jobs, wid)
    assert await asyncio.to_thread(jobs.stores.ledger.balance, user) < 500, "the identity pays"


@pytest.mark.stack
async def test_telegram_jobs_waiting_for_an_absent_bot_do_not_lock_the_user_out(
    dev_stack: Stack, jobs: JobsClient
) -> None:
    user = await new_user(jobs, "telegram")
    reply = ReplyTarget(chat_id=user.split(":")[1])
    limit = jobs.config.max_running_jobs
    waiting: list[str] = []
    try:
        for _ in range(limit):
            started = await jobs.start_make(small(user, platform="telegram", reply=reply))
            waiting.append(started.workflow_id)
        for wid in waiting:
            await wait_for(jobs, wid, JobState.DELIVERING, 60)
        # No bot polls deliver-telegram: all wait, none holds a slot.
        another = await jobs.start_make(small(user, platform="cli"))
        result = await asyncio.wait_for(jobs.result(another.workflow_id), 60)
        assert result.state is JobState.DONE
        assert await asyncio.to_thread(jobs.slots.running, (await jobs.user(user)).id) == []
        for wid in waiting:  # and each waits an hour at most (Config.delivery_deadline)
            target = await jobs.reply_target(wid)
            assert target is not None
            assert target.deliver_within == jobs.config.delivery_deadline == 3600
    finally:
        for wid in waiting:
            await jobs.handle(wid).terminate("test cleanup")
