"""`dataset caption` is a paid GPU job: quoted per image, charged once by
`<workflow id>:<run id>:charge`, refunded by `<workflow id>:<run id>:refund` for the images that
got no caption, and captioning the same dataset again (after clearing its captions) is charged
again. An operator's reset after a refund pays again, as the job saga's does. Training's own
captioning stage stays free (it is part of the training price; see test_train_lora.py).

Activities are mocked at the boundary, on the time-skipping server (resets on the dev server).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from domain.jobs import ActivityNames, ComfyRunInput, ComfyRunResult, ComfyWork
from domain.training import (
    CaptionOutcome,
    CaptionPlan,
    CaptionPrepareInput,
    CaptionRequest,
    CaptionsInput,
    CaptionsResult,
)
from tests.workflows.fakes import FakeActivities
from tests.workflows.test_make_image_saga import save_history
from workflows.train_lora import CaptionDatasetWorkflow

PER_IMAGE = 2


class FakeCaptioning(FakeActivities):
    """A dataset of `images` uncaptioned images; the images numbered in `fail` get no text."""

    def __init__(
        self, client: Client, *, images: int = 4, fail: set[int] | None = None, **kw: Any
    ) -> None:
        super().__init__(client, **kw)
        self.images = images
        self.fail = fail or set()
        self.prompts: list[str] = []
        self.saved: list[CaptionsInput] = []
        self.gate: asyncio.Event | None = None  # when set: prompts wait for it
        self.runs: dict[str, str] = {}  # workflow id -> run id of its (latest) prepare

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.prepare_captions,
            self.caption_prompt,
            self.save_captions,
            self.charge_points,
            self.refund_points,
        ]

    @activity.defn(name=ActivityNames.PREPARE_CAPTIONS)
    async def prepare_captions(self, inp: CaptionPrepareInput) -> CaptionPlan:
        self.runs[inp.workflow_id] = activity.info().workflow_run_id or ""
        work = {
            f"img{n}": ComfyWork(graph={"1": {}}, uploads={"1": f"img{n}"}).model_dump()
            for n in range(self.images)
        }
        return CaptionPlan(
            owner="u1",
            dataset_id="ds1",
            dataset_name="me",
            trigger_word="zxq",
            work=work,
            comfy_queue=self.queue,
            render_timeout=60,
            heartbeat_timeout=10,
            per_image=PER_IMAGE,
            price=PER_IMAGE * len(work),
            balance=self.book.balance,
        )

    @activity.defn(name=ActivityNames.RUN_COMFY_PROMPT)
    async def caption_prompt(self, inp: ComfyRunInput) -> ComfyRunResult:
        image = next(iter(inp.work.uploads.values()))
        self.prompts.append(image)
        while self.gate is not None and not self.gate.is_set():
            activity.heartbeat()
            await asyncio.sleep(0.1)
        if int(image.removeprefix("img")) in self.fail:
            raise ApplicationError("the captioning model crashed", non_retryable=True)
        return ComfyRunResult(prompt_id=image, server_url="http://comfy", texts={"4": ["a fox"]})

    @activity.defn(name=ActivityNames.SAVE_CAPTIONS)
    async def save_captions(self, inp: CaptionsInput) -> CaptionsResult:
        self.saved.append(inp)
        return CaptionsResult(captions=dict(inp.captions), written=len(inp.captions))


@asynccontextmanager
async def captioning(
    env: WorkflowEnvironment, **kw: Any
) -> AsyncIterator[tuple[FakeCaptioning, str]]:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    fakes = FakeCaptioning(env.client, queue=tq, **kw)
    async with Worker(
        env.client, task_queue=tq, workflows=[CaptionDatasetWorkflow], activities=fakes.all()
    ):
        yield fakes, tq


async def caption(env: WorkflowEnvironment, tq: str, name: str | None = None) -> CaptionOutcome:
    handle = await env.client.start_workflow(
        CaptionDatasetWorkflow.run,
        CaptionRequest(user="telegram:5472638766", dataset="me"),
        id=f"dataset-caption-ds1-{uuid.uuid4().hex[:8]}",
        task_queue=tq,
    )
    outcome = await handle.result()
    if name:
        await save_history(handle, name)
    return outcome


async def test_captioning_is_charged_per_image_once(temporal_ts_env) -> None:
    async with captioning(temporal_ts_env) as (fakes, tq):
        outcome = await caption(temporal_ts_env, tq, "caption_done")
    assert outcome.captioned == 4 and not outcome.failed and outcome.refused is None
    assert fakes.book.charges() == [4 * PER_IMAGE] and fakes.book.refunds() == []
    run_id = fakes.runs[outcome.workflow_id]
    assert [k for k in fakes.book.entries if k.endswith(":charge")] == [
        f"{outcome.workflow_id}:{run_id}:charge"
    ]
    assert (outcome.price, outcome.refunded) == (4 * PER_IMAGE, 0)
    assert outcome.balance == 1000 - 4 * PER_IMAGE


async def test_images_that_got_no_caption_are_refunded(temporal_ts_env) -> None:
    async with captioning(temporal_ts_env, fail={1, 3}) as (fakes, tq):
        outcome = await caption(temporal_ts_env, tq, "caption_partly_failed")
    assert outcome.captioned == 2 and sorted(outcome.failed) == ["img1", "img3"]
    assert fakes.book.charges() == [4 * PER_IMAGE]
    assert fakes.book.refunds() == [2 * PER_IMAGE] and outcome.refunded == 2 * PER_IMAGE
    run_id = fakes.runs[outcome.workflow_id]
    assert f"{outcome.workflow_id}:{run_id}:refund" in fakes.book.entries
    assert fakes.book.balance == 1000 - 2 * PER_IMAGE


async def test_too_few_points_caption_nothing(temporal_ts_env) -> None:
    async with captioning(temporal_ts_env, balance=5) as (fakes, tq):
        outcome = await caption(temporal_ts_env, tq, "caption_refused")
    assert outcome.refused and "costs 8 points and the balance is 5" in outcome.refused
    assert fakes.prompts == [] and fakes.saved == []
    assert fakes.book.balance == 5 and fakes.book.charges() == []


async def test_captioning_again_is_charged_again(temporal_ts_env) -> None:
    async with captioning(temporal_ts_env) as (fakes, tq):
        await caption(temporal_ts_env, tq)
        await caption(temporal_ts_env, tq)  # the captions were cleared in between
    assert fakes.book.charges() == [4 * PER_IMAGE, 4 * PER_IMAGE]
    assert len(fakes.prompts) == 8


async def test_nothing_to_caption_charges_nothing(temporal_ts_env) -> None:
    async with captioning(temporal_ts_env, images=0) as (fakes, tq):
        outcome = await caption(temporal_ts_env, tq)
    assert outcome.captioned == 0 and fakes.book.charges() == [] and fakes.prompts == []


@pytest.mark.parametrize("to", ["first", "last"], ids=["before the charge", "after the charge"])
async def test_a_reset_after_an_operator_refund_pays_again(temporal_dev_env, to: str) -> None:
    """A caption run terminated on a stuck GPU, refunded by the operator (`jobs refund`, keyed
    by the run), then reset: the new run captions, so it pays again, whether the reset point is
    before its charge (charged under its own run's key) or after it (the charge came from
    history: topped up under its own run's key before the captions are saved). With keys per
    workflow id the reset run found `<id>:charge` booked and captioned for free."""
    env = temporal_dev_env
    async with captioning(env) as (fakes, tq):
        fakes.gate = asyncio.Event()
        wid = f"dataset-caption-ds1-{uuid.uuid4().hex[:8]}"
        handle = await env.client.start_workflow(
            CaptionDatasetWorkflow.run,
            CaptionRequest(user="telegram:5472638766", dataset="me"),
            id=wid,
            task_queue=tq,
        )
        for _ in range(200):
            if fakes.prompts:
                break
            await asyncio.sleep(0.05)
        price = 4 * PER_IMAGE
        assert fakes.book.charges() == [price]
        first_run = (await handle.describe()).run_id
        await handle.terminate("operator: captioning GPU wedged")
        # `stationthis jobs refund`: the whole charge back, under the terminated run's key.
        key = f"{wid}:{first_run}:refund"
        fakes.book.balance += price
        fakes.book.entries[key] = ("refund", price)
        fakes.book.job_of[key] = wid
        fakes.gate.set()
        completed = [
            e.event_id
            async for e in handle.fetch_history_events()
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
        ]
        reset = await env.client.workflow_service.reset_workflow_execution(
            ResetWorkflowExecutionRequest(
                namespace=env.client.namespace,
                workflow_execution=WorkflowExecution(workflow_id=wid, run_id=first_run),
                reason="operator re-run after a refund",
                workflow_task_finish_event_id=completed[0] if to == "first" else completed[-1],
                request_id=uuid.uuid4().hex,
            )
        )
        outcome = await asyncio.wait_for(
            env.client.get_workflow_handle(
                wid, run_id=reset.run_id, result_type=CaptionOutcome
            ).result(),
            30,
        )
    assert outcome.captioned == 4 and outcome.refused is None
    book = fakes.book
    assert book.total(wid, "charge") - book.total(wid, "refund") == price, book.entries
    assert f"{wid}:{reset.run_id}:charge" in book.entries
    assert book.balance == 1000 - price
