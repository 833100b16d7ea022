"""LoRA training keeps the paid-job promises on the shared saga: captions what is missing,
trains in chunks that each continue from the previous one's file, charges once, refunds in full
on failure or cancel (interrupting the ComfyUI prompt), and a crash mid-training resumes from
the last finished chunk without a second charge.

Activities are mocked at the boundary; results and retries run on the time-skipping server,
cancels (updates) on the local dev server.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from domain.jobs import (
    ActivityNames,
    CancelRequest,
    CancelResult,
    ComfyRunInput,
    ComfyRunResult,
    ComfyWork,
    JobPlan,
    JobState,
    new_job_id,
)
from domain.training import (
    CaptionsInput,
    CaptionsResult,
    ChunkInput,
    ChunkResult,
    LoraModel,
    RegisterModelInput,
    TrainImage,
    TrainingParams,
    TrainingProgress,
    TrainPrepareInput,
    TrainRequest,
    TrainSpec,
)
from tests.workflows.fakes import FakeActivities, failed_result
from tests.workflows.test_make_image_saga import save_history, wait_state
from workflows.train_lora import TrainLoraWorkflow

USER = "telegram:5472638766"
PRICE = 1000 + 50 * 4 + 20 * 3  # 4 images, 300 steps


class FakeTraining(FakeActivities):
    """`chunk_behaviour[k]`: ok | fail | hang | crash (the first attempt dies, a retry works)."""

    def __init__(self, client: Client, *, chunk_behaviour: dict[int, str] | None = None, **kw: Any):
        kw.setdefault("balance", 5000)
        super().__init__(client, price=PRICE, **kw)
        self.chunk_behaviour = chunk_behaviour or {}
        self.chunk_calls: list[ChunkInput] = []
        self.captions_saved: list[CaptionsInput] = []
        self.registered: list[RegisterModelInput] = []

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.prepare_train_lora,
            self.save_captions,
            self.train_lora_chunk,
            self.register_model,
            *[a for a in super().all() if a != self.prepare_make_image],
        ]

    @activity.defn(name=ActivityNames.PREPARE_TRAIN_LORA)
    async def prepare_train_lora(self, inp: TrainPrepareInput) -> JobPlan:
        images = [
            TrainImage(image_id=f"img{n}", caption="" if n == 3 else f"c{n}") for n in range(4)
        ]
        spec = TrainSpec(
            dataset_id="ds1",
            dataset_name="me",
            dataset_hash="h" * 64,
            owner="u1",
            trigger_word="zxq",
            model_name="me",
            params=inp.request.params,
            resolution=1024,
            checkpoint="sdxl-base-1.0.safetensors",
            images=images,
            chunk_steps=100,
            caption_work=[
                {
                    "image_id": "img3",
                    "work": ComfyWork(graph={"1": {}}, uploads={"1": "img3"}).model_dump(),
                }
            ],
        )
        return JobPlan(
            user_id="u1",
            kind="train",
            price=self.price,
            balance=self.book.balance,
            summary="LoRA me",
            settings={
                "training": spec.model_dump(mode="json"),
                "comfy_queue": self.queue,
                "comfy_io_queue": self.queue,
                "render_timeout": 60,
                "heartbeat_timeout": 10,
                "chunk_timeout": 120,
            },
            refused=self.refuse,
        )

    @activity.defn(name=ActivityNames.RUN_COMFY_PROMPT)
    async def run_comfy_prompt(self, inp: ComfyRunInput) -> ComfyRunResult:
        return ComfyRunResult(prompt_id="cap", server_url="http://comfy", texts={"4": ["a fox"]})

    @activity.defn(name=ActivityNames.SAVE_CAPTIONS)
    async def save_captions(self, inp: CaptionsInput) -> CaptionsResult:
        self.captions_saved.append(inp)
        caps = {f"img{n}": f"c{n}" for n in range(3)}
        caps.update({k: f"zxq, {v}" for k, v in inp.captions.items()})
        return CaptionsResult(captions=caps, written=len(inp.captions))

    @activity.defn(name=ActivityNames.TRAIN_LORA_CHUNK)
    async def train_lora_chunk(self, inp: ChunkInput) -> ChunkResult:
        self.chunk_calls.append(inp)
        how = self.chunk_behaviour.get(inp.chunk, "ok")
        attempt = activity.info().attempt
        handle = self.client.get_workflow_handle(inp.workflow_id)
        await handle.signal(
            "training_progress",
            TrainingProgress(chunk=inp.chunk, step=inp.start_step + 1, total_steps=inp.total_steps),
        )
        if how == "fail":
            raise ApplicationError(
                "TrainLoraNode: CUDA out of memory", type="ComfyExecutionError", non_retryable=True
            )
        if how == "crash" and attempt == 1:
            raise RuntimeError("comfy worker lost")
        if how == "hang":
            try:
                while True:
                    activity.heartbeat()
                    await asyncio.sleep(0.2)
            except asyncio.CancelledError:
                self.interrupted.append(inp.chunk)
                raise
        done = inp.start_step + inp.steps
        return ChunkResult(
            chunk=inp.chunk,
            steps_done=done,
            blob_id=f"lora-{inp.chunk}",
            filename=f"st/x_c{inp.chunk}_{done}_steps_00001_.safetensors",
            sha256=f"{inp.chunk:064d}",
            size=1000,
            gpu_seconds=2.0,
        )

    @activity.defn(name=ActivityNames.REGISTER_MODEL)
    async def register_model(self, inp: RegisterModelInput) -> LoraModel:
        self.registered.append(inp)
        return LoraModel(
            name=inp.spec.model_name,
            owner="u1",
            trigger_word=inp.spec.trigger_word,
            blob_id=inp.final.blob_id,
            filename=inp.final.filename,
            size=inp.final.size,
            sha256=inp.final.sha256,
            workflow_id=inp.workflow_id,
        )


@asynccontextmanager
async def running(env: WorkflowEnvironment, **kw: Any) -> AsyncIterator[tuple[FakeTraining, str]]:
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    fakes = FakeTraining(env.client, queue=tq, **kw)
    async with Worker(
        env.client, task_queue=tq, workflows=[TrainLoraWorkflow], activities=fakes.all()
    ):
        yield fakes, tq


async def start(env: WorkflowEnvironment, tq: str, steps: int = 300):
    req = TrainRequest(user=USER, dataset="me", params=TrainingParams(steps=steps))
    return await env.client.start_workflow(
        TrainLoraWorkflow.run,
        req,
        id=new_job_id("train", USER, f"test-{uuid.uuid4().hex[:8]}"),
        task_queue=tq,
    )


# ---- time-skipping server ------------------------------------------------------------------


async def test_a_trained_lora_is_captioned_trained_in_chunks_and_charged_once(
    temporal_ts_env,
) -> None:
    async with running(temporal_ts_env) as (fakes, tq):
        handle = await start(temporal_ts_env, tq)
        result = await handle.result()
        await save_history(handle, "train_done")
    assert result.state is JobState.DONE, result.reason
    assert fakes.book.charges() == [PRICE] and fakes.book.refunds() == []
    # Only the uncaptioned image was captioned; training saw its caption with the trigger word.
    [saved] = fakes.captions_saved
    assert saved.captions == {"img3": "a fox"}
    assert [c.chunk for c in fakes.chunk_calls] == [0, 1, 2]
    assert [(c.start_step, c.steps) for c in fakes.chunk_calls] == [
        (0, 100),
        (100, 100),
        (200, 100),
    ]
    assert fakes.chunk_calls[0].previous is None
    assert fakes.chunk_calls[2].previous is not None
    assert fakes.chunk_calls[2].previous.blob_id == "lora-1"
    assert fakes.chunk_calls[1].captions["img3"] == "zxq, a fox"
    assert result.model is not None and result.model["name"] == "me"
    assert result.model["trigger_word"] == "zxq" and result.model["chunks"] == 3
    assert [o.blob_id for o in result.outputs] == ["lora-2"]
    assert result.step == 300 and result.percent == 100.0 and result.gpu_seconds == 6.0
    assert fakes.registered[0].final.steps_done == 300


async def test_a_failed_training_is_refunded_in_full(temporal_ts_env) -> None:
    async with running(temporal_ts_env, chunk_behaviour={1: "fail"}) as (fakes, tq):
        handle = await start(temporal_ts_env, tq)
        result = await failed_result(handle)
        await save_history(handle, "train_failed")
    assert result.state is JobState.FAILED
    assert "out of memory" in (result.reason or "")
    assert fakes.book.charges() == [PRICE] and fakes.book.refunds() == [PRICE]
    assert fakes.book.balance == 5000 and result.refund == PRICE
    assert fakes.registered == []


async def test_a_worker_crash_mid_training_resumes_from_the_last_chunk_with_one_charge(
    temporal_ts_env,
) -> None:
    async with running(temporal_ts_env, chunk_behaviour={1: "crash"}) as (fakes, tq):
        handle = await start(temporal_ts_env, tq)
        result = await handle.result()
        await save_history(handle, "train_crash_resumed")
    assert result.state is JobState.DONE, result.reason
    # Chunk 0 ran once; chunk 1 twice (the crash, then the retry from chunk 0's file); then 2.
    assert [c.chunk for c in fakes.chunk_calls] == [0, 1, 1, 2]
    retry = fakes.chunk_calls[2]
    assert retry.previous is not None and retry.previous.blob_id == "lora-0"
    assert retry.start_step == 100
    assert fakes.book.charges() == [PRICE] and fakes.book.refunds() == []


async def test_a_training_with_too_few_points_charges_nothing(temporal_ts_env) -> None:
    async with running(temporal_ts_env, balance=100) as (fakes, tq):
        result = await (await start(temporal_ts_env, tq)).result()
    assert result.state is JobState.REFUSED
    assert f"costs {PRICE} points and the balance is 100" in (result.reason or "")
    assert fakes.chunk_calls == [] and fakes.book.charges() == []


async def test_a_refused_training_charges_nothing(temporal_ts_env) -> None:
    why = "the dataset has 3 images; training needs at least 4"
    async with running(temporal_ts_env, refuse=why) as (fakes, tq):
        handle = await start(temporal_ts_env, tq)
        result = await handle.result()
        await save_history(handle, "train_refused")
    assert result.state is JobState.REFUSED and result.reason == why
    assert fakes.book.calls == [] and fakes.chunk_calls == []


# ---- local dev server: cancels ---------------------------------------------------------------


async def test_a_cancelled_training_interrupts_comfyui_and_is_refunded_once(
    temporal_dev_env,
) -> None:
    env = temporal_dev_env
    async with running(env, chunk_behaviour={1: "hang"}) as (fakes, tq):
        handle = await start(env, tq)
        for _ in range(100):
            status = await handle.query(TrainLoraWorkflow.status)
            if status.stage == "training" and len(fakes.chunk_calls) >= 2:
                break
            await asyncio.sleep(0.1)
        await wait_state(handle, JobState.RUNNING)
        cancel = await handle.execute_update(
            TrainLoraWorkflow.cancel, CancelRequest(), result_type=CancelResult
        )
        result = await handle.result()
        await save_history(handle, "train_cancel")
    assert cancel.state is JobState.CANCELLED and cancel.refund == PRICE
    assert result.state is JobState.CANCELLED and result.refund == PRICE
    assert fakes.interrupted == [1], "the running chunk's ComfyUI prompt must be interrupted"
    assert fakes.book.charges() == [PRICE] and fakes.book.refunds() == [PRICE]
    assert fakes.registered == []


async def test_an_operator_cancel_of_a_training_refunds_once(temporal_dev_env) -> None:
    env = temporal_dev_env
    async with running(env, chunk_behaviour={0: "hang"}) as (fakes, tq):
        handle = await start(env, tq)
        for _ in range(100):
            if fakes.chunk_calls:
                break
            await asyncio.sleep(0.1)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        await save_history(handle, "train_operator_cancel")
        status = await handle.query(TrainLoraWorkflow.status)
    assert status.state is JobState.CANCELLED and status.refund == PRICE
    assert fakes.book.refunds() == [PRICE] and fakes.interrupted == [0]
