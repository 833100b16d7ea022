"""Plain text in a private chat (issue 14, item 8): it is a paid prompt, so the bot asks first
with the price (one tap), unless the user turned that off in /settings; the tap starts exactly
one job however often it is pressed."""

from __future__ import annotations

import asyncio
import re

import pytest

from adapters.jobs import JobsClient
from tests.fixtures.telegram import TelegramStandin, photos, said
from tests.telegram.conftest import BotProcess
from tests.telegram.test_adversary import SETTLE, balance, charges, started

pytestmark = pytest.mark.stack


async def test_plain_text_asks_with_the_price_and_one_tap_makes_it_once(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    tg = telegram
    me = f"telegram:{user_id}"
    await started(tg, user_id)
    before = await balance(jobs, me)
    tg.send(user_id, "hi")
    asked = said(tg, user_id, "points?")
    assert "“hi”" in asked["text"]
    price = int(re.search(r"for (\d+) points\?", asked["text"]).group(1))  # type: ignore[union-attr]
    assert asked["buttons"] == ["tp:go"]
    await asyncio.sleep(SETTLE)
    assert await charges(jobs, me) == 0 and not photos(tg.messages(user_id))  # nothing yet

    tg.press(user_id, user_id, asked["message_id"], "tp:go")
    tg.press(user_id, user_id, asked["message_id"], "tp:go", forge=True)  # a double tap
    [photo] = tg.wait_for(user_id, photos, timeout=30)
    assert photo["caption"].startswith("hi")
    await asyncio.sleep(SETTLE)
    assert await charges(jobs, me) == 1
    assert len(photos(tg.messages(user_id))) == 1
    assert await balance(jobs, me) == before - price


async def test_with_confirmation_turned_off_in_settings_plain_text_makes_at_once(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    tg = telegram
    await started(tg, user_id)
    tg.send(user_id, "/settings")
    shown = said(tg, user_id, "Your settings")
    assert "confirm_text_prompts: yes" in shown["text"]
    tg.press(user_id, user_id, shown["message_id"], "settings:confirm_text_prompts")
    tg.wait_for_message(user_id, lambda m: "settings:set:confirm_text_prompts:no" in m["buttons"])
    tg.press(user_id, user_id, shown["message_id"], "settings:set:confirm_text_prompts:no")
    said(tg, user_id, "confirm_text_prompts set to no")
    settings = await asyncio.to_thread(jobs.stores.settings.get, f"telegram:{user_id}")
    assert settings.confirm_text_prompts is False

    tg.send(user_id, "a quiet pond")
    [photo] = tg.wait_for(user_id, photos, timeout=30)
    assert "a quiet pond" in photo["caption"]
    assert "points?" not in "\n".join(m["text"] or "" for m in tg.bot_messages(user_id))
