"""Bot paths the main conversation tests leave out, through the Bot API stand-in with the bot,
workers and dev stack all real: group chats, /grant, /regen and /again, /reset's confirm button,
and the per-user rate limit."""

from __future__ import annotations

import asyncio
import random
import re
import time

import pytest

from adapters.jobs import JobsClient
from domain.settings import UserSettings
from tests.fixtures.telegram import Message, TelegramStandin, photos, said
from tests.telegram.conftest import ADMIN_ID, BotProcess

pytestmark = pytest.mark.stack


async def done_runs(jobs: JobsClient, user: int, n: int, timeout: float = 20) -> None:
    """Wait until the user's history has `n` finished runs (recorded once delivered)."""
    deadline = time.monotonic() + timeout
    while len(await jobs.recent_runs(f"telegram:{user}")) < n:
        assert time.monotonic() < deadline, f"fewer than {n} finished runs"
        await asyncio.sleep(0.1)


def seed_of(photo: Message) -> int:
    match = re.search(r"seed (\d+)", photo["caption"] or "")
    assert match, photo["caption"]
    return int(match.group(1))


async def test_in_a_group_only_commands_and_mentions_are_answered_and_batch_is_one(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    tg = telegram
    tg.send(user_id, "/start")
    said(tg, user_id, "starter points")
    await jobs.grant(f"telegram:{user_id}", 5000, by="test", key=f"test-grant:{user_id}")
    tg.send(user_id, "/set batch 2")  # now within the user's limits (more points, more batch)
    said(tg, user_id, "✓ batch set to 2")
    group = -random.randint(10**9, 2 * 10**9)

    tg.send(user_id, "a castle on a hill", chat_id=group, chat_type="group")
    tg.send(user_id, "/help", chat_id=group, chat_type="group")
    said(tg, group, "/make")
    tg.send(user_id, "@stationthis_test_bot a castle on a hill", chat_id=group, chat_type="group")
    [photo] = tg.wait_for(group, photos, timeout=30)
    assert "a castle on a hill" in photo["caption"]
    await asyncio.sleep(1.0)  # a second image or a reply to the plain text would be here by now
    bot_msgs = [m for m in tg.bot_messages(group) if not m["photo"]]
    assert len(bot_msgs) == 1 and "/make" in (bot_msgs[0]["text"] or ""), bot_msgs
    assert len(photos(tg.messages(group))) == 1
    settings: UserSettings = await asyncio.to_thread(
        jobs.stores.settings.get, f"telegram:{user_id}"
    )
    assert settings.batch == 2  # the group forced 1 for that job only


async def test_an_admin_grants_points_and_anyone_else_is_told_the_command_is_unknown(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    tg = telegram
    tg.send(user_id, "/start")
    said(tg, user_id, "starter points")
    before = await asyncio.to_thread(jobs.stores.ledger.balance, f"telegram:{user_id}")

    tg.send(user_id, f"/grant {user_id} 1000")
    said(tg, user_id, "I don't know /grant")
    assert await asyncio.to_thread(jobs.stores.ledger.balance, f"telegram:{user_id}") == before

    tg.send(ADMIN_ID, f"/grant {user_id} 100")
    done = said(tg, ADMIN_ID, f"granted 100 points to telegram:{user_id}")
    assert f"balance now {before + 100}" in done["text"]
    assert await asyncio.to_thread(jobs.stores.ledger.balance, f"telegram:{user_id}") == (
        before + 100
    )
    tg.send(ADMIN_ID, "/grant someone lots")
    said(tg, ADMIN_ID, "Usage: /grant USER N")


async def test_regen_buttons_repeat_a_run_with_its_seed_and_again_draws_a_new_one(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    tg = telegram
    tg.send(user_id, "/start")
    said(tg, user_id, "starter points")
    tg.send(user_id, "/make a paper boat")
    [first] = tg.wait_for(user_id, photos, timeout=30)
    await done_runs(jobs, user_id, 1, timeout=5)

    tg.send(user_id, "/regen")
    listing = said(tg, user_id, "Repeat which one")
    assert "a paper boat" in listing["text"] and listing["buttons"] == ["regen:1"]
    tg.press(user_id, user_id, listing["message_id"], "regen:1")
    second = tg.wait_for(user_id, lambda ms: photos(ms)[1:2], timeout=30)[0]
    assert seed_of(second) == seed_of(first)
    assert "a paper boat" in second["caption"]
    await done_runs(jobs, user_id, 2)

    tg.send(user_id, "/again")
    third = tg.wait_for(user_id, lambda ms: photos(ms)[2:3], timeout=30)[0]
    assert "a paper boat" in third["caption"]
    assert seed_of(third) != seed_of(first)


async def test_reset_asks_first_and_its_yes_button_restores_the_defaults(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    tg = telegram
    tg.send(user_id, "/start")
    said(tg, user_id, "starter points")
    default_steps = UserSettings().steps
    tg.send(user_id, f"/set steps {default_steps - 1}")
    said(tg, user_id, "✓ steps set")
    tg.send(user_id, "/reset")
    ask = said(tg, user_id, "Reset every setting")
    assert set(ask["buttons"]) == {"settings:reset:yes", "settings:reset:no"}
    settings = await asyncio.to_thread(jobs.stores.settings.get, f"telegram:{user_id}")
    assert settings.steps == default_steps - 1  # nothing changes before the button

    tg.press(user_id, user_id, ask["message_id"], "settings:reset:yes")
    said(tg, user_id, "settings reset to the defaults")
    settings = await asyncio.to_thread(jobs.stores.settings.get, f"telegram:{user_id}")
    assert settings.steps == default_steps


async def test_a_user_sending_too_fast_is_asked_politely_to_wait_once(
    bot: BotProcess, telegram: TelegramStandin, user_id: int
) -> None:
    tg = telegram
    started = time.monotonic()
    for _ in range(25):
        await tg.send_async(user_id, "/help")
    warned = said(tg, user_id, "faster than I can keep up with")
    assert "Please wait" in warned["text"] and "try again" in warned["text"]
    await asyncio.sleep(1.0)
    msgs = tg.bot_messages(user_id)
    helps = [m for m in msgs if "Commands:" in (m["text"] or "")]
    warnings = [m for m in msgs if "faster than" in (m["text"] or "")]
    assert len(warnings) == 1, "polite once per window, then silent"
    assert len(helps) == 20, len(helps)  # the default limit: 20 per 60 s
    assert time.monotonic() - started < 60  # all inside one window
    other = user_id + 1  # the limit is per user
    tg.send(other, "/help")
    said(tg, other, "Commands:")
