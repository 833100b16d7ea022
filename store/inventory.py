"""What each ComfyUI server has installed, as its comfy worker last read it (`/object_info`).

Each comfy worker records its server's checkpoint files at start and every
`INVENTORY_REFRESH` after; the planner refuses a checkpoint that no server seen within
`INVENTORY_MAX_AGE` has, before anything is charged. A server is keyed by its URL, so a
restarted worker replaces its own record and a server that went away ages out.

A record not refreshed for `INVENTORY_TTL` (7 days) is deleted (TTL index on `seen_at`): server
URLs come and go (a GPU box renamed, a rented server returned), and their records were kept
forever. Well past `INVENTORY_MAX_AGE` on purpose: for a week after every worker stopped, the
planner still knows the stack had servers and refuses checkpoints none of them has; once
every record is gone it knows nothing, as on a fresh install, and refuses nothing for it (jobs
then wait on the comfy queue, which `stationthis jobs stuck` reports).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.database import Database
from pymongo.errors import OperationFailure

log = logging.getLogger(__name__)

INVENTORY_MAX_AGE = timedelta(hours=1)
INVENTORY_TTL = timedelta(days=7)


class ComfyInventory:
    def __init__(self, db: Database[Any]) -> None:
        self.coll = db["comfy_inventory"]

    def ensure_indexes(self) -> None:
        try:
            self.coll.create_index(
                "seen_at", expireAfterSeconds=int(INVENTORY_TTL.total_seconds()), name="expiry_ttl"
            )
        except OperationFailure as e:  # pragma: no cover - depends on the server
            log.warning("TTL index on comfy_inventory not created (%s); records stay", e)

    def record(
        self, server_url: str, checkpoints: Iterable[str], now: datetime | None = None
    ) -> None:
        self.coll.update_one(
            {"_id": server_url},
            {
                "$set": {
                    "checkpoints": sorted(set(checkpoints)),
                    "seen_at": now or datetime.now(UTC),
                }
            },
            upsert=True,
        )

    def checkpoints(
        self, now: datetime | None = None, max_age: timedelta = INVENTORY_MAX_AGE
    ) -> set[str] | None:
        """Checkpoint files of every server seen lately; None when no server ever reported
        (no worker has started yet: nothing is known, so nothing is refused for it)."""
        if self.coll.estimated_document_count() == 0:
            return None
        since = (now or datetime.now(UTC)) - max_age
        found: set[str] = set()
        for doc in self.coll.find({"seen_at": {"$gte": since}}, {"checkpoints": 1}):
            found.update(str(c) for c in doc.get("checkpoints") or [])
        return found
