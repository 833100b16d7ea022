"""The collection cook's promises, with activities mocked at the boundary.

Each piece is a real child MakeImageWorkflow running the real saga over the fake activities of
fakes.py, so charges and refunds are the saga's own. Timers (the balance poll) run on the
time-skipping server; pause, cancel and a worker restart run on the local dev server.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from domain.collections import (
    BalanceInput,
    BalanceResult,
    CookControl,
    CookInput,
    CookNames,
    CookProgress,
    CookState,
    PlanPieceInput,
    PlanPieceResult,
    RecordPieceInput,
    RecordPieceResult,
)
from domain.jobs import (
    ActivityNames,
    ComfyRunInput,
    ComfyRunResult,
    JobPlan,
    OutputRef,
    PrepareInput,
)
from tests.workflows.fakes import FakeActivities
from tests.workflows.test_make_image_saga import save_history
from workflows.cook_collection import CookCollectionWorkflow
from workflows.make_image import MakeImageWorkflow

PRICE = 35


class CookFakes(FakeActivities):
    """The make saga's fakes plus the cook's: plan, record (from the fake ledger), balance."""

    def __init__(self, client: Client, *, fail: set[int] | None = None, **kw: Any) -> None:
        super().__init__(client, price=PRICE, **kw)
        self.fail = fail or set()
        self.gate: asyncio.Event | None = None
        self.plans: list[int] = []
        self.prepared: list[str] = []
        self.recorded: list[RecordPieceInput] = []
        self.balance_checks = 0

    def all(self) -> list[Callable[..., Any]]:
        return [
            *[
                a
                for a in super().all()
                if a not in (self.run_comfy_prompt, self.prepare_make_image)
            ],
            self.cook_run_comfy_prompt,
            self.cook_prepare,
            self.plan_collection_piece,
            self.record_collection_piece,
            self.check_cook_balance,
        ]

    @activity.defn(name=ActivityNames.PREPARE_MAKE_IMAGE)
    async def cook_prepare(self, inp: PrepareInput) -> JobPlan:
        self.prepared.append(inp.workflow_id)
        return await self.prepare_make_image(inp)

    @activity.defn(name=ActivityNames.RUN_COMFY_PROMPT)
    async def cook_run_comfy_prompt(self, inp: ComfyRunInput) -> ComfyRunResult:
        number = int(inp.workflow_id.split("-piece-")[1].split("-")[0])
        if number in self.fail:
            raise ApplicationError("ComfyUI rejected the graph", non_retryable=True)
        while self.gate is not None and not self.gate.is_set():
            activity.heartbeat()
            await asyncio.sleep(0.1)
        return ComfyRunResult(
            prompt_id=f"p{number}",
            server_url="http://comfy",
            files=[OutputRef(server_url="http://comfy", node_id="9", filename=f"{number}.png")],
        )

    @activity.defn(name=CookNames.PLAN_PIECE)
    async def plan_collection_piece(self, inp: PlanPieceInput) -> PlanPieceResult:
        self.plans.append(inp.number)
        return PlanPieceResult(
            number=inp.number,
            prompt=f"a fox wearing hat {inp.number}",
            seed=1000 + inp.number,
            traits={"Hat": str(inp.number)},
        )

    @activity.defn(name=CookNames.RECORD_PIECE)
    async def record_collection_piece(self, inp: RecordPieceInput) -> RecordPieceResult:
        self.recorded.append(inp)
        charged = self.book.total(inp.child_id, "charge")
        refunded = self.book.total(inp.child_id, "refund")
        return RecordPieceResult(charged=charged, refunded=refunded)

    @activity.defn(name=CookNames.CHECK_BALANCE)
    async def check_cook_balance(self, inp: BalanceInput) -> BalanceResult:
        self.balance_checks += 1
        return BalanceResult(balance=self.book.balance, enough=self.book.balance >= inp.need)

    def made(self) -> list[int]:
        return sorted(r.number for r in self.recorded if r.state == "pending_review")


@asynccontextmanager
async def cook_worker(env: WorkflowEnvironment, fakes: CookFakes, tq: str) -> AsyncIterator[Worker]:
    async with Worker(
        env.client,
        task_queue=tq,
        workflows=[CookCollectionWorkflow, MakeImageWorkflow],
        activities=fakes.all(),
        graceful_shutdown_timeout=timedelta(seconds=2),
    ) as worker:
        yield worker


async def start_cook(
    env: WorkflowEnvironment, tq: str, **kw: Any
) -> WorkflowHandle[Any, CookProgress]:
    inp = CookInput(
        collection_id="col1",
        user="telegram:5472638766",
        supply=kw.pop("supply", 5),
        piece_price=PRICE,
        user_id=kw.pop("user_id", "u1"),
        **kw,
    )
    return await env.client.start_workflow(
        CookCollectionWorkflow.run,
        inp,
        id=f"cook-test-{uuid.uuid4().hex[:8]}",
        task_queue=tq,
    )


async def wait_progress(
    handle: WorkflowHandle[Any, CookProgress],
    ok: Callable[[CookProgress], bool],
    timeout: float = 20,
) -> CookProgress:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        p = await handle.query(CookCollectionWorkflow.progress)
        if ok(p):
            return p
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"progress stayed {p}")
        await asyncio.sleep(0.1)


async def current_details(handle: WorkflowHandle[Any, CookProgress]) -> str:
    """What the Temporal UI shows as the cook's "Current Details" (it asks the same query)."""
    meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return meta.current_details


def shown(progress: CookProgress) -> str:
    return f"**{progress.headline()}**"


def new_queue() -> str:
    return f"tq-{uuid.uuid4().hex[:8]}"


# ---- time-skipping server ---------------------------------------------------------------


async def test_a_cook_makes_every_piece_once_and_charges_each(temporal_ts_env) -> None:
    env, tq = temporal_ts_env, new_queue()
    fakes = CookFakes(env.client)
    async with cook_worker(env, fakes, tq):
        handle = await start_cook(env, tq, supply=5, in_flight=2)
        result = await handle.result()
        await save_history(handle, "cook_done")
    assert result.state is CookState.DONE
    assert (result.made, result.failed, result.in_flight) == (5, 0, 0)
    assert result.points_spent == 5 * PRICE and fakes.book.balance == 1000 - 5 * PRICE
    assert fakes.made() == [1, 2, 3, 4, 5]
    assert sorted(fakes.prepared) == sorted(f"{handle.id}-piece-{n}" for n in range(1, 6))
    # The cook held one slot of its user (taken by the jobs client) and gave it back once.
    assert fakes.released.count(handle.id) == 1


async def test_a_failed_piece_is_refunded_and_the_cook_goes_on(temporal_ts_env) -> None:
    env, tq = temporal_ts_env, new_queue()
    fakes = CookFakes(env.client, fail={3})
    async with cook_worker(env, fakes, tq):
        handle = await start_cook(env, tq, supply=4)
        result = await handle.result()
        await save_history(handle, "cook_failed_piece")
    assert (result.made, result.failed) == (3, 1)
    assert result.refunded == PRICE and result.points_spent == 3 * PRICE
    assert fakes.book.balance == 1000 - 3 * PRICE
    assert [r.state for r in fakes.recorded if r.number == 3] == ["failed"]


async def test_a_big_supply_continues_as_new_with_its_cursor(temporal_ts_env) -> None:
    env, tq = temporal_ts_env, new_queue()
    fakes = CookFakes(env.client)
    async with cook_worker(env, fakes, tq):
        handle = await start_cook(env, tq, supply=7, in_flight=2, continue_after=3)
        result = await handle.result()
        await save_history(handle, "cook_continued")
    assert result.state is CookState.DONE
    assert result.runs == 2, "7 pieces at 3 per run: two continue-as-new"
    assert result.made == 7 and result.points_spent == 7 * PRICE
    assert sorted(fakes.plans) == list(range(1, 8)), "each piece planned exactly once"
    assert fakes.made() == list(range(1, 8))
    assert len(fakes.book.charges()) == 7
    assert fakes.released.count(handle.id) == 1, "the slot is kept across continue-as-new"


async def test_running_out_of_points_pauses_and_a_top_up_resumes(temporal_ts_env) -> None:
    env, tq = temporal_ts_env, new_queue()
    fakes = CookFakes(env.client, balance=2 * PRICE + 10)
    async with cook_worker(env, fakes, tq):
        handle = await start_cook(env, tq, supply=4, in_flight=1, balance_poll_seconds=30)
        waiting = await wait_progress(handle, lambda p: p.state is CookState.WAITING_FOR_POINTS)
        assert waiting.made == 2 and waiting.failed == 0
        assert "costs 35 points and the balance is 10" in (waiting.reason or "")
        assert fakes.book.charges() == [PRICE, PRICE], "the refused piece charged nothing"
        fakes.book.balance += 500  # the owner is topped up
        result = await handle.result()  # time skips to the next balance check
        await save_history(handle, "cook_points")
    assert result.state is CookState.DONE
    assert result.made == 4 and result.failed == 0
    assert fakes.balance_checks >= 1
    assert fakes.made() == [1, 2, 3, 4]
    assert any(wid.endswith("-piece-3-retry1") for wid in fakes.prepared)
    assert len(fakes.book.charges()) == 4


# ---- local dev server: updates, cancel, restarts ----------------------------------------


async def test_pause_stops_new_pieces_and_resume_finishes_the_cook(temporal_dev_env) -> None:
    env, tq = temporal_dev_env, new_queue()
    fakes = CookFakes(env.client)
    fakes.gate = asyncio.Event()
    async with cook_worker(env, fakes, tq):
        handle = await start_cook(env, tq, supply=4, in_flight=1)
        await wait_progress(handle, lambda p: p.in_flight == 1)
        paused = await handle.execute_update(
            "pause", CookControl(reason="lunch"), result_type=CookProgress
        )
        assert paused.state is CookState.PAUSED
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update("pause", CookControl(), result_type=CookProgress)
        with pytest.raises(WorkflowUpdateFailedError):  # resume twice: refused the second time
            await handle.execute_update("resume", CookControl(), result_type=CookProgress)
            await handle.execute_update("resume", CookControl(), result_type=CookProgress)
        await handle.execute_update("pause", CookControl(), result_type=CookProgress)
        fakes.gate.set()
        settled = await wait_progress(handle, lambda p: p.in_flight == 0)
        await asyncio.sleep(0.5)
        still = await handle.query(CookCollectionWorkflow.progress)
        assert settled.made == 1 and still.made == 1 and still.state is CookState.PAUSED
        resumed = await handle.execute_update("resume", CookControl(), result_type=CookProgress)
        assert resumed.state is CookState.RUNNING
        result = await handle.result()
        await save_history(handle, "cook_pause")
    assert result.made == 4 and fakes.made() == [1, 2, 3, 4]


async def test_cancel_stops_the_cook_and_refunds_pieces_in_flight(temporal_dev_env) -> None:
    env, tq = temporal_dev_env, new_queue()
    fakes = CookFakes(env.client)
    fakes.gate = asyncio.Event()
    async with cook_worker(env, fakes, tq):
        handle = await start_cook(env, tq, supply=6, in_flight=3)
        await wait_progress(handle, lambda _: len(fakes.book.charges()) == 3)
        result = await handle.execute_update(
            "cancel", CookControl(reason="changed my mind"), result_type=CookProgress
        )
        assert handle.id in fakes.released, "the slot is free once the cancel has answered"
        final = await handle.result()
        await save_history(handle, "cook_cancel")
    assert result.state is CookState.CANCELLED and final.state is CookState.CANCELLED
    assert (final.made, final.cancelled, final.in_flight) == (0, 3, 0)
    assert sorted(fakes.book.refunds()) == [PRICE] * 3
    assert fakes.book.balance == 1000 and final.points_spent == 0
    assert len(fakes.prepared) == 3, "nothing started after the cancel"


async def test_an_operator_cancel_refunds_the_pieces_and_frees_the_cooks_slot(
    temporal_dev_env,
) -> None:
    env, tq = temporal_dev_env, new_queue()
    fakes = CookFakes(env.client)
    fakes.gate = asyncio.Event()
    async with cook_worker(env, fakes, tq):
        handle = await start_cook(env, tq, supply=4, in_flight=2)
        await wait_progress(handle, lambda _: len(fakes.book.charges()) == 2)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        await save_history(handle, "cook_operator_cancel")
        final = await handle.query(CookCollectionWorkflow.progress)
    assert final.state is CookState.CANCELLED
    assert sorted(fakes.book.refunds()) == [PRICE] * 2 and fakes.book.balance == 1000
    assert fakes.released.count(handle.id) == 1


async def test_a_cook_started_without_a_slot_gives_none_back(temporal_ts_env) -> None:
    env, tq = temporal_ts_env, new_queue()
    fakes = CookFakes(env.client)
    async with cook_worker(env, fakes, tq):
        handle = await start_cook(env, tq, supply=1, user_id="")
        await handle.result()
    assert handle.id not in fakes.released


async def test_a_worker_restart_mid_cook_makes_no_piece_twice(temporal_dev_env) -> None:
    env, tq = temporal_dev_env, new_queue()
    fakes = CookFakes(env.client)
    async with cook_worker(env, fakes, tq):
        handle = await start_cook(env, tq, supply=8, in_flight=2)
        await wait_progress(handle, lambda p: p.made >= 2)
    # The worker is gone (its workflow cache with it); a new one replays and carries on.
    async with cook_worker(env, fakes, tq):
        result = await handle.result()
    assert result.made == 8
    assert fakes.made() == list(range(1, 9)), "every piece recorded as made exactly once"
    assert len(fakes.book.charges()) == 8
    assert len(set(fakes.prepared)) == len(fakes.prepared) == 8


async def test_the_cooks_current_details_say_what_its_progress_query_says(
    temporal_dev_env,
) -> None:
    """The issue saw "paused: 12 made, 3 in flight" in the UI while the query said 15 made, 0 in
    flight: details were set only when the cook's state changed, not when a piece did."""
    env, tq = temporal_dev_env, new_queue()
    fakes = CookFakes(env.client)
    fakes.gate = asyncio.Event()
    async with cook_worker(env, fakes, tq):
        handle = await start_cook(env, tq, supply=5, in_flight=3)
        running = await wait_progress(handle, lambda p: p.in_flight == 3)
        assert await current_details(handle) == shown(running)
        await handle.execute_update("pause", CookControl(reason="lunch"), result_type=CookProgress)
        fakes.gate.set()
        paused = await wait_progress(handle, lambda p: p.in_flight == 0 and p.made == 3)
        assert paused.state is CookState.PAUSED
        assert await current_details(handle) == shown(paused)
        await handle.execute_update("resume", CookControl(), result_type=CookProgress)
        final = await handle.result()
        assert (final.state, final.made, final.in_flight) == (CookState.DONE, 5, 0)
        assert await current_details(handle) == shown(final)
