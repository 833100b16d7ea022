"""Templates in MongoDB: loading is idempotent, a changed graph is a new version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domain.errors import TemplateGraphError, UnknownTemplate
from domain.templates import Template
from store.db import Stores
from store.templates import read_template_file
from tests.domain.graphs import template_file


def test_loading_the_same_template_twice_changes_nothing(stores: Stores) -> None:
    first = stores.templates.load(template_file())
    again = stores.templates.load(template_file())
    assert first.changed and not again.changed
    assert (again.version, again.hash) == (1, first.hash)
    assert stores.db["templates"].count_documents({}) == 1


def test_a_changed_graph_becomes_a_new_version_and_the_old_one_stays(stores: Stores) -> None:
    stores.templates.load(template_file())
    changed = template_file()
    changed["graph"]["3"]["inputs"]["steps"] = 25
    r = stores.templates.load(changed)
    assert r.changed and r.version == 2
    assert stores.templates.versions("make") == [1, 2]
    assert stores.templates.get("make").graph["3"]["inputs"]["steps"] == 25
    assert stores.templates.get("make", version=1).graph["3"]["inputs"]["steps"] == 20
    assert stores.templates.version_of("make") == (2, r.hash)


def test_a_template_reads_back_equal_to_what_was_loaded(stores: Stores) -> None:
    t = Template.parse(template_file())
    stores.templates.load(t)
    assert stores.templates.get("make") == t


def test_an_unknown_template_lists_the_known_ones(stores: Stores) -> None:
    stores.templates.load(template_file("make"))
    stores.templates.load(template_file("flux", family="flux", price_base=None))
    with pytest.raises(UnknownTemplate, match=r"'nope' \(known: flux, make\)"):
        stores.templates.get("nope")
    rows = stores.templates.list()
    assert [(r.name, r.base_price, r.version) for r in rows] == [("flux", 20, 1), ("make", 10, 1)]
    assert "prompt" in rows[0].inputs


def test_a_broken_file_is_refused_naming_file_and_node(tmp_path: Path) -> None:
    bad = template_file()
    bad["graph"]["8"]["inputs"]["samples"] = ["77", 0]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(TemplateGraphError, match=r"bad\.json: node 8 .* missing node '77'"):
        read_template_file(path)
    (tmp_path / "junk.json").write_text("{nope")
    with pytest.raises(TemplateGraphError, match="not JSON"):
        read_template_file(tmp_path / "junk.json")


def test_bundled_templates_load_and_reload_idempotently(stores: Stores) -> None:
    from templates import bundled_template_files

    if not bundled_template_files():
        pytest.skip("no bundled templates yet")
    first = stores.templates.load_bundled()
    assert all(r.changed for r in first)
    assert not any(r.changed for r in stores.templates.load_bundled())
    assert {r.name for r in first} == set(stores.templates.names())
