"""Delivery records: which parts of a finished job a chat adapter already sent.

One document per sent part (`<workflow id>:<part>` -> chat message id), written right after the
platform accepted the part, so a retried delivery skips it (adapters/telegram/delivery.py says
why this closes all but a few milliseconds of the exactly-once window).
"""

from __future__ import annotations

from typing import Any

from pymongo.database import Database


class DeliveryRepo:
    def __init__(self, db: Database[Any]) -> None:
        self.coll = db["deliveries"]

    def parts(self, workflow_id: str) -> dict[str, int]:
        """What a delivery already sent for this job: part name -> chat message id."""
        docs = self.coll.find({"workflow_id": workflow_id})
        return {str(d["part"]): int(d.get("message_id") or 0) for d in docs}

    def mark(self, workflow_id: str, part: str, message_id: int) -> None:
        """Record one sent part (an idempotent upsert keyed by job and part)."""
        self.coll.update_one(
            {"_id": f"{workflow_id}:{part}"},
            {"$set": {"workflow_id": workflow_id, "part": part, "message_id": message_id}},
            upsert=True,
        )
