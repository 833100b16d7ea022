"""Accounts: users, their settings and limits, balances, ledger entries and grants."""

from __future__ import annotations

import asyncio
from typing import Any

from domain.errors import UserInputError
from domain.settings import Limits, UserSettings
from domain.users import LedgerEntry, User
from services.base import ServiceBase


class AccountService(ServiceBase):
    """A user's account: identity, settings, points."""

    async def register(self, identity: str) -> tuple[User, bool]:
        """The user behind `identity`, created with the starter grant (once) if new."""
        return await asyncio.to_thread(self.stores.users.get_or_create, identity)

    async def user(self, identity: str) -> User:
        return await asyncio.to_thread(self.stores.users.get, identity)

    async def settings(self, identity: str) -> UserSettings:
        return await asyncio.to_thread(self.stores.settings.get, identity)

    async def limits(self, identity: str) -> Limits:
        return await asyncio.to_thread(self.stores.settings.limits, identity)

    async def update_settings(
        self, identity: str, updates: dict[str, Any], *, group_chat: bool = False
    ) -> UserSettings:
        """Validate and save all of `updates` or none (SettingsError names each bad field).

        A checkpoint must be one the template (the new one, else the saved one) can use; its
        error lists that family's checkpoints only."""
        context: dict[str, Any] = {"group_chat": group_chat}
        if updates.get("checkpoint"):
            context["checkpoints"] = await asyncio.to_thread(
                self._checkpoint_choices, identity, updates
            )
        return await asyncio.to_thread(self.stores.settings.update, identity, updates, **context)

    def _checkpoint_choices(self, identity: str, updates: dict[str, Any]) -> list[str] | None:
        name = updates.get("template") or self.stores.settings.get(identity).template
        try:
            return self._planner.checkpoint_choices(str(name))
        except UserInputError:
            return None  # an unknown template: its own field reports it

    async def reset_settings(self, identity: str) -> UserSettings:
        return await asyncio.to_thread(self.stores.settings.reset, identity)

    async def balance_summary(self, identity: str, n: int = 5) -> tuple[int, list[LedgerEntry]]:
        """The balance and the user's last `n` ledger entries (charges, refunds, grants)."""
        balance = await asyncio.to_thread(self.stores.ledger.balance, identity)
        entries = await asyncio.to_thread(self.stores.ledger.entries, identity, n)
        return balance, entries

    async def grant(self, identity: str, amount: int, *, by: str, key: str) -> int:
        """Add points once per `key` (a redelivered admin command grants nothing more);
        returns the balance after the grant."""
        if amount <= 0:
            raise UserInputError(f"the amount must be a positive whole number, got {amount}")
        result = await asyncio.to_thread(
            self.stores.ledger.grant, identity, amount, key, by=by, reason="admin grant"
        )
        return result.balance

    async def link_code(self, identity: str) -> str:
        """A one-time code (10 minutes) that links another platform's identity to this user's
        account: given by one adapter (`/login` on Discord), redeemed on another."""
        return await asyncio.to_thread(self.stores.users.create_link_code, identity)

    async def redeem_link(self, code: str, identity: str) -> User:
        """Add `identity` to the account that made `code` (LinkCodeError when the code is
        unknown, used or expired, or the identity already belongs to another account)."""
        return await asyncio.to_thread(self.stores.users.redeem_link_code, code, identity)
