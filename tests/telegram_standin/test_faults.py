"""Injected failures look to python-telegram-bot exactly like Telegram's own."""

from __future__ import annotations

import datetime as dtm

import pytest
from telegram import Bot
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter

from tests.fixtures.telegram import TelegramStandin
from tests.telegram_standin.util import png

# PTB warns about RetryAfter.retry_after's coming type change every time one is raised.
pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

USER = 888002


def seconds(exc: RetryAfter) -> float:
    """retry_after as seconds, in whichever type this PTB version returns."""
    value = exc.retry_after
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


async def test_flood_control_surfaces_as_retry_after_once(
    bot: Bot, telegram: TelegramStandin
) -> None:
    await telegram.faults_async("sendPhoto", 429, retry_after=2, count=1)
    with pytest.raises(RetryAfter) as caught:
        await bot.send_photo(USER, png(32, 32))
    assert seconds(caught.value) == 2
    await bot.send_photo(USER, png(32, 32))  # the retry goes through
    assert [c["status"] for c in await telegram.calls_async("sendPhoto")] == [429, 200]
    assert len(await telegram.messages_async(USER)) == 1


async def test_a_user_who_blocked_the_bot_is_forbidden(bot: Bot, telegram: TelegramStandin) -> None:
    telegram.faults(blocked_chat_id=USER)
    with pytest.raises(Forbidden, match="blocked by the user"):
        await bot.send_message(USER, "your image is ready")
    await bot.send_message(USER + 1, "others still get messages")
    telegram.faults(unblocked_chat_id=USER)
    await bot.send_message(USER, "welcome back")
    assert [m["text"] for m in telegram.messages(USER)] == ["welcome back"]


async def test_network_trouble_is_a_network_error(bot: Bot, telegram: TelegramStandin) -> None:
    telegram.faults("sendMessage", 502)
    with pytest.raises(NetworkError, match="Bad Gateway"):
        await bot.send_message(USER, "hi")
    telegram.faults("sendMessage", drop=True)
    with pytest.raises(NetworkError):
        await bot.send_message(USER, "hi")
    telegram.faults("*", 400, description="Bad Request: chat not found", chat_id=USER)
    with pytest.raises(BadRequest, match=r"(?i)chat not found"):
        await bot.send_chat_action(USER, "typing")
    assert (await bot.send_message(USER, "hi")).text == "hi"
    assert telegram.messages(USER)[-1]["text"] == "hi"
