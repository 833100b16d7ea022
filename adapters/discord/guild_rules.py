"""Discord's per-guild rules, like Telegram groups' (issue 20, item 5).

* `/guildrules [batch] [collections]` (guild-only): shows the server's rules to anyone who asks
  (ephemerally); changes them only for members with Manage Server — Discord's own answer, sent
  with every interaction (`safety.may_manage`), so a modified client cannot claim more. The rules
  are stored per guild (store/guild_rules.py) and applied where the work is planned: a make's
  batch in services/job_plans.py, collections and cooks in services/collections.py.
* A per-member command rate limit (`CommandGate`), the same sliding window as Telegram's
  (`adapters.telegram.ratelimit.RateLimiter`, one copy): over it a command is not run, the member
  is told once per window, privately, and the rest go unanswered (no REST call is spent on a
  flood). It runs as the command tree's `interaction_check`, before every slash command.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import discord
from discord import app_commands

from adapters.discord.safety import may_manage
from adapters.telegram.ratelimit import RateLimiter
from domain.errors import StationError
from domain.guild_rules import GuildRules

log = logging.getLogger(__name__)

COMMAND_RATE = 20  # commands per member …
COMMAND_WINDOW = 60.0  # … per this many seconds (Config.discord_command_rate / _window)
USAGE = "Usage: /guildrules batch:<1…{cap}> collections:<on|off> (members with Manage Server)"


def rules_text(rules: GuildRules) -> str:
    allowed = "allowed" if rules.collections else "not allowed (use them in a DM with the bot)"
    return (
        f"This server's rules: a make has at most {rules.batch} image(s); collections and "
        f"cooks are {allowed}."
    )


async def guildrules(
    interaction: discord.Interaction, jobs: Any, batch: int | None, collections: bool | None
) -> None:
    """/guildrules: show the server's rules, or change them (Manage Server only)."""
    from adapters.discord.commands import identity_of, say

    repo = jobs.stores.guild_rules
    if interaction.guild_id is None:  # declared guild-only; a forged DM event lands here
        await say(interaction, "Server rules are set in a server.")
        return
    guild = str(interaction.guild_id)
    if batch is None and collections is None:
        rules = await asyncio.to_thread(repo.get, "discord", guild)
        await say(interaction, f"{rules_text(rules)}\n{USAGE.format(cap=repo.batch_cap)}")
        return
    try:
        rules = await asyncio.to_thread(
            lambda: repo.choose(
                "discord",
                guild,
                by=identity_of(interaction.user),
                is_admin=may_manage(interaction),
                batch=batch,
                collections=collections,
            )
        )
    except StationError as err:
        await say(interaction, f"⚠️ {err.message}")
        return
    log.info("guild %s rules set by %s: %s", guild, interaction.user.id, rules)
    await say(interaction, f"✓ {rules_text(rules)}")


class CommandGate:
    """The per-member command rate limit, as the command tree's `interaction_check`."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def check(self, interaction: discord.Interaction) -> bool:
        key = f"discord:{interaction.user.id}"
        wait = self.limiter.check(key)
        if wait <= 0:
            return True
        if self.limiter.should_warn(key):
            text = (
                f"You are sending commands faster than this bot takes them: please wait "
                f"{wait:.0f} s. Commands sent meanwhile are ignored."
            )
            try:
                await interaction.response.send_message(text, ephemeral=True)
            except discord.HTTPException:
                log.info("could not tell %s to slow down", interaction.user.id)
        return False


def register(
    tree: app_commands.CommandTree, jobs: Any, limiter: RateLimiter | None = None
) -> CommandGate:
    """Add /guildrules and the rate limit to `tree`."""
    gate = CommandGate(limiter or RateLimiter(COMMAND_RATE, COMMAND_WINDOW))
    tree.interaction_check = gate.check  # type: ignore[method-assign]

    @tree.command(name="guildrules", description="This server's rules for the bot")
    @app_commands.allowed_contexts(guilds=True, dms=False, private_channels=False)
    @app_commands.describe(
        batch="Most images one make may have here (Manage Server)",
        collections="Whether members may start collections and cooks here (Manage Server)",
    )
    async def guildrules_cmd(
        interaction: discord.Interaction,
        batch: app_commands.Range[int, 1, None] | None = None,  # the cap: the store's
        collections: bool | None = None,
    ) -> None:
        await guildrules(interaction, jobs, batch, collections)

    return gate
