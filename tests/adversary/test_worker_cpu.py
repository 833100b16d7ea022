"""CPU a worker spends per job outside our code (issue 17, "CPU per job"), found with py-spy
(bench/cpu_profile.py --gil) and held here by what can be counted, not by timing.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import sys
from collections.abc import Sequence
from types import ModuleType

from httpcore._synchronization import current_async_library


class _Lookups(importlib.abc.MetaPathFinder):
    """Counts the import system's searches for one module name (it finds nothing itself)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> None:
        if fullname == self.name:
            self.count += 1


def test_an_http_request_does_not_search_the_path_for_sniffio() -> None:
    """httpcore asks `import sniffio` several times per request (each connection's events and
    each response's close). With sniffio missing, every ask searched sys.path again (a failed
    import is not cached): 11 % of the comfy worker's CPU. It is a pinned dependency now."""
    lookups = _Lookups("sniffio")
    sys.meta_path.insert(0, lookups)
    try:

        async def ask() -> list[str]:
            return [current_async_library() for _ in range(20)]

        assert asyncio.run(ask()) == ["asyncio"] * 20
    finally:
        sys.meta_path.remove(lookups)
    assert lookups.count == 0
