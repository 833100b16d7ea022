"""Buttons on the stand-in (issue 14, items 5, 6 and 7): their data fit 64 bytes in busy
supergroups, they act on the run they sit under, the live status message carries Cancel, and
/status and /cancel treat a cook as one job.

The bot, workers and dev stack are real; the stand-in refuses callback_data over 64 bytes with
BUTTON_DATA_INVALID, as Telegram does.
"""

from __future__ import annotations

import asyncio
import random
import re
import time

import pytest

from adapters.jobs import JobNotFound, JobsClient
from domain.collections import CollectionConfig
from domain.jobs import JobState, job_ref
from tests.fixtures.devstack import Stack
from tests.fixtures.telegram import Message, TelegramStandin, photos, said
from tests.telegram.conftest import BotProcess
from tests.telegram.test_adversary import balance, started

pytestmark = pytest.mark.stack

BIG_MESSAGE_ID = 1_234_567_890


def supergroup_id() -> int:
    """-100 and ten digits, like every supergroup's id."""
    return -(10**12 + random.randint(10**9, 9 * 10**9))


def seed_of(photo: Message) -> str:
    found = re.search(r"seed (\d+)", photo["caption"] or "")
    assert found, photo["caption"]
    return found.group(1)


def button(message: Message, prefix: str) -> str:
    [data] = [b for b in message["buttons"] if b.startswith(prefix)]
    return data


async def wait_until(check: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition never met"
        await asyncio.sleep(0.2)


# ---- item 6: callback data never cut ------------------------------------------------------


async def test_a_tap_in_a_busy_supergroup_delivers_its_image_with_buttons_that_fit(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    """A tap's job id holds the group's id, the message's 10-digit id and the data's hash:
    `res:regen:<id>` was 76 bytes, so the image of an Again tap was refused and never came."""
    tg = telegram
    tg.options(first_message_id=BIG_MESSAGE_ID)
    group = supergroup_id()
    await started(tg, user_id)
    tg.send(user_id, "/make a harbour at night", chat_id=group, chat_type="supergroup")
    [first] = tg.wait_for(group, photos, timeout=30)
    assert first["message_id"] >= BIG_MESSAGE_ID
    tg.press(user_id, group, first["message_id"], button(first, "res:again"))
    second = tg.wait_for(group, lambda ms: photos(ms)[1:] or None, timeout=30)[0]
    assert "a harbour at night" in second["caption"]
    assert second["buttons"] and all(len(b.encode()) <= 64 for b in second["buttons"])
    # The new image's own buttons work too: its Regen repeats it, seed and all.
    tg.press(user_id, group, second["message_id"], button(second, "res:regen"))
    third = tg.wait_for(group, lambda ms: photos(ms)[2:] or None, timeout=30)[0]
    assert seed_of(third) == seed_of(second)


# ---- item 7: buttons act on the run they sit under ------------------------------------------


async def test_again_under_an_older_image_repeats_that_image_not_the_latest(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    tg = telegram
    await started(tg, user_id)
    tg.send(user_id, "/make a red barn")
    [barn] = tg.wait_for(user_id, photos, timeout=30)
    tg.send(user_id, "/make a blue boat")
    tg.wait_for(user_id, lambda ms: photos(ms)[1:] or None, timeout=30)
    tg.press(user_id, user_id, barn["message_id"], button(barn, "res:again"))
    again = tg.wait_for(user_id, lambda ms: photos(ms)[2:] or None, timeout=30)[0]
    assert "a red barn" in again["caption"], again["caption"]


async def test_regen_right_after_delivery_repeats_the_image_with_its_seed(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    """The tap comes the moment the image arrives, before the run is in the history."""
    tg = telegram
    await started(tg, user_id)
    tg.send(user_id, "/make a paper crane")
    [crane] = tg.wait_for(user_id, photos, timeout=30)
    tg.press(user_id, user_id, crane["message_id"], button(crane, "res:regen"))
    regen = tg.wait_for(user_id, lambda ms: photos(ms)[1:] or None, timeout=30)[0]
    assert seed_of(regen) == seed_of(crane)
    assert "a paper crane" in regen["caption"]
    assert not any("not among" in (a["text"] or "") for a in tg.answered_callbacks())


async def test_the_live_status_message_carries_a_cancel_button_that_refunds(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, dev_stack: Stack, user_id: int
) -> None:
    tg = telegram
    await started(tg, user_id)
    before = await balance(jobs, f"telegram:{user_id}")
    dev_stack.faults(render_time=30)
    try:
        tg.send(user_id, "/make a slow sunrise")
        live = tg.wait_for_message(
            user_id,
            lambda m: m["from_bot"] and any(b.startswith("job:cancel:") for b in m["buttons"]),
        )
        [data] = live["buttons"]
        [job] = await jobs.list_jobs(user=f"telegram:{user_id}", running=True)
        assert data == f"job:cancel:{job_ref(job.workflow_id)}"
        tg.press(user_id, user_id, live["message_id"], data)
        said(tg, user_id, "Cancelled")
        assert (await jobs.status(job.workflow_id)).state is JobState.CANCELLED
    finally:
        dev_stack.reset_faults()
    assert await balance(jobs, f"telegram:{user_id}") == before
    # Final: the status message keeps no button.
    tg.wait_for_message(
        user_id,
        lambda m: m["message_id"] == live["message_id"] and not m["buttons"],
    )


# ---- item 5: cooks in /status and /cancel ----------------------------------------------------


async def cooking(jobs: JobsClient, dev_stack: Stack, user_id: int) -> str:
    """A cook of 4 pieces, 2 in flight and slow: returns its workflow id once pieces run."""
    me = f"telegram:{user_id}"
    config = CollectionConfig(master_prompt="a lantern", allow_duplicates=True)
    col = await jobs.create_collection(me, "Lanterns", supply=4, config=config)
    dev_stack.faults(render_time=30)
    started_cook = await jobs.start_cook(col.id, me, platform="telegram", in_flight=2)

    async def pieces_running() -> bool:
        listed = await jobs.list_jobs(user=me, running=True, pieces=True)
        return sum("-piece-" in j.workflow_id for j in listed) >= 2

    await wait_until(pieces_running)
    return started_cook.workflow_id


async def test_status_shows_a_cook_as_one_job_and_its_cancel_button_cancels_it(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, dev_stack: Stack, user_id: int
) -> None:
    tg = telegram
    await started(tg, user_id)
    before = await balance(jobs, f"telegram:{user_id}")
    try:
        cook = await cooking(jobs, dev_stack, user_id)
        tg.send(user_id, "/status")
        listing = said(tg, user_id, "Your running jobs")
        lines = [ln for ln in listing["text"].splitlines() if re.match(r"\d+\. ", ln)]
        assert len(lines) == 1, listing["text"]  # the cook, not its pieces
        assert "cook" in lines[0] and "made" in lines[0] and "in flight" in lines[0]
        assert listing["buttons"] == [f"job:cancel:{job_ref(cook)}"]
        tg.press(user_id, user_id, listing["message_id"], listing["buttons"][0])
        said(tg, user_id, "Cancelled", timeout=60)
    finally:
        dev_stack.reset_faults()
    assert (await jobs.status(cook)).state is JobState.CANCELLED
    assert await balance(jobs, f"telegram:{user_id}") == before  # pieces in flight refunded


async def test_cancel_command_cancels_the_only_running_cook(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, dev_stack: Stack, user_id: int
) -> None:
    tg = telegram
    await started(tg, user_id)
    try:
        cook = await cooking(jobs, dev_stack, user_id)
        tg.send(user_id, "/cancel")
        said(tg, user_id, "Cancelled, refunded", timeout=60)
    finally:
        dev_stack.reset_faults()
    assert (await jobs.status(cook, user=f"telegram:{user_id}")).state is JobState.CANCELLED
    assert "no job" not in "\n".join(m["text"] or "" for m in tg.bot_messages(user_id))


async def test_another_users_cook_reads_as_no_job_and_cannot_be_cancelled(
    jobs: JobsClient, dev_stack: Stack, user_id: int
) -> None:
    """The cook path keeps JobsClient.status's ownership check: a cook id names a collection,
    not its user, so the owner is read from the cook itself."""
    owner, other = f"telegram:{user_id}", f"telegram:{user_id + 1}"
    await jobs.register(owner)
    await jobs.register(other)
    try:
        cook = await cooking(jobs, dev_stack, user_id)
        assert (await jobs.status(cook, user=owner)).kind == "cook"
        with pytest.raises(JobNotFound) as theirs:
            await jobs.status(cook, user=other)
        with pytest.raises(JobNotFound):
            await jobs.cancel(cook, user=other)
        with pytest.raises(JobNotFound):
            await jobs.job_by_ref(job_ref(cook), other)
        with pytest.raises(JobNotFound) as missing:
            await jobs.status(cook + "0", user=other)
        assert str(theirs.value).replace(cook, "") == str(missing.value).replace(cook + "0", "")
        assert await jobs.job_by_ref(job_ref(cook), owner) == cook
        assert (await jobs.status(cook)).state is JobState.RUNNING
    finally:
        dev_stack.reset_faults()
        await jobs.cancel(cook, user=owner)
