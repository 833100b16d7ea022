"""Counting fuzz cases per entry point, and the one check every refusal must pass.

A refusal is "clear" when it is a `domain.errors.StationError` (never a bare `Exception`, a
pydantic `ValidationError` or a `KeyError` from deep inside), with a non-empty message that
shows no traceback text: that message is what a chat user or a CLI user reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest

from domain.errors import StationError

_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+")


@dataclass
class Row:
    cases: int = 0
    refused: int = 0  # refused with a clear StationError
    accepted: int = 0  # valid (or odd but acceptable) input that was accepted
    crashes: int = 0  # anything else: an unclear error, a traceback, a charge, a dead process


@dataclass
class Tally:
    """Cases tried per entry point for this run; printed as a table at the end of the session."""

    rows: dict[str, Row] = field(default_factory=dict)

    def row(self, entry: str) -> Row:
        return self.rows.setdefault(entry, Row())

    def refused(self, entry: str) -> None:
        r = self.row(entry)
        r.cases += 1
        r.refused += 1

    def accepted(self, entry: str) -> None:
        r = self.row(entry)
        r.cases += 1
        r.accepted += 1

    def crash(self, entry: str) -> None:
        r = self.row(entry)
        r.cases += 1
        r.crashes += 1

    def table(self) -> str:
        head = f"{'entry point':<44} {'cases':>7} {'refused':>8} {'accepted':>9} {'crashes':>8}"
        lines = [head, "-" * len(head)]
        total = Row()
        for name in sorted(self.rows):
            r = self.rows[name]
            lines.append(f"{name:<44} {r.cases:>7} {r.refused:>8} {r.accepted:>9} {r.crashes:>8}")
            total.cases += r.cases
            total.refused += r.refused
            total.accepted += r.accepted
            total.crashes += r.crashes
        lines.append("-" * len(head))
        lines.append(
            f"{'total':<44} {total.cases:>7} {total.refused:>8} {total.accepted:>9} "
            f"{total.crashes:>8}"
        )
        return "\n".join(lines)


TALLY_KEY = pytest.StashKey[Tally]()


def unclear_reason(err: BaseException) -> str | None:
    """Why `err` is not a clear refusal, or None when it is one."""
    if not isinstance(err, StationError):
        return f"not a StationError: {type(err).__module__}.{type(err).__name__}: {err!r}"[:500]
    message = getattr(err, "message", None)
    if not isinstance(message, str) or not message.strip():
        return f"{type(err).__name__} with an empty message"
    if _TRACEBACK.search(message):
        return f"{type(err).__name__} message shows a traceback: {message[:300]!r}"
    return None


def check_refusal(tally: Tally, entry: str, err: BaseException, case: object) -> None:
    """Count a refusal and fail (naming the case) unless it is clear."""
    reason = unclear_reason(err)
    if reason is None:
        tally.refused(entry)
        return
    tally.crash(entry)
    raise AssertionError(f"{entry}: {reason}\n  case: {str(case)[:300]}") from err
