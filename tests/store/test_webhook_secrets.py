"""Webhook secrets are derived from the operator's key, never stored: the database holds a
nonce per account, so a copy of it signs nothing; a rotation is a new nonce; without a key the
feature is refused with a message naming the setting; an account from before keeps its stored
secret until it rotates."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.database import Database

from domain.errors import NotConfigured
from store.db import Stores

KEY = b"k" * 32


def everything_stored(mongo_db: Database[Any]) -> str:
    return repr(list(mongo_db["webhook_secrets"].find({})))


def test_the_secret_is_derived_stable_per_account_and_not_in_the_database(
    mongo_db: Database[Any],
) -> None:
    stores = Stores(mongo_db, webhook_key=KEY)
    first = stores.webhook_secrets.secret("u1")
    assert first.startswith("whsec_") and len(first) >= 40
    assert stores.webhook_secrets.secret("u1") == first  # the same on every call
    assert stores.webhook_secrets.secret("u2") != first  # one per account
    assert first.removeprefix("whsec_") not in everything_stored(mongo_db)
    # The database alone (another key, as a thief would have) gives another secret.
    assert Stores(mongo_db, webhook_key=b"x" * 32).webhook_secrets.secret("u1") != first


def test_rotation_is_a_new_secret_kept_from_then_on(mongo_db: Database[Any]) -> None:
    secrets = Stores(mongo_db, webhook_key=KEY).webhook_secrets
    before = secrets.secret("u1")
    fresh = secrets.rotate("u1")
    assert fresh != before and secrets.secret("u1") == fresh
    assert fresh.removeprefix("whsec_") not in everything_stored(mongo_db)


def test_without_a_key_webhooks_are_refused_naming_the_setting(mongo_db: Database[Any]) -> None:
    secrets = Stores(mongo_db).webhook_secrets
    with pytest.raises(NotConfigured, match="WEBHOOK_SIGNING_KEY"):
        secrets.secret("u1")
    with pytest.raises(NotConfigured, match="WEBHOOK_SIGNING_KEY"):
        secrets.rotate("u1")
    assert mongo_db["webhook_secrets"].find_one({"_id": "u1", "secret": {"$exists": True}}) is None


def test_an_older_stored_secret_is_kept_until_its_owner_rotates(mongo_db: Database[Any]) -> None:
    mongo_db["webhook_secrets"].insert_one({"_id": "old", "secret": "whsec_legacy"})
    secrets = Stores(mongo_db, webhook_key=KEY).webhook_secrets
    assert secrets.secret("old") == "whsec_legacy"  # its receiver keeps verifying
    fresh = secrets.rotate("old")
    assert fresh != "whsec_legacy" and secrets.secret("old") == fresh
    assert "legacy" not in everything_stored(mongo_db)  # the stored secret is gone
