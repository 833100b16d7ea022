"""Webhook secrets, one per account: the key that signs its events.

HMAC needs the secret itself to sign (unlike API keys, which are only compared), so it cannot
be stored hashed; it is not stored at all. Each account's secret is derived from the
operator's WEBHOOK_SIGNING_KEY (the environment, never MongoDB) and a random nonce per account
(`webhook_secrets`), so a copy of the database alone signs nothing, and a rotation is a new
nonce. The secret is shown to its owner on request, never put in a Temporal payload
(activities derive it here by user id) and never logged.

An account whose record predates the derived secrets (a `secret` field) keeps that secret
until it rotates: changing it silently would break the owner's receiver.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database

from domain.errors import NotConfigured

SECRET_PREFIX = "whsec_"


class WebhookSecrets:
    def __init__(self, db: Database[Any], key: bytes | None = None) -> None:
        self.coll = db["webhook_secrets"]
        self._key = key

    def secret(self, user_id: str) -> str:
        """The account's secret, made on first use (one per account, whatever the identity)."""
        doc = self.coll.find_one({"_id": user_id})
        if doc is None:
            # Made on first use by an upsert that changes nothing when another caller made it
            # meanwhile, then read back. Not one `findAndModify`: the embedded MongoDB-compatible
            # server answers those by scanning the whole collection (issue 17).
            self.coll.update_one(
                {"_id": user_id},
                {"$setOnInsert": {"nonce": _nonce(), "created_at": datetime.now(UTC)}},
                upsert=True,
            )
            doc = self.coll.find_one({"_id": user_id})
        assert doc is not None  # upserted
        if "nonce" not in doc:  # an older record: its stored secret until the owner rotates
            return str(doc["secret"])
        return self._derive(user_id, str(doc["nonce"]))

    def rotate(self, user_id: str) -> str:
        """A new secret; events signed from now on use it."""
        nonce = _nonce()
        secret = self._derive(user_id, nonce)  # refused before anything changes
        self.coll.update_one(
            {"_id": user_id},
            {"$set": {"nonce": nonce, "created_at": datetime.now(UTC)}, "$unset": {"secret": ""}},
            upsert=True,
        )
        return secret

    def _derive(self, user_id: str, nonce: str) -> str:
        if not self._key:
            raise NotConfigured(
                "webhooks are not configured: the operator must set WEBHOOK_SIGNING_KEY"
            )
        mac = hmac.new(self._key, f"webhook-secret:{user_id}:{nonce}".encode(), hashlib.sha256)
        return SECRET_PREFIX + base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()


def _nonce() -> str:
    return secrets.token_urlsafe(16)
