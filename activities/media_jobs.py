"""The prepare activity of a media job (upscale, background removal, resize, convert).

The checks that run before anything is charged, and the plan the shared saga executes, are
`services.job_plans.MediaPlanner`'s; this wrapper turns bad input into a refused plan.

Upscale and background removal become one ComfyUI prompt (`comfy` queue) built from the
`upscale` / `rmbg` templates, the source uploaded into the graph's LoadImage node; resize and
convert become one Pillow operation on the `media` queue. Prepare re-reads the source blob and
passes it through `media.safety` again, so a workflow started by any entry point (and not only
through `JobsClient.store_source`) cannot charge for an image that is not one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from temporalio import activity

from domain.jobs import ActivityNames, JobPlan, MediaPrepareInput
from domain.queues import Routing
from services.job_plans import MediaPlanner, plan_or_refusal
from store.db import Stores

log = logging.getLogger(__name__)


class MediaJobActivities:
    """Prepare for media jobs; dependencies come in through the constructor."""

    def __init__(
        self,
        stores: Stores,
        *,
        routing: Routing | None = None,
        upscale_models: Mapping[int, str] | None = None,
    ) -> None:
        self.stores = stores
        # Prepare's checks and decisions (services/job_plans.py), shared with the jobs service.
        self.planner = MediaPlanner(stores, routing=routing, upscale_models=upscale_models)

    def all(self) -> list[Any]:
        return [self.prepare_media_job]

    @activity.defn(name=ActivityNames.PREPARE_MEDIA_JOB)
    def prepare_media_job(self, inp: MediaPrepareInput) -> JobPlan:
        """Turn a media request into a priced plan, or a refusal that says what to fix."""
        return plan_or_refusal(
            self.stores,
            inp.request.user,
            inp.request.kind,
            inp.workflow_id,
            lambda: self.planner.plan_media_job(inp),
        )
