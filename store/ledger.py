"""The points ledger: every charge, refund and grant, each exactly once.

Design — why multi-document transactions, and what survives a crash
--------------------------------------------------------------------
Each operation changes two documents: the user's `points` and a new `ledger` entry whose `key`
is unique. They are written in ONE multi-document transaction (`store.connection.run_transaction`):

1. read the entry with this key; if it exists, the operation was applied before → return it
   (`replayed=True`) and write nothing, whatever amount this call asked for;
2. update the user's balance — for a charge, conditionally on `points >= amount`, so a charge
   can never take the balance below zero; for a refund, only after checking that the job was
   charged at least this much more than it was already refunded;
3. insert the entry (with `balance_after`).

A crash (of this process, or of the server) before the commit leaves neither write; after it,
both. There is no in-between state, so no recovery sweeper is needed — the alternative design
(write the entry as "pending", then `$inc` the balance with a `$addToSet` of the applied key,
then mark the entry "applied", plus a sweeper that finishes pending entries) gives the same
guarantee with three writes and a background job, and is only worth it on servers without
transactions. Every MongoDB this project targets (replica sets, Atlas, SecantusDB) has them.

Concurrency: every operation writes the user document, so two transactions on the same user
conflict and one of them is retried from step 1 (write conflict → TransientTransactionError →
retry with backoff); two callers with the same key race on the unique index, and the loser sees
the winner's entry on retry. Per user, operations are therefore serialisable, which is what the
balance checks need.

Every entry carries `job_id` (None for grants) so `entries_for_job` / `job_totals` can count
charges and refunds per job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict
from pymongo import ASCENDING, DESCENDING
from pymongo.client_session import ClientSession
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from domain.errors import InsufficientPoints, LedgerRefused, UnknownUser
from domain.users import (
    LEDGER_KINDS,
    Discrepancy,
    JobRecord,
    LedgerEntry,
    LedgerKind,
    LedgerResult,
    User,
)
from store.connection import run_transaction
from store.user_refs import resolve_user_id

log = logging.getLogger(__name__)

UserRef = User | str
T = TypeVar("T")


class JobTotals(BaseModel):
    """What the ledger holds for one job: sums and counts of its charges and refunds."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    user_id: str | None
    charged: int
    refunded: int
    charges: int
    refunds: int
    gpu_seconds: float | None = None

    @property
    def refundable(self) -> int:
        return self.charged - self.refunded


class UnpaidJob(BaseModel):
    """A done job with outputs whose charge was refunded in full (or never booked)."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    user_id: str
    identity: str
    price: int
    outputs: int
    charged: int
    refunded: int


def _entry(doc: dict[str, Any]) -> LedgerEntry:
    return LedgerEntry.model_validate({k: v for k, v in doc.items() if k != "_id"})


class Ledger:
    """Charges, refunds and grants over collections `ledger` and `users`."""

    def __init__(self, db: Database[Any]) -> None:
        self.db = db
        self.entries_coll = db["ledger"]
        self.users_coll = db["users"]

    def ensure_indexes(self) -> None:
        self.entries_coll.create_index([("key", ASCENDING)], unique=True, name="key_unique")
        self.entries_coll.create_index(
            [("user_id", ASCENDING), ("created_at", DESCENDING)], name="user_recent"
        )
        self.entries_coll.create_index([("job_id", ASCENDING)], name="job")

    # -- the three operations ---------------------------------------------------------------

    def charge(
        self,
        user: UserRef,
        amount: int,
        key: str,
        *,
        job_id: str,
        reason: str,
        gpu_seconds: float | None = None,
    ) -> LedgerResult:
        """Take `amount` points for a job, once per key; InsufficientPoints and nothing written
        if the balance is smaller than the amount."""
        _check_amount(amount)
        return self._apply(
            "charge",
            user,
            amount,
            key,
            {"job_id": job_id, "reason": reason, "gpu_seconds": gpu_seconds},
        )

    def charge_up_to(
        self,
        user: UserRef,
        amount: int,
        key: str,
        *,
        job_id: str,
        reason: str,
        expect_applied: bool = False,
    ) -> LedgerResult | None:
        """Charge what `job_id`'s standing charge (charges − refunds) lacks of `amount`, once per
        key; None, and nothing written, when the job is already paid that much.

        Each run of a job workflow charges under a key of its own run, so an operator's reset
        after a refund pays again; topping up rather than adding means a reset of a run whose
        charge still stands pays nothing more. Read and write share one transaction, as in
        `charge`. A replayed key returns its first entry whatever this call's amount.

        `expect_applied` (the saga's settle, which replays its run's own charge key): read the
        key first, outside a transaction, and answer a charge of this user's from it; one read
        instead of the user's, the key's in a transaction and the commit (issue 17). Safe
        because an entry's key, user, kind and amount never change once committed. Anything
        else (no such key, another user's or kind's) takes the transaction below.
        """
        _check_amount(amount)
        if expect_applied and isinstance(user, str) and ":" not in user:  # a user id
            done = self.entries_coll.find_one({"key": key})
            if done is not None and done.get("user_id") == user and done.get("kind") == "charge":
                return self._replay(done, "charge", user, int(done["amount"]))
        user_id = resolve_user_id(self.users_coll, user)
        fields = {"job_id": job_id, "reason": reason, "gpu_seconds": None}

        def step(session: ClientSession) -> LedgerResult | None:
            existing = self.entries_coll.find_one({"key": key}, session=session)
            if existing is not None:
                return self._replay(existing, "charge", user_id, int(existing["amount"]))
            totals = self._totals(job_id, session)
            if totals.charges and totals.user_id != user_id:
                raise LedgerRefused(
                    f"job {job_id} was charged to user {totals.user_id}, not {user_id}"
                )
            missing = amount - max(0, totals.refundable)
            if missing <= 0:
                return None
            # The key was read above in this transaction's snapshot: book without reading it
            # again (a concurrent commit of the key fails the insert and `_transact` replays).
            return self._book(session, "charge", user_id, missing, key, fields)

        return self._transact(key, step)

    def refund(
        self, user: UserRef, amount: int, key: str, *, job_id: str, reason: str
    ) -> LedgerResult:
        """Give back points charged for `job_id`, once per key; never more than was charged."""
        _check_amount(amount)
        return self._apply("refund", user, amount, key, {"job_id": job_id, "reason": reason})

    def grant(self, user: UserRef, amount: int, key: str, *, by: str, reason: str) -> LedgerResult:
        """Add points (admin grant, starter grant, purchase), once per key."""
        _check_amount(amount)
        return self._apply("grant", user, amount, key, {"by": by, "reason": reason, "job_id": None})

    # -- machinery --------------------------------------------------------------------------

    def _apply(
        self, kind: LedgerKind, user: UserRef, amount: int, key: str, fields: dict[str, Any]
    ) -> LedgerResult:
        if not key:
            raise ValueError("an idempotency key is required")
        user_id = resolve_user_id(self.users_coll, user)
        return self._transact(
            key, lambda s: self.apply_in_session(s, kind, user_id, amount, key, fields)
        )

    def _transact(self, key: str, step: Callable[[ClientSession], T]) -> T:
        """Run one keyed step in a transaction; a concurrent commit of the key replays it."""
        for _ in range(20):
            try:
                return run_transaction(self.db.client, step)
            except DuplicateKeyError:
                # Another caller committed this key after our snapshot began: read theirs.
                log.debug("ledger key %s applied concurrently; replaying", key)
        raise RuntimeError(f"ledger key {key!r} kept conflicting")  # pragma: no cover

    def apply_in_session(
        self,
        session: ClientSession,
        kind: LedgerKind,
        user_id: str,
        amount: int,
        key: str,
        fields: dict[str, Any],
    ) -> LedgerResult:
        """Steps 1-3 of the module docstring, inside the caller's transaction.

        Public so `UserRepo.get_or_create` can create a user and its starter grant in one
        transaction; everything else goes through `charge` / `refund` / `grant`.
        """
        existing = self.entries_coll.find_one({"key": key}, session=session)
        if existing is not None:
            return self._replay(existing, kind, user_id, amount)
        return self._book(session, kind, user_id, amount, key, fields)

    def _book(
        self,
        session: ClientSession,
        kind: LedgerKind,
        user_id: str,
        amount: int,
        key: str,
        fields: dict[str, Any],
    ) -> LedgerResult:
        """Steps 2-3: move the points and insert the entry, for a key this transaction has
        already found unused (the unique index on `key` still refuses a concurrent twin)."""
        # The balance moves by an `update_one` and is read back in the same transaction (which
        # sees its own write; a concurrent write to the user conflicts and the transaction
        # retries), not by one `findAndModify`: the embedded MongoDB-compatible server
        # (secantusdb 0.7) answers every findAndModify by scanning the whole collection (5 ms at
        # 100 users, 66 ms at 3,000, measured; issue 17), two point operations instead.
        if kind == "charge":
            moved = self.users_coll.update_one(
                {"_id": user_id, "points": {"$gte": amount}},
                {"$inc": {"points": -amount}},
                session=session,
            )
            doc = self.users_coll.find_one({"_id": user_id}, {"points": 1}, session=session)
            if doc is None:
                raise UnknownUser(user_id)
            if moved.matched_count == 0:
                raise InsufficientPoints(amount, int(doc["points"]))
        else:
            if kind == "refund":
                self._check_refund(session, user_id, amount, str(fields["job_id"]))
            moved = self.users_coll.update_one(
                {"_id": user_id}, {"$inc": {"points": amount}}, session=session
            )
            if moved.matched_count == 0:
                raise UnknownUser(user_id)
            doc = self.users_coll.find_one({"_id": user_id}, {"points": 1}, session=session)
            if doc is None:  # pragma: no cover - the transaction just updated it
                raise UnknownUser(user_id)
        entry = LedgerEntry(
            key=key,
            kind=kind,
            user_id=user_id,
            amount=amount,
            job_id=fields.get("job_id"),
            reason=fields.get("reason", ""),
            by=fields.get("by"),
            gpu_seconds=fields.get("gpu_seconds"),
            balance_after=int(doc["points"]),
            created_at=datetime.now(UTC),
        )
        self.entries_coll.insert_one(entry.model_dump(), session=session)
        log.info(
            "ledger %s %s %d for %s (balance %d)", kind, key, amount, user_id, entry.balance_after
        )
        return LedgerResult(entry=entry, replayed=False, requested_amount=amount)

    def _replay(
        self, existing: dict[str, Any], kind: LedgerKind, user_id: str, amount: int
    ) -> LedgerResult:
        entry = _entry(existing)
        if entry.user_id != user_id or entry.kind != kind:
            raise LedgerRefused(
                f"ledger key {entry.key!r} was already used for a {entry.kind} of user "
                f"{entry.user_id}; it cannot also be a {kind} of user {user_id}"
            )
        if entry.amount != amount:
            log.warning(
                "ledger key %s replayed with amount %d but was applied with %d; kept %d",
                entry.key,
                amount,
                entry.amount,
                entry.amount,
            )
        return LedgerResult(entry=entry, replayed=True, requested_amount=amount)

    def _check_refund(self, session: ClientSession, user_id: str, amount: int, job_id: str) -> None:
        totals = self._totals(job_id, session)
        if totals.charges == 0:
            raise LedgerRefused(f"job {job_id} has no charge, so there is nothing to refund")
        if totals.user_id != user_id:
            raise LedgerRefused(f"job {job_id} was charged to user {totals.user_id}, not {user_id}")
        if amount > totals.refundable:
            raise LedgerRefused(
                f"refund of {amount} for job {job_id} exceeds what is left of its charge "
                f"({totals.charged} charged, {totals.refunded} already refunded)"
            )

    def _totals(self, job_id: str, session: ClientSession | None = None) -> JobTotals:
        charged = refunded = charges = refunds = 0
        user_id: str | None = None
        gpu: float | None = None
        for doc in self.entries_coll.find({"job_id": job_id}, session=session):
            if doc["kind"] == "charge":
                charged += int(doc["amount"])
                charges += 1
                user_id = user_id or doc["user_id"]
                if doc.get("gpu_seconds") is not None:
                    gpu = (gpu or 0.0) + float(doc["gpu_seconds"])
            elif doc["kind"] == "refund":
                refunded += int(doc["amount"])
                refunds += 1
        return JobTotals(
            job_id=job_id,
            user_id=user_id,
            charged=charged,
            refunded=refunded,
            charges=charges,
            refunds=refunds,
            gpu_seconds=gpu,
        )

    # -- queries ----------------------------------------------------------------------------

    def balance(self, user: UserRef) -> int:
        user_id = resolve_user_id(self.users_coll, user)
        doc = self.users_coll.find_one({"_id": user_id}, {"points": 1})
        if doc is None:
            raise UnknownUser(user_id)
        return int(doc["points"])

    def entries(
        self, user: UserRef, limit: int = 20, kinds: list[LedgerKind] | None = None
    ) -> list[LedgerEntry]:
        """The user's entries, newest first."""
        query: dict[str, Any] = {"user_id": resolve_user_id(self.users_coll, user)}
        if kinds:
            query["kind"] = {"$in": list(kinds)}
        cursor = self.entries_coll.find(query).sort(
            [("created_at", DESCENDING), ("_id", DESCENDING)]
        )
        return [_entry(d) for d in cursor.limit(max(0, limit))]

    def entry(self, key: str) -> LedgerEntry | None:
        doc = self.entries_coll.find_one({"key": key})
        return _entry(doc) if doc else None

    def entries_for_job(self, job_id: str) -> list[LedgerEntry]:
        """Every charge and refund of one job, oldest first."""
        cursor = self.entries_coll.find({"job_id": job_id}).sort(
            [("created_at", ASCENDING), ("_id", ASCENDING)]
        )
        return [_entry(d) for d in cursor]

    def job_totals(self, job_id: str) -> JobTotals:
        return self._totals(job_id)

    def refund_for(self, job_id: str) -> int:
        """Points of `job_id`'s charges not yet refunded: the most a refund may still give back."""
        return self._totals(job_id).refundable

    def record_gpu_seconds(self, job_id: str, seconds: float, *, key: str | None = None) -> bool:
        """Record the GPU time a job used on its charge entry (idempotent: it sets, not adds).

        With `key`, on that charge (a collection cook charges per piece); otherwise on the job's
        first charge. False when there is no such charge.
        """
        if seconds < 0:
            raise ValueError("GPU seconds cannot be negative")
        # The job's few entries found on the `job` index and picked here, then an update by
        # `_id`: the embedded server (secantusdb 0.7) rides an index only when the filter is
        # that index's field alone (`job_id` and `kind` together scanned the whole ledger,
        # every job), and answers find_one_and_update by a scan too (JobRepo.save says why).
        # Not a money step: a reporting field, set, never added.
        charges = sorted(
            (
                d
                for d in self.entries_coll.find(
                    {"job_id": job_id}, projection={"kind": 1, "key": 1, "created_at": 1}
                )
                if d.get("kind") == "charge" and (key is None or d.get("key") == key)
            ),
            key=lambda d: (d.get("created_at") or datetime.min.replace(tzinfo=UTC), d["_id"]),
        )
        first = charges[0] if charges else None
        if first is None:
            log.warning("no charge for job %s to record %.1f GPU seconds on", job_id, seconds)
            return False
        self.entries_coll.update_one({"_id": first["_id"]}, {"$set": {"gpu_seconds": seconds}})
        return True

    def audit(self) -> list[Discrepancy]:
        """Every user whose balance ≠ grants − charges + refunds, and every orphan entry's user."""
        sums: dict[str, dict[str, int]] = {}
        pipeline: list[dict[str, Any]] = [
            {"$group": {"_id": {"u": "$user_id", "k": "$kind"}, "total": {"$sum": "$amount"}}}
        ]
        for row in self.entries_coll.aggregate(pipeline):
            per_kind = sums.setdefault(row["_id"]["u"], dict.fromkeys(LEDGER_KINDS, 0))
            per_kind[row["_id"]["k"]] = int(row["total"])
        found: list[Discrepancy] = []
        seen: set[str] = set()
        for user in self.users_coll.find({}, {"points": 1, "identities": 1}):
            uid = user["_id"]
            seen.add(uid)
            per_kind = sums.get(uid, dict.fromkeys(LEDGER_KINDS, 0))
            expected = per_kind["grant"] - per_kind["charge"] + per_kind["refund"]
            if int(user.get("points", 0)) != expected:
                found.append(_discrepancy(uid, user.get("identities", []), user, per_kind))
        for uid, per_kind in sums.items():
            if uid not in seen:
                found.append(_discrepancy(uid, [], None, per_kind))
        return found

    def unpaid_jobs(self, done: Iterable[JobRecord]) -> list[UnpaidJob]:
        """Jobs that ended done with outputs and a price but hold no standing charge.

        The balance audit cannot see these: a charge refunded in full balances perfectly. They
        are work given away, typically a job an operator refunded and then reset, or a reset of
        a run from before per-run ledger keys.
        """
        sums = _job_sums(self)
        found: list[UnpaidJob] = []
        for job in done:
            if not job.outputs or job.price <= 0:
                continue
            per_kind = sums.get(job.workflow_id, {"charge": 0, "refund": 0})
            if per_kind["charge"] - per_kind["refund"] <= 0:
                found.append(
                    UnpaidJob(
                        job_id=job.workflow_id,
                        user_id=job.user_id,
                        identity=job.identity,
                        price=job.price,
                        outputs=len(job.outputs),
                        charged=per_kind["charge"],
                        refunded=per_kind["refund"],
                    )
                )
        return found


def _job_sums(ledger: Ledger) -> dict[str, dict[str, int]]:
    """Charged and refunded points per job id, in one pass over the ledger."""
    pipeline: list[dict[str, Any]] = [
        {"$match": {"kind": {"$in": ["charge", "refund"]}, "job_id": {"$ne": None}}},
        {"$group": {"_id": {"j": "$job_id", "k": "$kind"}, "total": {"$sum": "$amount"}}},
    ]
    sums: dict[str, dict[str, int]] = {}
    for row in ledger.entries_coll.aggregate(pipeline):
        sums.setdefault(row["_id"]["j"], {"charge": 0, "refund": 0})[row["_id"]["k"]] = int(
            row["total"]
        )
    return sums


def _discrepancy(
    uid: str, identities: list[str], user: dict[str, Any] | None, per_kind: dict[str, int]
) -> Discrepancy:
    return Discrepancy(
        user_id=uid,
        identities=identities,
        balance=None if user is None else int(user.get("points", 0)),
        expected=per_kind["grant"] - per_kind["charge"] + per_kind["refund"],
        grants=per_kind["grant"],
        charges=per_kind["charge"],
        refunds=per_kind["refund"],
    )


def _check_amount(amount: int) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ValueError(f"a ledger amount is a positive whole number of points, got {amount!r}")
