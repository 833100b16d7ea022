"""Per-run ledger keys: a run tops its job up to the price, and the audit sees work given away."""

from __future__ import annotations

from datetime import UTC, datetime

from domain.users import JobRecord
from store.db import Stores
from tests.store.conftest import MAIN_USER


def done_job(stores: Stores, wid: str, user_id: str, *, price: int = 35) -> None:
    stores.jobs.record(
        JobRecord(
            workflow_id=wid,
            user_id=user_id,
            identity=MAIN_USER,
            kind="make",
            prompt="a fox",
            outputs=["blob-1"],
            price=price,
            state="done",
            created_at=datetime.now(UTC),
        )
    )


def test_a_run_tops_its_job_up_to_the_price_once_per_key(stores: Stores) -> None:
    user, _ = stores.users.get_or_create(MAIN_USER)
    first = stores.ledger.charge_up_to(user, 35, "j:r1:charge", job_id="j", reason="make")
    assert first is not None and first.entry.amount == 35 and not first.replayed
    again = stores.ledger.charge_up_to(user, 35, "j:r1:charge", job_id="j", reason="make")
    assert again is not None and again.replayed, "a retried charge books nothing"
    # A reset run whose job still holds its charge pays nothing more ...
    assert stores.ledger.charge_up_to(user, 35, "j:r2:charge", job_id="j", reason="m") is None
    assert stores.ledger.entry("j:r2:charge") is None
    # ... and once an operator refunded it, it pays again.
    stores.ledger.refund(user, 35, "j:r1:refund", job_id="j", reason="operator")
    paid = stores.ledger.charge_up_to(user, 35, "j:r3:charge", job_id="j", reason="make")
    assert paid is not None and paid.entry.amount == 35
    assert stores.ledger.job_totals("j").refundable == 35
    assert stores.ledger.balance(user) == 500 - 35
    assert stores.ledger.audit() == []


def test_a_partly_refunded_job_is_topped_up_by_the_missing_share_only(stores: Stores) -> None:
    user, _ = stores.users.get_or_create(MAIN_USER)
    stores.ledger.charge(user, 70, "b:r1:charge", job_id="b", reason="batch of 2")
    stores.ledger.refund(user, 35, "b:r1:refund", job_id="b", reason="one image failed")
    topped = stores.ledger.charge_up_to(user, 70, "b:r2:charge", job_id="b", reason="rerun")
    assert topped is not None and topped.entry.amount == 35
    assert stores.ledger.job_totals("b").refundable == 70


def test_the_audit_flags_a_done_job_whose_charge_was_refunded_in_full(stores: Stores) -> None:
    user, _ = stores.users.get_or_create(MAIN_USER)
    stores.ledger.charge(user, 35, "paid:r1:charge", job_id="paid", reason="make")
    done_job(stores, "paid", user.id)
    stores.ledger.charge(user, 35, "free:r1:charge", job_id="free", reason="make")
    stores.ledger.refund(user, 35, "free:r1:refund", job_id="free", reason="operator")
    done_job(stores, "free", user.id)
    done_job(stores, "never-charged", user.id)
    assert stores.ledger.audit() == [], "the balances alone look fine"
    unpaid = stores.ledger.unpaid_jobs(stores.jobs.done_with_outputs())
    assert sorted(j.job_id for j in unpaid) == ["free", "never-charged"]
    free = next(j for j in unpaid if j.job_id == "free")
    assert (free.charged, free.refunded, free.price) == (35, 35, 35)
