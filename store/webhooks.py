"""Webhook secrets, one per account (`webhook_secrets`): the key that signs its events.

The secret must be readable to sign (HMAC needs it, unlike API keys, which are only compared),
so it is kept server-side only: in this collection, shown to its owner on request, never put
in a Temporal payload (activities read it here by user id) and never logged.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database

SECRET_PREFIX = "whsec_"


class WebhookSecrets:
    def __init__(self, db: Database[Any]) -> None:
        self.coll = db["webhook_secrets"]

    def secret(self, user_id: str) -> str:
        """The account's secret, made on first use (one per account, whatever the identity)."""
        doc = self.coll.find_one({"_id": user_id})
        if doc is None:
            # Made on first use by an upsert that changes nothing when another caller made it
            # meanwhile, then read back. Not one `findAndModify`: the embedded MongoDB-compatible
            # server answers those by scanning the whole collection (issue 17).
            fresh = SECRET_PREFIX + secrets.token_urlsafe(32)
            self.coll.update_one(
                {"_id": user_id},
                {"$setOnInsert": {"secret": fresh, "created_at": datetime.now(UTC)}},
                upsert=True,
            )
            doc = self.coll.find_one({"_id": user_id})
        assert doc is not None  # upserted
        return str(doc["secret"])

    def rotate(self, user_id: str) -> str:
        """A new secret; events signed from now on use it."""
        fresh = SECRET_PREFIX + secrets.token_urlsafe(32)
        self.coll.update_one(
            {"_id": user_id},
            {"$set": {"secret": fresh, "created_at": datetime.now(UTC)}},
            upsert=True,
        )
        return fresh
