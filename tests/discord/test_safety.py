"""Content safety on Discord (issue 19) with the bot, workers and dev stack real, through the
Discord stand-in: a server's `/safety` is set only by members with Manage Server (the
permissions the interaction carries) and covers the whole server; a flagged result is sent as a
spoiler attachment (`SPOILER_` file name) or withheld, said why, and refunded.

The ComfyUI stand-in draws its "unsafe" mark into what a prompt with `standin-unsafe` renders
and the dev stack's safety worker runs the marker classifier (media/classifier.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from adapters.jobs import JobsClient
from domain.safety import Policy, SafetyPlace
from media.classifier import STANDIN_UNSAFE_WORD
from tests.discord.conftest import DiscordBot
from tests.discord.test_stories import answer_of, wait_results
from tests.discord_standin.standin import DiscordStandin, Message

pytestmark = pytest.mark.stack

MANAGE_GUILD = 1 << 5
MEMBER = 0  # no permission bits at all: certainly not Manage Server


def guild_place(sd: DiscordStandin) -> SafetyPlace:
    return SafetyPlace(platform="discord", chat_id=str(sd.guild_id), group=True)


@pytest.fixture
def guild_default(discord_bot: DiscordBot, jobs: JobsClient) -> Iterator[SafetyPlace]:
    """The guild starts and ends each test on the operator's default."""
    place = guild_place(discord_bot.standin)
    jobs.stores.safety.set_chat_policy(place, None, by="test")
    yield place
    jobs.stores.safety.set_chat_policy(place, None, by="test")


async def set_policy(sd: DiscordStandin, user_id: int, choice: str, permissions: int) -> str:
    sent = await sd.invoke(user_id, "safety", {"choice": choice}, permissions=permissions)
    answer = await answer_of(sd, sent)
    assert answer["ephemeral"], answer
    return str(answer["content"])


async def test_only_a_manage_server_member_sets_the_servers_filter(
    discord_bot: DiscordBot, jobs: JobsClient, user_id: int, guild_default: SafetyPlace
) -> None:
    sd, repo = discord_bot.standin, jobs.stores.safety
    refused = await set_policy(sd, user_id, "off", MEMBER)
    assert "only" in refused and "administrators" in refused, refused
    assert await asyncio.to_thread(repo.chat_policy, guild_default) is None

    said = await set_policy(sd, user_id, "block", MANAGE_GUILD)
    assert "now block" in said, said
    assert await asyncio.to_thread(repo.chat_policy, guild_default) is Policy.BLOCK
    # Anyone may look; the answer names the server's own setting.
    sent = await sd.invoke(user_id + 1, "safety", permissions=MEMBER)
    shown = await answer_of(sd, sent)
    assert "block" in shown["content"] and "this server's own setting" in shown["content"]

    said = await set_policy(sd, user_id, "default", MANAGE_GUILD)
    assert await asyncio.to_thread(repo.chat_policy, guild_default) is None


async def test_a_blurring_server_gets_its_flagged_image_as_a_spoiler_attachment(
    discord_bot: DiscordBot, jobs: JobsClient, user_id: int, guild_default: SafetyPlace
) -> None:
    sd = discord_bot.standin
    assert "now blur" in await set_policy(sd, user_id, "blur", MANAGE_GUILD)
    await sd.invoke(user_id, "make", {"prompt": f"a fox {STANDIN_UNSAFE_WORD}"})
    [flagged] = await wait_results(sd, sd.channel_id, user_id)
    [att] = flagged["attachments"]
    assert att["filename"].startswith("SPOILER_"), att
    assert "flagged by this chat's content filter" in flagged["content"]
    # A clean image in the same server is not hidden.
    await sd.invoke(user_id, "make", {"prompt": "a quiet lake"})
    results = await wait_results(sd, sd.channel_id, user_id, n=2)
    clean = next(m for m in results if m["id"] != flagged["id"])
    assert not clean["attachments"][0]["filename"].startswith("SPOILER_")
    assert "content filter" not in clean["content"]


async def test_a_blocking_server_withholds_the_image_says_why_and_refunds_it(
    discord_bot: DiscordBot, jobs: JobsClient, user_id: int, guild_default: SafetyPlace
) -> None:
    sd = discord_bot.standin
    assert "now block" in await set_policy(sd, user_id, "block", MANAGE_GUILD)
    await sd.invoke(user_id, "make", {"prompt": f"a fox {STANDIN_UNSAFE_WORD}"})

    async def blocked() -> list[dict[str, object]] | None:
        user = await asyncio.to_thread(jobs.stores.users.find, f"discord:{user_id}")
        if user is None:  # the bot registers the user as the command arrives
            return None
        found = await asyncio.to_thread(jobs.stores.safety.blocked, user.id)
        return found or None

    [decision] = await sd.wait_for(blocked, 60, "a blocked decision")
    wid = str(decision["job_id"])

    async def told() -> Message | None:
        msgs = await sd.messages(sd.channel_id)
        return next(
            (
                m
                for m in msgs
                if m["from_bot"]
                and m["interaction_id"] is None
                and "withheld by this chat's content filter" in m["content"]
                and not m["attachments"]
            ),
            None,
        )

    said = await sd.wait_for(told, 30, "the refusal")
    assert "refused" in said["content"] and "refunded" in said["content"]
    status = await jobs.status(wid, user=f"discord:{user_id}")
    assert status.state.value == "refused" and status.outputs == []
    assert not [m for m in await sd.messages(sd.channel_id) if wid in str(m["attachments"])]
    totals = await asyncio.to_thread(jobs.stores.ledger.job_totals, wid)
    assert totals.charges == 1 and totals.refunded == totals.charged > 0


async def test_in_dms_the_user_chooses_for_their_dm_and_the_server_is_untouched(
    discord_bot: DiscordBot, jobs: JobsClient, user_id: int, guild_default: SafetyPlace
) -> None:
    sd, repo = discord_bot.standin, jobs.stores.safety
    sent = await sd.invoke(user_id, "safety", {"choice": "block"}, dm=True)
    said = await answer_of(sd, sent)
    assert "now block" in said["content"], said
    dm = SafetyPlace(platform="discord", chat_id=str(sent["channel_id"]), group=False)
    try:
        assert await asyncio.to_thread(repo.chat_policy, dm) is Policy.BLOCK
        assert await asyncio.to_thread(repo.chat_policy, guild_default) is None
    finally:
        await asyncio.to_thread(repo.set_chat_policy, dm, None, by="test")
