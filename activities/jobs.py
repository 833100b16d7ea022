"""Activities of the `stationthis` queue: prepare a job, book points, record history, free slots.

They are sync (pymongo blocks), so the worker runs them in a thread pool. Each is idempotent:
ledger writes by key, history by workflow id, slots by (user, workflow id).
"""

from __future__ import annotations

import io
import logging
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from PIL import Image, UnidentifiedImageError
from temporalio import activity

from activities import metrics
from domain.checkpoints import (
    check_checkpoint,
    check_families,
    checkpoint_inventory,
    choices_for,
    image_base,
)
from domain.errors import (
    InsufficientPoints,
    StationError,
    TemplateGraphError,
    UnknownTemplate,
    UserInputError,
)
from domain.jobs import (
    ActivityNames,
    ChargeInput,
    ChargeResult,
    ComfyWork,
    JobPlan,
    JobRecordInput,
    LoraFile,
    PrepareInput,
    RefundInput,
    RefundResult,
    SlotInput,
)
from domain.pricing import quote_image
from domain.prompts import clean_prompt, strip_controls
from domain.routing import comfy_route
from domain.settings import apply_updates, clamp_to_limits, limits_for
from domain.templates import Template
from domain.training import (
    DEFAULT_MAX_LORAS,
    add_lora_loaders,
    lora_tag_names,
    loras_for_prompt,
)
from store.blobs import BlobNotFound
from store.db import Stores
from store.jobs import record_of
from store.slots import JobSlots

log = logging.getLogger(__name__)

SEED_SPACE = 2**32

# Settings that map onto template inputs of the same name; the rest are not graph inputs.
GRAPH_SETTINGS = ("negative", "steps", "cfg", "width", "height", "sampler", "scheduler")


class JobActivities:
    """Dependencies come in through the constructor; the bound methods are the activities."""

    def __init__(
        self,
        stores: Stores,
        *,
        comfy_queue: str = "comfy",
        comfy_io_queue: str = "comfy-io",
        render_timeout: float = 900.0,
        heartbeat_timeout: float = 30.0,
        max_loras: int = DEFAULT_MAX_LORAS,
        checkpoints: Mapping[str, str] | None = None,
    ) -> None:
        self.stores = stores
        self.slots = JobSlots(stores.db)
        self.comfy_queue = comfy_queue
        self.comfy_io_queue = comfy_io_queue
        self.render_timeout = render_timeout
        self.heartbeat_timeout = heartbeat_timeout
        self.max_loras = max_loras  # Config.max_loras_per_prompt
        self.checkpoints = check_families(checkpoints or {})  # Config.checkpoints

    def all(self) -> list[Any]:
        return [
            self.prepare_make_image,
            self.charge_points,
            self.refund_points,
            self.record_job,
            self.release_job_slot,
        ]

    # ---- prepare ---------------------------------------------------------------------------

    @activity.defn(name=ActivityNames.PREPARE_MAKE_IMAGE)
    def prepare_make_image(self, inp: PrepareInput) -> JobPlan:
        """Turn a request into a priced plan, or a refusal that says what to fix."""
        return plan_or_refusal(
            self.stores,
            inp.request.user,
            "make",
            inp.workflow_id,
            lambda: self.plan_make_image(inp),
        )

    def plan_make_image(self, inp: PrepareInput) -> JobPlan:
        """The checks and decisions of prepare, raising UserInputError on bad input.

        The jobs client calls this too, before starting a workflow, so bad input is refused
        at once and nothing is written.
        """
        req = inp.request
        user = self.stores.users.get(req.user)
        prompt, loras = self._loras(user.id, clean_prompt(req.prompt))
        limits = limits_for(user.points, self.stores.rules.limits)
        saved, clamps = clamp_to_limits(user.settings, limits)
        group = bool(req.reply and req.reply.group_chat)
        settings = apply_updates(
            saved, req.overrides, limits, rules=self.stores.rules, group_chat=group
        )
        if group and settings.batch > 1:
            settings = settings.model_copy(update={"batch": 1})
        name = req.template or settings.template
        if req.source_image_id and name == "make":
            name = "img2img"
        template = self.stores.templates.get(name)
        if template.kind not in ("txt2img", "img2img"):
            raise UnknownTemplate(name, [n for n in self.stores.templates.names()])
        uploads: dict[str, str] = {}
        if template.kind == "img2img":
            uploads = self._img2img_source(template, req.source_image_id, user.id)
        base_seed = settings.seed if settings.seed >= 0 else secrets.randbelow(SEED_SPACE)
        seeds = [(base_seed + i) % SEED_SPACE for i in range(settings.batch)]
        values: dict[str, Any] = {k: getattr(settings, k) for k in GRAPH_SETTINGS}
        values["prompt"] = prompt
        values["negative"] = strip_controls(settings.negative)  # also values saved before
        values["batch"] = 1
        values["strength"] = settings.strength
        family: str | None = None  # None: the template's default checkpoint
        if settings.checkpoint and "checkpoint" in template.inputs:
            family = check_checkpoint(settings.checkpoint, template, self.checkpoint_inventory())
            installed = self.stores.inventory.checkpoints()
            if installed is not None and settings.checkpoint not in installed:
                raise UserInputError(
                    f"checkpoint {settings.checkpoint!r} is not installed on any GPU server now; "
                    "pick another with /set checkpoint or ask the operator"
                )
            values["checkpoint"] = settings.checkpoint
        works = [
            ComfyWork(
                graph=add_lora_loaders(
                    template.inject(_only_known(template, {**values, "seed": seed})), loras
                ),
                loras=loras,
                uploads=uploads,
                seed=seed,
                owner_id=user.id if uploads else "",
            )
            for seed in seeds
        ]
        price = quote_image(
            settings.width,
            settings.height,
            settings.steps,
            settings.batch,
            base=image_base(template, family, self.stores.rules.prices),
            rules=self.stores.rules.prices,
        )
        summary = f"{template.name} {settings.width}x{settings.height} ×{settings.batch}: {prompt}"
        used = settings.model_dump()
        used.update(
            template=template.name,
            render_timeout=self.render_timeout,
            heartbeat_timeout=self.heartbeat_timeout,
            comfy_io_queue=self.comfy_io_queue,
        )
        # The queue of the servers that have the checkpoint, and the user as fairness key.
        used.update(comfy_route(self.comfy_queue, [w.graph for w in works], user.id))
        if loras:
            used["loras"] = [f"{lora.name}:{lora.weight:g}" for lora in loras]
        return JobPlan(
            user_id=user.id,
            kind="make",
            price=price,
            units=settings.batch,
            balance=user.points,
            summary=summary[:300],
            clamps=[str(c) for c in clamps],
            settings=used,
            template=template.name,
            prompt=prompt,
            seeds=seeds,
            comfy=works,
        )

    def _loras(self, user_id: str, prompt: str) -> tuple[str, list[LoraFile]]:
        """Trained LoRAs the prompt uses (each adds a LoraLoader to the graph): the user's own
        and added models by trigger word or `<lora:NAME:WEIGHT>` tag (removed from the text),
        other users' public models by tag only; at most `max_loras`."""
        mine = self.stores.models.usable(user_id)
        names = lora_tag_names(prompt)[: self.max_loras + 1]  # more is refused anyway
        public = self.stores.models.public_named(names, exclude_owner=user_id) if names else []
        return loras_for_prompt(prompt, mine, public, max_loras=self.max_loras)

    def checkpoint_inventory(self) -> dict[str, str]:
        """Every checkpoint known (file -> family): the loaded templates' defaults and the
        configured ones (domain/checkpoints.py says why not the server's own list)."""
        templates = [self.stores.templates.get(n) for n in self.stores.templates.names()]
        return checkpoint_inventory(templates, self.checkpoints)

    def checkpoint_choices(self, template_name: str) -> list[str]:
        """The checkpoints template `template_name` may use (its family's only)."""
        template = self.stores.templates.get(template_name)
        return choices_for(template.family, self.checkpoint_inventory())

    def _img2img_source(
        self, template: Template, blob_id: str | None, owner_id: str
    ) -> dict[str, str]:
        if not blob_id:
            raise UserInputError(f"template {template.name!r} needs a source image")
        ref = template.inputs.get("image")
        if ref is None:
            raise TemplateGraphError(f"template {template.name!r} has no input_image node")
        try:
            data = self.stores.blobs.get_owned(blob_id, owner_id)  # another's reads as missing
        except (BlobNotFound, ValueError):
            raise UserInputError(f"source image {blob_id!r} not found") from None
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.verify()
        except (UnidentifiedImageError, OSError, SyntaxError):
            raise UserInputError("the source is not an image Pillow can read") from None
        return {ref.node: blob_id}

    # ---- points ----------------------------------------------------------------------------

    @activity.defn(name=ActivityNames.CHARGE_POINTS)
    def charge_points(self, inp: ChargeInput) -> ChargeResult:
        """Charge once by key; too few points is an answer (ok=False), not an error.

        With `top_up`, only what the job's standing charge lacks (a reset run): nothing when the
        job is already paid.
        """
        ledger = self.stores.ledger
        try:
            if inp.top_up:
                res = ledger.charge_up_to(
                    inp.user_id, inp.amount, inp.key, job_id=inp.job_id, reason=inp.reason
                )
            else:
                res = ledger.charge(
                    inp.user_id, inp.amount, inp.key, job_id=inp.job_id, reason=inp.reason
                )
        except InsufficientPoints as err:
            return ChargeResult(ok=False, balance=err.balance, reason=err.message)
        if res is None:
            return ChargeResult(ok=True, balance=ledger.balance(inp.user_id))
        if not res.replayed:  # a new charge, once per key whatever the retries
            metrics.job_charged(inp.reason)
        return ChargeResult(ok=True, balance=res.entry.balance_after, charged=res.entry.amount)

    @activity.defn(name=ActivityNames.REFUND_POINTS)
    def refund_points(self, inp: RefundInput) -> RefundResult:
        """Refund once by key, never more than the job was charged (0 if it never was)."""
        ledger = self.stores.ledger
        done = ledger.entry(inp.key)
        if done is not None:
            return RefundResult(refunded=done.amount, balance=ledger.balance(inp.user_id))
        amount = min(inp.amount, ledger.job_totals(inp.job_id).refundable)
        if amount <= 0:
            return RefundResult(refunded=0, balance=ledger.balance(inp.user_id))
        res = ledger.refund(inp.user_id, amount, inp.key, job_id=inp.job_id, reason=inp.reason)
        return RefundResult(refunded=res.entry.amount, balance=res.entry.balance_after)

    # ---- history and slots -----------------------------------------------------------------

    @activity.defn(name=ActivityNames.RECORD_JOB)
    def record_job(self, inp: JobRecordInput) -> None:
        s = inp.status
        self.stores.jobs.record(record_of(s, inp.user_id, datetime.now(UTC)))
        if s.gpu_seconds > 0 and s.price > 0:
            self.stores.ledger.record_gpu_seconds(s.workflow_id, s.gpu_seconds)
        metrics.job_recorded(s)

    @activity.defn(name=ActivityNames.RELEASE_JOB_SLOT)
    def release_job_slot(self, inp: SlotInput) -> None:
        self.slots.release(inp.user_id, inp.workflow_id)


def _only_known(template: Template, values: dict[str, Any]) -> dict[str, Any]:
    """Inject only what this template declares (a Flux graph may have no negative prompt)."""
    return {k: v for k, v in values.items() if k in template.inputs}


def plan_or_refusal(
    stores: Stores, identity: str, kind: str, workflow_id: str, plan: Callable[[], JobPlan]
) -> JobPlan:
    """What every prepare activity returns: the plan, or bad input as a refused plan (the
    workflow ends `refused` with the message, nothing charged) rather than a failed activity."""
    try:
        return plan()
    except UserInputError as err:
        log.info("%s %s refused: %s", kind, workflow_id, err.message)
        try:
            found = stores.users.find(identity)
        except StationError:
            found = None
        return JobPlan(
            user_id=found.id if found else "",
            kind=kind,
            price=0,
            refused=err.message,
            refused_code=err.code,
        )
