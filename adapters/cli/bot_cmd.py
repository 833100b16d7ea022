"""`stationthis bot [--webhook-url URL --listen-port P]`: the Telegram bot and its delivery
worker in one process (the only one holding TELEGRAM_BOT_TOKEN)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from workers.config import Config


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bot", help="run the Telegram bot and its delivery worker (queue `deliver-telegram`)"
    )
    p.add_argument(
        "--webhook-url",
        help="public HTTPS URL Telegram posts updates to (default: long polling)",
    )
    p.add_argument(
        "--listen-port",
        type=int,
        default=None,
        help="local port of the webhook server (default: TELEGRAM_WEBHOOK_PORT, 8443)",
    )
    from adapters.cli.workers_cmd import add_metrics_port

    add_metrics_port(p)
    p.set_defaults(handler=_bot_cmd)


def _bot_cmd(args: argparse.Namespace) -> int:
    # httpx logs every request (a long poll every few seconds) at INFO: only with -v. The
    # token in those URLs is masked either way (adapters/telegram/log_redaction.py).
    if not getattr(args, "verbose", False):
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("httpcore").setLevel(logging.WARNING)
    from adapters.cli.workers_cmd import serve_metrics
    from adapters.telegram.bot import run_bot

    config = Config()
    serve_metrics(args, config)
    return asyncio.run(run_bot(config, webhook_url=args.webhook_url, listen_port=args.listen_port))
