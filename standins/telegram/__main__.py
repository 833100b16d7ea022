"""`python -m standins.telegram [--host H] [--port P] [--token T]`.

Prints exactly one line `ready http://<host>:<port>` on stdout once listening (with `--port 0`
the port is the one the OS chose), then serves until SIGTERM or SIGINT. Point a bot at it with
`base_url=http://<host>:<port>/bot` and `base_file_url=http://<host>:<port>/file/bot`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from aiohttp import web

from standins.telegram.server import DEFAULT_TOKEN, create_app


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m standins.telegram", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--token", default=DEFAULT_TOKEN, help="the only bot token accepted")
    p.add_argument("--log-level", default="WARNING")
    return p.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    app = create_app(args.token)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    port = runner.addresses[0][1]
    print(f"ready http://{args.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
