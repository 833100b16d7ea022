"""API keys of the HTTP API (`api_keys`) and the Idempotency-Key records of its POSTs.

A key is `st_<43 url-safe chars>` (32 random bytes), shown once when created; only its sha256 is
stored, so a leaked database does not leak usable keys. A key belongs to one identity of a user
(the identity jobs started with it run as, so they show in that user's history on every
platform) and can be revoked; a revoked key stops working at its next request, a request
already inside the API finishes.

`idempotency_keys` keeps, per (key owner, Idempotency-Key), the sha256 of the request body and
the job it started: the same key with the same body gets the same job, with another body a 422.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from domain.identity import normalise_identity

KEY_PREFIX = "st_"
# How long an Idempotency-Key is remembered (the Stripe convention: a day).
IDEMPOTENCY_TTL = timedelta(hours=24)


class IdempotencyRecord(BaseModel):
    body: str  # sha256 of the first request's body
    request_id: str
    job_id: str | None = None


class ApiKey(BaseModel):
    """A stored key: never the key itself, only what identifies and describes it."""

    key_id: str  # the first characters of the key, shown in lists (`st_ab12cd34`)
    identity: str
    name: str = ""
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _key(doc: dict[str, Any]) -> ApiKey:
    return ApiKey(
        key_id=str(doc["key_id"]),
        identity=str(doc["identity"]),
        name=str(doc.get("name", "")),
        created_at=doc["created_at"],
        revoked_at=doc.get("revoked_at"),
    )


class ApiKeyRepo:
    """Create, list, revoke and check API keys; only hashes are stored."""

    def __init__(self, db: Database[Any]) -> None:
        self.coll = db["api_keys"]
        self.idem = db["idempotency_keys"]

    def ensure_indexes(self) -> None:
        self.coll.create_index("hash", unique=True, name="hash_unique")
        self.coll.create_index("identity", name="by_identity")
        self.idem.create_index(
            "created_at", expireAfterSeconds=int(IDEMPOTENCY_TTL.total_seconds()), name="ttl"
        )

    def create(self, identity: str, name: str = "") -> tuple[str, ApiKey]:
        """A new key for `identity`: (the key, shown once and never again; its record)."""
        identity = normalise_identity(identity)
        token = KEY_PREFIX + secrets.token_urlsafe(32)
        doc = {
            "hash": hash_key(token),
            "key_id": token[:11],
            "identity": identity,
            "name": name,
            "created_at": datetime.now(UTC),
            "revoked_at": None,
        }
        self.coll.insert_one(doc)
        return token, _key(doc)

    def list(self, identity: str) -> list[ApiKey]:
        identity = normalise_identity(identity)
        return [_key(d) for d in self.coll.find({"identity": identity}).sort("created_at", 1)]

    def revoke(self, identity: str, key_id: str) -> bool:
        """Revoke `identity`'s key `key_id`; False if they have no such active key (another
        identity's key id is refused the same way)."""
        done = self.coll.find_one_and_update(
            {"identity": normalise_identity(identity), "key_id": key_id, "revoked_at": None},
            {"$set": {"revoked_at": datetime.now(UTC)}},
            return_document=ReturnDocument.AFTER,
        )
        return done is not None

    def verify(self, token: str) -> ApiKey | None:
        """The active key `token` is, or None (unknown, malformed or revoked: all the same)."""
        if not token.startswith(KEY_PREFIX) or len(token) > 100:
            return None
        doc = self.coll.find_one({"hash": hash_key(token), "revoked_at": None})
        return _key(doc) if doc is not None else None

    # ---- Idempotency-Key --------------------------------------------------------------------

    def claim_idempotency(
        self, owner: str, key: str, body_hash: str, request_id: str
    ) -> IdempotencyRecord:
        """Remember (owner, key) -> (body hash, request id) once; returns what is stored, the
        first request's, so a replay reuses its request id (and its job, once started) and a
        changed body is detectable."""
        _id = f"{owner}\n{key}"
        with contextlib.suppress(DuplicateKeyError):
            self.idem.insert_one(
                {
                    "_id": _id,
                    "body": body_hash,
                    "request_id": request_id,
                    "job_id": None,
                    "created_at": datetime.now(UTC),
                }
            )
        doc = self.idem.find_one({"_id": _id})
        if doc is None:  # expired between the two calls: this request is the first again
            return self.claim_idempotency(owner, key, body_hash, request_id)
        return IdempotencyRecord(
            body=str(doc["body"]),
            request_id=str(doc["request_id"]),
            job_id=doc.get("job_id"),
        )

    def record_idempotent_job(self, owner: str, key: str, job_id: str) -> None:
        """The job the key's first request started: a replay answers with it (a cook, started
        by collection rather than by request id, included)."""
        self.idem.update_one({"_id": f"{owner}\n{key}"}, {"$set": {"job_id": job_id}})
