"""Where a job's activities run and how long they may take: one typed routing model.

`TaskQueues` names the queues (one per kind of resource; configured in workers/config.py as
`Config.task_queues`). Prepare turns them, with the render and heartbeat timeouts, into the
plan's `JobRoute`, so a workflow reads its queues from its own history instead of from a
worker's config: a running job keeps its route when the config changes.

Plans made before `JobPlan.route` existed carried the same values as untyped keys of
`plan.settings`; `plan_route` reads those (with the defaults of that time) so their workflows
schedule what they did and old histories replay.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel


class TaskQueues(BaseModel):
    workflows: str = "stationthis"
    comfy: str = "comfy"
    comfy_io: str = "comfy-io"  # fetching outputs, off the GPU slot
    media: str = "media"
    safety: str = "safety"  # the output classifier (stationthis safety-worker), CPU only

    def deliver(self, platform: str) -> str:
        """Delivery queue of one platform: served only by that adapter's own process."""
        return f"deliver-{platform}"


_DEFAULT_QUEUES = TaskQueues()
# What a plan without a route meant (Config's defaults when the route was introduced).
LEGACY_RENDER_TIMEOUT = 900.0
LEGACY_HEARTBEAT_TIMEOUT = 30.0
LEGACY_CHUNK_TIMEOUT = 3600.0


class JobRoute(BaseModel):
    """The queues and timeouts of one job, decided at prepare and kept in its plan."""

    comfy_queue: str = _DEFAULT_QUEUES.comfy
    comfy_io_queue: str = _DEFAULT_QUEUES.comfy_io
    media_queue: str = _DEFAULT_QUEUES.media
    # The platform's delivery queue; empty: the workflow derives it (a plan from before).
    deliver_queue: str = ""
    render_timeout: float = LEGACY_RENDER_TIMEOUT  # seconds one ComfyUI prompt may take
    heartbeat_timeout: float = LEGACY_HEARTBEAT_TIMEOUT  # a silent comfy worker is dead
    chunk_timeout: float = LEGACY_CHUNK_TIMEOUT  # seconds one training chunk may take
    # Fair share on the GPU queues (domain/routing.py): the user, or empty (a plan from before).
    fairness_key: str = ""

    def deliver_to(self, platform: str) -> str:
        return self.deliver_queue or _DEFAULT_QUEUES.deliver(platform)


@dataclass(frozen=True)
class Routing:
    """What a planner needs to route jobs: `Config.routing()` builds it from the config."""

    queues: TaskQueues = field(default_factory=TaskQueues)
    render_timeout: float = LEGACY_RENDER_TIMEOUT
    heartbeat_timeout: float = LEGACY_HEARTBEAT_TIMEOUT
    chunk_timeout: float = LEGACY_CHUNK_TIMEOUT

    def route(self, platform: str) -> JobRoute:
        return JobRoute(
            comfy_queue=self.queues.comfy,
            comfy_io_queue=self.queues.comfy_io,
            media_queue=self.queues.media,
            deliver_queue=self.queues.deliver(platform),
            render_timeout=self.render_timeout,
            heartbeat_timeout=self.heartbeat_timeout,
            chunk_timeout=self.chunk_timeout,
        )


def plan_route(route: JobRoute | None, settings: Mapping[str, Any]) -> JobRoute:
    """A plan's route: its typed `route`, else the untyped `settings` keys of older plans."""
    if route is not None:
        return route
    return JobRoute(
        comfy_queue=str(settings.get("comfy_queue", _DEFAULT_QUEUES.comfy)),
        comfy_io_queue=str(settings.get("comfy_io_queue", _DEFAULT_QUEUES.comfy_io)),
        media_queue=str(settings.get("media_queue", _DEFAULT_QUEUES.media)),
        render_timeout=float(settings.get("render_timeout", LEGACY_RENDER_TIMEOUT)),
        heartbeat_timeout=float(settings.get("heartbeat_timeout", LEGACY_HEARTBEAT_TIMEOUT)),
        chunk_timeout=float(settings.get("chunk_timeout", LEGACY_CHUNK_TIMEOUT)),
        fairness_key=str(settings.get("fairness_key") or ""),
    )
