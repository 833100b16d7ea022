"""Delivery records and the store's import tree, which a retried delivery and new adapters use."""

from __future__ import annotations

import ast
from pathlib import Path

from store.db import Stores

STORE = Path(__file__).resolve().parents[2] / "store"


def test_a_recorded_part_is_found_again_and_recording_it_twice_keeps_one(stores: Stores) -> None:
    assert stores.deliveries.parts("make-x-1") == {}
    stores.deliveries.mark("make-x-1", "image:0", 11)
    stores.deliveries.mark("make-x-1", "image:0", 11)  # a retried record
    stores.deliveries.mark("make-x-1", "buttons", 12)
    stores.deliveries.mark("make-x-2", "text", 13)
    assert stores.deliveries.parts("make-x-1") == {"image:0": 11, "buttons": 12}
    assert stores.db["deliveries"].count_documents({"workflow_id": "make-x-1"}) == 2


def _store_imports(path: Path) -> set[str]:
    """Every store module `path` imports, at the top, in a function or under TYPE_CHECKING."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("store."):
            found.add(str(node.module))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("store."))
    return found


def test_the_store_modules_import_each_other_without_a_circle() -> None:
    """users <-> ledger <-> db used to import each other (lazily, to dodge the circle)."""
    graph = {f"store.{p.stem}": _store_imports(p) for p in STORE.glob("*.py")}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, "import circle: " + " -> ".join((*path, module))
        if module in done:
            return
        for dep in sorted(graph.get(module, ())):
            visit(dep, (*path, module))
        done.add(module)

    for module in sorted(graph):
        visit(module, ())
