"""Content safety per chat on the bot stand-in (issue 19): a group's admins choose off / blur /
block with /safety; a flagged result is sent behind a spoiler or withheld and refunded; nobody
else changes a group's setting.

The ComfyUI stand-in draws its "unsafe" mark into what a prompt with `standin-unsafe` renders,
and the dev stack's safety worker runs the marker classifier (media/classifier.py), so the
whole path runs without a real model.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from adapters.jobs import JobNotFound, JobsClient
from domain.safety import Policy, SafetyPlace
from media.classifier import STANDIN_UNSAFE_WORD
from tests.fixtures.telegram import TelegramStandin, photos, said
from tests.telegram.conftest import BotProcess
from tests.telegram.test_adversary import SETTLE, balance, bot_texts, charges, started

pytestmark = pytest.mark.stack


def group_id() -> int:
    return -(10**12 + random.randint(10**9, 9 * 10**9))


async def chat_policy(jobs: JobsClient, chat: int) -> Policy | None:
    place = SafetyPlace(platform="telegram", chat_id=str(chat), group=True)
    return await asyncio.to_thread(jobs.stores.safety.chat_policy, place)


async def test_a_blurred_group_gets_its_flagged_image_behind_a_spoiler(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    tg = telegram
    group = group_id()
    await started(tg, user_id)
    tg.send(user_id, "/safety blur", chat_id=group, chat_type="supergroup", admin=True)
    said(tg, group, "now blur")
    tg.send(user_id, f"/make a fox {STANDIN_UNSAFE_WORD}", chat_id=group, chat_type="supergroup")
    [flagged] = tg.wait_for(group, photos, timeout=30)
    assert flagged["has_media_spoiler"] is True
    assert "flagged by this chat's content filter" in flagged["caption"]
    sent = [c for c in tg.calls("sendPhoto") if str(c["params"].get("chat_id")) == str(group)]
    assert sent and str(sent[-1]["params"].get("has_spoiler")).lower() == "true"
    # A clean image in the same group is not hidden.
    tg.send(user_id, "/make a quiet lake", chat_id=group, chat_type="supergroup")
    clean = tg.wait_for(group, lambda ms: photos(ms)[1:] or None, timeout=30)[0]
    assert clean["has_media_spoiler"] is False
    assert "content filter" not in clean["caption"]
    assert await charges(jobs, f"telegram:{user_id}") == 2


async def test_a_blocking_group_withholds_the_image_says_why_and_refunds_it(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    tg = telegram
    group = group_id()
    await started(tg, user_id)
    before = await balance(jobs, f"telegram:{user_id}")
    tg.send(user_id, "/safety block", chat_id=group, chat_type="supergroup", admin=True)
    said(tg, group, "now block")
    tg.send(user_id, f"/make a fox {STANDIN_UNSAFE_WORD}", chat_id=group, chat_type="supergroup")
    said(tg, group, "withheld by this chat's content filter", timeout=30)
    await asyncio.sleep(SETTLE)
    assert not photos(tg.messages(group))
    # Charged, then refunded in full: the ledger of the job nets to zero.
    assert await charges(jobs, f"telegram:{user_id}") == 1
    assert await balance(jobs, f"telegram:{user_id}") == before
    user = await jobs.user(f"telegram:{user_id}")
    [blocked] = await asyncio.to_thread(jobs.stores.safety.blocked, user.id)
    assert blocked["policy"] == "block" and blocked["score"] >= 0.5
    # The operator's override: the owner can now fetch the original; nobody else can.
    wid = blocked["job_id"]
    owner = f"telegram:{user_id}"
    assert (await jobs.status(wid, user=owner)).outputs == []
    await asyncio.to_thread(jobs.stores.safety.release, wid, by="operator:test")
    [released] = (await jobs.status(wid, user=owner)).outputs
    assert released.blob_id == blocked["blob_id"] and jobs.image(released)
    with pytest.raises(JobNotFound):
        await jobs.status(wid, user=f"telegram:{user_id + 7}")


async def test_a_member_who_is_not_an_admin_cannot_change_the_groups_filter(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    tg = telegram
    group = group_id()
    admin, member = user_id, user_id + 1
    tg.send(admin, "/safety block", chat_id=group, chat_type="supergroup", admin=True)
    said(tg, group, "now block")
    tg.send(member, "/safety off", chat_id=group, chat_type="supergroup")
    said(tg, group, "only this group's administrators")
    tg.send(member, "/safety default", chat_id=group, chat_type="supergroup")
    await asyncio.sleep(1)
    assert bot_texts(tg, group).count("only this group's administrators") == 2
    assert await chat_policy(jobs, group) is Policy.BLOCK


async def test_an_admin_of_another_chat_cannot_change_this_groups_filter(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    """The setting belongs to the chat the command is sent in: being an admin elsewhere, or
    naming this group in the command, changes nothing here."""
    tg = telegram
    ours, theirs = group_id(), group_id()
    owner, stranger = user_id, user_id + 1
    tg.send(owner, "/safety block", chat_id=ours, chat_type="supergroup", admin=True)
    said(tg, ours, "now block")
    tg.send(stranger, f"/safety off {ours}", chat_id=theirs, chat_type="supergroup", admin=True)
    said(tg, theirs, "now off")
    tg.send(stranger, "/safety off", chat_id=ours, chat_type="supergroup")
    said(tg, ours, "only this group's administrators")
    assert await chat_policy(jobs, ours) is Policy.BLOCK
    assert await chat_policy(jobs, theirs) is Policy.OFF


async def test_a_private_chat_that_chose_blur_gets_its_album_behind_spoilers(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    """A private chat's user may choose blur; an album's flagged photos each carry the flag,
    and `off` is refused while the operator does not allow unfiltered results."""
    tg = telegram
    who = f"telegram:{user_id}"
    await started(tg, user_id)
    await asyncio.to_thread(jobs.stores.safety.set_operator, policy="block")
    try:
        tg.send(user_id, "/safety off")
        said(tg, user_id, "does not allow unfiltered results")
        tg.send(user_id, "/safety blur")
        said(tg, user_id, "now blur")
        await jobs.grant(who, 2000, by="test", key=f"test-safety-{user_id}")
        await jobs.update_settings(who, {"batch": 2, "steps": 4, "width": 256, "height": 256})
        tg.send(user_id, f"/make a fox {STANDIN_UNSAFE_WORD}")
        album = tg.wait_for(user_id, lambda ms: photos(ms)[1:] and photos(ms), timeout=30)
    finally:
        await asyncio.to_thread(jobs.stores.safety.set_operator, policy="off")
    assert len(album) == 2 and album[0]["media_group_id"] == album[1]["media_group_id"]
    assert all(m["has_media_spoiler"] for m in album)
    assert "2 hidden: flagged" in album[0]["caption"]
    assert await charges(jobs, who) == 1
