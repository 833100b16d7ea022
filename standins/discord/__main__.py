"""`python -m standins.discord [--host H] [--port P] [--token T]`.

Prints exactly one line `ready http://<host>:<port>` on stdout once listening (with `--port 0`
the port is the one the OS chose), then serves until SIGTERM or SIGINT. Point discord.py at it
with `discord.http.Route.BASE = "http://<host>:<port>/api/v10"` and
`discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL("ws://<host>:<port>/")`.
"""

from __future__ import annotations

import sys

from standins.discord.server import create_app
from standins.discord.state import DEFAULT_TOKEN
from standins.serving import run_platform_standin


def main(argv: list[str] | None = None) -> int:
    """Entry point of `stationthis-discord-standin`."""
    return run_platform_standin("standins.discord", __doc__, 8082, DEFAULT_TOKEN, create_app, argv)


if __name__ == "__main__":
    sys.exit(main())
