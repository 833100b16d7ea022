"""Fuzz fixtures: the per-run case tally and its summary table at the end of the session.

`FUZZ_SCALE` (default 1) multiplies every case count: `make fuzz` runs with a larger scale.
"""

from __future__ import annotations

import os

import pytest

from tests.fuzz.tally import TALLY_KEY, Tally

SCALE = max(1, int(os.environ.get("FUZZ_SCALE", "1")))


@pytest.fixture(scope="session")
def fuzz_tally(request: pytest.FixtureRequest) -> Tally:
    """The session's tally (kept on the pytest config, not in a module global)."""
    config = request.config
    if TALLY_KEY not in config.stash:
        config.stash[TALLY_KEY] = Tally()
    return config.stash[TALLY_KEY]


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    """Print the cases tried per entry point (only when fuzz tests ran)."""
    tally = config.stash.get(TALLY_KEY, None)
    if tally is None or not tally.rows:
        return
    terminalreporter.section("fuzz: bad input per public entry point")
    for line in tally.table().splitlines():
        terminalreporter.write_line(line)
