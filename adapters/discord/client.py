"""Client setup: where discord.py connects, which intents it asks for, when commands sync.

discord.py keeps its REST base and gateway URL in two class attributes
(`discord.http.Route.BASE`, `discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`) rather than
per client, so `point_at` sets both, once per process, before the client starts; a plain
`discord.Client` never asks `GET /gateway/bot`, so these two are all it uses. Against real
Discord leave the defaults.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import discord
import discord.gateway
import discord.http
import yarl
from discord import app_commands

from adapters.discord.collections import on_modal_submit as on_collection_modal
from adapters.discord.commands import DiscordCommands, error_text, register_commands
from adapters.discord.progress import ProgressWatchers
from adapters.discord.training import ModelButton, TrainButton, on_modal_submit
from adapters.discord.views import JobButton
from adapters.telegram.ratelimit import RateLimiter
from domain.errors import StationError

log = logging.getLogger(__name__)

DISCORD_API_BASE = "https://discord.com/api/v10"
DISCORD_GATEWAY = "wss://gateway.discord.gg/"


@dataclass(frozen=True)
class DiscordSettings:
    """What the bot needs to know besides its token (kept out of logs and of this object).

    `sync_commands` bulk-overwrites the global commands at start: cheap and idempotent (a
    command keeps its id when its name stays), but Discord limits command creation per day,
    so a deployment that restarts often can turn it off and sync from a one-off run."""

    api_base: str = DISCORD_API_BASE
    gateway_url: str = DISCORD_GATEWAY
    sync_commands: bool = True
    command_rate: int = 20  # slash commands per member per `command_window` seconds
    command_window: float = 60.0


def point_at(settings: DiscordSettings) -> None:
    """Send discord.py's REST calls and gateway connection where `settings` say."""
    discord.http.Route.BASE = settings.api_base.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.gateway_url)


class StationThisDiscord(discord.Client):
    """The bot: a discord.py client with one command tree over the jobs client.

    Only the default (non-privileged) intents: slash commands and buttons arrive as
    interactions, so the bot needs neither MESSAGE_CONTENT nor GUILD_MEMBERS."""

    def __init__(
        self, jobs: Any, settings: DiscordSettings, *, guild_ready_timeout: float = 2.0
    ) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=guild_ready_timeout)
        self.settings = settings
        self.tree = app_commands.CommandTree(self)
        self.tree.on_error = self._on_command_error  # type: ignore[method-assign,unused-ignore]
        self.watchers = ProgressWatchers(self, jobs)
        limiter = RateLimiter(settings.command_rate, settings.command_window)
        register_commands(self.tree, jobs, DiscordCommands(jobs, self.watchers), limiter)

    async def setup_hook(self) -> None:
        """After login (the application id is known), before the gateway: answer the buttons
        of every message ever sent (persistent custom ids), then register commands."""
        self.add_dynamic_items(JobButton, TrainButton, ModelButton)
        if self.settings.sync_commands:
            synced = await self.tree.sync()
            log.info("registered %d global commands", len(synced))

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Modal submits are answered from their custom id (training.py, collections.py), so
        a modal opened before a restart still works; commands and buttons are discord.py's."""
        await on_modal_submit(interaction)
        await on_collection_modal(interaction)

    async def _on_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Log the failure; tell the user something went wrong, privately, without details."""
        log.error(
            "command %s failed", interaction.command and interaction.command.name, exc_info=error
        )
        original = getattr(error, "original", error)
        if isinstance(original, StationError):
            text = error_text(original)[:2000]  # a refusal: say why, with a next step
        else:
            text = "Something went wrong; nothing was charged for it. Please try again."
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException:
            log.warning("could not tell the user about the failed command")


def build_client(jobs: Any, settings: DiscordSettings | None = None) -> StationThisDiscord:
    """Point discord.py at Discord (or the stand-in) and make the bot; start it with
    `await client.start(token)`."""
    settings = settings or DiscordSettings()
    point_at(settings)
    return StationThisDiscord(jobs, settings)
