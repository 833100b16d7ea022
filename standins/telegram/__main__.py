"""`python -m standins.telegram [--host H] [--port P] [--token T]`.

Prints exactly one line `ready http://<host>:<port>` on stdout once listening (with `--port 0`
the port is the one the OS chose), then serves until SIGTERM or SIGINT. Point a bot at it with
`base_url=http://<host>:<port>/bot` and `base_file_url=http://<host>:<port>/file/bot`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from standins.serving import configure_logging, serve_until_signalled
from standins.telegram.server import DEFAULT_TOKEN, create_app


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m standins.telegram", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--token", default=DEFAULT_TOKEN, help="the only bot token accepted")
    p.add_argument("--log-level", default="WARNING")
    return p.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    await serve_until_signalled(create_app(args.token), args.host, args.port, shutdown_timeout=1.0)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    configure_logging(args.log_level)
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
