"""What every service holds: the Temporal client, the stores, the config and prepare's planners.

Each feature's service (services/jobs.py, accounts.py, media_sources.py, deliveries.py,
collections.py, training.py) is a class over this one base, so an adapter can build just the
services it uses from the same three dependencies; `adapters.jobs.JobsClient` combines them all
for the adapters that use every feature.
"""

from __future__ import annotations

import asyncio

from temporalio.client import Client

from domain.identity import normalise_identity
from domain.users import User
from services.job_plans import MakePlanner, MediaPlanner
from services.training_plans import TrainingPlanner
from store.db import Stores
from store.slots import JobSlots
from workers.config import Config
from workers.sweeper import storage_policy


class ServiceBase:
    def __init__(
        self, temporal: Client, stores: Stores, config: Config, *, ui_url: str = ""
    ) -> None:
        self.temporal = temporal
        self.stores = stores
        self.config = config
        self.ui_url = ui_url.rstrip("/")
        self.slots = JobSlots(stores.db)
        self.storage = storage_policy(config)
        # Prepare's own planners (services/job_plans.py, training_plans.py): the same checks
        # run here before a start, so bad input is refused with nothing written.
        self._planner = MakePlanner(
            stores,
            routing=config.routing(),
            max_loras=config.max_loras_per_prompt,
            checkpoints=config.checkpoints,
        )
        self._media_planner = MediaPlanner(
            stores,
            routing=config.routing(),
            upscale_models={int(k): v for k, v in config.upscale_models.items()},
        )
        self._trainer = TrainingPlanner(
            stores,
            routing=config.routing(),
            chunk_steps=config.training_chunk_steps,
            training_checkpoints=config.training_checkpoints,
        )

    async def _owner(self, user: str) -> User:
        return await asyncio.to_thread(self.stores.users.get, normalise_identity(user))
