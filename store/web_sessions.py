"""Browser sessions of the web page, and the counter that rate-limits wrong sign-in codes.

A session is a random token the browser keeps in an HttpOnly cookie; only its SHA-256 is
stored, so a copy of the database signs nobody in. Each session carries its own CSRF token
(sent back in every form and JS POST) and an expiry; the TTL index only tidies up, expired
sessions are refused on lookup regardless.

Wrong codes are counted per client key (the browser's address) in a fixed window, in MongoDB so
every web process shares the count: the 8-character code space is large, but nothing should
let a script try codes at line speed.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, OperationFailure

log = logging.getLogger(__name__)

SESSION_TTL = timedelta(days=7)
FAILED_SIGNIN_LIMIT = 5  # wrong codes per client key per window
FAILED_SIGNIN_WINDOW = timedelta(minutes=10)


def token_hash(token: str) -> str:
    """What is stored for a session token: its SHA-256, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class WebSession:
    """A signed-in browser: the account, the `web:` identity it acts as, its CSRF token."""

    user_id: str
    identity: str
    csrf: str
    expires_at: datetime


class WebSessions:
    """Collections `web_sessions` and `signin_failures`."""

    def __init__(self, db: Database[Any], *, ttl: timedelta = SESSION_TTL) -> None:
        self.coll = db["web_sessions"]
        self.failures = db["signin_failures"]
        self.ttl = ttl

    def ensure_indexes(self) -> None:
        for coll in (self.coll, self.failures):
            try:
                coll.create_index("expires_at", expireAfterSeconds=0, name="expiry_ttl")
            except OperationFailure as e:  # pragma: no cover - depends on the server
                log.warning("TTL index on %s not created (%s)", coll.name, e)
        self.coll.create_index("user_id", name="user")

    def create(self, user_id: str, identity: str) -> tuple[str, WebSession]:
        """A new session for the account; returns the token (shown to the browser once)."""
        token = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        session = WebSession(
            user_id=user_id,
            identity=identity,
            csrf=secrets.token_urlsafe(24),
            expires_at=now + self.ttl,
        )
        self.coll.insert_one(
            {
                "_id": token_hash(token),
                "user_id": user_id,
                "identity": identity,
                "csrf": session.csrf,
                "created_at": now,
                "expires_at": session.expires_at,
            }
        )
        return token, session

    def lookup(self, token: str | None) -> WebSession | None:
        """The live session of this token, or None (unknown, signed out or expired)."""
        if not token or len(token) > 200:
            return None
        doc = self.coll.find_one({"_id": token_hash(token)})
        if doc is None:
            return None
        expires = _aware(doc["expires_at"])
        if expires <= datetime.now(UTC):
            return None
        return WebSession(doc["user_id"], doc["identity"], doc["csrf"], expires)

    def delete(self, token: str | None) -> None:
        if token:
            self.coll.delete_one({"_id": token_hash(token)})

    # -- wrong sign-in codes ----------------------------------------------------------------

    def signin_blocked(self, key: str) -> float:
        """Seconds until `key` may try a code again (0: it may now)."""
        doc = self.failures.find_one({"_id": key})
        if doc is None or int(doc.get("count", 0)) < FAILED_SIGNIN_LIMIT:
            return 0.0
        left = (_aware(doc["expires_at"]) - datetime.now(UTC)).total_seconds()
        return max(left, 0.0)

    def note_signin_failure(self, key: str) -> None:
        """Count one wrong code for `key`; the window starts at its first failure."""
        now = datetime.now(UTC)
        self.failures.delete_one({"_id": key, "expires_at": {"$lte": now}})
        for _ in range(3):
            try:
                self.failures.find_one_and_update(
                    {"_id": key},
                    {
                        "$inc": {"count": 1},
                        "$setOnInsert": {"expires_at": now + FAILED_SIGNIN_WINDOW},
                    },
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
                return
            except DuplicateKeyError:  # two first failures at once: the other one inserted
                continue


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
