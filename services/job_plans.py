"""Planning a job before anything is charged: the checks, the price and the work to run.

A make (`MakePlanner`) or media job (`MediaPlanner`) is planned twice over the same code: by its
prepare activity inside the workflow (activities/jobs.py, activities/media_jobs.py: thin
wrappers that turn bad input into a refused plan) and by the jobs service before it starts the
workflow, so bad input is refused at once with nothing written. Neither imports the other;
both import this module.
"""

from __future__ import annotations

import io
import logging
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from PIL import Image, UnidentifiedImageError

from domain.checkpoints import (
    check_checkpoint,
    check_families,
    checkpoint_inventory,
    choices_for,
    image_base,
)
from domain.errors import StationError, TemplateGraphError, UnknownTemplate, UserInputError
from domain.guild_rules import GROUP_BATCH
from domain.inventory import Requirements, ServerInventory
from domain.jobs import (
    ComfyWork,
    JobPlan,
    LoraFile,
    MediaPrepareInput,
    MediaRequest,
    MediaWork,
    PrepareInput,
    ReplyTarget,
)
from domain.pricing import quote_image, quote_media
from domain.prompts import clean_prompt, strip_controls
from domain.queues import JobRoute, Routing
from domain.routing import comfy_route, needs_of
from domain.safety import PromptBlocked
from domain.settings import apply_updates, clamp_to_limits, limits_for
from domain.templates import Template
from domain.training import DEFAULT_MAX_LORAS, add_lora_loaders, lora_tag_names, loras_for_prompt
from media.ops import (
    UPSCALE_MAX_PIXELS,
    UPSCALE_MAX_SIDE,
    check_output_size,
    resize_target,
    upscale_input_size,
    validate_convert_params,
    validate_resize_params,
)
from media.safety import LoadedImage, load_image
from store.blobs import BlobNotFound
from store.db import Stores

log = logging.getLogger(__name__)

SEED_SPACE = 2**32

# Settings that map onto template inputs of the same name; the rest are not graph inputs.
GRAPH_SETTINGS = ("negative", "steps", "cfg", "width", "height", "sampler", "scheduler")

# The upscale model per factor comes from the `upscale` template's `choices.model` (factor ->
# file, templates/upscale.json), overridden per factor by `Config.upscale_models`: the factor
# is the model's own (a 4x model always gives 4x), so choosing the scale chooses the file.
UPSCALE_MODEL_INPUT = "model"

# Which template each ComfyUI job kind runs.
COMFY_TEMPLATES: Mapping[str, str] = {"upscale": "upscale", "rmbg": "rmbg"}


class MakePlanner:
    """Prepare's checks and decisions for a make (txt2img or img2img)."""

    def __init__(
        self,
        stores: Stores,
        *,
        routing: Routing | None = None,
        max_loras: int = DEFAULT_MAX_LORAS,
        checkpoints: Mapping[str, str] | None = None,
    ) -> None:
        self.stores = stores
        self.routing = routing or Routing()  # Config.routing(): queues and timeouts
        self.max_loras = max_loras  # Config.max_loras_per_prompt
        self.checkpoints = check_families(checkpoints or {})  # Config.checkpoints

    def plan_make_image(self, inp: PrepareInput) -> JobPlan:
        """The checks and decisions of prepare, raising UserInputError on bad input.

        The jobs client calls this too, before starting a workflow, so bad input is refused
        at once and nothing is written.
        """
        req = inp.request
        user = self.stores.users.get(req.user)
        cleaned = clean_prompt(req.prompt)
        if self.stores.safety.is_blocked(req.prompt, cleaned):
            raise PromptBlocked()  # before any quote or lookup: a refusal costs nothing
        prompt, loras = self._loras(user.id, cleaned)
        limits = limits_for(user.points, self.stores.rules.limits)
        saved, clamps = clamp_to_limits(user.settings, limits)
        notes = [str(c) for c in clamps]
        # Overrides are checked against the user's own limits; a shared place's batch is then
        # a cap, not a refusal: a repeat in a group of a run made elsewhere with a larger
        # batch (its overrides carry that batch) runs with the place's batch and says so.
        settings = apply_updates(saved, req.overrides, limits, rules=self.stores.rules)
        if req.reply and req.reply.group_chat:
            top = self._group_batch(req.platform, req.reply)
            if settings.batch > top:
                notes.append(f"batch {settings.batch} → {top} (the limit in this group)")
                settings = settings.model_copy(update={"batch": top})
        name = req.template or settings.template
        if req.source_image_id and name == "make":
            name = "img2img"
        template = self.stores.templates.get(name)
        if template.kind not in ("txt2img", "img2img"):
            raise UnknownTemplate(name, [n for n in self.stores.templates.names()])
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
        # One read of the servers seen lately for the form and the GPU queue below.
        servers = self.stores.inventory.servers()
        template = self._runnable_form(template, values, servers)
        uploads: dict[str, str] = {}
        if template.kind == "img2img":
            uploads = self._img2img_source(template, req.source_image_id, user.id)
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
        if template.variant:
            used["variant"] = template.variant
        used.update(template=template.name)
        safety_queue = self.routing.queues.safety
        used.update(self.stores.safety.plan_settings(req.platform, req.reply, queue=safety_queue))
        if loras:
            used["loras"] = [f"{lora.name}:{lora.weight:g}" for lora in loras]
        return JobPlan(
            user_id=user.id,
            kind="make",
            price=price,
            units=settings.batch,
            balance=user.points,
            summary=summary[:300],
            clamps=notes,
            settings=used,
            template=template.name,
            prompt=prompt,
            seeds=seeds,
            comfy=works,
            # The queue of the servers that can run it, and the user as fairness key.
            route=self._route(inp.request.platform, works, user.id, servers),
        )

    def _group_batch(self, platform: str, reply: ReplyTarget | None) -> int:
        """The most images one make may have in a shared place: the guild's own rule (Discord's
        /guildrules, store/guild_rules.py), else the fixed group batch (Telegram groups). The
        one place every make and repeat of a group passes, so no handler applies it."""
        rules = self.stores.guild_rules.for_reply(platform, reply)
        return rules.batch if rules is not None else GROUP_BATCH

    def _route(
        self,
        platform: str,
        works: list[ComfyWork],
        user_id: str,
        servers: list[ServerInventory] | None = None,
    ) -> JobRoute:
        """The job's route: its GPU queue by what its graphs need (domain/routing.py)."""
        return gpu_route(self.stores, self.routing.route(platform), works, user_id, servers)

    def _runnable_form(
        self,
        template: Template,
        values: dict[str, Any],
        servers: list[ServerInventory] | None = None,
    ) -> Template:
        """The form of `template` (its graph or a variant) some GPU server can run with these
        values injected; NoServerCanRun (a refusal before any charge) when none can. The
        user's LoRAs are not asked of the server: the comfy worker brings them."""
        return self.stores.inventory.choose_form(
            template,
            lambda form: form.requirements(_only_known(form, {**values, "seed": 0})),
            servers=servers,
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


class MediaPlanner:
    """Prepare's checks and decisions for upscale, rmbg, resize and convert."""

    def __init__(
        self,
        stores: Stores,
        *,
        routing: Routing | None = None,
        upscale_models: Mapping[int, str] | None = None,
    ) -> None:
        self.stores = stores
        self.routing = routing or Routing()  # Config.routing(): queues and timeouts
        self.upscale_overrides = {int(k): v for k, v in (upscale_models or {}).items()}

    def plan_media_job(self, inp: MediaPrepareInput) -> JobPlan:
        """The checks and decisions of prepare, raising UserInputError on bad input.

        The jobs client calls this before starting a workflow, so a bad request is refused at
        once and nothing is charged or started.
        """
        req = inp.request
        user = self.stores.users.get(req.user)
        source = self._load_source(req.source_image_id, user.id)
        settings: dict[str, Any] = {
            "source_width": source.width,
            "source_height": source.height,
        }
        plan = JobPlan(
            user_id=user.id,
            kind=req.kind,
            price=0,
            units=1,
            balance=user.points,
            route=self.routing.route(req.platform),
        )
        output_pixels = 0
        if req.kind in COMFY_TEMPLATES:
            work, params, summary = self._comfy_work(req, source, user.id)
            template = COMFY_TEMPLATES[req.kind]
            route = gpu_route(
                self.stores, plan.route or self.routing.route(req.platform), [work], user.id
            )
            plan = plan.model_copy(update={"comfy": [work], "template": template, "route": route})
            if req.kind == "upscale":
                in_w, in_h = params.get("input_size", [source.width, source.height])
                output_pixels = in_w * params["scale"] * in_h * params["scale"]
        else:
            params, summary = _pillow_params(req, source)
            work_m = MediaWork(op=req.kind, source_id=req.source_image_id, params=params)
            plan = plan.model_copy(update={"media": [work_m]})
        price = quote_media(req.kind, self.stores.rules.prices, output_pixels=output_pixels)
        plan = plan.model_copy(update={"price": price})
        settings["params"] = params
        safety_queue = self.routing.queues.safety
        settings.update(
            self.stores.safety.plan_settings(req.platform, req.reply, queue=safety_queue)
        )
        return plan.model_copy(update={"settings": settings, "summary": summary.strip()[:300]})

    # ---- pieces ----------------------------------------------------------------------------

    def _load_source(self, blob_id: str, owner_id: str) -> LoadedImage:
        """The source must be the user's own and pass the safety checks every entry point uses.

        Another user's image reads exactly as a missing one (one owner-checked query, the same
        message), so ids cannot be probed.
        """
        try:
            data = self.stores.blobs.get_owned(blob_id, owner_id)
        except (BlobNotFound, ValueError):
            raise UserInputError(f"source image {blob_id!r} not found") from None
        return load_image(data)

    def _comfy_work(
        self, req: MediaRequest, source: LoadedImage, owner_id: str
    ) -> tuple[ComfyWork, dict[str, Any], str]:
        template = self.stores.templates.get(COMFY_TEMPLATES[req.kind])
        if template.kind != req.kind:
            raise TemplateGraphError(
                f"template {template.name!r} is a {template.kind} graph, not {req.kind}"
            )
        values: dict[str, Any] = {}
        prescale: tuple[int, int] | None = None
        if req.kind == "upscale":
            models = self.upscale_models(template)
            scale = self._scale(req.params, models)
            in_w, in_h = upscale_input_size(source.width, source.height, scale)
            width, height = in_w * scale, in_h * scale
            if UPSCALE_MODEL_INPUT not in template.inputs:
                raise TemplateGraphError(f"template {template.name!r} has no input_model node")
            values[UPSCALE_MODEL_INPUT] = models[scale]
            params: dict[str, Any] = {"scale": scale}
            summary = f"upscale {scale}x {source.width}x{source.height} -> {width}x{height}"
            if (in_w, in_h) != (source.width, source.height):
                # Too large for the caps at this scale: reduced first, and the user told so.
                prescale = (in_w, in_h)
                params["input_size"] = [in_w, in_h]
                summary += (
                    f" (reduced to {in_w}x{in_h} first: results are at most "
                    f"{UPSCALE_MAX_SIDE} px a side and {UPSCALE_MAX_PIXELS // 1_000_000} MP)"
                )
        else:
            extra = sorted(set(req.params))
            if extra:
                raise UserInputError(f"rmbg takes no parameters (got: {', '.join(extra)})")
            params = {}
            summary = f"rmbg {source.width}x{source.height}"
        # A reduced source adds an ImageScale node (below): the server needs that too.
        added = Requirements(node_types=frozenset({"ImageScale"} if prescale else set()))
        template = self.stores.inventory.choose_form(
            template, lambda form: form.requirements(values).merged(added)
        )
        image_ref = template.inputs.get("image")
        if image_ref is None:
            raise TemplateGraphError(f"template {template.name!r} has no input_image node")
        graph = template.inject(values)
        if prescale is not None:
            graph = _scale_input_first(graph, image_ref.node, prescale)
        work = ComfyWork(
            graph=graph, uploads={image_ref.node: req.source_image_id}, owner_id=owner_id
        )
        return work, params, summary

    def upscale_models(self, template: Template) -> dict[int, str]:
        """Factor -> upscale model file: the template's `choices.model`, then the config's
        `upscale_models` over it (both the operator's; none is in code)."""
        models: dict[int, str] = {}
        for key, value in template.choices.get(UPSCALE_MODEL_INPUT, {}).items():
            if str(key).isdigit() and isinstance(value, str):
                models[int(key)] = value
        models.update(self.upscale_overrides)
        if not models:
            raise TemplateGraphError(
                f"template {template.name!r} names no upscale model per factor "
                '(add "choices": {"model": {"2": FILE, "4": FILE}} or set UPSCALE_MODELS)'
            )
        return models

    def _scale(self, params: Mapping[str, Any], models: Mapping[int, str]) -> int:
        extra = sorted(set(params) - {"scale"})
        if extra:
            raise UserInputError(f"upscale takes only scale (got: {', '.join(extra)})")
        raw = params.get("scale", 4)
        allowed = " or ".join(str(c) for c in sorted(models))
        scale = raw
        if isinstance(raw, str) and raw.strip().isdigit():
            scale = int(raw)
        if isinstance(scale, bool) or not isinstance(scale, int) or scale not in models:
            raise UserInputError(f"scale: must be {allowed}, got {raw!r}")
        return scale


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


def _scale_input_first(
    graph: dict[str, Any], image_node: str, size: tuple[int, int]
) -> dict[str, Any]:
    """The graph with an `ImageScale` (Lanczos) between the loaded image and every node that
    read it, so the model gets the reduced source."""
    ids = [int(k) for k in graph if k.isdigit()]
    node_id = str(max(ids, default=0) + 1)
    out = {k: dict(v, inputs=dict(v.get("inputs", {}))) for k, v in graph.items()}
    for node in out.values():
        for name, value in node["inputs"].items():
            if value == [image_node, 0]:
                node["inputs"][name] = [node_id, 0]
    out[node_id] = {
        "class_type": "ImageScale",
        "inputs": {
            "image": [image_node, 0],
            "upscale_method": "lanczos",
            "width": size[0],
            "height": size[1],
            "crop": "disabled",
        },
        "_meta": {"title": "reduce to fit the upscale cap"},
    }
    return out


def _pillow_params(req: MediaRequest, source: LoadedImage) -> tuple[dict[str, Any], str]:
    """Validated parameters of a resize or convert, checked against the source's size too
    (a fit by one side may not push the other past 4096 px; WebP has its own cap)."""
    w, h = source.width, source.height
    if req.kind == "resize":
        params = validate_resize_params(dict(req.params))
        tw, th = resize_target(
            w, h, width=params["width"], height=params["height"], mode=params["mode"]
        )
        return params, f"resize {params['mode']} {w}x{h} -> {tw}x{th}"
    params = validate_convert_params(dict(req.params))
    check_output_size(w, h, params)
    return params, f"convert {w}x{h} to {params['format']}"


def gpu_route(
    stores: Stores,
    route: JobRoute,
    works: list[ComfyWork],
    user_id: str,
    servers: list[ServerInventory] | None = None,
) -> JobRoute:
    """`route` with the GPU queue of the servers able to run `works` (their checkpoint's
    queue, or a capability queue when some server lacks a node type or model they need; the
    users' LoRAs aside, which the worker brings) and the user as fairness key."""
    graphs = [w.graph for w in works]
    fetched = {lora.filename for w in works for lora in w.loras}
    queue = stores.inventory.queue_for(
        route.comfy_queue, [needs_of(graphs, fetched)], graphs, servers=servers
    )
    return comfy_route(route, graphs, user_id, queue=queue)
