"""The bot's one sender (adapters/telegram/flood.py): every call of the Application's bot goes
through PTB's AIORateLimiter plus a per-chat pace, and a 429 is retried after retry_after."""

from __future__ import annotations

import time
from typing import Any

import pytest
from telegram.error import RetryAfter
from telegram.ext import AIORateLimiter

from adapters.telegram.bot import build_application
from adapters.telegram.flood import MAX_RETRIES, ChatRateLimiter, counts_as_message
from adapters.telegram.ratelimit import EditPacer
from workers.config import Config


def test_the_application_bot_carries_the_rate_limiter() -> None:
    config = Config(telegram_bot_token="123456:TEST-TOKEN")  # type: ignore[arg-type]
    app = build_application(config, jobs=None, pacer=EditPacer())  # type: ignore[arg-type]
    assert isinstance(app.bot.rate_limiter, ChatRateLimiter)
    assert isinstance(app.bot.rate_limiter, AIORateLimiter)
    assert app.bot.rate_limiter._max_retries == MAX_RETRIES > 0


def test_only_new_messages_count_against_a_chat() -> None:
    assert counts_as_message("sendMessage") and counts_as_message("sendMediaGroup")
    assert counts_as_message("copyMessage") and counts_as_message("forwardMessage")
    assert not counts_as_message("sendChatAction")
    assert not counts_as_message("editMessageText") and not counts_as_message("getUpdates")


async def test_messages_to_one_chat_are_paced_after_the_burst() -> None:
    limiter = ChatRateLimiter(chat_per_second=10.0, chat_burst=2)
    sent: list[float] = []

    async def send(*_: Any, **__: Any) -> bool:
        sent.append(time.monotonic())
        return True

    start = time.monotonic()
    for _ in range(5):
        await limiter.process_request(send, (), {}, "sendMessage", {"chat_id": 42}, None)
    assert sent[-1] - start >= 0.25  # 2 at once, then one every 0.1 s
    before = time.monotonic()
    for _ in range(5):  # another chat, and chat actions, are not held by chat 42's pace
        await limiter.process_request(send, (), {}, "sendMessage", {"chat_id": 43}, None)
        await limiter.process_request(send, (), {}, "sendChatAction", {"chat_id": 42}, None)
    assert time.monotonic() - before < 0.4


async def test_a_429_is_retried_after_retry_after_and_surfaces_after_max_retries() -> None:
    limiter = ChatRateLimiter(max_retries=2)
    calls: list[float] = []

    async def flooded_once(*_: Any, **__: Any) -> bool:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RetryAfter(1)
        return True

    assert await limiter.process_request(flooded_once, (), {}, "sendPhoto", {"chat_id": 7}, None)
    assert len(calls) == 2 and calls[1] - calls[0] >= 1.0

    async def always(*_: Any, **__: Any) -> bool:
        raise RetryAfter(0)

    with pytest.raises(RetryAfter):
        await limiter.process_request(always, (), {}, "sendPhoto", {"chat_id": 7}, None)
