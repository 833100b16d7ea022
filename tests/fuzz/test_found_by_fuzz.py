"""Regression tests for the bugs the fuzz run found (each failed before its fix)."""

from __future__ import annotations

from pathlib import Path

import pytest

from domain.errors import TemplateGraphError
from domain.templates import Template
from store.templates import read_template_file
from tests.fuzz.corpus import bundled_make


def test_a_template_file_that_is_not_utf8_is_refused_with_a_reason(tmp_path: Path) -> None:
    """Was a bare UnicodeDecodeError (a traceback for `stationthis templates load`)."""
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"name": "caf\xe9"}')
    with pytest.raises(TemplateGraphError, match="not UTF-8"):
        read_template_file(path)


def test_a_template_file_nested_too_deeply_is_refused_with_a_reason(tmp_path: Path) -> None:
    """Was a bare RecursionError from the JSON decoder."""
    path = tmp_path / "deep.json"
    path.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(TemplateGraphError, match="nested too deeply"):
        read_template_file(path)


def test_a_graph_input_nested_thousands_deep_is_refused_when_parsed() -> None:
    """Was accepted by Template.parse, then a RecursionError when hashed or stored."""
    data = bundled_make()
    value: object = 0
    for _ in range(3000):
        value = {"a": value}
    data["graph"]["3"]["inputs"]["extra"] = value
    with pytest.raises(TemplateGraphError, match="nested more than"):
        Template.parse(data)


def test_a_dangling_link_error_does_not_echo_a_huge_value() -> None:
    """The message names the bad link without dumping kilobytes of it back."""
    data = bundled_make()
    data["graph"]["3"]["inputs"]["model"] = [["x" * 5000], 0]
    with pytest.raises(TemplateGraphError) as info:
        Template.parse(data)
    assert len(info.value.message) < 300
