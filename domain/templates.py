"""ComfyUI templates: API-format graphs with named, injectable inputs (docs/domain.md "Templates").

A graph is `{node_id: {"class_type": str, "inputs": {name: literal | [node_id, output_index]},
"_meta": {"title": str}}}`. A template names some literal inputs (`prompt`, `seed`, ...) either
through an explicit `inputs` map (`{"prompt": ["6", "text"]}`, authoritative) or by titling a node
`input_<name>`. Values are injected into a deep copy as typed JSON values — never by string
substitution — so a prompt full of quotes or braces cannot change the graph's shape.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Collection, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from domain.errors import TemplateGraphError
from domain.inventory import Requirements, requirements_of
from domain.pricing import family_base

TemplateKind = Literal["txt2img", "img2img", "upscale", "rmbg", "caption", "train_lora"]
TEMPLATE_KINDS: tuple[str, ...] = ("txt2img", "img2img", "upscale", "rmbg", "caption", "train_lora")
# SaveLoRANode is 0.3.64 core's id of SaveLoRA (train-lora.json's core-0.3.64 variant).
OUTPUT_CLASSES: frozenset[str] = frozenset(
    {"SaveImage", "PreviewImage", "PreviewAny", "SaveLoRA", "SaveLoRANode"}
)
INPUT_TITLE_PREFIX = "input_"
# How deeply an input's literal value may nest (lists in lists, objects in objects). Real
# ComfyUI inputs nest a level or two; a deeper value would break hashing (RecursionError) and
# storing (BSON allows 100 levels for the whole document) instead of being refused.
MAX_VALUE_DEPTH = 32

Graph = dict[str, Any]


class InputRef(BaseModel):
    """Where a named template input lives: node id and the name of one of its inputs."""

    model_config = ConfigDict(frozen=True)

    node: str
    input: str

    @model_validator(mode="before")
    @classmethod
    def _from_pair(cls, data: Any) -> Any:
        """Accept the template-file form `["6", "text"]` as well as `{"node", "input"}`."""
        if isinstance(data, list | tuple):
            if len(data) != 2:
                raise ValueError(f"an input reference is [node_id, input_name], got {data!r}")
            return {"node": str(data[0]), "input": str(data[1])}
        return data

    def as_pair(self) -> list[str]:
        return [self.node, self.input]


def is_link(value: Any) -> bool:
    """A link in API format is `[source_node_id, output_index]`."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str | int)
        and not isinstance(value[0], bool)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def _node_title(node: Any) -> str:
    if not isinstance(node, Mapping):
        return ""
    meta = node.get("_meta")
    title = meta.get("title") if isinstance(meta, Mapping) else None
    return title.strip() if isinstance(title, str) else ""


def find_inputs(
    graph: Mapping[str, Any], explicit: Mapping[str, Any] | None = None
) -> dict[str, InputRef]:
    """The template's named inputs: titled `input_<name>` nodes, overridden by `explicit`.

    A node titled `input_<name>` declares input `<name>` as its own input called `<name>` if it
    has one, else its single literal (non-link) input; anything else is ambiguous and refused.
    """
    found: dict[str, InputRef] = {}
    for node_id, node in graph.items():
        title = _node_title(node)
        if not title.startswith(INPUT_TITLE_PREFIX) or len(title) == len(INPUT_TITLE_PREFIX):
            continue
        name = title[len(INPUT_TITLE_PREFIX) :]
        inputs = node.get("inputs") if isinstance(node, Mapping) else None
        if not isinstance(inputs, Mapping):
            raise TemplateGraphError(f"node {node_id} ({title}) has no inputs to inject into")
        if name in inputs:
            ref = InputRef(node=str(node_id), input=name)
        else:
            literals = [k for k, v in inputs.items() if not is_link(v)]
            if len(literals) != 1:
                raise TemplateGraphError(
                    f"node {node_id} is titled {title!r} but has no input named {name!r} and "
                    f"{len(literals)} literal inputs ({', '.join(literals) or 'none'}); "
                    f"rename the input or add it to the template's inputs map"
                )
            ref = InputRef(node=str(node_id), input=literals[0])
        if name in found and found[name] != ref:
            raise TemplateGraphError(
                f"input {name!r} is declared twice: node {found[name].node} and node {node_id}"
            )
        found[name] = ref
    for name, raw in (explicit or {}).items():
        try:
            found[str(name)] = raw if isinstance(raw, InputRef) else InputRef.model_validate(raw)
        except ValueError as e:
            raise TemplateGraphError(f"input {name!r}: {e}") from None
    return found


def validate_graph(graph: Any, explicit: Mapping[str, Any] | None = None) -> dict[str, InputRef]:
    """Check a graph can be a template and return its input map; TemplateGraphError otherwise.

    Checks: every node has a `class_type` string and an `inputs` dict; every link points at an
    existing node id (a string key of the graph) with a non-negative output index; at least one
    node is an output class; every named input refers to an existing node and a literal input.
    """
    if not isinstance(graph, Mapping) or not graph:
        raise TemplateGraphError("the graph must be a non-empty JSON object of nodes (API format)")
    for node_id, node in graph.items():
        if not isinstance(node_id, str):
            raise TemplateGraphError(f"node id {node_id!r} must be a string")
        if not isinstance(node, Mapping):
            raise TemplateGraphError(f"node {node_id} must be an object")
        cls = node.get("class_type")
        if not isinstance(cls, str) or not cls:
            raise TemplateGraphError(f"node {node_id} has no class_type")
        inputs = node.get("inputs")
        if not isinstance(inputs, Mapping):
            raise TemplateGraphError(f"node {node_id} ({cls}) has no inputs object")
        for name, value in inputs.items():
            if _too_deep(value, MAX_VALUE_DEPTH):
                raise TemplateGraphError(
                    f"node {node_id} ({cls}) input {name!r} is nested more than "
                    f"{MAX_VALUE_DEPTH} levels deep"
                )
            if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
                src = value[0]
                if not isinstance(src, str) or src not in graph:
                    shown = repr(src) if len(repr(src)) <= 80 else repr(src)[:77] + "..."
                    raise TemplateGraphError(
                        f"node {node_id} ({cls}) input {name!r} links to missing node {shown}"
                    )
                if value[1] < 0:
                    raise TemplateGraphError(
                        f"node {node_id} ({cls}) input {name!r} links to output {value[1]}"
                    )
    if not any(node["class_type"] in OUTPUT_CLASSES for node in graph.values()):
        raise TemplateGraphError(
            f"the graph has no output node (one of {', '.join(sorted(OUTPUT_CLASSES))})"
        )
    refs = find_inputs(graph, explicit)
    for name, ref in refs.items():
        node = graph.get(ref.node)
        if node is None:
            raise TemplateGraphError(f"input {name!r} refers to missing node {ref.node!r}")
        if ref.input not in node["inputs"]:
            raise TemplateGraphError(
                f"input {name!r} refers to node {ref.node} ({node['class_type']}) which has no "
                f"input {ref.input!r} (it has: {', '.join(node['inputs']) or 'none'})"
            )
        if is_link(node["inputs"][ref.input]):
            raise TemplateGraphError(
                f"input {name!r} refers to node {ref.node} input {ref.input!r}, which is a link; "
                f"only literal inputs can be injected"
            )
    return refs


def _too_deep(value: Any, limit: int) -> bool:
    """Whether `value` nests lists/objects more than `limit` levels (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def output_nodes(graph: Mapping[str, Any]) -> list[str]:
    """Ids of the graph's output nodes, in a stable order."""
    return sorted(
        (nid for nid, node in graph.items() if node.get("class_type") in OUTPUT_CLASSES),
        key=lambda s: (len(s), s),
    )


def _compatible(old: Any, new: Any) -> bool:
    """Same JSON type as what the graph holds (int and float are interchangeable)."""
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, int | float):
        return isinstance(new, int | float)
    if isinstance(old, str):
        return isinstance(new, str)
    return new is not None


def inject(
    graph: Mapping[str, Any],
    values: Mapping[str, Any],
    inputs: Mapping[str, InputRef] | None = None,
) -> Graph:
    """A deep copy of `graph` with each named input set to its typed value.

    `inputs` is the template's input map (default: `find_inputs(graph)`). An unknown name, a
    value of another JSON type than the one it replaces (text for a number, say) or None raises
    TemplateGraphError and nothing is returned.
    """
    refs = find_inputs(graph) if inputs is None else inputs
    out: Graph = copy.deepcopy(dict(graph))
    for name, value in values.items():
        ref = refs.get(name)
        if ref is None:
            raise TemplateGraphError(
                f"the template has no input {name!r} (it has: {', '.join(sorted(refs)) or 'none'})"
            )
        node = out.get(ref.node)
        if not isinstance(node, dict) or ref.input not in node.get("inputs", {}):
            raise TemplateGraphError(f"input {name!r} refers to a missing node or input")
        old = node["inputs"][ref.input]
        if not _compatible(old, value):
            raise TemplateGraphError(
                f"input {name!r} expects {type(old).__name__}, got {type(value).__name__}"
            )
        node["inputs"][ref.input] = copy.deepcopy(value)
    return out


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def version_hash(graph: Any) -> str:
    """sha256 (hex) of the canonical JSON: key order and whitespace do not change it."""
    return hashlib.sha256(canonical_json(graph).encode("utf-8")).hexdigest()


class TemplateVariant(BaseModel):
    """Another graph for the same job, for servers of another version or with other nodes
    (e.g. a training graph without the dataset-folder nodes, which ComfyUI 0.3.64 core lacks).

    It takes the same named inputs as the template's own graph, so a planner injects the same
    values whichever form it runs; the first form (the template's graph, then the variants in
    file order) a server can run is the one used."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    graph: Graph
    inputs: dict[str, InputRef] = Field(default_factory=dict)
    # Node types the comfy worker adds when it builds the job's graph (the 0.3.64 training
    # variant's ImageBatch per dataset image): needed of a server like the graph's own.
    adds_nodes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _validate(self) -> TemplateVariant:
        refs = validate_graph(self.graph, self.inputs)
        object.__setattr__(self, "inputs", refs)
        return self

    def definition(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "graph": self.graph,
            "inputs": {k: v.as_pair() for k, v in sorted(self.inputs.items())},
        }
        if self.adds_nodes:
            out["adds_nodes"] = list(self.adds_nodes)
        return out


class Template(BaseModel):
    """A validated template. `hash` covers everything that changes behaviour or price.

    `choices` are operator-chosen values of named inputs, by key: the upscale model per factor
    (`{"model": {"2": "RealESRGAN_x2.pth", "4": "RealESRGAN_x4plus.pth"}}`), the base
    checkpoint per training family. They live here (or in the config), never in code, so a
    real server's file names need no renaming. `variant` is set only on a form returned by
    `forms()`: the variant's name, "" for the template's own graph.
    """

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: TemplateKind
    family: str = "sdxl"
    price_base: int | None = Field(default=None, ge=0)
    description: str = ""
    graph: Graph
    inputs: dict[str, InputRef] = Field(default_factory=dict)
    choices: dict[str, dict[str, Any]] = Field(default_factory=dict)
    variants: list[TemplateVariant] = Field(default_factory=list)
    variant: str = ""
    adds_nodes: list[str] = Field(default_factory=list)  # set from the variant by forms()

    @field_validator("graph")
    @classmethod
    def _graph_is_object(cls, v: Graph) -> Graph:
        if not v:
            raise ValueError("the graph is empty")
        return v

    @model_validator(mode="after")
    def _validate(self) -> Template:
        # Resolve titled inputs into the explicit map so the stored template is self-describing.
        refs = validate_graph(self.graph, self.inputs)
        object.__setattr__(self, "inputs", refs)
        for input_name, options in self.choices.items():
            if input_name not in refs:
                raise TemplateGraphError(
                    f"choices for {input_name!r}: the template has no such input "
                    f"(it has: {', '.join(sorted(refs)) or 'none'})"
                )
            for key, value in options.items():
                self.inject({input_name: value})  # refused here if the type does not fit
                if not isinstance(key, str) or not key:
                    raise TemplateGraphError(f"choices for {input_name!r}: empty key")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise TemplateGraphError("two variants have the same name")
        for v in self.variants:
            lacking = sorted(set(refs) - set(v.inputs))
            if lacking:
                raise TemplateGraphError(
                    f"variant {v.name!r} lacks the template's input(s) {', '.join(lacking)}"
                )
        return self

    def forms(self) -> list[Template]:
        """The template's own graph, then each variant as a template of the same name (with
        `variant` set), in the order a job tries them."""
        out = [self.model_copy(update={"variants": []})] if self.variants else [self]
        for v in self.variants:
            out.append(
                self.model_copy(
                    update={
                        "graph": v.graph,
                        "inputs": v.inputs,
                        "variants": [],
                        "variant": v.name,
                        "adds_nodes": list(v.adds_nodes),
                        "description": v.description or self.description,
                    }
                )
            )
        return out

    def requirements(
        self, values: Mapping[str, Any] | None = None, *, fetched: Collection[str] = ()
    ) -> Requirements:
        """What a server needs to run this form with `values` injected: the graph's node
        types and loader files, and the nodes the worker adds (`adds_nodes`)."""
        graph = self.inject(values) if values else self.graph
        needs = requirements_of(graph, fetched=fetched)
        if self.adds_nodes:
            needs = needs.merged(Requirements(node_types=frozenset(self.adds_nodes)))
        return needs

    def choice(self, input_name: str, key: str) -> Any:
        """The operator-chosen value of `input_name` for `key` (None when none is set)."""
        return self.choices.get(input_name, {}).get(key)

    @property
    def base_price(self) -> int:
        """The template's own base, else the family's (docs/domain.md "Prices")."""
        return self.price_base if self.price_base is not None else family_base(self.family)

    @property
    def hash(self) -> str:
        return version_hash(self.definition())

    def definition(self) -> dict[str, Any]:
        """The template as JSON (the file format), inputs as `[node, input]` pairs."""
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "family": self.family,
            "price_base": self.price_base,
            "description": self.description,
            "graph": self.graph,
            "inputs": {k: v.as_pair() for k, v in sorted(self.inputs.items())},
        }
        # Only when set, so the hash (and version) of a template without them is unchanged.
        if self.choices:
            out["choices"] = self.choices
        if self.variants:
            out["variants"] = [v.definition() for v in self.variants]
        return out

    def inject(self, values: Mapping[str, Any]) -> Graph:
        return inject(self.graph, values, self.inputs)

    def outputs(self) -> list[str]:
        return output_nodes(self.graph)

    @classmethod
    def parse(cls, data: Any, *, source: str = "template") -> Template:
        """Build from a template file's JSON, turning every problem into TemplateGraphError."""
        if not isinstance(data, Mapping):
            raise TemplateGraphError(f"{source}: expected a JSON object")
        try:
            return cls.model_validate(dict(data))
        except TemplateGraphError as e:
            raise TemplateGraphError(f"{source}: {e.message}") from None
        except ValueError as e:
            raise TemplateGraphError(f"{source}: {_first_error(e)}") from None


def _first_error(e: ValueError) -> str:
    errors = getattr(e, "errors", None)
    if callable(errors):
        parts = []
        for err in errors()[:3]:
            ctx = err.get("ctx", {}).get("error")
            if isinstance(ctx, TemplateGraphError):
                return ctx.message
            loc = ".".join(str(p) for p in err.get("loc", ())) or "template"
            parts.append(f"{loc}: {err.get('msg')}")
        return "; ".join(parts)
    return str(e)
