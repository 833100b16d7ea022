"""LoRA training and its datasets: the planning part, shared by the activities and the client.

`TrainingPlanner` runs prepare's checks and decisions of a training run (price, chunks, the
captions to generate first) and of captioning a dataset. The prepare activities
(activities/training.py) are thin wrappers over it, and the jobs client runs the same checks
before it starts a workflow, so bad input is refused at once with nothing written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from domain.errors import StationError, UserInputError
from domain.jobs import ComfyWork, JobPlan
from domain.queues import Routing
from domain.routing import needs_of
from domain.safety import PromptBlocked
from domain.training import (
    CAPTION_PRICE_PER_IMAGE,
    TRAINING_CHECKPOINT_INPUT,
    TRAINING_RESOLUTION,
    CaptionPlan,
    CaptionPrepareInput,
    TrainImage,
    TrainPrepareInput,
    TrainSpec,
    check_image_count,
    check_name,
    check_params,
    check_trigger_clash,
    check_trigger_word,
    chunk_size,
    dataset_hash,
    quote,
    quote_captions,
)
from store.db import Stores


class TrainingPlanner:
    """Plans of training runs and of dataset captioning; dependencies through the constructor."""

    def __init__(
        self,
        stores: Stores,
        *,
        routing: Routing | None = None,
        chunk_steps: int = 250,
        training_checkpoints: Mapping[str, str] | None = None,
    ) -> None:
        self.stores = stores
        self.routing = routing or Routing()  # Config.routing(): queues and timeouts
        self.chunk_steps = chunk_steps
        self.training_checkpoints = dict(training_checkpoints or {})  # Config, over the template

    def plan_train_lora(self, inp: TrainPrepareInput) -> JobPlan:
        """Every check before the charge; the jobs client runs it too, before starting."""
        req = inp.request
        user = self.stores.users.get(req.user)
        params = check_params(req.params)
        ds = self.stores.datasets.get(user.id, req.dataset)
        check_image_count(len(ds.images))
        if not ds.trigger_word:
            raise UserInputError(
                f"dataset {ds.name!r} has no trigger word yet (dataset trigger {ds.name} WORD)"
            )
        trigger = check_trigger_word(ds.trigger_word)
        check_trigger_clash(trigger, self.stores.models.owned(user.id))
        name = check_name(req.model_name or ds.name, "model")
        name = self.stores.models.free_name(user.id, name)
        images = [TrainImage(image_id=im.image_id, caption=im.caption) for im in ds.images]
        # The operator's block list, per caption: a LoRA learns what its captions name.
        if self.stores.safety.is_blocked(trigger):
            raise PromptBlocked("trigger word")
        for n, im in enumerate(images, 1):
            if self.stores.safety.is_blocked(im.caption):
                raise PromptBlocked(f"caption of dataset image {n}")
        resolution = TRAINING_RESOLUTION[params.family]
        checkpoint = self.base_checkpoint(params.family)
        caption_work: list[dict[str, Any]] = []
        caption_queue = ""
        missing = [im for im in images if not im.caption.strip()]
        if missing:
            template = self.stores.inventory.choose_form(self.stores.templates.get("caption"))
            ref = template.inputs["image"]
            for im in missing:
                work = ComfyWork(graph=template.inject({}), uploads={ref.node: im.image_id})
                caption_work.append({"image_id": im.image_id, "work": work.model_dump()})
            caption_queue = self._caption_queue(template.inject({}))
        route = self.routing.route(req.platform)
        # Training chunks go to the servers able to run some form of train-lora with this
        # base checkpoint (the chunk activity builds the form its own server can run).
        training = self.stores.templates.get("train-lora")
        values = {TRAINING_CHECKPOINT_INPUT: checkpoint}
        queue = self.stores.inventory.queue_for(
            route.comfy_queue, [form.requirements(values) for form in training.forms()]
        )
        route = route.model_copy(update={"comfy_queue": queue})
        spec = TrainSpec(
            dataset_id=ds.id,
            dataset_name=ds.name,
            dataset_hash=dataset_hash(images, trigger, params, resolution),
            owner=user.id,
            trigger_word=trigger,
            model_name=name,
            params=params,
            resolution=resolution,
            checkpoint=checkpoint,
            images=images,
            chunk_steps=chunk_size(params.steps, self.chunk_steps),
            caption_work=caption_work,
            caption_queue=caption_queue,
        )
        price = quote(len(images), params.steps, self.stores.rules.prices)
        return JobPlan(
            user_id=user.id,
            kind="train",
            price=price,
            units=1,
            balance=user.points,
            summary=f"LoRA {name} ({params.family}, {params.steps} steps, {len(images)} images)",
            settings={
                "training": spec.model_dump(mode="json"),
                "params": params.model_dump(mode="json"),
                "dataset": ds.name,
            },
            template="train-lora",
            route=route,
        )

    def base_checkpoint(self, family: str) -> str:
        """The checkpoint `family` trains on (the config's, else train-lora's `choices`),
        checked against the GPU servers: refused before any charge when no server can run the
        training graph (or any variant of it) with that checkpoint."""
        template = self.stores.templates.get("train-lora")
        name = self.training_checkpoints.get(family) or template.choice(
            TRAINING_CHECKPOINT_INPUT, family
        )
        if not isinstance(name, str) or not name:
            raise UserInputError(
                f"no base checkpoint is configured for {family} training (train-lora's "
                "choices.checkpoint or TRAINING_CHECKPOINTS); ask the operator"
            )
        values = {TRAINING_CHECKPOINT_INPUT: name}
        self.stores.inventory.choose_form(template, lambda form: form.requirements(values))
        return name

    def _caption_queue(self, graph: dict[str, Any]) -> str:
        """The GPU queue of the caption prompts: the servers that have the caption nodes."""
        base = self.routing.queues.comfy
        return self.stores.inventory.queue_for(base, [needs_of([graph])], [graph])

    def plan_captions(self, inp: CaptionPrepareInput) -> CaptionPlan:
        """What captioning the images without a caption costs and runs (or why not)."""
        try:
            user = self.stores.users.get(inp.request.user)
            ds = self.stores.datasets.get(user.id, inp.request.dataset)
            template = self.stores.inventory.choose_form(self.stores.templates.get("caption"))
        except StationError as err:
            return CaptionPlan(refused=err.message)
        ref = template.inputs["image"]
        work = {
            im.image_id: ComfyWork(
                graph=template.inject({}), uploads={ref.node: im.image_id}
            ).model_dump()
            for im in ds.uncaptioned()
        }
        return CaptionPlan(
            owner=user.id,
            dataset_id=ds.id,
            dataset_name=ds.name,
            trigger_word=ds.trigger_word,
            work=work,
            comfy_queue=self._caption_queue(template.inject({})),
            render_timeout=self.routing.render_timeout,
            heartbeat_timeout=self.routing.heartbeat_timeout,
            per_image=CAPTION_PRICE_PER_IMAGE,
            price=quote_captions(len(work)),
            balance=user.points,
        )
