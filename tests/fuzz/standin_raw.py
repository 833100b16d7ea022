"""The Bot API stand-in plus one extra control route for fuzzing: `POST /_control/raw_update`
`{"update": {...}}` queues an arbitrary Update (its `update_id` is assigned here), so a test can
send what the ordinary `send`/`press` controls refuse to build: callback data no button carries,
messages without text, edited messages, channel posts, unknown update kinds.

`python -m tests.fuzz.standin_raw --port 0` prints `ready http://host:port` like the original;
everything else is the real stand-in (`standins.telegram`).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from aiohttp import web

from standins.telegram.server import DEFAULT_TOKEN, STATE_KEY, create_app


async def raw_update(request: web.Request) -> web.Response:
    """Queue `body["update"]` as the next update, whatever it holds."""
    state = request.app[STATE_KEY]
    body: dict[str, Any] = await request.json()
    update = dict(body["update"])
    kind = next((k for k in update if k != "update_id"), "message")
    update_id = state.enqueue(kind, update.get(kind, {}))
    # `enqueue` builds {"update_id", kind: payload}; extra top-level keys are kept as given.
    stored = state.updates[-1]
    stored.update({k: v for k, v in update.items() if k not in ("update_id", kind)})
    payload = update.get(kind)
    if kind == "callback_query" and isinstance(payload, dict) and "id" in payload:
        message = payload.get("message") or {}
        state.callback_queries[str(payload["id"])] = {
            "chat_id": (message.get("chat") or {}).get("id"),
            "message_id": message.get("message_id"),
        }
    return web.json_response({"update_id": update_id})


async def _serve(host: str, port: int, token: str) -> None:
    app = create_app(token)
    app.router.add_post("/_control/raw_update", raw_update)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"ready http://{host}:{runner.addresses[0][1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.fuzz.standin_raw")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--token", default=DEFAULT_TOKEN)
    args = p.parse_args(argv)
    asyncio.run(_serve(args.host, args.port, args.token))
    return 0


if __name__ == "__main__":
    sys.exit(main())
