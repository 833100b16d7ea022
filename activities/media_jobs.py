"""Prepare a media job (upscale, background removal, resize, convert): the checks that run
before anything is charged, and the plan the shared saga executes.

Upscale and background removal become one ComfyUI prompt (`comfy` queue) built from the
`upscale` / `rmbg` templates, the source uploaded into the graph's LoadImage node; resize and
convert become one Pillow operation on the `media` queue. Prepare re-reads the source blob and
passes it through `media.safety` again, so a workflow started by any entry point (and not only
through `JobsClient.store_source`) cannot charge for an image that is not one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from temporalio import activity

from activities.jobs import plan_or_refusal
from domain.errors import TemplateGraphError, UserInputError
from domain.jobs import (
    ActivityNames,
    ComfyWork,
    JobPlan,
    MediaPrepareInput,
    MediaRequest,
    MediaWork,
)
from domain.pricing import quote_media
from domain.routing import comfy_route
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

# The upscale models per factor. The factor is the model's own (a 4x model always gives 4x), so
# choosing the scale means choosing the model file. These are the stand-in's files; on a real
# server pass the names its /object_info lists for UpscaleModelLoader (constructor argument).
DEFAULT_UPSCALE_MODELS: Mapping[int, str] = {
    2: "2x-standin.safetensors",
    4: "4x-standin.safetensors",
}

# Which template each ComfyUI job kind runs.
COMFY_TEMPLATES: Mapping[str, str] = {"upscale": "upscale", "rmbg": "rmbg"}


class MediaJobActivities:
    """Prepare for media jobs; dependencies come in through the constructor."""

    def __init__(
        self,
        stores: Stores,
        *,
        comfy_queue: str = "comfy",
        comfy_io_queue: str = "comfy-io",
        media_queue: str = "media",
        render_timeout: float = 900.0,
        heartbeat_timeout: float = 30.0,
        upscale_models: Mapping[int, str] | None = None,
    ) -> None:
        self.stores = stores
        self.comfy_queue = comfy_queue
        self.comfy_io_queue = comfy_io_queue
        self.media_queue = media_queue
        self.render_timeout = render_timeout
        self.heartbeat_timeout = heartbeat_timeout
        self.upscale_models = dict(upscale_models or DEFAULT_UPSCALE_MODELS)

    def all(self) -> list[Any]:
        return [self.prepare_media_job]

    @activity.defn(name=ActivityNames.PREPARE_MEDIA_JOB)
    def prepare_media_job(self, inp: MediaPrepareInput) -> JobPlan:
        """Turn a media request into a priced plan, or a refusal that says what to fix."""
        return plan_or_refusal(
            self.stores,
            inp.request.user,
            inp.request.kind,
            inp.workflow_id,
            lambda: self.plan_media_job(inp),
        )

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
            "render_timeout": self.render_timeout,
            "heartbeat_timeout": self.heartbeat_timeout,
            "comfy_queue": self.comfy_queue,
            "comfy_io_queue": self.comfy_io_queue,
            "media_queue": self.media_queue,
        }
        plan = JobPlan(user_id=user.id, kind=req.kind, price=0, units=1, balance=user.points)
        output_pixels = 0
        if req.kind in COMFY_TEMPLATES:
            work, params, summary = self._comfy_work(req, source, user.id)
            template = COMFY_TEMPLATES[req.kind]
            plan = plan.model_copy(update={"comfy": [work], "template": template})
            settings.update(comfy_route(self.comfy_queue, [work.graph], user.id))
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
        image_ref = template.inputs.get("image")
        if image_ref is None:
            raise TemplateGraphError(f"template {template.name!r} has no input_image node")
        values: dict[str, Any] = {}
        prescale: tuple[int, int] | None = None
        if req.kind == "upscale":
            scale = self._scale(req.params)
            in_w, in_h = upscale_input_size(source.width, source.height, scale)
            width, height = in_w * scale, in_h * scale
            if "model" not in template.inputs:
                raise TemplateGraphError(f"template {template.name!r} has no input_model node")
            values["model"] = self.upscale_models[scale]
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
        graph = template.inject(values)
        if prescale is not None:
            graph = _scale_input_first(graph, image_ref.node, prescale)
        work = ComfyWork(
            graph=graph, uploads={image_ref.node: req.source_image_id}, owner_id=owner_id
        )
        return work, params, summary

    def _scale(self, params: Mapping[str, Any]) -> int:
        extra = sorted(set(params) - {"scale"})
        if extra:
            raise UserInputError(f"upscale takes only scale (got: {', '.join(extra)})")
        raw = params.get("scale", 4)
        allowed = " or ".join(str(c) for c in sorted(self.upscale_models))
        scale = raw
        if isinstance(raw, str) and raw.strip().isdigit():
            scale = int(raw)
        if (
            isinstance(scale, bool)
            or not isinstance(scale, int)
            or scale not in self.upscale_models
        ):
            raise UserInputError(f"scale: must be {allowed}, got {raw!r}")
        return scale


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
