"""Collection rules: trait lines, the master prompt, seeded choice, the config hash."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.collections import (
    CollectionConfig,
    CollectionError,
    TraitType,
    TraitValue,
    choose_traits,
    combination_count,
    config_hash,
    parse_master_prompt,
    parse_trait_lines,
    recover_traits,
    render_prompt,
    validate_config,
)


def fox() -> CollectionConfig:
    return CollectionConfig(
        master_prompt="a fox [wearing [[Hat]]] [holding [[Item]]]{Hat,Item} in [[Place]]",
        traits=[
            TraitType(name="Hat", values=parse_trait_lines("top hat|a black top hat|1\nnone|''|1")),
            TraitType(name="Item", values=parse_trait_lines("sword|a sword|1\nempty||1")),
            TraitType(name="Place", values=parse_trait_lines("snow|deep snow|3\nforest||1")),
        ],
    )


def test_trait_lines_default_prompt_to_name_and_rarity_to_half() -> None:
    values = parse_trait_lines("red\nblue|deep blue\ngold|golden|0.1\n# comment\n\nnull")
    assert [(v.name, v.prompt, v.rarity) for v in values] == [
        ("red", "red", 0.5),
        ("blue", "deep blue", 0.5),
        ("gold", "golden", 0.1),
        ("null", "", 0.5),
    ]
    assert values[-1].empty and not values[0].empty


@pytest.mark.parametrize(
    ("lines", "needle"),
    [("red|red|often", "line 1: rarity 'often' is not a number"), ("a|a|-1", "≥ 0")],
)
def test_a_bad_rarity_is_refused_with_its_line(lines: str, needle: str) -> None:
    with pytest.raises(CollectionError, match=needle):
        parse_trait_lines(lines)


def test_unbalanced_brackets_and_unknown_traits_name_the_position() -> None:
    with pytest.raises(CollectionError, match="'\\[' at column 3 is never closed"):
        parse_master_prompt("a [b [[Hat]]", ["Hat"])
    with pytest.raises(CollectionError, match="']' at column 2 closes nothing"):
        parse_master_prompt("a] b", ["Hat"])
    with pytest.raises(CollectionError, match="unknown trait 'Hta' at column 7"):
        parse_master_prompt("a fox [[Hta]]", ["Hat"])


def test_an_empty_trait_drops_its_optional_group() -> None:
    cfg = fox()
    assert render_prompt(cfg, {"Hat": "none", "Item": None, "Place": "snow"}) == (
        "a fox in deep snow"
    )
    assert render_prompt(cfg, {"Hat": "top hat", "Item": None, "Place": "forest"}) == (
        "a fox wearing a black top hat in forest"
    )


def test_exclusive_traits_are_never_both_chosen() -> None:
    cfg = fox()
    master = parse_master_prompt(cfg.master_prompt)
    for seed in range(500):
        c = choose_traits(cfg, seed, master)
        assert not (c["Hat"] and c["Item"])


def test_the_same_seed_gives_the_same_piece() -> None:
    cfg = fox()
    assert all(choose_traits(cfg, s) == choose_traits(cfg, s) for s in range(50))
    assert len({str(choose_traits(cfg, s)) for s in range(50)}) > 1


def test_combinations_are_the_product_of_value_counts() -> None:
    assert combination_count(fox()) == 8


def test_a_supply_above_the_combinations_needs_duplicates_allowed() -> None:
    with pytest.raises(CollectionError, match="more than the 8 possible combinations"):
        validate_config(fox(), 9, cooking=True)
    validate_config(fox().model_copy(update={"allow_duplicates": True}), 9, cooking=True)


# ---- properties -------------------------------------------------------------------------

names = st.sampled_from(["Hat", "Eyes", "Fur", "Sky"])
words = st.lists(st.sampled_from(["a", "fox", "with", "under", "bright", "the"]), max_size=3)


@st.composite
def configs(draw: st.DrawFn) -> CollectionConfig:
    traits = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    types = []
    for t in traits:
        n = draw(st.integers(1, 4))
        values = [
            TraitValue(name=f"{t.lower()}{i}", prompt=f"{t.lower()}-v{i}", rarity=1.0)
            for i in range(n)
        ]
        if draw(st.booleans()):
            values.append(TraitValue(name="empty", prompt="", rarity=1.0))
        types.append(TraitType(name=t, values=values))
    parts = []
    for t in traits:
        pre = " ".join(draw(words))
        slot = f"[[{t}]]"
        parts.append(f"[{pre} {slot}]" if draw(st.booleans()) else f"{pre} {slot}")
    return CollectionConfig(master_prompt=" ".join(parts), traits=types)


@settings(max_examples=150, deadline=None)
@given(configs(), st.integers(0, 2**32 - 1))
def test_every_generated_prompt_parses_back_to_the_chosen_traits(
    cfg: CollectionConfig, seed: int
) -> None:
    choice = choose_traits(cfg, seed)
    prompt = render_prompt(cfg, choice)
    recovered = recover_traits(cfg, prompt)
    expected = {k: (None if v == "empty" else v) for k, v in choice.items()}
    assert recovered == expected, prompt


def test_choices_follow_the_rarity_weights() -> None:
    cfg = CollectionConfig(
        master_prompt="[[Fur]]",
        traits=[
            TraitType(name="Fur", values=parse_trait_lines("gold|gold|1\nred|red|3\ngrey|grey|6"))
        ],
    )
    n = 6000
    counts = Counter(choose_traits(cfg, s)["Fur"] for s in range(n))
    for name, share in (("gold", 0.1), ("red", 0.3), ("grey", 0.6)):
        expected = n * share
        sd = (n * share * (1 - share)) ** 0.5
        assert abs(counts[name] - expected) < 4 * sd, counts


@settings(max_examples=60, deadline=None)
@given(configs(), st.integers(1, 50), st.text(min_size=1, max_size=10))
def test_the_hash_changes_with_prompt_edits_and_not_with_a_rename(
    cfg: CollectionConfig, supply: int, extra: str
) -> None:
    h = config_hash(cfg, supply)
    assert config_hash(cfg, supply) == h  # a rename touches neither config nor supply
    assert config_hash(cfg, supply + 1) != h
    assert (
        config_hash(cfg.model_copy(update={"master_prompt": cfg.master_prompt + "!"}), supply) != h
    )
    t = cfg.traits[0]
    edited = t.model_copy(
        update={
            "values": [
                t.values[0].model_copy(update={"prompt": t.values[0].prompt + extra}),
                *t.values[1:],
            ]
        }
    )
    assert config_hash(cfg.model_copy(update={"traits": [edited, *cfg.traits[1:]]}), supply) != h
    added = t.model_copy(update={"values": [*t.values, TraitValue(name="new", prompt="new-x")]})
    assert config_hash(cfg.model_copy(update={"traits": [added, *cfg.traits[1:]]}), supply) != h
