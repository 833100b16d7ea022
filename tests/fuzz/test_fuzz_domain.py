"""Bad input at the domain and store level, fast: hypothesis-generated and corpus cases for
prompts, settings, template graphs and collection input. Every refusal must be a clear
StationError; a refused settings bulk update, template load or collection edit changes nothing
in MongoDB."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.checkpoints import check_checkpoint, checkpoint_inventory
from domain.collections import CollectionConfig, parse_master_prompt, parse_trait_lines
from domain.errors import StationError
from domain.prompts import clean_prompt
from domain.rules import DomainRules
from domain.settings import UserSettings, apply_updates, limits_for
from domain.templates import Template, validate_graph
from domain.training import LoraModel, check_trigger_word, loras_for_prompt
from media.safety import load_image
from store.db import Stores
from store.templates import read_template_file
from tests.fuzz import corpus
from tests.fuzz.conftest import SCALE
from tests.fuzz.tally import Tally, check_refusal

FAST = settings(
    max_examples=60 * SCALE,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


def _refuse(tally: Tally, entry: str, case: object, call: Any) -> None:
    """`call()` must raise a clear StationError; count it."""
    try:
        call()
    except BaseException as err:
        check_refusal(tally, entry, err, case)
        return
    tally.crash(entry)
    raise AssertionError(f"{entry}: accepted bad input {str(case)[:200]!r}")


# ---- prompts ---------------------------------------------------------------------------------


def test_every_malformed_prompt_is_refused_with_a_clear_reason(fuzz_tally: Tally) -> None:
    for label, prompt in corpus.bad_prompts(SCALE):
        _refuse(fuzz_tally, "domain.clean_prompt", label, lambda p=prompt: clean_prompt(p))


@FAST
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=2100) | corpus.json_leaf)
def test_any_prompt_is_cleaned_or_refused_never_crashes(fuzz_tally: Tally, text: Any) -> None:
    try:
        cleaned = clean_prompt(text)
    except BaseException as err:
        check_refusal(fuzz_tally, "domain.clean_prompt", err, text)
        return
    fuzz_tally.accepted("domain.clean_prompt")
    assert 1 <= len(cleaned) <= 2000 and cleaned == cleaned.strip()


# ---- trained models and checkpoints ---------------------------------------------------------


def test_every_trigger_word_that_could_occur_by_chance_is_refused(fuzz_tally: Tally) -> None:
    for label, word in corpus.bad_trigger_words():
        _refuse(
            fuzz_tally, "domain.check_trigger_word", label, lambda w=word: check_trigger_word(w)
        )


def test_every_prompt_stacking_or_naming_unknown_loras_is_refused(fuzz_tally: Tally) -> None:
    public = [
        LoraModel(name=f"m{i}", owner="a", trigger_word=f"zqm{i}", blob_id=f"b{i}", filename="f")
        for i in range(4)
    ]
    for label, prompt in corpus.lora_stacking_prompts(3, [m.name for m in public]):
        _refuse(
            fuzz_tally,
            "domain.loras_for_prompt",
            label,
            lambda p=prompt: loras_for_prompt(p, [], public, max_loras=3),
        )


def test_every_checkpoint_outside_the_templates_family_is_refused(fuzz_tally: Tally) -> None:
    bundled = [read_template_file(p) for p in corpus.bundled_template_files()]
    make = next(t for t in bundled if t.name == "make")
    inventory = checkpoint_inventory(bundled)
    for name in corpus.BAD_CHECKPOINTS:
        _refuse(
            fuzz_tally,
            "domain.check_checkpoint",
            name[:40],
            lambda n=name: check_checkpoint(n, make, inventory),
        )


# ---- settings --------------------------------------------------------------------------------


def test_every_bad_setting_is_refused_naming_the_field(fuzz_tally: Tally) -> None:
    limits = limits_for(500)
    for label, update in corpus.bad_setting_updates(SCALE):
        try:
            apply_updates(UserSettings(), update, limits)
        except BaseException as err:
            check_refusal(fuzz_tally, "domain.apply_updates", err, label)
            bad = [f for f in update if f not in ("steps", "cfg", "width", "height", "sampler")]
            assert all(f in str(err) for f in bad if f), (label, str(err))
            continue
        fuzz_tally.crash("domain.apply_updates")
        raise AssertionError(f"accepted bad settings {label}")


@FAST
@given(st.dictionaries(corpus.setting_keys, corpus.setting_values, max_size=6))
def test_any_settings_update_is_all_or_nothing(fuzz_tally: Tally, update: dict[str, Any]) -> None:
    before = UserSettings()
    try:
        after = apply_updates(before, update, limits_for(500))
    except BaseException as err:
        check_refusal(fuzz_tally, "domain.apply_updates", err, update)
        return
    fuzz_tally.accepted("domain.apply_updates")
    # What was accepted round-trips through the model (no NaN, no stray type).
    assert UserSettings.model_validate(after.model_dump()) == after
    assert set(after.model_dump()) == set(before.model_dump())


@pytest.fixture(scope="module")
def stores(mongo_client: pymongo.MongoClient[dict[str, Any]]) -> Iterator[Stores]:
    name = f"fuzz_{uuid.uuid4().hex[:10]}"
    s = Stores(mongo_client[name], DomainRules(starter_grant=500))
    s.ensure_indexes()
    try:
        yield s
    finally:
        mongo_client.drop_database(name)


def test_a_bulk_settings_update_with_one_bad_field_saves_nothing(
    fuzz_tally: Tally, stores: Stores
) -> None:
    user = f"cli:fuzz-{uuid.uuid4().hex[:8]}"
    stores.users.get_or_create(user)
    saved = stores.settings.get(user)
    for label, update in corpus.bad_setting_updates(SCALE):
        _refuse(
            fuzz_tally,
            "store.SettingsRepo.update",
            label,
            lambda u=update: stores.settings.update(user, u),
        )
        assert stores.settings.get(user) == saved, f"{label} changed the saved settings"
    assert stores.ledger.balance(user) == 500


# ---- images (the pure safety gate; the stack run drives the same corpus end to end) --------


def test_every_bad_image_is_refused_by_the_safety_gate(fuzz_tally: Tally) -> None:
    for label, data in corpus.bad_images(SCALE):
        _refuse(fuzz_tally, "media.load_image", label, lambda d=data: load_image(d))
    for label, data in corpus.odd_good_images():
        loaded = load_image(data)
        assert loaded.image.mode in ("RGB", "RGBA"), label
        fuzz_tally.accepted("media.load_image")


@FAST
@given(st.binary(max_size=2048))
def test_random_bytes_are_never_a_crash(fuzz_tally: Tally, data: bytes) -> None:
    try:
        load_image(data)
    except BaseException as err:
        check_refusal(fuzz_tally, "media.load_image", err, data[:40])
        return
    fuzz_tally.accepted("media.load_image")


# ---- template graphs -------------------------------------------------------------------------


def test_every_broken_template_is_refused_and_nothing_is_stored(
    fuzz_tally: Tally, stores: Stores
) -> None:
    before = stores.db["templates"].count_documents({})
    for label, data in corpus.bad_templates():
        _refuse(fuzz_tally, "domain.Template.parse", label, lambda d=data: Template.parse(d))
        _refuse(
            fuzz_tally, "store.TemplateRepo.load", label, lambda d=data: stores.templates.load(d)
        )
    assert stores.db["templates"].count_documents({}) == before


def test_every_broken_template_file_is_refused(fuzz_tally: Tally, tmp_path: Path) -> None:
    for n, (label, data) in enumerate(corpus.bad_template_files()):
        path = tmp_path / f"t{n}.json"
        path.write_bytes(data)
        _refuse(fuzz_tally, "store.read_template_file", label, lambda p=path: read_template_file(p))


_graphs = st.dictionaries(
    st.sampled_from(["1", "2", "3", "9"]),
    st.fixed_dictionaries(
        {},
        optional={
            "class_type": st.sampled_from(["SaveImage", "KSampler", ""]) | corpus.json_leaf,
            "inputs": st.dictionaries(
                st.sampled_from(["image", "text", "seed"]),
                st.lists(st.sampled_from(["1", "2", "7"]) | st.integers(-2, 3), max_size=3)
                | corpus.json_leaf,
                max_size=3,
            )
            | corpus.json_values,
            "_meta": st.fixed_dictionaries({"title": st.sampled_from(["input_seed", "x", ""])}),
        },
    )
    | corpus.json_values,
    max_size=4,
)


@FAST
@given(_graphs | corpus.json_values, corpus.json_values)
def test_any_graph_is_a_template_or_a_clear_refusal(
    fuzz_tally: Tally, graph: Any, explicit: Any
) -> None:
    data = {"name": "fuzz", "kind": "txt2img", "graph": graph}
    if isinstance(explicit, dict):
        data["inputs"] = explicit
    try:
        template = Template.parse(data)
    except BaseException as err:
        check_refusal(fuzz_tally, "domain.Template.parse", err, data)
        return
    fuzz_tally.accepted("domain.Template.parse")
    assert template.outputs()
    # A parsed template passes its own check again (a graph with no named inputs maps to {}).
    assert validate_graph(template.graph, template.inputs) == dict(template.inputs)
    json.dumps(template.definition())  # storable as it is


# ---- collections -----------------------------------------------------------------------------


def test_every_bad_trait_list_and_master_prompt_is_refused(fuzz_tally: Tally) -> None:
    for label, text in corpus.bad_trait_lines():
        _refuse(fuzz_tally, "domain.parse_trait_lines", label, lambda t=text: parse_trait_lines(t))
    for label, text in corpus.bad_master_prompts():
        _refuse(
            fuzz_tally,
            "domain.parse_master_prompt",
            label,
            lambda t=text: parse_master_prompt(t, ["Hat"]),
        )


@FAST
@given(st.text(alphabet="ab|#\n .-1e9nai[]{},", max_size=80))
def test_any_trait_lines_parse_or_are_refused(fuzz_tally: Tally, text: str) -> None:
    try:
        values = parse_trait_lines(text)
    except BaseException as err:
        check_refusal(fuzz_tally, "domain.parse_trait_lines", err, text)
        return
    fuzz_tally.accepted("domain.parse_trait_lines")
    assert values and all(v.rarity >= 0 for v in values)


@FAST
@given(st.text(alphabet="[]{}, Hat Nope", max_size=60))
def test_any_master_prompt_parses_or_names_the_column(fuzz_tally: Tally, text: str) -> None:
    try:
        parse_master_prompt(text, ["Hat"])
    except BaseException as err:
        check_refusal(fuzz_tally, "domain.parse_master_prompt", err, text)
        return
    fuzz_tally.accepted("domain.parse_master_prompt")


def test_a_refused_collection_edit_changes_nothing(fuzz_tally: Tally, stores: Stores) -> None:
    owner = f"cli:fuzz-{uuid.uuid4().hex[:8]}"
    stores.users.get_or_create(owner)
    col = stores.collections.create(owner, "fuzz", supply=2)
    edits: list[dict[str, Any]] = [
        {"name": "   "},
        {"supply": 0},
        {"supply": -5},
        {"supply": 10**12},
        {"supply": "many"},
        {"owner": "cli:someone-else"},
        {"nonsense": 1},
        {"config": {"master_prompt": "a [[Nope]]"}},
        {"config": {"master_prompt": "a [unclosed"}},
        {"config": "not a dict"},
        {"config": {"traits": [{"name": "Hat", "values": []}]}},
        {"config": {"traits": [{"name": "Hat", "values": [{"name": "x", "rarity": -1}]}]}},
        {"description": 5},
    ]
    for edit in edits:
        _refuse(
            fuzz_tally,
            "store.CollectionRepo.update",
            edit,
            lambda e=edit: stores.collections.update(col.id, owner, e),
        )
        assert stores.collections.get(col.id, owner).model_dump() == col.model_dump(), edit
    for label, lines in corpus.bad_trait_lines():

        def set_trait(t: str = lines) -> None:
            stores.collections.set_trait(col.id, owner, "Hat", parse_trait_lines(t))

        _refuse(fuzz_tally, "store.CollectionRepo.set_trait", label, set_trait)
    assert stores.collections.get(col.id, owner).config == CollectionConfig()
    with pytest.raises(StationError):
        stores.collections.get(col.id, "cli:a-stranger")
