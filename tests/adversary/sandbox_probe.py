"""Workflows that break determinism on purpose, for tests/adversary/test_sandbox.py.

A module of their own, importing only the SDK and the standard library: the sandbox re-imports
a workflow's module for every run, and a test module would drag pytest in with it.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from temporalio import workflow

# A restricted call fails the workflow (not only its task, which would retry forever), so a
# test sees the sandbox's verdict as the workflow's failure.
FAIL_ON = [workflow.NondeterminismError]


@workflow.defn(name="SandboxProbeReadsTheClock", failure_exception_types=FAIL_ON)
class ReadsTheClock:
    """Reads the wall clock: a replay would see another time."""

    @workflow.run
    async def run(self) -> str:
        return datetime.now().isoformat()


@workflow.defn(name="SandboxProbeRollsADie", failure_exception_types=FAIL_ON)
class RollsADie:
    """Draws from the process's random generator instead of `workflow.random()`."""

    @workflow.run
    async def run(self) -> float:
        return random.random()


@workflow.defn(name="SandboxProbeEchoes")
class Echoes:
    """Runs one activity with a payload in and out: what the sandbox costs per activation."""

    @workflow.run
    async def run(self, word: str) -> str:
        said: str = await workflow.execute_activity(
            "sandbox_probe_echo", word, start_to_close_timeout=timedelta(seconds=10)
        )
        return said
