"""A loopback stand-in for Discord's Gateway v10 and REST API, for tests and offline development.

A real aiohttp server that a real discord.py client connects to once two class attributes point
at it (`discord.http.Route.BASE = f"{url}/api/v10"` and
`discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(ws_url)`). It keeps the guild's and
DMs' messages, the registered application commands and each interaction's state, enforces
Discord's limits with Discord's error bodies, and has a JSON control API under `/_control/` so a
test can act as a user (run a slash command, press a button) and read what the bot did. Run it
with `python -m standins.discord --port P` (or `stationthis-discord-standin`). What it models of
real Discord, and what not, is in README.md next to this file.
"""

from __future__ import annotations

from standins.discord.server import create_app
from standins.discord.state import DEFAULT_TOKEN, DiscordState

__all__ = ["DEFAULT_TOKEN", "DiscordState", "create_app"]
