"""Saved generation settings, validated against the user's balance-based limits on every write.

Bulk updates are all-or-nothing: `domain.settings.apply_updates` validates every field first and
raises one SettingsError naming each bad field before anything is written. Only the fields that
were given are `$set`, so two updates of different fields at the same moment both land.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pymongo.database import Database

from domain.errors import UnknownUser
from domain.rules import DEFAULT_RULES, DomainRules
from domain.settings import (
    Clamp,
    Limits,
    UserSettings,
    apply_updates,
    clamp_to_limits,
    limits_for,
    reset_settings,
)
from domain.users import User
from store.user_refs import resolve_user_id
from store.users import UserRepo, settings_from_doc

log = logging.getLogger(__name__)


class SettingsRepo:
    def __init__(
        self, db: Database[Any], users: UserRepo, *, rules: DomainRules = DEFAULT_RULES
    ) -> None:
        self.coll = db["users"]
        self.users = users
        self.rules = rules

    def _load(self, user: User | str) -> tuple[str, int, UserSettings]:
        user_id = resolve_user_id(self.coll, user)
        doc = self.coll.find_one({"_id": user_id}, {"points": 1, "settings": 1})
        if doc is None:
            raise UnknownUser(user_id)
        return user_id, int(doc.get("points", 0)), settings_from_doc(doc.get("settings"))

    def get(self, user: User | str) -> UserSettings:
        return self._load(user)[2]

    def limits(self, user: User | str) -> Limits:
        return limits_for(self._load(user)[1], self.rules.limits)

    def effective(self, user: User | str) -> tuple[UserSettings, list[Clamp]]:
        """The settings a run uses now: saved values clamped to today's limits, and which were."""
        _, points, saved = self._load(user)
        return clamp_to_limits(saved, limits_for(points, self.rules.limits))

    def update(self, user: User | str, updates: Mapping[str, Any], **context: Any) -> UserSettings:
        """Validate every update (SettingsError lists each bad field) and save all or none.

        `context` goes to `validate_setting`: samplers, schedulers, templates, checkpoints,
        group_chat.
        """
        user_id, points, current = self._load(user)
        limits = limits_for(points, self.rules.limits)
        new = apply_updates(current, updates, limits, rules=self.rules, **context)
        changed = {f"settings.{k}": getattr(new, k) for k in updates}
        if changed:
            result = self.coll.update_one({"_id": user_id}, {"$set": changed})
            if result.matched_count == 0:
                raise UnknownUser(user_id)
        log.info("settings of %s updated: %s", user_id, sorted(updates))
        return new

    def reset(self, user: User | str) -> UserSettings:
        """Defaults again; balance, history and models are untouched."""
        user_id, _, _ = self._load(user)
        defaults = reset_settings()
        self.coll.update_one({"_id": user_id}, {"$set": {"settings": defaults.model_dump()}})
        return defaults
