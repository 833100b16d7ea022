"""The storage sweeper: `store.storage.sweep` every `STORAGE_SWEEP_INTERVAL` seconds.

It runs as a task of the workflow worker process (`stationthis worker`), the one process every
deployment runs, rather than as a Temporal schedule: a sweep needs no durability (a missed one
is simply the next one), and a schedule would add a workflow, its registration at start-up and
its histories for a loop of a few lines. Several workers sweeping at once is harmless: every
removal is one conditional delete.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from store.db import Stores
from store.storage import StoragePolicy, sweep
from workers.config import Config

log = logging.getLogger(__name__)


def storage_policy(config: Config) -> StoragePolicy:
    """The quota and lifetimes configured for this deployment."""
    return StoragePolicy(
        quota_bytes=config.storage_quota_bytes,
        source_ttl=timedelta(seconds=config.source_ttl),
        export_ttl=timedelta(seconds=config.export_ttl),
    )


async def sweep_forever(stores: Stores, config: Config) -> None:
    """Sweep now and then every interval until cancelled; a failed sweep is logged and retried
    at the next interval (the database may be restarting)."""
    interval = config.storage_sweep_interval
    if interval <= 0:
        return
    policy = storage_policy(config)
    while True:
        try:
            await asyncio.to_thread(sweep, stores.db, datetime.now(UTC), policy)
        except Exception:
            log.warning("storage sweep failed; trying again in %g s", interval, exc_info=True)
        await asyncio.sleep(interval)
