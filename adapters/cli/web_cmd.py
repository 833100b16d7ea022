"""`stationthis web` (the HTTP API and web page) and `stationthis apikey create|list|revoke`.

`web` serves `adapters.web.app.create_app` with uvicorn over one jobs client, on
`WEB_HOST:WEB_PORT` (`--host/--port` win). `apikey` is the operator's way to give a user a key
(the bot's /apikey is the user's): the key is printed once and only its hash is stored.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from adapters.cli.points import open_stores


def register(subparsers: Any) -> None:
    """Add `web` and `apikey` to the CLI tree."""
    web = subparsers.add_parser("web", help="serve the HTTP API (/v1, OpenAPI at /docs)")
    web.add_argument("--host", help="address to bind (default WEB_HOST, 127.0.0.1)")
    web.add_argument("--port", type=int, help="port (default WEB_PORT, 8080; 0: a free one)")
    web.set_defaults(handler=run_web)

    keys = subparsers.add_parser("apikey", help="create, list or revoke a user's API keys")
    sub = keys.add_subparsers(dest="apikey_command", required=True, metavar="ACTION")
    create = sub.add_parser("create", help="create a key (printed once, stored hashed)")
    create.add_argument("--user", required=True, help="identity, e.g. telegram:5472638766")
    create.add_argument("--name", default="", help="a label shown in lists")
    create.set_defaults(handler=run_create)
    listing = sub.add_parser("list", help="a user's keys (ids only, never the keys)")
    listing.add_argument("--user", required=True)
    listing.set_defaults(handler=run_list)
    revoke = sub.add_parser("revoke", help="revoke a key by its id (st_xxxxxxxx)")
    revoke.add_argument("--user", required=True)
    revoke.add_argument("key_id", metavar="KEY_ID")
    revoke.set_defaults(handler=run_revoke)


def run_create(args: argparse.Namespace) -> int:
    stores = open_stores()
    try:
        stores.users.get_or_create(args.user)
        token, key = stores.api_keys.create(args.user, args.name)
    finally:
        stores.close()
    print(f"{token}\n(key id {key.key_id} for {key.identity}: shown once, keep it secret)")
    return 0


def run_list(args: argparse.Namespace) -> int:
    stores = open_stores()
    try:
        keys = stores.api_keys.list(args.user)
    finally:
        stores.close()
    for k in keys:
        state = "active" if k.active else f"revoked {k.revoked_at:%Y-%m-%d %H:%M}"
        print(f"{k.key_id}  {k.created_at:%Y-%m-%d %H:%M}  {state}  {k.name}")
    if not keys:
        print("no API keys")
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    stores = open_stores()
    try:
        done = stores.api_keys.revoke(args.user, args.key_id)
    finally:
        stores.close()
    if not done:
        print(f"error: {args.user} has no active key {args.key_id}", file=sys.stderr)
        return 1
    print(f"revoked {args.key_id}")
    return 0


def run_web(args: argparse.Namespace) -> int:
    """Serve until a signal: uvicorn over the app, one jobs client for every request."""
    import uvicorn

    from adapters.cli.context import jobs_client
    from adapters.web.app import create_app
    from workers.config import Config
    from workers.webhook_worker import webhook_worker

    config = Config()
    host = args.host or config.web_host
    port = config.web_port if args.port is None else args.port

    async def serve() -> None:
        async with jobs_client(config) as jobs:
            app = create_app(config, jobs)
            server = uvicorn.Server(
                uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False)
            )
            # The webhook deliveries run in this process, on the `deliver-webhook` queue.
            async with webhook_worker(config, jobs):
                await server.serve()

    asyncio.run(serve())
    return 0
