"""Activities mocked at the activity boundary: same names and types as the real ones."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.exceptions import ApplicationError

from domain.jobs import (
    ActivityNames,
    ChargeInput,
    ChargeResult,
    ComfyRunInput,
    ComfyRunResult,
    ComfyWork,
    DeliverInput,
    JobPlan,
    JobRecordInput,
    JobState,
    JobStatus,
    MediaPrepareInput,
    MediaWork,
    OutputRef,
    PrepareInput,
    ProcessImageInput,
    Progress,
    RefundInput,
    RefundResult,
    SlotInput,
    StoredOutput,
    StoreOutputsInput,
)
from domain.queues import JobRoute
from workflows.job_saga import JOB_FAILED_ERROR, status_from_failure


@dataclass
class FakeBook:
    """A ledger with the real one's rules: idempotent by key, never below zero."""

    balance: int = 1000
    entries: dict[str, tuple[str, int]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    job_of: dict[str, str] = field(default_factory=dict)  # key -> job id

    def total(self, job_id: str, kind: str) -> int:
        """Points of one kind (charge, refund) booked for a job, over all its runs' keys."""
        return sum(
            a for k, (kd, a) in self.entries.items() if kd == kind and self.job_of[k] == job_id
        )

    def charges(self) -> list[int]:
        return [a for k, (kind, a) in self.entries.items() if kind == "charge"]

    def refunds(self) -> list[int]:
        return [a for k, (kind, a) in self.entries.items() if kind == "refund"]


class FakeActivities:
    """`behaviour[i]` drives unit i of the batch: ok, invalid, transient:N, hang, queued-hang
    (both signal their progress, as activities of earlier releases did), quiet-hang (heartbeats
    only, as today's)."""

    def __init__(
        self,
        client: Client,
        *,
        balance: int = 1000,
        units: int = 1,
        price: int = 35,
        behaviour: list[str] | None = None,
        render_timeout: float = 60,
        queue: str = "",
        refuse: str | None = None,
        deliver_gate: asyncio.Event | None = None,
        deliver_error: str | None = None,
    ) -> None:
        self.client = client
        self.book = FakeBook(balance=balance)
        self.units = units
        self.price = price
        self.behaviour = behaviour or ["ok"] * units
        self.render_timeout = render_timeout
        self.queue = queue
        self.refuse = refuse
        self.deliver_gate = deliver_gate
        self.deliver_error = deliver_error  # an ApplicationError type delivery fails with
        self.events: list[str] = []  # "release:<id>", "deliver:<id>" in the order they ran
        self.attempts: dict[int, int] = {}
        self.interrupted: list[int] = []
        self.records: list[JobRecordInput] = []
        self.delivered: list[DeliverInput] = []
        self.released: list[str] = []
        self.charge_inputs: list[ChargeInput] = []  # what each charge_points call was asked
        # False: a comfy worker of an earlier release, which ignores `ComfyRunInput.store_for`
        self.store_in_render = True
        self.stored_by_activity: list[int] = []  # units stored by `store_comfy_outputs`

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.prepare_make_image,
            self.charge_points,
            self.refund_points,
            self.run_comfy_prompt,
            self.store_comfy_outputs,
            self.record_job,
            self.release_job_slot,
            self.deliver_result,
        ]

    @activity.defn(name=ActivityNames.PREPARE_MAKE_IMAGE)
    async def prepare_make_image(self, inp: PrepareInput) -> JobPlan:
        seeds = [42 + i for i in range(self.units)]
        return JobPlan(
            user_id="u1",
            kind="make",
            price=self.price,
            units=self.units,
            balance=self.book.balance,
            summary=inp.request.prompt,
            prompt=inp.request.prompt,
            template="make",
            seeds=seeds,
            # The typed route (domain/queues.py); the media fake below keeps the untyped
            # settings keys of older plans, so both ways a plan routes its job stay covered.
            route=JobRoute(
                comfy_queue=self.queue,
                comfy_io_queue=self.queue,
                deliver_queue=f"deliver-{inp.request.platform}",
                render_timeout=self.render_timeout,
                fairness_key="u1",  # the GPU queue's fair share (domain/routing.py)
            ),
            comfy=[
                ComfyWork(graph={"1": {"class_type": "X", "inputs": {}}}, seed=s) for s in seeds
            ],
            refused=self.refuse,
            refused_code="bad_input" if self.refuse else None,
        )

    @activity.defn(name=ActivityNames.CHARGE_POINTS)
    async def charge_points(self, inp: ChargeInput) -> ChargeResult:
        self.book.calls.append(inp.key)
        self.charge_inputs.append(inp)
        if inp.key in self.book.entries:
            charged = self.book.entries[inp.key][1]
            return ChargeResult(ok=True, balance=self.book.balance, charged=charged)
        amount = inp.amount
        if getattr(inp, "top_up", False):  # (absent before per-run keys)
            book = self.book
            amount -= book.total(inp.job_id, "charge") - book.total(inp.job_id, "refund")
            if amount <= 0:
                return ChargeResult(ok=True, balance=self.book.balance)
        if amount > self.book.balance:
            return ChargeResult(
                ok=False,
                balance=self.book.balance,
                reason=f"this job costs {amount} points and the balance is {self.book.balance}",
            )
        self.book.balance -= amount
        self.book.entries[inp.key] = ("charge", amount)
        self.book.job_of[inp.key] = inp.job_id
        return ChargeResult(ok=True, balance=self.book.balance, charged=amount)

    @activity.defn(name=ActivityNames.REFUND_POINTS)
    async def refund_points(self, inp: RefundInput) -> RefundResult:
        self.book.calls.append(inp.key)
        if inp.key not in self.book.entries:
            book = self.book
            amount = min(
                inp.amount, book.total(inp.job_id, "charge") - book.total(inp.job_id, "refund")
            )
            if amount <= 0:
                return RefundResult(refunded=0, balance=book.balance)
            book.balance += amount
            book.entries[inp.key] = ("refund", amount)
            book.job_of[inp.key] = inp.job_id
        return RefundResult(refunded=self.book.entries[inp.key][1], balance=self.book.balance)

    @activity.defn(name=ActivityNames.RUN_COMFY_PROMPT)
    async def run_comfy_prompt(self, inp: ComfyRunInput) -> ComfyRunResult:
        i = inp.index
        self.attempts[i] = self.attempts.get(i, 0) + 1
        how = self.behaviour[i]
        handle = self.client.get_workflow_handle(inp.workflow_id)
        if how == "invalid":
            raise ApplicationError(
                "node 3 (KSampler): steps: Value 0 smaller than min of 1",
                type="ComfyValidationError",
                non_retryable=True,
            )
        if how.startswith("transient:") and self.attempts[i] <= int(how.split(":")[1]):
            raise RuntimeError("ComfyUI answered 500")
        if how == "quiet-hang":  # today's activities: progress in heartbeats, no signal
            try:
                while True:
                    activity.heartbeat({"index": i, "stage": "running", "percent": 40.0})
                    await asyncio.sleep(0.2)
            except asyncio.CancelledError:
                self.interrupted.append(i)
                raise
        if how in ("hang", "queued-hang"):
            state = JobState.RUNNING if how == "hang" else JobState.QUEUED
            await handle.signal(
                "report_progress",
                Progress(
                    index=i,
                    state=state,
                    queue_position=2 if how == "queued-hang" else None,
                    percent=40.0 if how == "hang" else 0.0,
                ),
            )
            try:
                while True:
                    activity.heartbeat()
                    await asyncio.sleep(0.2)
            except asyncio.CancelledError:
                self.interrupted.append(i)
                raise
        run = ComfyRunResult(
            prompt_id=f"p{i}",
            server_url="http://comfy",
            files=[OutputRef(server_url="http://comfy", node_id="9", filename=f"o{i}.png")],
            gpu_seconds=1.5,
        )
        if inp.store_for is not None and self.store_in_render:
            run.stored = await self.store_comfy_outputs(
                StoreOutputsInput(
                    workflow_id=inp.workflow_id,
                    index=i,
                    user_id=inp.store_for,
                    files=run.files,
                    seed=inp.work.seed,
                )
            )
        return run

    @activity.defn(name=ActivityNames.STORE_COMFY_OUTPUTS)
    async def store_comfy_outputs(self, inp: StoreOutputsInput) -> list[StoredOutput]:
        if activity.in_activity() and activity.info().activity_type == "store_comfy_outputs":
            self.stored_by_activity.append(inp.index)
        return [
            StoredOutput(
                blob_id=f"blob-{inp.index}-{f.filename}", seed=inp.seed, width=64, height=64
            )
            for f in inp.files
        ]

    @activity.defn(name=ActivityNames.RECORD_JOB)
    async def record_job(self, inp: JobRecordInput) -> None:
        self.records.append(inp)

    @activity.defn(name=ActivityNames.RELEASE_JOB_SLOT)
    async def release_job_slot(self, inp: SlotInput) -> None:
        self.released.append(inp.workflow_id)
        self.events.append(f"release:{inp.workflow_id}")

    @activity.defn(name=ActivityNames.DELIVER_RESULT)
    async def deliver_result(self, inp: DeliverInput) -> None:
        if self.deliver_gate is not None:
            while not self.deliver_gate.is_set():
                activity.heartbeat()
                await asyncio.sleep(0.1)
        self.events.append(f"deliver:{inp.status.workflow_id}")
        if self.deliver_error:
            raise ApplicationError(
                "the bot may not send photos to this chat",
                type=self.deliver_error,
                non_retryable=True,
            )
        self.delivered.append(inp)


MEDIA_PRICES = {"upscale": 10, "rmbg": 10, "resize": 1, "convert": 1}
MEDIA_CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


class FakeMediaActivities(FakeActivities):
    """The media job's activities: prepare plans ComfyUI work (upscale, rmbg) or one Pillow
    operation on the media queue (resize, convert); `process_image` follows `behaviour[0]`
    like `run_comfy_prompt`, plus `bad_image` (the media worker finds the image unreadable)."""

    def __init__(self, client: Client, **kw: Any) -> None:
        super().__init__(client, **kw)
        self.processed: list[ProcessImageInput] = []
        self.plans: list[JobPlan] = []

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.prepare_media_job,
            self.process_image,
            *[a for a in super().all() if a != self.prepare_make_image],
        ]

    @activity.defn(name=ActivityNames.PREPARE_MEDIA_JOB)
    async def prepare_media_job(self, inp: MediaPrepareInput) -> JobPlan:
        req = inp.request
        plan = JobPlan(
            user_id="u1",
            kind=req.kind,
            price=MEDIA_PRICES[req.kind],
            balance=self.book.balance,
            summary=f"{req.kind} {req.params}",
            settings={
                "render_timeout": self.render_timeout,
                "comfy_queue": self.queue,
                "comfy_io_queue": self.queue,
                "media_queue": self.queue,
                "fairness_key": "u1",
                "params": req.params,
            },
            refused=self.refuse,
            refused_code="bad_input" if self.refuse else None,
        )
        if req.kind in ("upscale", "rmbg"):
            graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}}}
            plan.template = req.kind
            plan.comfy = [ComfyWork(graph=graph, uploads={"1": req.source_image_id})]
        else:
            plan.media = [MediaWork(op=req.kind, source_id=req.source_image_id, params=req.params)]
        self.plans.append(plan)
        return plan

    @activity.defn(name=ActivityNames.PROCESS_IMAGE)
    async def process_image(self, inp: ProcessImageInput) -> StoredOutput:
        i = inp.index
        self.attempts[i] = self.attempts.get(i, 0) + 1
        self.processed.append(inp)
        how = self.behaviour[i]
        if how == "bad_image":
            # Not marked non-retryable here: the saga's media retry policy must stop it.
            raise ApplicationError("the image is truncated: 1200 of 5000 bytes", type="bad_image")
        if how.startswith("transient:") and self.attempts[i] <= int(how.split(":")[1]):
            raise RuntimeError("MongoDB primary stepped down")
        if how == "hang":
            try:
                while True:
                    activity.heartbeat()
                    await asyncio.sleep(0.2)
            except asyncio.CancelledError:
                self.interrupted.append(i)
                raise
        fmt = str(inp.work.params.get("format", "png"))
        return StoredOutput(
            blob_id=f"media-{i}-{inp.work.op}",
            width=int(inp.work.params.get("width", 64)),
            height=int(inp.work.params.get("height", 64)),
            content_type=MEDIA_CONTENT_TYPES.get(fmt, "image/png"),
        )


async def failed_result(handle: WorkflowHandle[Any, Any]) -> JobStatus:
    """The final status of a job that failed: its workflow FAILED (Temporal's own status, so
    the UI's Failures view and `ExecutionStatus="Failed"` find it) with a non-retryable
    `JobFailed` ApplicationError whose detail is the JobStatus; returns that status."""
    with pytest.raises(WorkflowFailureError) as caught:
        await handle.result()
    cause = caught.value.cause
    assert isinstance(cause, ApplicationError), cause
    assert cause.type == JOB_FAILED_ERROR and cause.non_retryable
    assert (await handle.describe()).status == WorkflowExecutionStatus.FAILED
    status = status_from_failure(caught.value)
    assert status is not None and status.state is JobState.FAILED
    return status
