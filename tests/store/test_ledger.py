"""The points ledger: charges, refunds and grants, each exactly once, never below zero."""

from __future__ import annotations

import logging

import pytest

from domain.errors import InsufficientPoints, LedgerRefused, UnknownUser
from store.db import Stores
from tests.store.conftest import MAIN_USER


def test_new_user_gets_the_starter_grant_once(stores: Stores) -> None:
    user, created = stores.users.get_or_create(MAIN_USER)
    again, created_again = stores.users.get_or_create(MAIN_USER)
    assert created and not created_again
    assert again.id == user.id
    assert stores.ledger.balance(user) == 500
    grants = stores.ledger.entries(user, limit=10, kinds=["grant"])
    assert [g.key for g in grants] == [f"starter:{user.id}"]
    assert stores.ledger.audit() == []


def test_a_charge_applied_twice_is_taken_once(stores: Stores) -> None:
    user, _ = stores.users.get_or_create(MAIN_USER)
    first = stores.ledger.charge(user, 35, "make-1:charge", job_id="make-1", reason="make")
    second = stores.ledger.charge(user, 35, "make-1:charge", job_id="make-1", reason="make")
    assert not first.replayed and second.replayed
    assert second.entry == first.entry
    assert first.balance == 465
    assert stores.ledger.balance(MAIN_USER) == 465
    assert len(stores.ledger.entries_for_job("make-1")) == 1


def test_a_reused_key_with_another_amount_changes_nothing_and_says_so(
    stores: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    user, _ = stores.users.get_or_create(MAIN_USER)
    stores.ledger.charge(user, 35, "make-2:charge", job_id="make-2", reason="make")
    with caplog.at_level(logging.WARNING, logger="store.ledger"):
        again = stores.ledger.charge(user, 99, "make-2:charge", job_id="make-2", reason="make")
    assert again.replayed and again.amount_mismatch
    assert again.entry.amount == 35 and again.requested_amount == 99
    assert stores.ledger.balance(user) == 465
    assert "replayed with amount 99" in caplog.text


def test_too_few_points_refuses_the_job_and_writes_nothing(stores: Stores) -> None:
    user, _ = stores.users.get_or_create(MAIN_USER)
    with pytest.raises(InsufficientPoints) as exc:
        stores.ledger.charge(user, 501, "big:charge", job_id="big", reason="make")
    assert (exc.value.quote, exc.value.balance) == (501, 500)
    assert "501" in exc.value.message and "500" in exc.value.message
    assert stores.ledger.balance(user) == 500
    assert stores.ledger.entry("big:charge") is None
    assert stores.ledger.entries_for_job("big") == []


def test_a_charge_may_take_the_balance_to_exactly_zero(stores: Stores) -> None:
    user, _ = stores.users.get_or_create(MAIN_USER)
    assert stores.ledger.charge(user, 500, "all:charge", job_id="all", reason="x").balance == 0
    with pytest.raises(InsufficientPoints):
        stores.ledger.charge(user, 1, "one:charge", job_id="one", reason="x")


def test_a_failed_job_is_refunded_in_full_once(stores: Stores) -> None:
    user, _ = stores.users.get_or_create(MAIN_USER)
    stores.ledger.charge(user, 40, "j:charge", job_id="j", reason="make")
    assert stores.ledger.refund_for("j") == 40
    r1 = stores.ledger.refund(user, 40, "j:refund", job_id="j", reason="comfy failed")
    r2 = stores.ledger.refund(user, 40, "j:refund", job_id="j", reason="comfy failed")
    assert not r1.replayed and r2.replayed
    assert stores.ledger.balance(user) == 500
    totals = stores.ledger.job_totals("j")
    assert (totals.charges, totals.refunds, totals.charged, totals.refunded) == (1, 1, 40, 40)
    assert stores.ledger.refund_for("j") == 0


def test_a_refund_without_a_charge_is_refused(stores: Stores) -> None:
    user, _ = stores.users.get_or_create(MAIN_USER)
    with pytest.raises(LedgerRefused, match="no charge"):
        stores.ledger.refund(user, 10, "ghost:refund", job_id="ghost", reason="x")
    assert stores.ledger.balance(user) == 500
    assert stores.ledger.entry("ghost:refund") is None


def test_refunds_never_exceed_the_charge(stores: Stores) -> None:
    user, _ = stores.users.get_or_create(MAIN_USER)
    stores.ledger.charge(user, 60, "b:charge", job_id="b", reason="batch of 3")
    stores.ledger.refund(user, 40, "b:refund", job_id="b", reason="2 of 3 failed")
    with pytest.raises(LedgerRefused, match="exceeds"):
        stores.ledger.refund(user, 21, "b:refund-2", job_id="b", reason="too much")
    stores.ledger.refund(user, 20, "b:refund-3", job_id="b", reason="the rest")
    assert stores.ledger.balance(user) == 500
    assert stores.ledger.audit() == []


def test_a_refund_goes_only_to_the_user_who_was_charged(stores: Stores) -> None:
    alice, _ = stores.users.get_or_create(MAIN_USER)
    bob, _ = stores.users.get_or_create("web:bob")
    stores.ledger.charge(alice, 30, "a:charge", job_id="a", reason="x")
    with pytest.raises(LedgerRefused, match="charged to user"):
        stores.ledger.refund(bob, 30, "a:refund", job_id="a", reason="x")
    assert stores.ledger.balance(bob) == 500


def test_a_key_cannot_change_kind(stores: Stores) -> None:
    user, _ = stores.users.get_or_create(MAIN_USER)
    stores.ledger.grant(user, 5, "k1", by="admin", reason="gift")
    with pytest.raises(LedgerRefused, match="already used"):
        stores.ledger.charge(user, 5, "k1", job_id="j", reason="x")


def test_unknown_users_are_refused_by_name(stores: Stores) -> None:
    with pytest.raises(UnknownUser, match="telegram:1"):
        stores.ledger.charge("telegram:1", 5, "x:charge", job_id="x", reason="x")
    with pytest.raises(UnknownUser):
        stores.ledger.grant("nosuchid", 5, "g", by="admin", reason="x")
    with pytest.raises(UnknownUser):
        stores.users.get("telegram:1")


@pytest.mark.parametrize("amount", [0, -5, 1.5, True])
def test_amounts_are_positive_whole_points(stores: Stores, amount: object) -> None:
    user, _ = stores.users.get_or_create(MAIN_USER)
    with pytest.raises(ValueError):
        stores.ledger.grant(user, amount, "g", by="admin", reason="x")  # type: ignore[arg-type]


def test_gpu_seconds_are_recorded_on_the_charge(stores: Stores) -> None:
    user, _ = stores.users.get_or_create(MAIN_USER)
    stores.ledger.charge(user, 35, "g1:charge", job_id="g1", reason="make", gpu_seconds=None)
    assert stores.ledger.record_gpu_seconds("g1", 12.5)
    assert stores.ledger.record_gpu_seconds("g1", 12.5)  # a retried activity sets, not adds
    assert stores.ledger.job_totals("g1").gpu_seconds == 12.5
    assert stores.ledger.entry("g1:charge").gpu_seconds == 12.5  # type: ignore[union-attr]
    assert not stores.ledger.record_gpu_seconds("nojob", 3.0)


def test_history_lists_newest_first_and_filters_kinds(stores: Stores) -> None:
    user, _ = stores.users.get_or_create(MAIN_USER)
    for i in range(3):
        stores.ledger.charge(user, 10, f"h{i}:charge", job_id=f"h{i}", reason="make")
    stores.ledger.refund(user, 10, "h1:refund", job_id="h1", reason="failed")
    entries = stores.ledger.entries(user, limit=3)
    assert [e.key for e in entries] == ["h1:refund", "h2:charge", "h1:charge"]
    charges = stores.ledger.entries(user, limit=10, kinds=["charge"])
    assert [e.key for e in charges] == ["h2:charge", "h1:charge", "h0:charge"]
    assert all(e.job_id for e in charges)


def test_audit_finds_a_balance_edited_behind_the_ledgers_back(stores: Stores) -> None:
    user, _ = stores.users.get_or_create(MAIN_USER)
    stores.ledger.charge(user, 35, "c:charge", job_id="c", reason="make")
    assert stores.ledger.audit() == []
    stores.db["users"].update_one({"_id": user.id}, {"$inc": {"points": 1000}})
    problems = stores.ledger.audit()
    assert len(problems) == 1
    p = problems[0]
    assert (p.user_id, p.balance, p.expected, p.grants, p.charges, p.refunds) == (
        user.id,
        1465,
        465,
        500,
        35,
        0,
    )
    assert p.difference == 1000 and p.identities == [MAIN_USER]
