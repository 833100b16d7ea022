"""Job references of buttons: `job_ref(workflow id)` -> the workflow id and its owner.

Telegram gives a button 64 bytes of callback_data, and workflow ids are longer than that once
chat and message ids have 10+ digits. Buttons therefore carry the fixed-length `job_ref` of a
job (domain/jobs.py), and this collection (`button_tokens`) maps it back. The jobs client writes
one document per job when it starts it (an idempotent upsert keyed by the ref, so a retried
start writes nothing new) and reads it, with the owner check, when a button is pressed.

A ref expires `BUTTON_TOKEN_TTL` (90 days) after its job started (TTL index on `created_at`):
one document per job would otherwise grow forever, and a Regen/Again button is pressed within
days of its result. A button older than that answers "no job" (as one of another user's
jobs does); `/regen` and `/again` still reach the job from the history.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from pymongo.database import Database
from pymongo.errors import OperationFailure

from domain.jobs import job_ref

log = logging.getLogger(__name__)

BUTTON_TOKEN_TTL = timedelta(days=90)


class ButtonToken(BaseModel):
    workflow_id: str
    owner: str  # the normalised identity that started the job


class ButtonTokens:
    def __init__(self, db: Database[Any]) -> None:
        self.coll = db["button_tokens"]

    def ensure_indexes(self) -> None:
        try:
            self.coll.create_index(
                "created_at",
                expireAfterSeconds=int(BUTTON_TOKEN_TTL.total_seconds()),
                name="expiry_ttl",
            )
        except OperationFailure as e:  # pragma: no cover - depends on the server
            log.warning("TTL index on button_tokens not created (%s); refs stay", e)

    def remember(self, workflow_id: str, owner: str) -> str:
        """Store the job's ref (once) and return it."""
        ref = job_ref(workflow_id)
        self.coll.update_one(
            {"_id": ref},
            {
                "$setOnInsert": {
                    "workflow_id": workflow_id,
                    "owner": owner,
                    "created_at": datetime.now(UTC),
                }
            },
            upsert=True,
        )
        return ref

    def lookup(self, ref: str) -> ButtonToken | None:
        doc = self.coll.find_one({"_id": ref})
        if doc is None:
            return None
        return ButtonToken(workflow_id=str(doc["workflow_id"]), owner=str(doc["owner"]))
