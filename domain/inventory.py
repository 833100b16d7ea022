"""What a ComfyUI server can run, and what a graph needs: the model-aware pool's vocabulary.

A server's `/object_info` names its node types and, as the combo choices of the loader nodes,
the model files it has in each model folder (`checkpoints`, `loras`, `upscale_models`, ...).
A graph needs its node types and the model files its loader nodes name. Both sides are plain
sets, so "can server S run graph G" is two set differences, and the answer names what is
missing — which `stationthis comfy check` prints and a refusal at quote time quotes.

The folder of a loader input is ComfyUI's own (`folder_paths` keys); a loader this table does
not know is still checked as a node type, only its file is not.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# (node class, input name) -> ComfyUI model folder its combo lists.
MODEL_INPUTS: Mapping[tuple[str, str], str] = {
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("CheckpointLoader", "ckpt_name"): "checkpoints",
    ("ImageOnlyCheckpointLoader", "ckpt_name"): "checkpoints",
    ("LoraLoader", "lora_name"): "loras",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("VAELoader", "vae_name"): "vae",
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("DualCLIPLoader", "clip_name1"): "text_encoders",
    ("DualCLIPLoader", "clip_name2"): "text_encoders",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("ControlNetLoader", "control_net_name"): "controlnet",
    ("StyleModelLoader", "style_model_name"): "style_models",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("LoadBackgroundRemovalModel", "bg_removal_name"): "background_removal",
}
# Values a loader combo offers that are not files (TrainLoraNode's "[None]" and the like).
NOT_A_FILE: frozenset[str] = frozenset({"[None]", "None", ""})


class Requirements(BaseModel):
    """What a graph needs from a server: node types, model files per folder, and for each node
    type the input names the graph gives it (so a node of another version, whose required
    inputs differ, is told apart from the one the graph was written for)."""

    model_config = ConfigDict(frozen=True)

    node_types: frozenset[str] = frozenset()
    models: dict[str, frozenset[str]] = Field(default_factory=dict)
    given: dict[str, frozenset[str]] = Field(default_factory=dict)

    def merged(self, other: Requirements) -> Requirements:
        folders = set(self.models) | set(other.models)
        given = dict(self.given)
        for cls, names in other.given.items():
            given[cls] = given[cls] & names if cls in given else names
        return Requirements(
            node_types=self.node_types | other.node_types,
            models={
                f: self.models.get(f, frozenset()) | other.models.get(f, frozenset())
                for f in folders
            },
            given=given,
        )


class Missing(BaseModel):
    """What one server lacks for one graph; empty means it can run it."""

    model_config = ConfigDict(frozen=True)

    node_types: list[str] = Field(default_factory=list)
    models: dict[str, list[str]] = Field(default_factory=dict)
    inputs: dict[str, list[str]] = Field(default_factory=dict)  # node -> required, not given

    def __bool__(self) -> bool:
        return bool(self.node_types or self.models or self.inputs)

    def describe(self) -> str:
        """`node types X, Y; checkpoints/a.safetensors` — what an operator must install."""
        parts = []
        if self.node_types:
            parts.append("node types " + ", ".join(self.node_types))
        for cls, names in sorted(self.inputs.items()):
            parts.append(f"{cls} of another version (it requires {', '.join(names)})")
        for folder, files in sorted(self.models.items()):
            parts.append(", ".join(f"{folder}/{f}" for f in files))
        return "; ".join(parts) or "nothing"


class ServerInventory(BaseModel):
    """One server as its comfy worker last read it."""

    model_config = ConfigDict(frozen=True)

    url: str
    node_types: frozenset[str] = frozenset()
    models: dict[str, frozenset[str]] = Field(default_factory=dict)
    seen_at: datetime | None = None
    version: str = ""  # `comfyui_version` of /system_stats, when the server said
    # Node type -> its required input names (unknown for records of older workers: unchecked).
    required_inputs: dict[str, frozenset[str]] = Field(default_factory=dict)

    def missing(self, needs: Requirements) -> Missing:
        inputs = {}
        for cls, given in sorted(needs.given.items()):
            lacking = self.required_inputs.get(cls, frozenset()) - given
            if cls in self.node_types and lacking:
                inputs[cls] = sorted(lacking)
        return Missing(
            node_types=sorted(needs.node_types - self.node_types),
            models={
                folder: sorted(files - self.models.get(folder, frozenset()))
                for folder, files in sorted(needs.models.items())
                if files - self.models.get(folder, frozenset())
            },
            inputs=inputs,
        )

    def can_run(self, needs: Requirements) -> bool:
        return not self.missing(needs)


def requirements_of(graph: Mapping[str, Any], *, fetched: Collection[str] = ()) -> Requirements:
    """The node types of `graph` and the model files its loader nodes name.

    `fetched`: file names the comfy worker brings to the server itself before submitting (a
    user's trained LoRAs, `comfy/lora_cache.py`), so no server needs to have them already.
    Links (`[node, output]`) are not file names and are skipped.
    """
    types: set[str] = set()
    models: dict[str, set[str]] = {}
    given: dict[str, frozenset[str]] = {}
    for node in graph.values():
        if not isinstance(node, Mapping):
            continue
        cls = node.get("class_type")
        if not isinstance(cls, str):
            continue
        types.add(cls)
        inputs = node.get("inputs")
        if not isinstance(inputs, Mapping):
            continue
        names = frozenset(str(k) for k in inputs)
        given[cls] = given[cls] & names if cls in given else names
        for name, value in inputs.items():
            folder = MODEL_INPUTS.get((cls, str(name)))
            if folder is None or not isinstance(value, str) or value in NOT_A_FILE:
                continue
            if value in fetched:
                continue
            models.setdefault(folder, set()).add(value)
    return Requirements(
        node_types=frozenset(types),
        models={f: frozenset(v) for f, v in models.items()},
        given=given,
    )


def combo_choices(spec: Any) -> list[str] | None:
    """The options of a combo input spec in either `/object_info` encoding: legacy
    `[[...], {...}]` or schema-V3 `["COMBO", {"options": [...]}]`; None if not a combo."""
    head = spec[0] if isinstance(spec, list) and spec else spec
    if isinstance(head, list):
        return [str(o) for o in head]
    if head == "COMBO" and isinstance(spec, list):
        extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        return [str(o) for o in extra.get("options", [])]
    return None


def inventory_from_object_info(
    url: str, info: Mapping[str, Any], seen_at: datetime | None = None
) -> ServerInventory:
    """A server's inventory from its full `GET /object_info` answer."""
    models: dict[str, set[str]] = {}
    for (cls, input_name), folder in MODEL_INPUTS.items():
        node = info.get(cls)
        if not isinstance(node, Mapping):
            continue
        sections = node.get("input") or {}
        for section in ("required", "optional"):
            group = sections.get(section) if isinstance(sections, Mapping) else None
            if isinstance(group, Mapping) and input_name in group:
                choices = combo_choices(group[input_name]) or []
                models.setdefault(folder, set()).update(c for c in choices if c not in NOT_A_FILE)
    required: dict[str, frozenset[str]] = {}
    for cls, node in info.items():
        sections = node.get("input") if isinstance(node, Mapping) else None
        group = sections.get("required") if isinstance(sections, Mapping) else None
        if isinstance(group, Mapping):
            required[str(cls)] = frozenset(str(k) for k in group)
    return ServerInventory(
        url=url,
        node_types=frozenset(str(k) for k in info),
        models={f: frozenset(v) for f, v in models.items()},
        seen_at=seen_at,
        required_inputs=required,
    )


def servers_able(servers: Iterable[ServerInventory], needs: Requirements) -> list[str]:
    """URLs of the servers that have everything `needs` names, in the order given."""
    return [s.url for s in servers if s.can_run(needs)]


class FormCheck(BaseModel):
    """One form of a template (its graph or a variant) against one server."""

    model_config = ConfigDict(frozen=True)

    variant: str  # "" for the template's own graph
    server: str
    missing: Missing


class TemplateCheck(BaseModel):
    """`stationthis comfy check`'s verdict on one template: which servers can run which form."""

    model_config = ConfigDict(frozen=True)

    template: str
    forms: list[FormCheck]

    @property
    def runnable(self) -> bool:
        return any(not f.missing for f in self.forms)

    def able(self) -> list[FormCheck]:
        return [f for f in self.forms if not f.missing]


def check_template(
    template: Any,
    servers: Iterable[ServerInventory],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> TemplateCheck:
    """Every form of `template` (domain.templates.Template) against every server.

    A form needs its graph as stored and every operator-chosen value of `choices` (each
    upscale model, each family's base checkpoint), with `overrides` (input -> key -> value,
    from the config) in place of the template's own; so a server "can run" a template only
    when every choice a user may make works there.
    """
    choices: dict[str, dict[str, Any]] = {k: dict(v) for k, v in template.choices.items()}
    for name, values in (overrides or {}).items():
        choices.setdefault(name, {}).update(values)
    listed = list(servers)
    out: list[FormCheck] = []
    # An input with choices always gets one of them injected, so the graph's own literal there
    # (a placeholder such as `4x-standin.safetensors`) is never sent and is not asked for: each
    # choice is checked with the other chosen inputs at one of their choices.
    chosen = {name: next(iter(values.values())) for name, values in choices.items() if values}
    for form in template.forms():
        base = {k: v for k, v in chosen.items() if k in form.inputs}
        needs = form.requirements(base)
        for name, values in choices.items():
            if name not in form.inputs:
                continue
            for value in values.values():
                needs = needs.merged(form.requirements({**base, name: value}))
        out.extend(
            FormCheck(variant=form.variant, server=s.url, missing=s.missing(needs)) for s in listed
        )
    return TemplateCheck(template=template.name, forms=out)
