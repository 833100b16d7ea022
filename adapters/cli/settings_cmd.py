"""`stationthis settings show|set|reset`: a user's saved settings from the command line, the
same store and the same checks as the bot's /settings and /set (all of a `set` or none).

```sh
S=.venv/bin/stationthis; U=telegram:5472638766
$S settings show --user $U                      # values, and the limits their balance gives
$S settings set steps 24 --user $U
$S settings set width 768 height 768 batch 2 --user $U   # all or none: a bad one names itself
$S settings reset --user $U
```
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from adapters.cli.context import jobs_client
from adapters.cli.jobs_cmd import run_cli
from domain.errors import UserInputError
from domain.settings import Limits, UserSettings


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("settings", help="a user's saved settings: show, set, reset")
    sub = p.add_subparsers(dest="settings_command", required=True, metavar="ACTION")
    show = sub.add_parser("show", help="the saved settings and the balance's limits")
    show.add_argument("--user", required=True)
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=lambda a: run_cli(_show(a)))
    put = sub.add_parser("set", help="KEY VALUE [KEY VALUE …]: all of them or none")
    put.add_argument("pairs", nargs="+", metavar="KEY VALUE")
    put.add_argument("--user", required=True)
    put.set_defaults(handler=lambda a: run_cli(_set(a)))
    reset = sub.add_parser("reset", help="back to the defaults (balance and history stay)")
    reset.add_argument("--user", required=True)
    reset.set_defaults(handler=lambda a: run_cli(_reset(a)))


def pairs_to_updates(pairs: list[str]) -> dict[str, str]:
    """`["steps", "24", "width", "768"]` → `{"steps": "24", "width": "768"}`."""
    if len(pairs) % 2:
        raise UserInputError(f"give KEY VALUE pairs: {pairs[-1]!r} has no value")
    updates: dict[str, str] = {}
    for key, value in zip(pairs[::2], pairs[1::2], strict=True):
        if key in updates:
            raise UserInputError(f"{key} is given twice")
        updates[key] = value
    return updates


def _print(settings: UserSettings, limits: Limits) -> None:
    for key, value in settings.model_dump().items():
        print(f"{key:<14} {value if value != '' else '(none)'}")
    print(
        f"limits for a balance of {limits.balance}: size ≤ {limits.max_size}, "
        f"steps ≤ {limits.max_steps}, batch ≤ {limits.max_batch}"
    )


async def _show(args: argparse.Namespace) -> int:
    async with jobs_client() as jobs:
        settings = await jobs.settings(args.user)
        limits = await jobs.limits(args.user)
    if args.json:
        print(json.dumps({"settings": settings.model_dump(), "limits": limits.model_dump()}))
    else:
        _print(settings, limits)
    return 0


async def _set(args: argparse.Namespace) -> int:
    updates = pairs_to_updates(args.pairs)
    async with jobs_client() as jobs:
        settings = await jobs.update_settings(args.user, updates)
        limits = await jobs.limits(args.user)
    print("saved: " + ", ".join(f"{k}={getattr(settings, k)}" for k in updates))
    _print(settings, limits)
    return 0


async def _reset(args: argparse.Namespace) -> int:
    async with jobs_client() as jobs:
        settings = await jobs.reset_settings(args.user)
        limits = await jobs.limits(args.user)
    print("settings reset to the defaults")
    _print(settings, limits)
    return 0
