"""Media jobs (upscale, background removal, resize, convert) keep the make-image promises on
the same saga: charged once, refunded once on failure or cancel, refused before any charge.

Activities are mocked at the boundary; results and retries run on the time-skipping server,
cancels (updates) on the local dev server.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from domain.jobs import (
    CancelRequest,
    CancelResult,
    JobState,
    MediaKind,
    MediaRequest,
    new_job_id,
)
from tests.workflows.fakes import MEDIA_PRICES, FakeMediaActivities, failed_result
from tests.workflows.test_make_image_saga import save_history, wait_state
from workflows.media_job import MediaJobWorkflow

USER = "telegram:5472638766"
SOURCE = "65f0c0ffee0000000000abcd"

PARAMS: dict[str, dict[str, Any]] = {
    "upscale": {"scale": 4},
    "rmbg": {},
    "resize": {"width": 800, "height": 600, "mode": "fill"},
    "convert": {"format": "webp", "quality": 85},
}


def request(kind: MediaKind, **kw: Any) -> MediaRequest:
    return MediaRequest(user=USER, kind=kind, source_image_id=SOURCE, params=PARAMS[kind], **kw)


def fakes_with(**kw: Any) -> Callable[[Client, str], FakeMediaActivities]:
    return lambda client, tq: FakeMediaActivities(client, queue=tq, **kw)


@asynccontextmanager
async def running(
    env: WorkflowEnvironment, make: Callable[[Client, str], FakeMediaActivities]
) -> AsyncIterator[tuple[FakeMediaActivities, str]]:
    """One worker serves the workflow, ComfyUI and media queues (all named `tq` by prepare)."""
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    fakes = make(env.client, tq)
    worker = Worker(env.client, task_queue=tq, workflows=[MediaJobWorkflow], activities=fakes.all())
    async with worker:
        yield fakes, tq


async def start(env: WorkflowEnvironment, tq: str, req: MediaRequest):
    return await env.client.start_workflow(
        MediaJobWorkflow.run,
        req,
        id=new_job_id(req.kind, req.user, f"test-{uuid.uuid4().hex[:8]}"),
        task_queue=tq,
    )


# ---- time-skipping server ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["upscale", "rmbg", "resize", "convert"])
async def test_each_media_job_is_charged_its_price_once_and_delivers_one_image(
    temporal_ts_env, kind: MediaKind
) -> None:
    env = temporal_ts_env
    async with running(env, fakes_with()) as (fakes, tq):
        handle = await start(env, tq, request(kind))
        result = await handle.result()
        await save_history(handle, f"media_{kind}_done")
    price = MEDIA_PRICES[kind]
    assert result.state is JobState.DONE, result.reason
    assert result.kind == kind and result.user == USER
    assert result.price == price and result.refund == 0
    assert fakes.book.charges() == [price] and fakes.book.refunds() == []
    assert result.balance == 1000 - price
    assert len(result.outputs) == 1
    assert fakes.records[-1].status.state is JobState.DONE
    assert fakes.released == [handle.id]
    if kind in ("upscale", "rmbg"):
        # The source went to ComfyUI; the GPU seconds reach the record (and so the ledger).
        assert fakes.attempts == {0: 1} and fakes.processed == []
        assert result.outputs[0].blob_id == "blob-0-o0.png"
        assert result.gpu_seconds == 1.5
        assert fakes.records[-1].status.gpu_seconds == 1.5
    else:
        # One Pillow operation on the media queue with the validated parameters.
        [work] = [p.work for p in fakes.processed]
        assert (work.op, work.source_id, work.params) == (kind, SOURCE, PARAMS[kind])
        assert result.gpu_seconds == 0.0
    if kind == "convert":
        assert result.outputs[0].content_type == "image/webp"


@pytest.mark.parametrize("kind", ["resize", "convert"])
async def test_an_image_the_media_worker_cannot_read_fails_with_a_full_refund(
    temporal_ts_env, kind: MediaKind
) -> None:
    env = temporal_ts_env
    async with running(env, fakes_with(behaviour=["bad_image"])) as (fakes, tq):
        handle = await start(env, tq, request(kind))
        result = await failed_result(handle)
        if kind == "resize":
            await save_history(handle, "media_bad_image")
    assert result.state is JobState.FAILED
    assert result.reason == "the image is truncated: 1200 of 5000 bytes"
    assert fakes.attempts == {0: 1}, "a bad image is not retried"
    assert fakes.book.charges() == [1] and fakes.book.refunds() == [1]
    assert result.refund == 1 and fakes.book.balance == 1000
    assert result.outputs == []


async def test_a_background_removal_comfyui_rejects_is_refunded_in_full(temporal_ts_env) -> None:
    env = temporal_ts_env
    async with running(env, fakes_with(behaviour=["invalid"])) as (fakes, tq):
        handle = await start(env, tq, request("rmbg"))
        result = await failed_result(handle)
        await save_history(handle, "media_comfy_invalid")
    assert result.state is JobState.FAILED and "smaller than min" in (result.reason or "")
    assert fakes.book.charges() == [10] and fakes.book.refunds() == [10]
    assert fakes.book.balance == 1000


async def test_a_transient_media_worker_error_is_retried_and_charged_once(
    temporal_ts_env,
) -> None:
    env = temporal_ts_env
    async with running(env, fakes_with(behaviour=["transient:2"])) as (fakes, tq):
        result = await (await start(env, tq, request("convert"))).result()
    assert result.state is JobState.DONE
    assert fakes.attempts == {0: 3}
    assert fakes.book.charges() == [1] and fakes.book.refunds() == []


async def test_an_upscale_over_the_size_cap_is_refused_before_any_charge(
    temporal_ts_env,
) -> None:
    env = temporal_ts_env
    why = "upscaling 2048x2048 by 4x would give 8192x8192, above the 4096 px cap per side"
    async with running(env, fakes_with(refuse=why)) as (fakes, tq):
        handle = await start(env, tq, request("upscale"))
        result = await handle.result()
        await save_history(handle, "media_refused")
    assert result.state is JobState.REFUSED and result.reason == why
    assert fakes.book.calls == [] and fakes.attempts == {}
    assert fakes.records[-1].status.state is JobState.REFUSED


async def test_too_few_points_for_an_upscale_charges_nothing(temporal_ts_env) -> None:
    env = temporal_ts_env
    async with running(env, fakes_with(balance=5)) as (fakes, tq):
        result = await (await start(env, tq, request("upscale"))).result()
    assert result.state is JobState.REFUSED
    assert "costs 10 points and the balance is 5" in (result.reason or "")
    assert fakes.book.charges() == [] and fakes.attempts == {}


# ---- local dev server: cancels ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["upscale", "resize"])
async def test_a_cancelled_media_job_is_interrupted_and_refunded_once(
    temporal_dev_env, kind: MediaKind
) -> None:
    env = temporal_dev_env
    async with running(env, fakes_with(behaviour=["hang"])) as (fakes, tq):
        handle = await start(env, tq, request(kind))
        await wait_state(handle, JobState.RUNNING)
        cancel = await handle.execute_update(
            MediaJobWorkflow.cancel, CancelRequest(), result_type=CancelResult
        )
        result = await handle.result()
        await save_history(handle, f"media_cancel_{kind}")
    price = MEDIA_PRICES[kind]
    assert cancel.state is JobState.CANCELLED and cancel.refund == price
    assert result.state is JobState.CANCELLED and result.refund == price
    assert fakes.book.charges() == [price] and fakes.book.refunds() == [price]
    assert fakes.book.balance == 1000
    if kind == "upscale":
        assert fakes.interrupted == [0], "the ComfyUI prompt must be interrupted"


async def test_an_operator_cancel_of_a_media_job_refunds_once(temporal_dev_env) -> None:
    env = temporal_dev_env
    async with running(env, fakes_with(behaviour=["hang"])) as (fakes, tq):
        handle = await start(env, tq, request("rmbg"))
        await wait_state(handle, JobState.RUNNING)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        await save_history(handle, "media_operator_cancel")
        status = await handle.query(MediaJobWorkflow.status)
    assert status.state is JobState.CANCELLED and status.refund == 10
    assert fakes.book.refunds() == [10] and fakes.book.balance == 1000
    assert fakes.released == [handle.id]
