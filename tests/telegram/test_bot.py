"""Conversations with the bot through the Bot API stand-in, with the bot, workers and the dev
stack all real: what a Telegram user does and sees."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import httpx
import pytest
from PIL import Image

from adapters.jobs import JobsClient
from domain.jobs import JobState, job_ref
from tests.fixtures.devstack import Stack
from tests.fixtures.telegram import Message, TelegramStandin, photos
from tests.telegram.conftest import BotProcess, start_bot
from workers.processes import free_port

pytestmark = pytest.mark.stack


def bot_text(tg: TelegramStandin, chat: int, needle: str, timeout: float = 20) -> Message:
    """The first bot message whose text contains `needle` (waits for it)."""
    return tg.wait_for_message(
        chat, lambda m: m["from_bot"] and needle in (m["text"] or ""), timeout
    )


async def balance(jobs: JobsClient, user: int) -> int:
    return await asyncio.to_thread(jobs.stores.ledger.balance, f"telegram:{user}")


async def job_of(jobs: JobsClient, user: int, timeout: float = 15) -> str:
    """The workflow id of the user's one job (visibility is eventually consistent)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await jobs.list_jobs(user=f"telegram:{user}")
        if found:
            return found[0].workflow_id
        await asyncio.sleep(0.2)
    raise AssertionError(f"no job for telegram:{user}")


async def wait_state(jobs: JobsClient, wid: str, *states: JobState, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while (await jobs.status(wid)).state not in states:
        assert time.monotonic() < deadline, f"{wid} never reached {states}"
        await asyncio.sleep(0.1)


def png(size: tuple[int, int] = (80, 60)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (30, 120, 200)).save(buf, "PNG")
    return buf.getvalue()


async def test_start_then_make_delivers_a_photo_and_charges_the_quote(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    telegram.send(user_id, "/start")
    welcome = bot_text(telegram, user_id, "starter points")
    assert "500" in welcome["text"]
    assert {c["command"] for c in telegram.commands()} >= {"make", "settings", "status"}
    before = await balance(jobs, user_id)

    sent = telegram.send(user_id, "/make a lighthouse at dusk")
    [photo] = telegram.wait_for(user_id, photos, timeout=30)

    wid = await job_of(jobs, user_id)
    [charge] = [
        e
        for e in await asyncio.to_thread(jobs.stores.ledger.entries_for_job, wid)
        if e.kind == "charge"
    ]
    assert charge.amount > 0
    assert await balance(jobs, user_id) == before - charge.amount
    caption = photo["caption"]
    assert "a lighthouse at dusk" in caption
    assert "seed " in caption and f"{charge.amount} points" in caption
    ref = job_ref(wid)  # buttons name the job by its fixed-length ref
    assert {f"res:again:{ref}", f"res:regen:{ref}"} <= set(photo["buttons"])
    assert any(b.startswith("res:up:") for b in photo["buttons"])
    # The status message was replaced by the result.
    status = telegram.wait_for_message(
        user_id, lambda m: m["message_id"] == sent["message_id"] + 1 and m["deleted"]
    )
    assert status["from_bot"]


async def test_settings_keyboard_changes_steps_and_refuses_999_naming_the_range(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    telegram.send(user_id, "/start")
    bot_text(telegram, user_id, "starter points")
    telegram.send(user_id, "/settings")
    shown = bot_text(telegram, user_id, "Your settings")
    assert "settings:steps" in shown["buttons"]

    telegram.press(user_id, user_id, shown["message_id"], "settings:steps")
    bot_text(telegram, user_id, "Send the new value for steps")
    telegram.send(user_id, "20")
    saved = bot_text(telegram, user_id, "✓ steps set to 20")
    settings = await asyncio.to_thread(jobs.stores.settings.get, f"telegram:{user_id}")
    assert settings.steps == 20

    telegram.press(user_id, user_id, saved["message_id"], "settings:steps")
    telegram.wait_for(
        user_id,
        lambda ms: sum("Send the new value for steps" in (m["text"] or "") for m in ms) == 2,
    )
    telegram.send(user_id, "999")
    refused = bot_text(telegram, user_id, "got 999")
    assert "steps: must be 1 … 30, got 999" in refused["text"]
    settings = await asyncio.to_thread(jobs.stores.settings.get, f"telegram:{user_id}")
    assert settings.steps == 20


async def test_status_shows_a_running_job_and_its_cancel_button_refunds_it(
    bot: BotProcess,
    telegram: TelegramStandin,
    jobs: JobsClient,
    dev_stack: Stack,
    user_id: int,
) -> None:
    dev_stack.faults(render_time=30)
    telegram.send(user_id, "/start")
    bot_text(telegram, user_id, "starter points")
    before = await balance(jobs, user_id)
    telegram.send(user_id, "/make a slow painting")
    live = bot_text(telegram, user_id, "rendering")  # the status message, edited live
    assert live["edits"] >= 1

    telegram.send(user_id, "/status")
    listing = bot_text(telegram, user_id, "Your running jobs")
    wid = await job_of(jobs, user_id)
    assert "a slow painting" in listing["text"]
    assert f"job:cancel:{job_ref(wid)}" in listing["buttons"]

    telegram.press(user_id, user_id, listing["message_id"], f"job:cancel:{job_ref(wid)}")
    done = bot_text(telegram, user_id, "Cancelled")
    price = (await jobs.status(wid)).price
    assert price > 0 and f"refunded {price} points" in done["text"]
    assert await balance(jobs, user_id) == before
    # The job's own status message says so too (delivered by the worker).
    bot_text(telegram, user_id, f"cancelled, refunded {price} points")
    times = next(m for m in telegram.messages(user_id) if m["message_id"] == live["message_id"])
    gaps = [b - a for a, b in zip(times["edit_times"], times["edit_times"][1:], strict=False)]
    assert all(g >= 1.9 for g in gaps), gaps  # at most one edit per 2 s


async def test_a_photo_sent_with_upscale_comes_back_twice_as_large(
    bot: BotProcess, telegram: TelegramStandin, user_id: int
) -> None:
    telegram.send(user_id, "/start")
    bot_text(telegram, user_id, "starter points")
    telegram.send_photo(user_id, png((80, 60)), caption="/upscale 2")

    def documents(msgs: list[Message]) -> list[Message]:
        return [m for m in msgs if m["from_bot"] and m["document"] and not m["deleted"]]

    # An upscale is a file (Telegram would re-encode a photo): it comes back as a document.
    [result] = telegram.wait_for(user_id, documents, timeout=30)
    image = Image.open(io.BytesIO(telegram.file(result["document"]["file_id"])))
    assert image.size == (160, 120)
    assert "upscale" in result["caption"]


async def test_a_bot_killed_while_a_job_renders_delivers_the_result_once(
    bot: BotProcess,
    telegram: TelegramStandin,
    jobs: JobsClient,
    dev_stack: Stack,
    user_id: int,
) -> None:
    dev_stack.faults(render_time=4)
    telegram.send(user_id, "/start")
    bot_text(telegram, user_id, "starter points")
    telegram.send(user_id, "/make a storm over the sea")
    bot_text(telegram, user_id, "rendering")
    wid = await job_of(jobs, user_id)

    bot.kill()
    await wait_state(jobs, wid, JobState.DELIVERING, timeout=30)  # waits for the bot
    bot.start()
    telegram.wait_for(user_id, photos, timeout=30)
    await wait_state(jobs, wid, JobState.DONE)
    await asyncio.sleep(1.0)
    assert len(photos(telegram.messages(user_id))) == 1
    sent = [
        c for c in telegram.calls("sendPhoto") if str(c["params"].get("chat_id")) == str(user_id)
    ]
    assert len(sent) == 1, sent


async def test_flood_control_on_send_photo_delays_but_does_not_duplicate(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    telegram.send(user_id, "/start")
    bot_text(telegram, user_id, "starter points")
    telegram.faults("sendPhoto", 429, retry_after=2, count=1)
    telegram.send(user_id, "/make a crowded harbour")
    telegram.wait_for(user_id, photos, timeout=30)
    wid = await job_of(jobs, user_id)
    await wait_state(jobs, wid, JobState.DONE)
    calls = [
        c for c in telegram.calls("sendPhoto") if str(c["params"].get("chat_id")) == str(user_id)
    ]
    assert [c["status"] for c in calls] == [429, 200], calls
    assert calls[1]["time"] - calls[0]["time"] >= 2.0
    await asyncio.sleep(1.0)
    assert len(photos(telegram.messages(user_id))) == 1


async def test_a_user_who_blocked_the_bot_does_not_fail_the_job(
    bot: BotProcess,
    telegram: TelegramStandin,
    jobs: JobsClient,
    dev_stack: Stack,
    user_id: int,
) -> None:
    dev_stack.faults(render_time=2)
    telegram.send(user_id, "/start")
    bot_text(telegram, user_id, "starter points")
    telegram.send(user_id, "/make a quiet forest")
    bot_text(telegram, user_id, "rendering")
    telegram.faults(blocked_chat_id=user_id)
    wid = await job_of(jobs, user_id)
    await wait_state(jobs, wid, JobState.DONE, timeout=30)
    assert not photos(telegram.messages(user_id))


async def test_balance_lists_points_and_unknown_commands_get_help(
    bot: BotProcess, telegram: TelegramStandin, user_id: int
) -> None:
    telegram.send(user_id, "/start")
    bot_text(telegram, user_id, "starter points")
    telegram.send(user_id, "/balance")
    shown = bot_text(telegram, user_id, "Balance: 500 points")
    assert "grant +500" in shown["text"]
    telegram.send(user_id, "/frobnicate")
    assert "/make" in bot_text(telegram, user_id, "I don't know /frobnicate")["text"]


async def test_webhook_mode_rejects_a_wrong_secret(
    dev_stack: Stack,
    telegram_standin: TelegramStandin,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/tg-hook"
    telegram_standin.reset()
    telegram_standin.options(allow_http_webhook=True)  # loopback without TLS, tests only
    proc = start_bot(
        dev_stack,
        telegram_standin,
        tmp_path_factory.mktemp("webhook-bot") / "bot.log",
        "--webhook-url",
        url,
        "--listen-port",
        str(port),
        TELEGRAM_WEBHOOK_SECRET="right-secret",
        TELEGRAM_WEBHOOK_LISTEN="127.0.0.1",
    )
    proc.start()
    try:
        deadline = time.monotonic() + 30
        while not (telegram_standin.webhook() or {}).get("url"):
            assert proc.is_running(), proc.log_tail(40)
            assert time.monotonic() < deadline, proc.log_tail(40)
            await asyncio.sleep(0.1)
        hook: dict[str, Any] = telegram_standin.webhook() or {}
        assert hook["url"] == url
        update = {"update_id": 1, "message": None}
        async with httpx.AsyncClient(timeout=10) as http:
            wrong = await http.post(
                url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}
            )
            missing = await http.post(url, json=update)
            chat = {"id": 4242, "type": "private", "first_name": "W"}
            right = await http.post(
                url,
                json={
                    "update_id": 10**6,
                    "message": {
                        "message_id": 1,
                        "date": int(time.time()),
                        "chat": chat,
                        "from": {"id": 4242, "is_bot": False, "first_name": "W"},
                        "text": "/help",
                        "entities": [{"type": "bot_command", "offset": 0, "length": 5}],
                    },
                },
                headers={"X-Telegram-Bot-Api-Secret-Token": "right-secret"},
            )
            # An update PTB cannot read: 200 and dropped (a 500 makes Telegram resend it
            # forever), and the bot goes on answering.
            unreadable = await http.post(
                url,
                json={"update_id": 10**6 + 1, "message": {"message_id": 2}},
                headers={"X-Telegram-Bot-Api-Secret-Token": "right-secret"},
            )
            not_json = await http.post(
                url,
                content=b"{not json",
                headers={"X-Telegram-Bot-Api-Secret-Token": "right-secret"},
            )
        assert wrong.status_code == 403
        assert missing.status_code == 403
        assert right.status_code == 200
        assert unreadable.status_code == 200, unreadable.text
        assert not_json.status_code == 200, not_json.text
        bot_text(telegram_standin, 4242, "/make")  # the right secret gets an answer
    finally:
        proc.stop()
        telegram_standin.reset(everything=True)  # drop the webhook: polling works again
