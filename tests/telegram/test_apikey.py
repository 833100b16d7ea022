"""/apikey in the bot: a key shown once in a private chat, usable on the API, revocable; a
group gets no key."""

from __future__ import annotations

import asyncio
import re

import pytest

from adapters.jobs import JobsClient
from tests.fixtures.telegram import TelegramStandin
from tests.telegram.conftest import BotProcess
from tests.telegram.test_bot import bot_text

pytestmark = pytest.mark.stack


async def test_apikey_is_given_in_private_only_and_can_be_revoked(
    bot: BotProcess, telegram: TelegramStandin, user_id: int, jobs: JobsClient
) -> None:
    group = -user_id
    telegram.send(user_id, "/apikey", chat_id=group, chat_type="group")
    bot_text(telegram, group, "only in a private chat")
    assert not await asyncio.to_thread(jobs.stores.api_keys.list, f"telegram:{user_id}")

    telegram.send(user_id, "/apikey")
    shown = bot_text(telegram, user_id, "Your new API key")["text"]
    token = re.search(r"st_[A-Za-z0-9_-]{20,}", shown)
    assert token is not None, shown
    key = await asyncio.to_thread(jobs.stores.api_keys.verify, token.group(0))
    assert key is not None and key.identity == f"telegram:{user_id}"
    stored = await asyncio.to_thread(jobs.stores.db["api_keys"].find_one, {"key_id": key.key_id})
    assert token.group(0) not in str(stored)  # only the hash is kept

    telegram.send(user_id, f"/apikey revoke {key.key_id}")
    bot_text(telegram, user_id, f"Revoked {key.key_id}")
    assert await asyncio.to_thread(jobs.stores.api_keys.verify, token.group(0)) is None
