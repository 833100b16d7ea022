"""LoRA training on the shared paid-job saga, plus the two small dataset workflows.

`TrainLoraWorkflow` is a `PaidJobWorkflow`: prepare (checks + quote), charge once, produce,
record, deliver, and refund in full on failure or cancel — all from job_saga.py. Only the
produce step is its own: caption what has no caption (`comfy` queue, a few prompts at once),
then train in chunks. Each chunk is one activity = one ComfyUI prompt continuing from the
previous chunk's LoRA; its file is in GridFS before the next chunk starts, and a finished
chunk is in the workflow history, so a crash of any worker, ComfyUI server or the database
loses at most the running chunk (and a worker crash alone loses nothing: the retry re-attaches
to the prompt still training). Finally the model record is written, once per workflow.

Stages shown to the user (`JobStatus.stage`): submitted → captioning → training (step, percent)
→ completed (state done) | failed | cancelled.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from domain.jobs import (
        ActivityNames,
        ChargeInput,
        ChargeResult,
        ComfyRunInput,
        ComfyRunResult,
        ComfyWork,
        JobPlan,
        JobState,
        JobStatus,
        LoraFile,
        RefundInput,
        RefundResult,
        StoredOutput,
    )
    from domain.safety import Action, CheckOutputsInput, CheckOutputsResult, Policy
    from domain.training import (
        AddImagesInput,
        CaptionOutcome,
        CaptionPlan,
        CaptionPrepareInput,
        CaptionRequest,
        CaptionsInput,
        CaptionsResult,
        ChunkInput,
        ChunkResult,
        DatasetImagesRequest,
        DatasetImagesResult,
        LoraModel,
        PrepareImageInput,
        RegisterModelInput,
        TrainingProgress,
        TrainPrepareInput,
        TrainRequest,
        TrainSpec,
        chunks,
    )

# Workflow modules are imported inside the sandbox (workflows/registry.py says why).
from workflows import policies
from workflows.job_saga import JobFailed, PaidJobWorkflow, describe_failure, ledger_activity

# A chunk is retried after a crash (worker, server, database) and may land on any GPU; a
# rejected graph or an interrupt is final. Between attempts: seconds, not minutes.
TRAIN_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=8,
    non_retryable_error_types=policies.COMFY_PERMANENT_ERRORS,
)
MEDIA_RETRY = policies.MEDIA_RETRY


async def caption_images(
    work: dict[str, ComfyWork],
    *,
    queue: str,
    render_timeout: timedelta,
    heartbeat_timeout: timedelta,
    parallel: int,
) -> tuple[dict[str, str], dict[str, str]]:
    """Run the captioning graph for each image, `parallel` prompts at a time.

    Returns (image id → caption, image id → why it failed)."""
    wid = workflow.info().workflow_id
    texts: dict[str, str] = {}
    failed: dict[str, str] = {}
    ids = list(work)
    for start in range(0, len(ids), max(1, parallel)):
        group = ids[start : start + max(1, parallel)]
        runs = [
            workflow.execute_activity(
                ActivityNames.RUN_COMFY_PROMPT,
                ComfyRunInput(
                    workflow_id=wid,
                    index=1000 + start + n,
                    work=work[image_id],
                    timeout_seconds=render_timeout.total_seconds(),
                ),
                result_type=ComfyRunResult,
                task_queue=queue,
                start_to_close_timeout=render_timeout,
                heartbeat_timeout=heartbeat_timeout,
                retry_policy=policies.COMFY_RETRY,
            )
            for n, image_id in enumerate(group)
        ]
        results = await asyncio.gather(*runs, return_exceptions=True)
        for image_id, res in zip(group, results, strict=True):
            if isinstance(res, asyncio.CancelledError):
                raise res
            if isinstance(res, BaseException):
                failed[image_id] = describe_failure(res)
                continue
            text = next((t[0] for t in res.texts.values() if t and t[0].strip()), "")
            if text:
                texts[image_id] = text
            else:
                failed[image_id] = "the captioning graph returned no text"
    return texts, failed


@workflow.defn(name="TrainLoraWorkflow")
class TrainLoraWorkflow(PaidJobWorkflow):
    kind = "train"
    prepare_activity = ActivityNames.PREPARE_TRAIN_LORA

    def __init__(self) -> None:
        super().__init__()
        self._chunks: list[ChunkResult] = []
        self._caption_units = 0

    @workflow.run
    async def run(self, request: TrainRequest) -> JobStatus:
        return await self.run_job(
            user=request.user,
            platform=request.platform,
            reply=request.reply,
            prepare_input=TrainPrepareInput(
                workflow_id=workflow.info().workflow_id, request=request
            ),
        )

    @workflow.signal(name="training_progress")
    def training_progress(self, p: TrainingProgress) -> None:
        """Step counter from a running chunk of an earlier release (never goes backwards).

        Today's chunks put their step in their heartbeat details (`ChunkBeat`), which write no
        history; `JobsClient.status()` reads it. Kept for a rolling deploy and for replay.
        """
        s = self._status
        if s.state is not JobState.RUNNING or s.stage != "training" or p.step < s.step:
            return
        s.step, s.total_steps = p.step, p.total_steps
        s.loss = p.loss if p.loss is not None else s.loss
        s.percent = round(100.0 * p.step / max(1, p.total_steps), 1)

    def _plan_units(self) -> list[int]:
        # Caption prompts report progress through the saga's `report_progress`.
        return list(range(max(1, self._caption_units)))

    def _stage(self, stage: str) -> None:
        self._status.stage = stage
        self._status.percent = 0.0
        self._set_state(JobState.RUNNING)

    async def _produce(self, plan: JobPlan) -> tuple[list[StoredOutput], int, str | None]:
        spec = TrainSpec.model_validate(plan.settings["training"])
        self._status.stage = "submitted"
        task = asyncio.create_task(self._train(spec))
        try:
            await workflow.wait_condition(lambda: task.done() or self._cancel is not None)
        finally:
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            return [], 0, "cancelled"
        exc = task.exception()
        if exc is not None:
            return [], 0, describe_failure(exc)
        out = task.result()
        self._status.outputs = [out]
        return [out], 1, None

    async def _train(self, spec: TrainSpec) -> StoredOutput:
        captions = {im.image_id: im.caption for im in spec.images}
        if spec.caption_work:
            self._caption_units = len(spec.caption_work)
            self._stage("captioning")
            work = {c["image_id"]: ComfyWork.model_validate(c["work"]) for c in spec.caption_work}
            texts, failed = await caption_images(
                work,
                queue=spec.caption_queue or self._comfy_queue,
                render_timeout=self._render_timeout,
                heartbeat_timeout=self._heartbeat_timeout,
                parallel=spec.caption_parallel,
            )
            saved = await workflow.execute_local_activity(
                ActivityNames.SAVE_CAPTIONS,
                CaptionsInput(
                    owner=spec.owner,
                    dataset_id=spec.dataset_id,
                    trigger_word=spec.trigger_word,
                    captions=texts,
                ),
                result_type=CaptionsResult,
                start_to_close_timeout=policies.LEDGER_TIMEOUT,
                retry_policy=policies.LEDGER_RETRY,
            )
            captions.update({k: v for k, v in saved.captions.items() if k in captions})
            if failed:
                first = next(iter(failed.values()))
                raise JobFailed(f"captioning failed for {len(failed)} image(s): {first}")
        self._stage("training")
        total = spec.params.steps
        self._status.total_steps = total
        chunk_timeout = timedelta(seconds=self._route.chunk_timeout)
        previous: LoraFile | None = None
        for k, (start, steps) in enumerate(chunks(total, spec.chunk_steps)):
            res = await workflow.execute_activity(
                ActivityNames.TRAIN_LORA_CHUNK,
                ChunkInput(
                    workflow_id=workflow.info().workflow_id,
                    chunk=k,
                    start_step=start,
                    steps=steps,
                    total_steps=total,
                    spec=spec,
                    captions=captions,
                    previous=previous,
                    timeout_seconds=chunk_timeout.total_seconds(),
                ),
                result_type=ChunkResult,
                task_queue=self._comfy_queue,
                start_to_close_timeout=chunk_timeout,
                heartbeat_timeout=self._heartbeat_timeout,
                retry_policy=TRAIN_RETRY,
            )
            self._chunks.append(res)
            self._status.step = res.steps_done
            self._status.percent = round(100.0 * res.steps_done / total, 1)
            self._status.gpu_seconds += res.gpu_seconds
            previous = LoraFile(
                name=f"{spec.model_name}-chunk{k}",
                filename=res.filename,
                blob_id=res.blob_id,
                sha256=res.sha256,
                size=res.size,
            )
        model = await workflow.execute_local_activity(
            ActivityNames.REGISTER_MODEL,
            RegisterModelInput(
                workflow_id=workflow.info().workflow_id, spec=spec, final=self._chunks[-1]
            ),
            result_type=LoraModel,
            start_to_close_timeout=policies.STORE_TIMEOUT,
            retry_policy=policies.STORE_RETRY,
        )
        self._status.model = {
            "name": model.name,
            "trigger_word": model.trigger_word,
            "family": model.family,
            "default_weight": model.default_weight,
            "size": model.size,
            "sha256": model.sha256,
            "chunks": len(self._chunks),
        }
        self._status.stage = "completed"
        return StoredOutput(blob_id=model.blob_id, content_type="application/x-safetensors")


@workflow.defn(name="CaptionDatasetWorkflow")
class CaptionDatasetWorkflow:
    """`dataset caption`: caption only the images that have no caption, paid per image.

    The quote comes from prepare; the charge (`<workflow id>:<run id>:charge`) is booked before
    the first prompt, and the images that got no caption are refunded (`<workflow id>:<run
    id>:refund`), all of them if the run is cancelled. Each request has its own workflow id, so
    captioning again after clearing the captions is charged again. Keys are per run, as the job
    saga's (`PaidJobWorkflow._ledger_key`): an operator's reset after a refund pays again.
    Runs from before the charge were free and replay unchanged (histories in
    tests/workflows/histories/before-caption-charge); runs from before per-run keys booked
    `<workflow id>:charge|refund` (before-caption-run-keys).
    """

    def __init__(self) -> None:
        self._run_keys = True

    @workflow.run
    async def run(self, request: CaptionRequest) -> CaptionOutcome:
        wid = workflow.info().workflow_id
        # Asked before the first local activity; retirement: docs/patches.md.
        paid = workflow.patched("caption-charged")
        # Ledger keys of this run, topped up like the saga's (ChargeInput.top_up), and a settle
        # charge once captions exist (a reset to after the charge paid nothing again); older
        # histories keep `<workflow id>:charge|refund`. Retire: deprecate_patch once no caption
        # run started before it runs (they take minutes; a release later is safe), remove with
        # the `before-caption-run-keys/` histories the release after.
        self._run_keys = workflow.patched("caption-per-run-keys")
        plan = await workflow.execute_local_activity(
            ActivityNames.PREPARE_CAPTIONS,
            CaptionPrepareInput(workflow_id=wid, request=request),
            result_type=CaptionPlan,
            start_to_close_timeout=policies.PREPARE_TIMEOUT,
            retry_policy=policies.PREPARE_RETRY,
        )
        if plan.refused:
            return CaptionOutcome(refused=plan.refused, workflow_id=wid)
        work = {k: ComfyWork.model_validate(v) for k, v in plan.work.items()}
        price = plan.price if paid and work else 0
        balance: int | None = None
        if price > 0:
            charge: ChargeResult = await ledger_activity(
                ActivityNames.CHARGE_POINTS,
                self._charge_input(plan, price, len(work)),
                ChargeResult,
            )
            if not charge.ok:
                return CaptionOutcome(
                    dataset_id=plan.dataset_id,
                    refused=charge.reason,
                    workflow_id=wid,
                    balance=charge.balance,
                )
            balance = charge.balance
        try:
            texts, failed = await caption_images(
                work,
                queue=plan.comfy_queue,
                render_timeout=timedelta(seconds=plan.render_timeout),
                heartbeat_timeout=timedelta(seconds=plan.heartbeat_timeout),
                parallel=plan.parallel,
            )
        except asyncio.CancelledError:
            if price > 0:
                await self._refund(plan, wid, price, "captioning cancelled")
            raise
        if price > 0 and texts and self._run_keys:
            # Why always, not only in a reset run: see `PaidJobWorkflow._settle` (in a plain
            # run this replays the run's own charge key and books nothing).
            settle: ChargeResult = await ledger_activity(
                ActivityNames.CHARGE_POINTS,
                self._charge_input(plan, price, len(work)),
                ChargeResult,
            )
            if not settle.ok:
                return CaptionOutcome(
                    dataset_id=plan.dataset_id,
                    refused=f"this captioning was restarted after its refund, and {settle.reason}",
                    workflow_id=wid,
                    balance=settle.balance,
                )
            balance = settle.balance
        saved = await workflow.execute_local_activity(
            ActivityNames.SAVE_CAPTIONS,
            CaptionsInput(
                owner=plan.owner,
                dataset_id=plan.dataset_id,
                trigger_word=plan.trigger_word,
                captions=texts,
            ),
            result_type=CaptionsResult,
            start_to_close_timeout=policies.LEDGER_TIMEOUT,
            retry_policy=policies.LEDGER_RETRY,
        )
        refunded = 0
        if price > 0 and failed:
            refund = await self._refund(
                plan, wid, plan.per_image * len(failed), f"{len(failed)} image(s) not captioned"
            )
            refunded, balance = refund.refunded, refund.balance
        return CaptionOutcome(
            dataset_id=plan.dataset_id,
            captioned=saved.written,
            failed=failed,
            workflow_id=wid,
            price=price,
            refunded=refunded,
            balance=balance,
        )

    def _key(self, step: str) -> str:
        """`<workflow id>:<run id>:<step>` (older histories: `<workflow id>:<step>`)."""
        info = workflow.info()
        if not self._run_keys:
            return f"{info.workflow_id}:{step}"
        return f"{info.workflow_id}:{info.run_id}:{step}"

    def _charge_input(self, plan: CaptionPlan, price: int, images: int) -> ChargeInput:
        wid = workflow.info().workflow_id
        return ChargeInput(
            user_id=plan.owner,
            amount=price,
            key=self._key("charge"),
            job_id=wid,
            reason=f"caption: {images} image(s) of {plan.dataset_name}"[:200],
            top_up=self._run_keys,
        )

    async def _refund(self, plan: CaptionPlan, wid: str, amount: int, reason: str) -> RefundResult:
        result: RefundResult = await ledger_activity(
            ActivityNames.REFUND_POINTS,
            RefundInput(
                user_id=plan.owner,
                amount=amount,
                key=self._key("refund"),
                job_id=wid,
                reason=reason,
            ),
            RefundResult,
        )
        return result


@workflow.defn(name="DatasetImagesWorkflow")
class DatasetImagesWorkflow:
    """`dataset add`: each image square-cropped and resized on the `media` queue, then added."""

    async def _check_images(self, request: DatasetImagesRequest, images: list[str]) -> str | None:
        """Under the operator's `block` policy, the content filter per dataset image: a LoRA
        learns what it is shown. Returns why the add is refused, or None. Requests without it
        (the default `off`, and every earlier one) ask nothing; the patch guards the command."""
        if request.safety != "block" or not workflow.patched("dataset-safety"):
            return None
        result: CheckOutputsResult = await workflow.execute_activity(
            ActivityNames.CHECK_OUTPUTS,
            CheckOutputsInput(
                workflow_id=workflow.info().workflow_id,
                user_id=request.user_id,
                policy=Policy.BLOCK,
                threshold=request.safety_threshold,
                outputs=[StoredOutput(blob_id=b) for b in images],
            ),
            result_type=CheckOutputsResult,
            task_queue=request.safety_queue,
            start_to_close_timeout=policies.SAFETY_TIMEOUT,
            schedule_to_close_timeout=policies.SAFETY_DEADLINE,
            retry_policy=policies.SAFETY_RETRY,
        )
        for n, verdict in enumerate(result.verdicts, 1):
            if verdict.action is Action.BLOCK:
                return (
                    f"image {n} was refused by the content filter (score {verdict.score:.2f}); "
                    "nothing was added"
                )
        return None

    @workflow.run
    async def run(self, request: DatasetImagesRequest) -> DatasetImagesResult:
        wid = workflow.info().workflow_id
        runs = [
            workflow.execute_activity(
                ActivityNames.PREPARE_DATASET_IMAGE,
                PrepareImageInput(
                    workflow_id=wid,
                    index=n,
                    user_id=request.user_id,
                    original_id=original,
                    resolution=request.resolution,
                ),
                result_type=str,
                task_queue=request.media_queue,
                start_to_close_timeout=policies.MEDIA_TIMEOUT,
                retry_policy=MEDIA_RETRY,
            )
            for n, original in enumerate(request.originals)
        ]
        results = await asyncio.gather(*runs, return_exceptions=True)
        prepared: list[tuple[str, str]] = []
        for n, (original, res) in enumerate(zip(request.originals, results, strict=True)):
            if isinstance(res, BaseException):
                return DatasetImagesResult(refused=f"image {n + 1}: {describe_failure(res)}")
            prepared.append((original, res))
        refused = await self._check_images(request, [p for _, p in prepared])
        if refused:
            return DatasetImagesResult(refused=refused)
        return await workflow.execute_local_activity(
            ActivityNames.ADD_DATASET_IMAGES,
            AddImagesInput(user=request.user, dataset=request.dataset, images=prepared),
            result_type=DatasetImagesResult,
            start_to_close_timeout=policies.LEDGER_TIMEOUT,
            retry_policy=policies.LEDGER_RETRY,
        )
