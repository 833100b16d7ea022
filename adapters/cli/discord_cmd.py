"""`stationthis discord-bot`: the Discord bot and its delivery worker in one process (the only
one holding DISCORD_BOT_TOKEN); `stationthis discord-guild GUILD [--batch N] [--collections
yes|no] [--reset]`: show or set a guild's rules as the operator (the guild's own managers use
/guildrules in the guild; store/guild_rules.py)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
from typing import Any

from adapters.cli.points import open_stores
from domain.errors import StationError
from workers.config import Config


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "discord-bot",
        help="run the Discord bot and its delivery worker (queue `deliver-discord`)",
    )
    p.set_defaults(handler=_discord_bot_cmd)

    g = subparsers.add_parser("discord-guild", help="show or set a Discord guild's rules")
    g.add_argument("guild", metavar="GUILD", help="the guild (server) id")
    g.add_argument("--batch", type=int, help="most images one make may have there")
    g.add_argument("--collections", choices=["yes", "no"], help="members may cook there")
    g.add_argument("--reset", action="store_true", help="back to the defaults")
    g.set_defaults(handler=_guild_cmd)


def _discord_bot_cmd(args: argparse.Namespace) -> int:
    from adapters.discord.bot import run_discord_bot

    return asyncio.run(run_discord_bot(Config()))


def _guild_cmd(args: argparse.Namespace) -> int:
    from adapters.discord.guild_rules import rules_text

    stores = open_stores()
    try:
        repo = stores.guild_rules
        if args.reset:
            rules = repo.reset("discord", args.guild)
        else:
            allow = None if args.collections is None else args.collections == "yes"
            rules = repo.set(
                "discord",
                args.guild,
                by=f"operator:{getpass.getuser()}",
                batch=args.batch,
                collections=allow,
            )
    except StationError as err:
        print(f"error: {err.message}")
        return 2
    finally:
        stores.close()
    print(rules_text(rules).replace("This server's rules:", f"Guild {args.guild}:"))
    return 0
