"""`python -m standins.telegram [--host H] [--port P] [--token T]`.

Prints exactly one line `ready http://<host>:<port>` on stdout once listening (with `--port 0`
the port is the one the OS chose), then serves until SIGTERM or SIGINT. Point a bot at it with
`base_url=http://<host>:<port>/bot` and `base_file_url=http://<host>:<port>/file/bot`.
"""

from __future__ import annotations

import sys

from standins.serving import run_platform_standin
from standins.telegram.server import DEFAULT_TOKEN, create_app


def main(argv: list[str] | None = None) -> int:
    return run_platform_standin("standins.telegram", __doc__, 8081, DEFAULT_TOKEN, create_app, argv)


if __name__ == "__main__":
    sys.exit(main())
