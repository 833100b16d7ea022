"""`stationthis discord-bot`: the Discord bot and its delivery worker in one process (the only
one holding DISCORD_BOT_TOKEN)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from workers.config import Config


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "discord-bot",
        help="run the Discord bot and its delivery worker (queue `deliver-discord`)",
    )
    p.set_defaults(handler=_discord_bot_cmd)


def _discord_bot_cmd(args: argparse.Namespace) -> int:
    from adapters.discord.bot import run_discord_bot

    return asyncio.run(run_discord_bot(Config()))
