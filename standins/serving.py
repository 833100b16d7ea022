"""How every stand-in runs as a process: one `ready http://host:port` line, then serve until
SIGTERM or SIGINT.

The test fixtures and the dev stack start each stand-in with `--port 0` and read the port the OS
chose from that line, so all stand-ins must print it the same way and only once listening.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

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
