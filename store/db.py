"""Connecting to MongoDB, running transactions with retry, and the `Stores` bundle.

Every repository takes one `pymongo.database.Database`; `Stores` builds them all over the same
database so a worker or the CLI holds one client and one object. `ensure_indexes()` creates every
index the repositories rely on (unique idempotency keys above all) and is safe to call at every
start.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pymongo import MongoClient
from pymongo.client_session import ClientSession
from pymongo.database import Database
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from domain.rules import DEFAULT_RULES, DomainRules

log = logging.getLogger(__name__)

T = TypeVar("T")

# Server error codes that mean "another transaction touched the same document: try again".
WRITE_CONFLICT = 112
NO_SUCH_TRANSACTION = 251
_RETRY_CODES = frozenset({WRITE_CONFLICT, NO_SUCH_TRANSACTION})


def connect(uri: str, *, timeout_ms: int = 5000, app_name: str = "stationthis") -> MongoClient[Any]:
    """A client that fails within seconds when the server is unreachable, instead of 30 s.

    `retryWrites`/`retryReads` stay on (the default): single writes are retried once after a
    network error, and every multi-document write here goes through `run_transaction`.
    """
    return MongoClient(
        uri,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=max(30_000, timeout_ms * 6),
        appname=app_name,
        tz_aware=True,
    )


def _is_transient(exc: PyMongoError) -> bool:
    if exc.has_error_label("TransientTransactionError"):
        return True
    if exc.has_error_label("UnknownTransactionCommitResult"):
        return True
    return isinstance(exc, OperationFailure) and exc.code in _RETRY_CODES


def run_transaction(
    client: MongoClient[Any],
    callback: Callable[[ClientSession], T],
    *,
    deadline_s: float = 30.0,
) -> T:
    """Run `callback(session)` in a multi-document transaction, retrying transient failures.

    pymongo's `with_transaction` already retries errors labelled TransientTransactionError and
    UnknownTransactionCommitResult; the outer loop also retries bare WriteConflict codes (a
    server may omit the label) and adds jittered backoff so contending threads spread out
    instead of colliding again in lockstep. Any other error (DuplicateKeyError, a domain error
    raised by the callback) aborts the transaction and propagates.
    """
    start = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            with client.start_session() as session:
                return session.with_transaction(callback)
        except (OperationFailure, ConnectionFailure) as exc:
            if not _is_transient(exc) or time.monotonic() - start > deadline_s:
                raise
            log.debug("transaction attempt %d conflicted (%s); retrying", attempt, exc)
            time.sleep(min(0.2, 0.002 * 2 ** min(attempt, 7)) * random.random())


@dataclass
class Stores:
    """All repositories over one database. Build with `Stores.from_uri` or `Stores(db)`."""

    db: Database[Any]
    rules: DomainRules = DEFAULT_RULES

    def __post_init__(self) -> None:
        from store.blobs import BlobStore
        from store.button_tokens import ButtonTokens
        from store.collections import CollectionRepo
        from store.datasets import DatasetRepo
        from store.inventory import ComfyInventory
        from store.jobs import JobRepo
        from store.ledger import Ledger
        from store.models import ModelRepo
        from store.safety import SafetyRepo
        from store.settings_repo import SettingsRepo
        from store.templates import TemplateRepo
        from store.users import UserRepo

        self.ledger = Ledger(self.db)
        self.users = UserRepo(self.db, self.ledger, starter_grant=self.rules.starter_grant)
        self.settings = SettingsRepo(self.db, self.users, rules=self.rules)
        self.templates = TemplateRepo(self.db)
        self.jobs = JobRepo(self.db)
        self.blobs = BlobStore(self.db)
        self.collections = CollectionRepo(self.db, self.users)
        self.datasets = DatasetRepo(self.db)
        self.models = ModelRepo(self.db)
        self.inventory = ComfyInventory(self.db)
        self.button_tokens = ButtonTokens(self.db)
        self.safety = SafetyRepo(self.db)

    @classmethod
    def from_uri(
        cls, uri: str, database: str = "stationthis", *, rules: DomainRules = DEFAULT_RULES
    ) -> Stores:
        return cls(connect(uri)[database], rules)

    @property
    def client(self) -> MongoClient[Any]:
        return self.db.client

    def ensure_indexes(self) -> None:
        """Create every index, idempotently (creating an existing index is a no-op)."""
        self.ledger.ensure_indexes()
        self.users.ensure_indexes()
        self.templates.ensure_indexes()
        self.jobs.ensure_indexes()
        self.blobs.ensure_indexes()
        self.collections.ensure_indexes()
        self.datasets.ensure_indexes()
        self.models.ensure_indexes()
        self.safety.ensure_indexes()

    def close(self) -> None:
        self.db.client.close()
