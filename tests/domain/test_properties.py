"""Properties of the domain rules, checked over many generated cases (hypothesis)."""

from __future__ import annotations

import unicodedata
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.pricing import quote_image
from domain.prompts import strip_controls
from domain.settings import Limits, UserSettings, clamp_to_limits, limits_for, validate_setting
from domain.templates import find_inputs, inject, is_link
from tests.domain.graphs import EXPLICIT_INPUTS, txt2img_graph

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

limits_st = st.builds(
    Limits,
    max_size=st.integers(256, 4096),
    max_batch=st.integers(1, 8),
    max_steps=st.integers(1, 80),
)
points_st = st.integers(-1000, 100_000)
any_number = st.one_of(
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-100, 5000).map(str),
    st.floats(-50, 50).map(lambda f: f"{f:.2f}"),
)


@FAST
@given(limits=limits_st, value=any_number, group=st.booleans())
def test_validation_never_accepts_a_value_outside_its_range(
    limits: Limits, value: Any, group: bool
) -> None:
    for field in ("width", "height", "steps", "batch", "seed", "cfg", "strength"):
        try:
            v = validate_setting(field, value, limits, group_chat=group)
        except ValueError:
            continue
        if field in ("width", "height"):
            assert 256 <= v <= limits.max_size and v % 8 == 0
        elif field == "steps":
            assert 1 <= v <= limits.max_steps
        elif field == "batch":
            assert 1 <= v <= (1 if group else limits.max_batch)
        elif field == "seed":
            assert v == -1 or 0 <= v <= 2**32 - 1
        elif field == "cfg":
            assert 0 <= v <= 30 and round(v, 1) == v
        else:
            assert 0 <= v <= 1


@FAST
@given(
    w=st.integers(1, 4096),
    h=st.integers(1, 4096),
    steps=st.integers(1, 200),
    batch=st.integers(1, 8),
    base=st.sampled_from([10, 20, 0, 37]),
    dim=st.sampled_from(["w", "h", "steps", "batch"]),
    bump=st.integers(1, 500),
)
def test_a_quote_is_positive_and_never_falls_when_a_job_grows(
    w: int, h: int, steps: int, batch: int, base: int, dim: str, bump: int
) -> None:
    args = {"w": w, "h": h, "steps": steps, "batch": batch}
    q = quote_image(args["w"], args["h"], args["steps"], args["batch"], base=base)
    assert q > 0
    args[dim] += bump
    assert quote_image(args["w"], args["h"], args["steps"], args["batch"], base=base) >= q


REFS = find_inputs(txt2img_graph(), EXPLICIT_INPUTS)
VALUE_FOR = {
    "prompt": st.text(max_size=50),
    "negative": st.text(max_size=50),
    "checkpoint": st.text(min_size=1, max_size=20),
    "sampler": st.sampled_from(["euler", "ddim"]),
    "scheduler": st.sampled_from(["normal", "karras"]),
    "seed": st.integers(0, 2**32 - 1),
    "steps": st.integers(1, 48),
    "cfg": st.floats(0, 30, allow_nan=False),
    "width": st.integers(32, 256).map(lambda n: n * 8),
    "height": st.integers(32, 256).map(lambda n: n * 8),
    "batch": st.integers(1, 6),
}


@FAST
@given(values=st.fixed_dictionaries({}, optional=VALUE_FOR))
def test_injection_changes_only_the_named_inputs(values: dict[str, Any]) -> None:
    graph = txt2img_graph()
    out = inject(graph, values, REFS)
    assert graph == txt2img_graph()
    assert set(out) == set(graph)
    named = {(REFS[n].node, REFS[n].input): v for n, v in values.items()}
    for node_id, node in graph.items():
        assert out[node_id]["class_type"] == node["class_type"]
        assert out[node_id].get("_meta") == node.get("_meta")
        assert set(out[node_id]["inputs"]) == set(node["inputs"])
        for name, old in node["inputs"].items():
            new = out[node_id]["inputs"][name]
            if (node_id, name) in named:
                assert new == named[(node_id, name)] and not is_link(old)
            else:
                assert new == old


saved_settings_st = st.builds(
    UserSettings,
    width=st.integers(32, 512).map(lambda n: n * 8),
    height=st.integers(32, 512).map(lambda n: n * 8),
    steps=st.integers(1, 100),
    batch=st.integers(1, 10),
)


@FAST
@given(saved=saved_settings_st, limits=limits_st)
def test_clamping_never_raises_a_value_and_fits_the_limits(
    saved: UserSettings, limits: Limits
) -> None:
    used, clamps = clamp_to_limits(saved, limits)
    for field, cap in (
        ("width", limits.max_size),
        ("height", limits.max_size),
        ("steps", limits.max_steps),
        ("batch", limits.max_batch),
    ):
        before, after = getattr(saved, field), getattr(used, field)
        assert after <= before and after <= cap
        assert (after != before) == any(c.field == field for c in clamps)
    assert {c.field for c in clamps} <= {"width", "height", "steps", "batch"}
    assert used.model_dump(exclude={"width", "height", "steps", "batch"}) == saved.model_dump(
        exclude={"width", "height", "steps", "batch"}
    )


@FAST
@given(a=points_st, b=points_st)
def test_limits_never_shrink_as_the_balance_grows(a: int, b: int) -> None:
    low, high = limits_for(min(a, b)), limits_for(max(a, b))
    assert low.max_size <= high.max_size <= 2048
    assert low.max_batch <= high.max_batch <= 6
    assert low.max_steps <= high.max_steps <= 48
    assert low.max_size >= 1024 and low.max_batch >= 1 and low.max_steps >= 30


@FAST
@given(text=st.text(max_size=80))
def test_a_negative_prompt_is_cleaned_like_the_prompt(text: str) -> None:
    """Control characters (ANSI escapes, NUL, bidi overrides) never reach the graph's text."""
    value = validate_setting("negative", text + "\x1b[2J\x00\u202e", limits_for(0))
    assert value == strip_controls(text + "\x1b[2J\x00\u202e")
    assert all(ch in "\n\t" or unicodedata.category(ch)[0] != "C" for ch in value)
