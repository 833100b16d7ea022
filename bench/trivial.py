"""A workflow with one no-op activity: the floor of what Temporal orchestration costs here.

The make-image benchmark runs it on its own task queue, served by a Worker inside the benchmark
process, with the same concurrency as the real jobs. Whatever MakeImageWorkflow costs above
this floor is our own doing (more activities, MongoDB, ComfyUI, signals), not Temporal's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow

ECHO_ACTIVITY = "bench_echo"


@dataclass
class TrivialInput:
    """Who asked and which of their jobs this is, so results can be checked."""

    user: str
    n: int


@dataclass
class TrivialResult:
    user: str
    n: int


@activity.defn(name=ECHO_ACTIVITY)
async def bench_echo(inp: TrivialInput) -> TrivialResult:
    """Does nothing but answer: its cost is the activity round trip alone."""
    return TrivialResult(user=inp.user, n=inp.n)


@workflow.defn(name="BenchTrivialWorkflow")
class TrivialWorkflow:
    """One activity, no state, no handlers."""

    @workflow.run
    async def run(self, inp: TrivialInput) -> TrivialResult:
        return await workflow.execute_activity(
            bench_echo, inp, start_to_close_timeout=timedelta(seconds=10)
        )
