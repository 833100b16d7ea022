"""LoRA training: datasets (images, captions, trigger words), captioning, training runs and
the trained models.

Plans come from services/training_plans.py, which the prepare activities share.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

from temporalio.common import WorkflowIDConflictPolicy

from domain.errors import InsufficientPoints, UserInputError
from domain.identity import normalise_identity
from domain.jobs import JobPlan
from domain.training import (
    CAPTION_PRICE_PER_IMAGE,
    MAX_IMAGES,
    TRAINING_RESOLUTION,
    CaptionOutcome,
    CaptionRequest,
    Dataset,
    DatasetImagesRequest,
    DatasetImagesResult,
    LoraModel,
    TrainPrepareInput,
    TrainRequest,
    check_trigger_clash,
    check_trigger_word,
    quote_captions,
)
from services.jobs import JobService, StartedJob
from services.media_sources import MediaSourceService
from store.storage import DATASET, StorageQuotaExceeded
from workflows.train_lora import CaptionDatasetWorkflow, DatasetImagesWorkflow


@dataclass(frozen=True)
class CaptionQuote:
    dataset_id: str
    dataset: str
    images: int  # without a caption: what would be sent to the GPU
    per_image: int
    total: int
    balance: int
    revision: int = 0  # the dataset's, when quoted (names the caption run)


class TrainingService(JobService, MediaSourceService):
    """Datasets, captioning, training and models."""

    async def create_dataset(
        self, user: str, name: str, *, trigger_word: str = "", family: str = "sdxl"
    ) -> Dataset:
        owner = await self._owner(user)
        if family not in TRAINING_RESOLUTION:
            raise UserInputError(f"family must be one of {', '.join(TRAINING_RESOLUTION)}")
        return await asyncio.to_thread(
            self.stores.datasets.create, owner.id, name, trigger_word=trigger_word, family=family
        )

    async def datasets(self, user: str) -> list[Dataset]:
        owner = await self._owner(user)
        return await asyncio.to_thread(self.stores.datasets.owned, owner.id)

    async def dataset(self, user: str, ref: str) -> Dataset:
        owner = await self._owner(user)
        return await asyncio.to_thread(self.stores.datasets.get, owner.id, ref)

    async def delete_dataset(self, user: str, ref: str) -> Dataset:
        owner = await self._owner(user)
        return await asyncio.to_thread(self.stores.datasets.delete, owner.id, ref)

    async def rename_dataset(self, user: str, ref: str, new_name: str) -> Dataset:
        owner = await self._owner(user)
        return await asyncio.to_thread(self.stores.datasets.rename, owner.id, ref, new_name)

    async def set_trigger_word(self, user: str, ref: str, word: str) -> Dataset:
        owner = await self._owner(user)
        word = check_trigger_word(word)
        models = await asyncio.to_thread(self.stores.models.owned, owner.id)
        check_trigger_clash(word, models)
        return await asyncio.to_thread(self.stores.datasets.set_trigger_word, owner.id, ref, word)

    async def set_caption(self, user: str, ref: str, image: str | int, caption: str) -> Dataset:
        owner = await self._owner(user)
        return await asyncio.to_thread(
            self.stores.datasets.set_caption, owner.id, ref, image, caption
        )

    async def remove_dataset_image(self, user: str, ref: str, image: str | int) -> Dataset:
        owner = await self._owner(user)
        ds, _removed = await asyncio.to_thread(
            self.stores.datasets.remove_image, owner.id, ref, image
        )
        return ds

    async def add_dataset_images(
        self, user: str, ref: str, files: list[tuple[bytes, str]]
    ) -> DatasetImagesResult:
        """Check each file (media safety), keep the originals, then square-crop and resize them
        on the `media` queue and add them; refused whole (nothing added) on any bad file."""
        owner = await self._owner(user)
        ds = await asyncio.to_thread(self.stores.datasets.get, owner.id, ref)
        if len(ds.images) + len(files) > MAX_IMAGES:
            raise UserInputError(
                f"the dataset has {len(ds.images)} images; adding {len(files)} would exceed "
                f"the limit of {MAX_IMAGES}"
            )
        originals: list[str] = []
        for n, (data, filename) in enumerate(files, 1):
            try:
                originals.append(await self.store_source(user, data, filename, kind=DATASET))
            except UserInputError as err:
                # Naming the file; a quota refusal keeps its own code.
                kind = StorageQuotaExceeded if isinstance(err, StorageQuotaExceeded) else None
                raise (kind or UserInputError)(f"{filename} (image {n}): {err.message}") from None
        request = DatasetImagesRequest(
            user=normalise_identity(user),
            dataset=ds.id,
            originals=originals,
            user_id=owner.id,
            resolution=TRAINING_RESOLUTION.get(ds.family, 1024),
            media_queue=self.config.task_queues.media,
        )
        # Dataset images are nobody's chat: the operator's default policy applies to them.
        operator = await asyncio.to_thread(self.stores.safety.operator)
        if operator.policy.value == "block":
            request.safety = operator.policy.value
            request.safety_threshold = operator.threshold
            request.safety_queue = self.config.task_queues.safety
        digest = hashlib.sha256("|".join(originals).encode()).hexdigest()[:12]
        result: DatasetImagesResult = await self.temporal.execute_workflow(
            DatasetImagesWorkflow.run,
            request,
            id=f"dataset-add-{ds.id}-{digest}",
            task_queue=self.config.task_queues.workflows,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        if result.refused:
            raise UserInputError(result.refused)
        return result

    async def quote_captions(self, user: str, ref: str) -> CaptionQuote:
        """What `caption_dataset` would cost now: the images without a caption × the price."""
        owner = await self._owner(user)
        ds = await asyncio.to_thread(self.stores.datasets.get, owner.id, ref)
        images = len(ds.uncaptioned())
        balance = await asyncio.to_thread(self.stores.ledger.balance, owner.id)
        return CaptionQuote(
            ds.id,
            ds.name,
            images,
            CAPTION_PRICE_PER_IMAGE,
            quote_captions(images),
            balance,
            ds.revision,
        )

    async def caption_dataset(self, user: str, ref: str) -> CaptionOutcome:
        """Caption the images without a caption (typed captions are never overwritten).

        Paid per image (`quote_captions`): refused at once, with nothing started, when the
        balance does not cover the quote; the workflow charges `<id>:<run id>:charge` before
        the first prompt and refunds the images that got no caption. The dataset and its
        revision name the workflow: a second request against the same state (a double tap, a
        replayed press, two CLI runs) joins that run instead of paying again for the same
        images. The revision moves with every caption written or cleared, so a later request
        is a new workflow and a new charge; a run that wrote nothing (every image refunded)
        leaves it, and a retry is a new run of the same workflow, charged again by its own
        run keys up to the job's standing charge (nothing was kept)."""
        quote = await self.quote_captions(user, ref)
        if quote.images == 0:
            return CaptionOutcome(dataset_id=quote.dataset_id, balance=quote.balance)
        if quote.balance < quote.total:
            raise InsufficientPoints(quote.total, quote.balance)
        outcome: CaptionOutcome = await self.temporal.execute_workflow(
            CaptionDatasetWorkflow.run,
            CaptionRequest(user=normalise_identity(user), dataset=quote.dataset_id),
            id=f"dataset-caption-{quote.dataset_id}-r{quote.revision}",
            task_queue=self.config.task_queues.workflows,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        if outcome.refused:
            raise UserInputError(outcome.refused)
        return outcome

    async def quote_training(self, request: TrainRequest) -> JobPlan:
        """The checks and the price of a training run, without starting it."""
        request = request.model_copy(update={"user": normalise_identity(request.user)})
        return await asyncio.to_thread(
            self._trainer.plan_train_lora, TrainPrepareInput(workflow_id="", request=request)
        )

    async def start_train(self, request: TrainRequest) -> StartedJob:
        """Check, quote, take a slot and start TrainLoraWorkflow; bad input raises at once."""
        request = request.model_copy(update={"user": normalise_identity(request.user)})
        plan = await self.quote_training(request)
        return await self._start(
            "train",
            request,
            summary=plan.summary,
            details=f"**user** {request.user} via {request.platform}\n\n**{plan.summary}**",
        )

    async def models(self, user: str, *, include_public: bool = True) -> list[LoraModel]:
        owner = await self._owner(user)
        return await asyncio.to_thread(
            self.stores.models.owned, owner.id, include_public=include_public
        )

    async def delete_model(self, user: str, ref: str) -> LoraModel:
        owner = await self._owner(user)
        model = await asyncio.to_thread(self.stores.models.delete, owner.id, ref)
        await asyncio.to_thread(self.stores.blobs.delete, model.blob_id, "models")
        return model

    async def rename_model(self, user: str, ref: str, new_name: str) -> LoraModel:
        owner = await self._owner(user)
        return await asyncio.to_thread(self.stores.models.rename, owner.id, ref, new_name)

    async def publish_model(self, user: str, ref: str, public: bool = True) -> LoraModel:
        owner = await self._owner(user)
        return await asyncio.to_thread(self.stores.models.publish, owner.id, ref, public)

    async def add_model(self, user: str, ref: str) -> LoraModel:
        """Add another user's public model (id or name) to `user`'s list: from then on its
        trigger word applies in their prompts (a `<lora:NAME>` tag works without adding)."""
        owner = await self._owner(user)
        return await asyncio.to_thread(self.stores.models.add, owner.id, ref)

    async def remove_model(self, user: str, ref: str) -> LoraModel:
        """Take a model off `user`'s list (the model itself stays its owner's)."""
        owner = await self._owner(user)
        return await asyncio.to_thread(self.stores.models.remove, owner.id, ref)

    async def added_models(self, user: str) -> list[LoraModel]:
        """The public models `user` added to their list."""
        owner = await self._owner(user)
        return await asyncio.to_thread(self.stores.models.added, owner.id)
