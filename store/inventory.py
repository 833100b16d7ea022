"""What each ComfyUI server has installed, as its comfy worker last read it (`/object_info`).

Each comfy worker records its server's checkpoint files at start and every
`INVENTORY_REFRESH` after; the planner refuses a checkpoint that no server seen within
`INVENTORY_MAX_AGE` has, before anything is charged. A server is keyed by its URL, so a
restarted worker replaces its own record and a server that went away ages out.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.database import Database

INVENTORY_MAX_AGE = timedelta(hours=1)


class ComfyInventory:
    def __init__(self, db: Database[Any]) -> None:
        self.coll = db["comfy_inventory"]

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
