"""The saga's content check (issue 19): a blocked image is withheld and refunded as our
refusal, a blurred one goes out flagged for a spoiler, a silent safety worker fails closed.

Activities are mocked at the boundary; the classifier's answers come through a fake
`check_outputs` (the seam), one action per unit.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from domain.jobs import JobPlan, JobState, PrepareInput
from domain.safety import Action, CheckOutputsInput, CheckOutputsResult, Verdict
from tests.workflows.fakes import FakeActivities
from tests.workflows.test_make_image_saga import request, save_history, start
from workflows.make_image import MakeImageWorkflow


class SafetyFakes(FakeActivities):
    """Prepare plans under `policy`; `check_outputs` answers `actions[unit]` for each unit."""

    def __init__(
        self,
        client: Client,
        *,
        policy: str,
        actions: list[str],
        answer: bool = True,
        hang: bool = False,
        **kw: Any,
    ) -> None:
        super().__init__(client, units=len(actions), **kw)
        self.policy = policy
        self.actions = actions
        self.answer = answer
        self.hang = hang
        self.checked: list[CheckOutputsInput] = []

    @activity.defn(name="prepare_make_image")
    async def prepare_make_image(self, inp: PrepareInput) -> JobPlan:
        plan = await super().prepare_make_image(inp)
        plan.settings.update(
            safety=self.policy, safety_threshold=0.5, safety_queue=self.queue + "-safety"
        )
        return plan

    @activity.defn(name="check_outputs")
    async def check_outputs(self, inp: CheckOutputsInput) -> CheckOutputsResult:
        self.checked.append(inp)
        while self.hang:
            activity.heartbeat()
            await asyncio.sleep(0.1)
        if not self.answer:
            raise RuntimeError("the classifier crashed")
        verdicts = []
        for out in inp.outputs:
            unit = int(out.blob_id.split("-")[1])  # blob-<unit>-<file>
            action = Action(self.actions[unit])
            score = 0.9 if action is not Action.ALLOW else 0.1
            verdicts.append(
                Verdict(blob_id=out.blob_id, score=score, label="BREAST_EXPOSED", action=action)
            )
        return CheckOutputsResult(verdicts=verdicts)


@asynccontextmanager
async def running(env: WorkflowEnvironment, **kw: Any) -> AsyncIterator[tuple[SafetyFakes, str]]:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    fakes = SafetyFakes(env.client, queue=tq, **kw)
    acts = [a for a in fakes.all() if getattr(a, "__name__", "") != "prepare_make_image"]
    workers = [
        Worker(
            env.client,
            task_queue=tq,
            workflows=[MakeImageWorkflow],
            activities=[fakes.prepare_make_image, *acts],
        ),
        Worker(env.client, task_queue=tq + "-safety", activities=[fakes.check_outputs]),
        Worker(env.client, task_queue="deliver-telegram", activities=[fakes.deliver_result]),
    ]
    async with workers[0], workers[1], workers[2]:
        yield fakes, tq


async def test_a_blocked_image_is_withheld_refused_and_refunded_in_full(temporal_ts_env) -> None:
    env = temporal_ts_env
    async with running(env, policy="block", actions=["block"]) as (fakes, tq):
        handle = await start(env, tq, request())
        result = await handle.result()
        await save_history(handle, "make_safety_blocked")
    assert result.state is JobState.REFUSED and result.refused_code == "unsafe_output"
    assert "withheld by this chat's content filter" in (result.reason or "")
    assert "score 0.90" in (result.reason or "") and "refunded" in (result.reason or "")
    assert result.outputs == []
    assert fakes.book.charges() == [35] and fakes.book.refunds() == [35]
    assert fakes.book.balance == 1000 and result.refund == 35
    assert [o.blob_id for o in fakes.checked[0].outputs] == ["blob-0-o0.png"]


async def test_a_blurred_image_is_delivered_with_the_spoiler_flag_and_charged(
    temporal_ts_env,
) -> None:
    env = temporal_ts_env
    async with running(env, policy="blur", actions=["blur"]) as (fakes, tq):
        handle = await start(env, tq, request())
        result = await handle.result()
        await save_history(handle, "make_safety_blurred")
    assert result.state is JobState.DONE
    assert [(o.blob_id, o.spoiler) for o in result.outputs] == [("blob-0-o0.png", True)]
    assert fakes.book.charges() == [35] and fakes.book.refunds() == []


async def test_a_batch_with_one_blocked_image_refunds_that_share_and_says_why(
    temporal_ts_env,
) -> None:
    env = temporal_ts_env
    async with running(env, policy="block", actions=["allow", "block"], price=70) as (fakes, tq):
        handle = await start(env, tq, request())
        result = await handle.result()
        await save_history(handle, "make_safety_partial")
    assert result.state is JobState.DONE
    assert [(o.blob_id, o.spoiler) for o in result.outputs] == [("blob-0-o0.png", False)]
    assert "1 of 2 images were withheld" in (result.reason or "")
    assert fakes.book.charges() == [70] and fakes.book.refunds() == [35]


async def test_a_safety_worker_that_never_answers_withholds_and_refunds(temporal_ts_env) -> None:
    """Fail closed: after SAFETY_DEADLINE (time skipped) nothing unchecked is shown."""
    env = temporal_ts_env
    async with running(env, policy="blur", actions=["allow"], answer=False) as (fakes, tq):
        handle = await start(env, tq, request())
        result = await handle.result()
    assert result.state is JobState.REFUSED and result.outputs == []
    assert "content check did not answer" in (result.reason or "")
    assert fakes.book.balance == 1000


async def test_a_plan_without_a_policy_asks_no_check(temporal_ts_env) -> None:
    env = temporal_ts_env
    async with running(env, policy="off", actions=["block"]) as (fakes, tq):
        result = await (await start(env, tq, request())).result()
    assert result.state is JobState.DONE and fakes.checked == []


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    actions=st.lists(st.sampled_from(["allow", "blur", "block"]), min_size=1, max_size=4),
    per_image=st.integers(min_value=1, max_value=40),
)
async def test_property_the_ledger_of_a_checked_job_nets_to_what_was_shown(
    temporal_ts_env, actions: list[str], per_image: int
) -> None:
    """Charge minus refund is the price of the images shown: zero when every image is
    blocked, the whole price when none is."""
    env = temporal_ts_env
    price = per_image * len(actions)
    async with running(env, policy="block", actions=actions, price=price) as (fakes, tq):
        result = await (await start(env, tq, request())).result()
    shown = sum(1 for a in actions if a != "block")
    net = sum(fakes.book.charges()) - sum(fakes.book.refunds())
    assert net == per_image * shown
    assert len(result.outputs) == shown
    assert fakes.book.balance == 1000 - net
    if shown == 0:
        assert result.state is JobState.REFUSED and net == 0


async def test_an_operator_cancel_during_the_check_refunds_what_was_never_shown(
    temporal_dev_env,
) -> None:
    env = temporal_dev_env
    async with running(env, policy="block", actions=["allow"], hang=True) as (fakes, tq):
        handle = await start(env, tq, request())
        deadline = asyncio.get_running_loop().time() + 10
        while not fakes.checked and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        assert fakes.checked, "the check never started"
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        status = await handle.query(MakeImageWorkflow.status)
        fakes.hang = False
    assert status.state is JobState.CANCELLED and status.outputs == []
    assert fakes.book.refunds() == [35] and fakes.book.balance == 1000
