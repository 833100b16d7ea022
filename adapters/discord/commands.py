"""Slash commands: declared once on the tree, each a thin call into the jobs client.

Personal data (balance, settings) is only ever answered ephemerally, so in a guild channel
only the person who asked sees it (issue 20, item 5). Identities are `discord:<user id>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import discord
from discord import app_commands

from adapters.telegram.render import balance_text
from domain.settings import Limits
from domain.users import LedgerEntry

RECENT_ENTRIES = 5


class BalanceSource(Protocol):
    """The part of `adapters.jobs.JobsClient` the commands so far use."""

    async def balance_summary(
        self, identity: str, n: int = 5
    ) -> tuple[int, Sequence[LedgerEntry]]: ...

    async def limits(self, identity: str) -> Limits: ...


def identity_of(user: discord.abc.User) -> str:
    """The StationThis identity of a Discord user (the same in guilds and DMs)."""
    return f"discord:{user.id}"


def register_commands(tree: app_commands.CommandTree, jobs: BalanceSource) -> None:
    """Add every slash command to `tree` (registration with Discord is `tree.sync()`)."""

    @tree.command(name="balance", description="Your points, limits and recent charges")
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
    async def balance(interaction: discord.Interaction) -> None:
        """/balance: ephemeral; deferred first so a slow store never misses the 3 s deadline."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        who = identity_of(interaction.user)
        points, entries = await jobs.balance_summary(who, RECENT_ENTRIES)
        limits = await jobs.limits(who)
        await interaction.edit_original_response(
            content=balance_text(points, limits, list(entries))
        )
