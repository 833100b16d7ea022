"""Webhook mode: updates are POSTed with the secret header, and polling is refused meanwhile."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from telegram import Bot
from telegram.error import Conflict

from tests.fixtures.telegram import TelegramStandin

USER = 999003


class Receiver:
    """A tiny webhook endpoint that records what it gets and can fail on purpose."""

    def __init__(self) -> None:
        self.received: list[tuple[str | None, dict[str, Any]]] = []
        self.failures_left = 0
        self.arrived = asyncio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        if self.failures_left:
            self.failures_left -= 1
            return web.Response(status=500)
        secret = request.headers.get("X-Telegram-Bot-Api-Secret-Token")
        self.received.append((secret, json.loads(await request.read())))
        self.arrived.set()
        return web.Response()

    async def wait(self, count: int, timeout: float = 5.0) -> None:
        async def enough() -> None:
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(enough(), timeout)


@pytest_asyncio.fixture(loop_scope="session")
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    app = web.Application()
    app.router.add_post("/hook", recv.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    recv.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        yield recv
    finally:
        await runner.cleanup()


async def test_updates_reach_the_webhook_with_the_secret(
    bot: Bot, telegram: TelegramStandin, receiver: Receiver
) -> None:
    await telegram.options_async(allow_http_webhook=True)  # the receiver has no TLS
    try:
        assert await bot.set_webhook(receiver.url, secret_token="s3cret-token")
        info = await bot.get_webhook_info()
        assert info.url == receiver.url and info.pending_update_count == 0

        with pytest.raises(Conflict, match="webhook is active"):
            await bot.get_updates(timeout=0)

        receiver.failures_left = 1  # the first attempt fails; Telegram retries
        sent = await telegram.send_async(USER, "/start")
        await receiver.wait(1)
        secret, update = receiver.received[0]
        assert secret == "s3cret-token"
        assert update["update_id"] == sent["update_id"]
        assert update["message"]["text"] == "/start"
        assert (await bot.get_webhook_info()).last_error_message is not None
        assert telegram.pending_updates() == []
    finally:
        assert await bot.delete_webhook()
    assert await bot.get_updates(timeout=0) == ()
