"""Templates: graphs are validated on load, and values are injected as typed values only."""

from __future__ import annotations

import json

import pytest

from domain.errors import TemplateGraphError
from domain.templates import InputRef, Template, find_inputs, inject, validate_graph, version_hash
from tests.domain.graphs import EXPLICIT_INPUTS, template_file, txt2img_graph


def test_titled_nodes_and_the_explicit_map_declare_the_inputs() -> None:
    refs = find_inputs(txt2img_graph(), EXPLICIT_INPUTS)
    assert refs["prompt"] == InputRef(node="6", input="text")  # input_prompt: single literal
    assert refs["negative"] == InputRef(node="7", input="text")
    assert refs["checkpoint"] == InputRef(node="4", input="ckpt_name")
    assert refs["seed"] == InputRef(node="3", input="seed")
    assert set(refs) == {"prompt", "negative", "checkpoint", *EXPLICIT_INPUTS}


def test_a_title_naming_an_input_picks_that_input() -> None:
    g = txt2img_graph()
    g["5"]["_meta"]["title"] = "input_width"
    assert find_inputs(g)["width"] == InputRef(node="5", input="width")


def test_the_explicit_map_wins_over_a_title() -> None:
    g = txt2img_graph()
    assert find_inputs(g, {"prompt": ["7", "text"]})["prompt"] == InputRef(node="7", input="text")


def test_an_ambiguous_title_is_refused_naming_the_node() -> None:
    g = txt2img_graph()
    g["5"]["_meta"]["title"] = "input_size"  # three literal inputs, none called size
    with pytest.raises(TemplateGraphError, match="node 5"):
        find_inputs(g)


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda g: g["3"].pop("class_type"), "node 3 has no class_type"),
        (lambda g: g["8"].update(inputs=None), "node 8 .VAEDecode. has no inputs"),
        (lambda g: g["8"]["inputs"].update(samples=["42", 0]), "node 8 .* missing node '42'"),
        (lambda g: g["8"]["inputs"].update(samples=[3, 0]), "node 8 .* missing node 3"),
        (lambda g: g.pop("9"), "no output node"),
        (lambda g: g.update({"10": "not a node"}), "node 10 must be an object"),
    ],
)
def test_malformed_graphs_are_refused_with_the_node_named(break_it, message) -> None:
    g = txt2img_graph()
    break_it(g)
    with pytest.raises(TemplateGraphError, match=message):
        validate_graph(g)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"seed": ["99", "seed"]}, "missing node '99'"),
        ({"seed": ["3", "sed"]}, "no input 'sed'"),
        ({"seed": ["3", "model"]}, "is a link"),
        ({"seed": ["3"]}, "input 'seed'"),
    ],
)
def test_an_input_map_must_point_at_existing_literal_inputs(inputs, message) -> None:
    with pytest.raises(TemplateGraphError, match=message):
        validate_graph(txt2img_graph(), inputs)


def test_validation_accepts_every_output_class() -> None:
    for cls in ("SaveImage", "PreviewImage", "PreviewAny", "SaveLoRA"):
        g = txt2img_graph()
        g["9"]["class_type"] = cls
        validate_graph(g)
    with pytest.raises(TemplateGraphError):
        validate_graph({})


def test_injection_sets_typed_values_in_a_copy() -> None:
    g = txt2img_graph()
    refs = find_inputs(g, EXPLICIT_INPUTS)
    nasty = 'a "quoted" cat}, "9": {"class_type": "Evil"'
    out = inject(g, {"prompt": nasty, "seed": 42, "cfg": 6.5, "width": 832}, refs)
    assert out["6"]["inputs"]["text"] == nasty
    assert out["3"]["inputs"]["seed"] == 42 and isinstance(out["3"]["inputs"]["seed"], int)
    assert out["3"]["inputs"]["cfg"] == 6.5
    assert out["5"]["inputs"]["width"] == 832
    assert out["9"]["class_type"] == "SaveImage" and set(out) == set(g)
    assert g == txt2img_graph()  # the original is untouched
    out["3"]["inputs"]["model"].append("x")
    assert g["3"]["inputs"]["model"] == ["4", 0]  # deep copy, links not shared


def test_injecting_an_unknown_input_or_a_wrong_type_is_refused() -> None:
    g = txt2img_graph()
    with pytest.raises(TemplateGraphError, match=r"no input 'lora'.*prompt"):
        inject(g, {"lora": "x"})
    with pytest.raises(TemplateGraphError, match="expects int, got str"):
        inject(g, {"seed": "42"}, find_inputs(g, EXPLICIT_INPUTS))
    with pytest.raises(TemplateGraphError, match="expects str"):
        inject(g, {"prompt": None})


def test_the_version_hash_ignores_key_order_and_whitespace() -> None:
    g = txt2img_graph()
    shuffled = json.loads(json.dumps(dict(reversed(list(g.items()))), indent=4))
    assert version_hash(shuffled) == version_hash(g)
    g["3"]["inputs"]["steps"] = 21
    assert version_hash(g) != version_hash(shuffled)
    assert len(version_hash(g)) == 64


def test_a_template_file_becomes_a_template_with_its_price_base() -> None:
    t = Template.parse(template_file(price_base=None, family="flux"))
    assert t.base_price == 20
    assert Template.parse(template_file()).base_price == 10
    assert t.outputs() == ["9"]
    assert t.inject({"prompt": "a dog"})["6"]["inputs"]["text"] == "a dog"
    assert Template.parse(t.definition()) == t


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kind": "video"}, "kind"),
        ({"name": "has space"}, "name"),
        ({"graph": {}}, "graph"),
        ({"inputs": {"seed": ["3", "nope"]}}, "no input 'nope'"),
    ],
)
def test_a_bad_template_file_is_refused_with_a_reason(overrides, message) -> None:
    with pytest.raises(TemplateGraphError, match=message):
        Template.parse(template_file(**overrides), source="make.json")
