"""Users: one person across platforms, created once, linked with one-time codes."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from domain.errors import InvalidIdentity, UnknownUser
from store.db import Stores
from store.users import LinkCodeError
from tests.store.conftest import MAIN_USER


def test_concurrent_start_creates_one_user_with_one_starter_grant(stores: Stores) -> None:
    results: list[tuple[str, bool]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def start() -> None:
        barrier.wait()
        user, created = stores.users.get_or_create(MAIN_USER)
        with lock:
            results.append((user.id, created))

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 6
    assert len({uid for uid, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert stores.db["users"].count_documents({}) == 1
    assert stores.ledger.balance(MAIN_USER) == 500
    assert len(stores.ledger.entries(MAIN_USER, limit=10)) == 1


def test_a_user_is_found_by_identity_or_id_and_identities_are_normalised(stores: Stores) -> None:
    user, _ = stores.users.get_or_create(" telegram:5472638766 ")
    assert user.identities == [MAIN_USER]
    assert stores.users.get(MAIN_USER) == stores.users.get(user.id)
    assert stores.users.find("telegram:42") is None
    with pytest.raises(UnknownUser, match="telegram:42"):
        stores.users.get("telegram:42")
    with pytest.raises(InvalidIdentity):
        stores.users.get_or_create("myspace:tom")


def test_a_zero_starter_grant_writes_no_ledger_entry(stores: Stores) -> None:
    user, created = stores.users.get_or_create("cli:ops", starter_grant=0)
    assert created and user.points == 0
    assert stores.ledger.entries(user, limit=5) == []
    assert stores.ledger.audit() == []


def test_linking_web_to_a_telegram_account_with_a_one_time_code(stores: Stores) -> None:
    user, _ = stores.users.get_or_create(MAIN_USER)
    code = stores.users.create_link_code(user)
    assert len(code) == 8
    linked = stores.users.redeem_link_code(code.lower(), "web:abc-123")
    assert linked.id == user.id
    assert linked.identities == [MAIN_USER, "web:abc-123"]
    assert stores.users.get("web:abc-123").id == user.id
    assert stores.ledger.balance("web:abc-123") == 500  # one balance, whichever platform
    with pytest.raises(LinkCodeError, match="already used"):
        stores.users.redeem_link_code(code, "cli:other")


def test_an_expired_link_code_is_refused(stores: Stores) -> None:
    user, _ = stores.users.get_or_create(MAIN_USER)
    code = stores.users.create_link_code(user, ttl=timedelta(seconds=-1))
    with pytest.raises(LinkCodeError, match="expired"):
        stores.users.redeem_link_code(code, "web:late")
    assert stores.users.find("web:late") is None


def test_a_code_cannot_steal_an_identity_that_has_its_own_account(stores: Stores) -> None:
    user, _ = stores.users.get_or_create(MAIN_USER)
    other, _ = stores.users.get_or_create("web:someone")
    code = stores.users.create_link_code(user)
    with pytest.raises(LinkCodeError, match="another account"):
        stores.users.redeem_link_code(code, "web:someone")
    assert stores.users.get("web:someone").id == other.id
    assert stores.users.get(MAIN_USER).identities == [MAIN_USER]
