"""The books balance under contention: 8 threads, repeated keys, real server, no locks of ours.

Every key maps to one fixed operation (kind, user, amount, job) in a shared plan, and each
thread applies a random sequence drawn from the plan, so most keys are applied by several
threads at once. A watcher thread samples balances meanwhile. Afterwards: one entry per key,
balance = grants − charges + refunds for every user, no balance ever below zero, refunds of a
job never above its charges, and every thread that got a result for a key saw the same entry.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

import pytest

from domain.errors import InsufficientPoints, LedgerRefused
from domain.users import LedgerResult
from store.db import Stores

THREADS = 8
OPS_PER_THREAD = 200
USERS = ("telegram:5472638766", "telegram:1001", "web:buyer")


@dataclass(frozen=True)
class Op:
    kind: str
    user: str
    amount: int
    key: str
    job_id: str | None


def build_plan(rng: random.Random) -> list[Op]:
    plan: list[Op] = []
    for j in range(60):
        user = rng.choice(USERS)
        charge = rng.randint(20, 120)
        plan.append(Op("charge", user, charge, f"make-{j}:charge", f"make-{j}"))
        # Full refunds, partial refunds and a second partial one for some jobs.
        refund = charge if j % 3 else charge // 2
        plan.append(Op("refund", user, refund, f"make-{j}:refund", f"make-{j}"))
        if j % 3 == 0:
            plan.append(Op("refund", user, charge - refund, f"make-{j}:refund-2", f"make-{j}"))
    for g in range(25):
        plan.append(Op("grant", rng.choice(USERS), rng.randint(10, 80), f"grant-{g}", None))
    return plan


def apply(stores: Stores, op: Op) -> LedgerResult:
    if op.kind == "charge":
        assert op.job_id
        return stores.ledger.charge(op.user, op.amount, op.key, job_id=op.job_id, reason="t")
    if op.kind == "refund":
        assert op.job_id
        return stores.ledger.refund(op.user, op.amount, op.key, job_id=op.job_id, reason="t")
    return stores.ledger.grant(op.user, op.amount, op.key, by="test", reason="t")


@pytest.mark.slow
def test_concurrent_charges_refunds_and_grants_reconcile_exactly(stores: Stores) -> None:
    for identity in USERS:
        stores.users.get_or_create(identity)
    plan = build_plan(random.Random(5472638766))
    results: dict[str, list[LedgerResult]] = {}
    outcomes = {"applied": 0, "replayed": 0, "insufficient": 0, "refused": 0}
    lock = threading.Lock()
    errors: list[BaseException] = []
    negatives: list[tuple[str, int]] = []
    done = threading.Event()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(OPS_PER_THREAD):
                op = rng.choice(plan)
                try:
                    r = apply(stores, op)
                except InsufficientPoints as e:
                    assert e.quote == op.amount and 0 <= e.balance < e.quote
                    kind = "insufficient"
                except LedgerRefused:
                    kind = "refused"  # refund before its charge, or of an uncharged job
                else:
                    kind = "replayed" if r.replayed else "applied"
                    with lock:
                        results.setdefault(op.key, []).append(r)
                with lock:
                    outcomes[kind] += 1
        except BaseException as e:
            errors.append(e)

    def watcher() -> None:
        users = stores.db["users"]
        while not done.is_set():
            for doc in users.find({}, {"points": 1}):
                if doc["points"] < 0:
                    negatives.append((doc["_id"], doc["points"]))
            time.sleep(0.005)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    watch = threading.Thread(target=watcher)
    started = time.monotonic()
    watch.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    done.set()
    watch.join(timeout=10)
    elapsed = time.monotonic() - started

    assert not errors, errors[:3]
    assert not negatives
    assert sum(outcomes.values()) == THREADS * OPS_PER_THREAD
    # The run exercised what it claims to: real contention on keys, refusals and replays.
    assert outcomes["applied"] > 50 and outcomes["replayed"] > 100, outcomes
    assert outcomes["insufficient"] + outcomes["refused"] > 0, outcomes

    ledger = list(stores.db["ledger"].find())
    keys = [e["key"] for e in ledger]
    assert len(keys) == len(set(keys)), "one entry per key"
    assert outcomes["applied"] == len(ledger) - len(USERS)  # minus the starter grants
    by_key = {e["key"]: e for e in ledger}
    for key, seen in results.items():
        first = {r.entry for r in seen}
        assert len(first) == 1, f"{key}: threads saw different entries"
        assert by_key[key]["amount"] == seen[0].entry.amount
        assert sum(not r.replayed for r in seen) == 1, f"{key} applied more than once"

    for identity in USERS:
        user = stores.users.get(identity)
        mine = [e for e in ledger if e["user_id"] == user.id]
        expected = sum(e["amount"] if e["kind"] != "charge" else -e["amount"] for e in mine)
        assert user.points == expected >= 0
        assert all(e["balance_after"] >= 0 for e in mine)
    for job in {e["job_id"] for e in ledger if e["job_id"]}:
        totals = stores.ledger.job_totals(job)
        assert totals.charges <= 1 and 0 <= totals.refunded <= totals.charged
    assert stores.ledger.audit() == []
    assert elapsed < 60
