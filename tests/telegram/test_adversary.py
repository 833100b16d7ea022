"""The bot against people who edit, double-tap, forge buttons, hide behind anonymous admins, and
against groups that move or take the bot's rights away (issue 13, items 3, 4, 7 and 9).

The bot, workers and dev stack are real; users act through the Bot API stand-in. Every money
check reads the ledger itself: a test passes only if the points moved exactly once.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from temporalio.api.enums.v1 import EventType

from adapters.jobs import JobsClient
from domain.jobs import job_ref
from tests.fixtures.devstack import Stack
from tests.fixtures.telegram import Message, TelegramStandin, photos, said
from tests.telegram.conftest import ADMIN_ID, BotProcess

pytestmark = pytest.mark.stack

EDIT_HINT = "Edits are not run again"
SETTLE = 3.0  # seconds in which a wrongly started second job would have charged


def results(msgs: list[Message]) -> list[Message]:
    """Delivered images: photos, and documents (an upscale arrives as a file)."""
    return [m for m in msgs if m["from_bot"] and (m["photo"] or m["document"]) and not m["deleted"]]


def bot_texts(tg: TelegramStandin, chat: int) -> str:
    """Everything the bot ever showed in `chat` (deleted messages too), as one string."""
    return "\n".join(
        (m["text"] or m["caption"] or "") for m in tg.bot_messages(chat, include_deleted=True)
    )


def group_id() -> int:
    return -random.randint(10**9, 2 * 10**9)


async def charges(jobs: JobsClient, identity: str) -> int:
    """How many charges the ledger holds for the user."""
    entries = await asyncio.to_thread(jobs.stores.ledger.entries, identity, 100, ["charge"])
    return len(entries)


async def balance(jobs: JobsClient, identity: str) -> int:
    return await asyncio.to_thread(jobs.stores.ledger.balance, identity)


async def done_runs(jobs: JobsClient, identity: str, n: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while len(await jobs.recent_runs(identity)) < n:
        assert time.monotonic() < deadline, f"fewer than {n} finished runs of {identity}"
        await asyncio.sleep(0.1)


async def started(tg: TelegramStandin, user_id: int) -> None:
    tg.send(user_id, "/start")
    said(tg, user_id, "starter points")


async def one_image(tg: TelegramStandin, jobs: JobsClient, user_id: int, prompt: str) -> Message:
    """Register, make one image in the private chat, wait until it is recorded as done."""
    await started(tg, user_id)
    tg.send(user_id, f"/make {prompt}")
    [photo] = tg.wait_for(user_id, photos, timeout=30)
    await done_runs(jobs, f"telegram:{user_id}", 1)
    return photo


# ---- item 3: an edited message is not a new request -----------------------------------------


async def test_an_edited_grant_grants_once(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    tg = telegram
    await started(tg, user_id)
    before = await balance(jobs, f"telegram:{user_id}")
    sent = tg.send(ADMIN_ID, f"/grant {user_id} 100")
    said(tg, ADMIN_ID, "granted 100 points")
    tg.edit(ADMIN_ID, sent["message_id"], f"/grant {user_id} 100 ")
    tg.edit(ADMIN_ID, sent["message_id"], f"/grant {user_id}  100")
    await asyncio.sleep(SETTLE)
    assert await balance(jobs, f"telegram:{user_id}") == before + 100
    assert bot_texts(tg, ADMIN_ID).count("granted 100 points") == 1
    tg.wait_for(ADMIN_ID, lambda ms: bot_texts(tg, ADMIN_ID).count(EDIT_HINT) == 2)


async def test_an_edited_make_starts_no_second_job_and_charges_once(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    tg = telegram
    await started(tg, user_id)
    sent = tg.send(user_id, "/make a lighthouse")
    tg.wait_for(user_id, photos, timeout=30)
    tg.edit(user_id, sent["message_id"], "/make a lighthouse in fog")
    await asyncio.sleep(SETTLE)
    assert await charges(jobs, f"telegram:{user_id}") == 1
    assert len(photos(tg.messages(user_id))) == 1
    said(tg, user_id, EDIT_HINT)


async def test_an_edited_plain_text_prompt_charges_once(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    tg = telegram
    await started(tg, user_id)
    sent = tg.send(user_id, "a red fox in teh snow")
    asked = said(tg, user_id, "points?")
    tg.press(user_id, user_id, asked["message_id"], "tp:go")  # plain text asks first
    tg.wait_for(user_id, photos, timeout=30)
    tg.edit(user_id, sent["message_id"], "a red fox in the snow")
    await asyncio.sleep(SETTLE)
    assert await charges(jobs, f"telegram:{user_id}") == 1
    assert len(photos(tg.messages(user_id))) == 1
    said(tg, user_id, EDIT_HINT)


async def test_a_replayed_message_with_a_new_update_id_starts_nothing_twice(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    """The request key is the chat and message, not the update id."""
    tg = telegram
    await started(tg, user_id)
    sent = tg.send(user_id, "/make a paper crane")
    tg.wait_for(user_id, photos, timeout=30)
    tg.redeliver(user_id, sent["message_id"])
    await asyncio.sleep(SETTLE)
    assert await charges(jobs, f"telegram:{user_id}") == 1
    assert len(photos(tg.messages(user_id))) == 1


# ---- item 4: any number of taps start one job ------------------------------------------------


@pytest.mark.parametrize("button", ["res:again", "res:regen:", "res:up:", "regen:1"])
async def test_a_double_tap_starts_one_job(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int, button: str
) -> None:
    tg = telegram
    photo = await one_image(tg, jobs, user_id, "a tin robot")
    message = photo
    if button == "regen:1":
        tg.send(user_id, "/regen")
        message = said(tg, user_id, "Repeat which one")
    [data] = [b for b in message["buttons"] if b.startswith(button)]
    tg.press(user_id, user_id, message["message_id"], data)
    tg.press(user_id, user_id, message["message_id"], data)
    tg.wait_for(user_id, lambda ms: len(results(ms)) >= 2, timeout=30)
    await asyncio.sleep(SETTLE)
    assert await charges(jobs, f"telegram:{user_id}") == 2
    assert len(results(tg.messages(user_id))) == 2
    answers = [a["text"] or "" for a in tg.answered_callbacks()]
    assert any("already started" in a for a in answers), answers
    # A third tap later, after the job ended, still starts nothing.
    tg.press(user_id, user_id, message["message_id"], data)
    await asyncio.sleep(SETTLE)
    assert await charges(jobs, f"telegram:{user_id}") == 2


# ---- item 7: groups are shared spaces ---------------------------------------------------------


async def test_anonymous_admins_of_two_groups_are_two_identities(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    tg = telegram
    group_x, group_y = group_id(), group_id()
    tg.send(user_id, "/start", chat_id=group_x, chat_type="supergroup", anonymous=True)
    said(tg, group_x, "starter points")
    tg.send(
        user_id,
        "/make x marks the secret spot",
        chat_id=group_x,
        chat_type="supergroup",
        anonymous=True,
    )
    tg.wait_for(group_x, photos, timeout=30)
    await done_runs(jobs, f"telegram:{group_x}", 1)
    [run] = await jobs.recent_runs(f"telegram:{group_x}")
    assert run.prompt == "x marks the secret spot"

    other_admin = user_id + 1
    tg.send(other_admin, "/start", chat_id=group_y, chat_type="supergroup", anonymous=True)
    said(tg, group_y, "starter points")  # a new identity: it gets its own starter grant
    tg.send(other_admin, "/regen", chat_id=group_y, chat_type="supergroup", anonymous=True)
    said(tg, group_y, "No images to repeat yet")
    assert "secret spot" not in bot_texts(tg, group_y)
    assert await jobs.recent_runs(f"telegram:{group_y}") == []


PRIVATE_DATA = {
    "/balance": "Balance:",
    "/settings": "Your settings",
    "/regen": "Repeat which one",
    "/status": "running",
}


async def test_personal_data_asked_for_in_a_group_goes_to_the_private_chat(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    tg = telegram
    tg.options(private_needs_start=True)
    await one_image(tg, jobs, user_id, "my private diary")
    group = group_id()
    for command, private_text in PRIVATE_DATA.items():
        tg.send(user_id, command, chat_id=group, chat_type="group")
        said(tg, user_id, private_text)
    tg.wait_for(group, lambda ms: bot_texts(tg, group).count("sent you a private message") == 4)
    shown = bot_texts(tg, group)
    for needle in ("Balance", "500", "Your settings", "my private diary", "steps"):
        assert needle not in shown, (needle, shown)


async def test_personal_data_is_not_shown_in_a_group_when_the_bot_cannot_write_privately(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    tg = telegram
    tg.options(private_needs_start=True)
    await jobs.register(f"telegram:{user_id}")  # known, but never opened a chat with the bot
    group = group_id()
    tg.send(user_id, "/balance", chat_id=group, chat_type="group")
    refusal = said(tg, group, "can't message you privately")
    assert "/start" in refusal["text"]
    assert "Balance" not in bot_texts(tg, group) and "500" not in bot_texts(tg, group)
    assert tg.messages(user_id) == []


async def running_job(jobs: JobsClient, identity: str, timeout: float = 15) -> str:
    """The workflow id of the user's one running job (visibility is eventually consistent)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await jobs.list_jobs(user=identity, running=True)
        if found:
            return found[0].workflow_id
        await asyncio.sleep(0.2)
    raise AssertionError(f"no running job of {identity}")


def answered(tg: TelegramStandin, needle: str) -> bool:
    """Whether some button press was answered (answerCallbackQuery) with `needle` in it."""
    return any(needle in (a["text"] or "") for a in tg.answered_callbacks())


# ---- items 1 and 7: forged callback data ---------------------------------------------------


async def test_a_forged_cancel_button_for_another_users_job_reads_as_not_found(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, dev_stack: Stack, user_id: int
) -> None:
    tg = telegram
    victim, thief = user_id, user_id + 1
    await started(tg, victim)
    thiefs_photo = await one_image(tg, jobs, thief, "a decoy")
    dev_stack.faults(render_time=20)
    try:
        tg.send(victim, "/make a slow secret")
        said(tg, victim, "rendering")
        victims_job = await running_job(jobs, f"telegram:{victim}")
        forged = f"job:cancel:{job_ref(victims_job)}"
        tg.press(thief, thief, thiefs_photo["message_id"], forged, forge=True)
        tg.wait_for(thief, lambda ms: answered(tg, "not found"))
        # Word for word what a job that does not exist gets: the forger learns nothing.
        tg.press(thief, thief, thiefs_photo["message_id"], f"{forged}x", forge=True)
        tg.wait_for(thief, lambda ms: len(tg.answered_callbacks()) == 2)
        first, second = (a["text"] for a in tg.answered_callbacks())
        assert first == second
        assert (await jobs.status(victims_job)).state.cancellable
    finally:
        dev_stack.reset_faults()


async def test_a_forged_upscale_button_naming_another_users_image_finds_nothing_and_costs_nothing(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    tg = telegram
    victim, thief = user_id, user_id + 1
    victims_photo = await one_image(tg, jobs, victim, "a private portrait")
    [upscale] = [b for b in victims_photo["buttons"] if b.startswith("res:up:")]
    thiefs_photo = await one_image(tg, jobs, thief, "a decoy")
    paid = await balance(jobs, f"telegram:{thief}")
    tg.press(thief, thief, thiefs_photo["message_id"], upscale, forge=True)
    tg.wait_for(thief, lambda ms: "not found" in bot_texts(tg, thief).lower())
    await asyncio.sleep(SETTLE)
    assert len(photos(tg.messages(thief))) == 1
    assert await balance(jobs, f"telegram:{thief}") == paid


# ---- item 9: delivery to a moved group, or without media rights -----------------------------


async def test_a_group_that_became_a_supergroup_gets_its_image_in_the_new_chat(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, dev_stack: Stack, user_id: int
) -> None:
    tg = telegram
    await started(tg, user_id)
    group, supergroup = group_id(), group_id() * 1000
    dev_stack.faults(render_time=3)
    try:
        tg.send(user_id, "/make a moving house", chat_id=group, chat_type="group")
        tg.wait_for(group, lambda ms: [m for m in ms if m["from_bot"]])  # the status message
        tg.faults(migrated_chat_id=group, migrate_to_chat_id=supergroup)
        [photo] = tg.wait_for(supergroup, photos, timeout=30)
    finally:
        dev_stack.reset_faults()
    assert "a moving house" in photo["caption"]
    assert await charges(jobs, f"telegram:{user_id}") == 1


async def test_a_group_without_media_rights_is_told_and_the_job_ends_not_delivered(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    tg = telegram
    await started(tg, user_id)
    group = group_id()
    tg.faults(no_media_chat_id=group)
    tg.send(user_id, "/make a forbidden picture", chat_id=group, chat_type="group")
    said(tg, group, "not allowed to send", timeout=30)
    assert not photos(tg.messages(group))
    wid = await job_id(jobs, f"telegram:{user_id}")
    failures: list[tuple[str, bool]] = []
    deadline = time.monotonic() + 20
    while not failures and time.monotonic() < deadline:
        async for event in jobs.handle(wid).fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
                info = event.activity_task_failed_event_attributes.failure.application_failure_info
                failures.append((info.type, info.non_retryable))
        await asyncio.sleep(0.2)
    # adapters/telegram/delivery.py NOT_DELIVERED: the saga ends such a job "not delivered".
    assert failures == [("not_delivered", True)]


async def job_id(jobs: JobsClient, identity: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await jobs.list_jobs(user=identity)
        if found:
            return found[0].workflow_id
        await asyncio.sleep(0.2)
    raise AssertionError(f"no job of {identity}")
