"""A real python-telegram-bot `Bot` pointed at the session's Bot API stand-in."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from telegram import Bot

from tests.fixtures.telegram import TelegramStandin


@pytest_asyncio.fixture(loop_scope="session")
async def bot(telegram: TelegramStandin) -> AsyncIterator[Bot]:
    """An initialised Bot talking to a freshly reset stand-in."""
    async with Bot(
        telegram.token, base_url=telegram.base_url, base_file_url=telegram.base_file_url
    ) as b:
        yield b
