"""Users: one document per person, with every platform identity they have linked.

`identities` carries a unique multikey index, so an identity belongs to at most one user and
two concurrent /start messages cannot create two users: the second insert fails on the index
(or conflicts inside its transaction) and, on retry, finds the first one's user.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from pydantic import ValidationError
from pymongo import ASCENDING
from pymongo.client_session import ClientSession
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, OperationFailure

from domain.errors import UnknownUser, UserInputError
from domain.identity import normalise_identity
from domain.settings import UserSettings
from domain.users import User
from store.connection import run_transaction
from store.ledger import Ledger
from store.user_refs import resolve_user_id

log = logging.getLogger(__name__)

LINK_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: codes are typed by hand
LINK_CODE_LENGTH = 8


class LinkCodeError(UserInputError):
    code = "invalid_link_code"


def starter_key(user_id: str) -> str:
    """Idempotency key of a user's starter grant: given once per user, whoever asks."""
    return f"starter:{user_id}"


def settings_from_doc(raw: Any) -> UserSettings:
    """Stored settings as a model; unknown or no-longer-valid fields fall back to defaults."""
    if not isinstance(raw, dict):
        return UserSettings()
    known = {k: v for k, v in raw.items() if k in UserSettings.model_fields}
    try:
        return UserSettings.model_validate(known)
    except ValidationError as e:
        bad = {str(err["loc"][0]) for err in e.errors() if err.get("loc")}
        log.warning("ignoring invalid stored settings %s", sorted(bad))
        return UserSettings.model_validate({k: v for k, v in known.items() if k not in bad})


def user_from_doc(doc: dict[str, Any]) -> User:
    return User(
        id=str(doc["_id"]),
        identities=list(doc.get("identities", [])),
        points=int(doc.get("points", 0)),
        settings=settings_from_doc(doc.get("settings")),
        created_at=doc["created_at"],
    )


class UserRepo:
    """Collections `users` and `link_codes`."""

    def __init__(self, db: Database[Any], ledger: Ledger, *, starter_grant: int = 500) -> None:
        self.db = db
        self.coll = db["users"]
        self.codes = db["link_codes"]
        self.ledger = ledger
        self.starter_grant = starter_grant

    def ensure_indexes(self) -> None:
        self.coll.create_index([("identities", ASCENDING)], unique=True, name="identity_unique")
        try:
            # Expired codes are refused on redeem regardless; the TTL index only tidies up.
            self.codes.create_index("expires_at", expireAfterSeconds=0, name="expiry_ttl")
        except OperationFailure as e:  # pragma: no cover - depends on the server
            log.warning("TTL index on link_codes not created (%s); expired codes stay", e)
        self.codes.create_index([("user_id", ASCENDING)], name="user")

    # -- lookup -----------------------------------------------------------------------------

    def find(self, user: str) -> User | None:
        """The user with this identity (or user id), or None."""
        if ":" in user:
            doc = self.coll.find_one({"identities": normalise_identity(user)})
        else:
            doc = self.coll.find_one({"_id": user})
        return user_from_doc(doc) if doc else None

    def get(self, user: str) -> User:
        """The user with this identity (or user id); UnknownUser if there is none."""
        found = self.find(user)
        if found is None:
            raise UnknownUser(user)
        return found

    def all(self, limit: int = 1000) -> list[User]:
        return [user_from_doc(d) for d in self.coll.find().sort("created_at", 1).limit(limit)]

    # -- creation ---------------------------------------------------------------------------

    def get_or_create(self, identity: str, starter_grant: int | None = None) -> tuple[User, bool]:
        """The user with this identity, created (with the starter grant) if there is none.

        The user document and its starter grant (`starter:<user_id>`) are written in one
        transaction, so a user never exists without the grant, and concurrent calls for the
        same identity create one user and one grant; only the creator sees `created=True`.
        """
        identity = normalise_identity(identity)
        grant = self.starter_grant if starter_grant is None else starter_grant
        if grant < 0:
            raise ValueError("the starter grant cannot be negative")

        def create(session: ClientSession) -> tuple[User, bool]:
            doc = self.coll.find_one({"identities": identity}, session=session)
            if doc is not None:
                return user_from_doc(doc), False
            user_id = str(ObjectId())
            new = {
                "_id": user_id,
                "identities": [identity],
                "points": 0,
                "settings": {},
                "created_at": datetime.now(UTC),
            }
            self.coll.insert_one(new, session=session)
            if grant:
                self.ledger.apply_in_session(
                    session,
                    "grant",
                    user_id,
                    grant,
                    starter_key(user_id),
                    {"by": "system", "reason": "starter grant", "job_id": None},
                )
                new["points"] = grant
            return user_from_doc(new), True

        for _ in range(20):
            try:
                user, created = run_transaction(self.db.client, create)
            except DuplicateKeyError:
                continue  # someone else created this identity meanwhile: read theirs
            if created:
                log.info("new user %s (%s), starter grant %d", user.id, identity, grant)
            return user, created
        raise RuntimeError(f"could not create or find user {identity}")  # pragma: no cover

    # -- linking a second platform ----------------------------------------------------------

    def create_link_code(self, user: User | str, *, ttl: timedelta = timedelta(minutes=10)) -> str:
        """A one-time code that links another platform's identity to this user until it expires."""
        user_id = resolve_user_id(self.coll, user)
        now = datetime.now(UTC)
        # One live code per account: asking again voids the last one, so codes cannot pile up
        # (a leaked old code is dead the moment a new one is asked for).
        self.codes.delete_many({"user_id": user_id})
        for _ in range(10):
            code = "".join(secrets.choice(LINK_CODE_ALPHABET) for _ in range(LINK_CODE_LENGTH))
            try:
                self.codes.insert_one(
                    {"_id": code, "user_id": user_id, "created_at": now, "expires_at": now + ttl}
                )
            except DuplicateKeyError:
                continue
            return code
        raise RuntimeError("could not allocate a link code")  # pragma: no cover

    def redeem_link_code(self, code: str, identity: str) -> User:
        """Add `identity` to the code's user and spend the code (once, before it expires).

        Refused when the code is unknown, used or expired, or when the identity already belongs
        to another user (merging two accounts' balances and histories is not automatic).
        """
        identity = normalise_identity(identity)
        code = code.strip().upper()

        def redeem(session: ClientSession) -> User:
            entry = self.codes.find_one({"_id": code}, session=session)
            if entry is None or _aware(entry["expires_at"]) <= datetime.now(UTC):
                raise LinkCodeError("this link code is unknown, already used or expired")
            owner = self.coll.find_one({"identities": identity}, {"_id": 1}, session=session)
            if owner is not None and owner["_id"] != entry["user_id"]:
                raise LinkCodeError(f"{identity} already belongs to another account")
            self.codes.delete_one({"_id": code}, session=session)
            doc = self.coll.find_one_and_update(
                {"_id": entry["user_id"]},
                {"$addToSet": {"identities": identity}},
                return_document=True,
                session=session,
            )
            if doc is None:
                raise UnknownUser(entry["user_id"])
            return user_from_doc(doc)

        try:
            user = run_transaction(self.db.client, redeem)
        except DuplicateKeyError:
            raise LinkCodeError(f"{identity} already belongs to another account") from None
        log.info("linked %s to user %s", identity, user.id)
        return user

    def sign_in_with_code(self, code: str) -> tuple[User, str]:
        """Spend a one-time code for a browser sign-in: the code's user and its `web:` identity.

        The same code store as `redeem_link_code` (short-lived, single use); a user with no
        `web:` identity yet gets one (`web:<random>`) in the same transaction, so the page acts
        for the account with an identity of its own platform and jobs started there say `web`.
        """
        code = code.strip().upper()

        def redeem(session: ClientSession) -> tuple[User, str]:
            entry = self.codes.find_one_and_delete({"_id": code}, session=session)
            if entry is None or _aware(entry["expires_at"]) <= datetime.now(UTC):
                raise LinkCodeError("this sign-in code is unknown, already used or expired")
            doc = self.coll.find_one({"_id": entry["user_id"]}, session=session)
            if doc is None:
                raise UnknownUser(entry["user_id"])
            web = next((i for i in doc.get("identities", []) if i.startswith("web:")), None)
            if web is None:
                web = f"web:{secrets.token_hex(8)}"
                doc = self.coll.find_one_and_update(
                    {"_id": entry["user_id"]},
                    {"$addToSet": {"identities": web}},
                    return_document=True,
                    session=session,
                )
                if doc is None:
                    raise UnknownUser(entry["user_id"])
            return user_from_doc(doc), web

        user, web = run_transaction(self.db.client, redeem)
        log.info("browser sign-in for user %s as %s", user.id, web)
        return user, web


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
