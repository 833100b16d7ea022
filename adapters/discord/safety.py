"""Discord /safety: a guild's content filter for generated images (issue 19).

`/safety` shows the policy that applies here; `/safety off|blur|block|default` sets it. In a
guild the setting is the guild's (every channel of it) and only members with the Manage Server
permission may change it: Discord sends the member's resolved permissions with every
interaction (`member.permissions`), so no extra request is needed and a modified client cannot
claim more. In the bot's DMs the user chooses for that DM like a Telegram private chat (blur or
block, `off` only if the operator allows unfiltered results). The place is always the one the
command came from. Every rule is in domain/safety.py and store/safety.py (`SafetyRepo.choose`,
the same entry point as Telegram's `/safety`); this module only asks and answers, ephemerally.
"""

from __future__ import annotations

import asyncio
from typing import Any

import discord

from adapters.telegram.safety import EXPLAIN
from domain.errors import StationError
from domain.safety import Policy, SafetyPlace

USAGE = "Usage: /safety off | blur | block | default (in a server: members with Manage Server)"
CHOICES = (*(p.value for p in Policy), "default")


def place_of(interaction: discord.Interaction) -> SafetyPlace:
    """The guild the command came from, else its DM channel (the keys store/safety.py's
    `place_of` gives the jobs started there)."""
    if interaction.guild_id is not None:
        return SafetyPlace(platform="discord", chat_id=str(interaction.guild_id), group=True)
    return SafetyPlace(platform="discord", chat_id=str(interaction.channel_id), group=False)


def may_manage(interaction: discord.Interaction) -> bool:
    """Discord's own answer for the presser: Manage Server (or Administrator) in this guild."""
    perms = interaction.permissions
    return bool(perms.manage_guild or perms.administrator)


async def safety(interaction: discord.Interaction, jobs: Any, choice: str | None) -> None:
    """/safety [off|blur|block|default]: show or set this place's content filter."""
    from adapters.discord.commands import identity_of, say

    repo = jobs.stores.safety
    place = place_of(interaction)
    if not choice:
        applies, _ = await asyncio.to_thread(repo.policy_for, place)
        own = await asyncio.to_thread(repo.chat_policy, place)
        where = "this server's own setting" if place.group else "this chat's own setting"
        where = where if own else "the operator's default"
        await say(interaction, f"Content filter here: {EXPLAIN[applies]} ({where}).\n{USAGE}")
        return
    choice = choice.strip().lower()
    if choice not in CHOICES:
        await say(interaction, USAGE)
        return
    policy = None if choice == "default" else Policy(choice)
    admin = may_manage(interaction) if place.group else True
    try:
        applies = await asyncio.to_thread(
            repo.choose, place, policy, by=identity_of(interaction.user), is_admin=admin
        )
    except StationError as err:
        await say(interaction, f"⚠️ {err.message}")
        return
    await say(interaction, f"✓ Content filter here is now {EXPLAIN[applies]}.")
