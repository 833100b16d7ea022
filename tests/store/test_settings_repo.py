"""Saved settings: validated against the balance's limits, all-or-nothing, reset to defaults."""

from __future__ import annotations

import pytest

from domain.errors import SettingsError, UnknownUser
from domain.settings import UserSettings
from store.db import Stores
from tests.store.conftest import MAIN_USER


def test_a_bulk_update_with_one_bad_field_writes_nothing(stores: Stores) -> None:
    user, _ = stores.users.get_or_create(MAIN_USER)
    before = stores.db["users"].find_one({"_id": user.id})
    with pytest.raises(SettingsError) as exc:
        stores.settings.update(user, {"steps": 20, "width": 1001, "cfg": 99})
    fields = {e.field for e in exc.value.errors}
    assert fields == {"width", "cfg"}
    assert "multiple of 8" in exc.value.message
    assert stores.db["users"].find_one({"_id": user.id}) == before
    assert stores.settings.get(user) == UserSettings()


def test_limits_follow_the_balance(stores: Stores) -> None:
    user, _ = stores.users.get_or_create(MAIN_USER)
    with pytest.raises(SettingsError, match="1 … 1"):
        stores.settings.update(user, {"batch": 2})
    stores.ledger.grant(user, 1500, "topup", by="admin", reason="test")  # 2000 points
    saved = stores.settings.update(user, {"batch": 2, "width": 1280, "steps": 34})
    assert (saved.batch, saved.width, saved.steps) == (2, 1280, 34)
    assert stores.settings.get(MAIN_USER) == saved


def test_settings_above_a_dropped_limit_are_clamped_at_run_time(stores: Stores) -> None:
    user, _ = stores.users.get_or_create(MAIN_USER)
    stores.ledger.grant(user, 1500, "topup", by="admin", reason="test")
    stores.settings.update(user, {"batch": 2, "steps": 34})
    stores.ledger.charge(user, 1500, "spend:charge", job_id="spend", reason="big job")
    used, clamps = stores.settings.effective(user)
    assert (used.batch, used.steps) == (1, 30)
    assert {(c.field, c.saved, c.used) for c in clamps} == {("batch", 2, 1), ("steps", 34, 30)}
    assert stores.settings.get(user).batch == 2  # saved value kept; only the run is clamped


def test_reset_restores_defaults_and_keeps_the_balance(stores: Stores) -> None:
    user, _ = stores.users.get_or_create(MAIN_USER)
    stores.settings.update(user, {"steps": 12, "negative": "blurry", "sampler": "ddim"})
    assert stores.settings.reset(user) == UserSettings()
    assert stores.settings.get(user) == UserSettings()
    assert stores.ledger.balance(user) == 500


def test_settings_of_an_unknown_user_are_refused(stores: Stores) -> None:
    with pytest.raises(UnknownUser):
        stores.settings.update("telegram:9", {"steps": 10})
