"""How every stand-in runs as a process: one `ready http://host:port` line, then serve until
SIGTERM or SIGINT.

The test fixtures and the dev stack start each stand-in with `--port 0` and read the port the OS
chose from that line, so all stand-ins must print it the same way and only once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable

from aiohttp import web


async def serve_until_signalled(
    app: web.Application, host: str, port: int, *, shutdown_timeout: float = 60.0
) -> None:
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    print(f"ready http://{host}:{runner.addresses[0][1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def configure_logging(level: str) -> None:
    """Logs to stderr: stdout carries only the ready line."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def run_platform_standin(
    module: str,
    doc: str | None,
    default_port: int,
    default_token: str,
    create_app: Callable[[str], web.Application],
    argv: list[str] | None = None,
) -> int:
    """`python -m <module> [--host H] [--port P] [--token T] [--log-level L]` of a platform
    stand-in (Telegram, Discord): one bot token accepted, shut down within a second."""
    p = argparse.ArgumentParser(prog=f"python -m {module}", description=doc)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=default_port)
    p.add_argument("--token", default=default_token, help="the only bot token accepted")
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)
    configure_logging(args.log_level)
    app = create_app(args.token)
    asyncio.run(serve_until_signalled(app, args.host, args.port, shutdown_timeout=1.0))
    return 0
