"""Connecting to MongoDB and running multi-document transactions with retry.

Kept apart from `store.db` (the `Stores` bundle) so that repositories which need a transaction
(users, ledger) import this small module and nothing that imports them back: the repositories
form a tree, users -> ledger -> user_refs/connection, with no import circle.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pymongo import MongoClient
from pymongo.client_session import ClientSession
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

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
