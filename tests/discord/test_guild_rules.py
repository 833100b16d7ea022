"""Per-guild rules on Discord, with the bot, workers and dev stack real, through the stand-in:
`/guildrules` changed only by members with Manage Server; the guild's batch applied by the
planner to /make and /again alike (the DM keeps the user's own); collections refused in a
guild that does not allow them (and still made in a DM); the per-member command rate limit
answering once per window, privately."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from adapters.jobs import JobsClient
from domain.guild_rules import GuildRules
from domain.jobs import ReplyTarget
from tests.discord.conftest import DiscordBot
from tests.discord.test_stories import answer_of, job_messages, wait_results
from tests.discord_standin.standin import DiscordStandin

pytestmark = pytest.mark.stack

MANAGE_GUILD = 1 << 5
MEMBER = 0


@pytest.fixture
def guild(discord_bot: DiscordBot, jobs: JobsClient) -> Iterator[str]:
    """The stand-in's guild, on the default rules before and after each test."""
    gid = str(discord_bot.standin.guild_id)
    jobs.stores.guild_rules.reset("discord", gid)
    yield gid
    jobs.stores.guild_rules.reset("discord", gid)


async def rules_cmd(sd: DiscordStandin, user: int, perms: int, **options: object) -> str:
    answer = await answer_of(sd, await sd.invoke(user, "guildrules", options, permissions=perms))
    assert answer["ephemeral"], answer
    return str(answer["content"])


async def test_only_a_manage_server_member_changes_the_guilds_rules(
    discord_bot: DiscordBot, jobs: JobsClient, user_id: int, guild: str
) -> None:
    sd, repo = discord_bot.standin, jobs.stores.guild_rules
    refused = await rules_cmd(sd, user_id, MEMBER, batch=3, collections=False)
    assert "only the server's managers" in refused, refused
    assert await asyncio.to_thread(repo.get, "discord", guild) == GuildRules()

    said = await rules_cmd(sd, user_id, MANAGE_GUILD, batch=3)
    assert "at most 3 image(s)" in said, said
    assert await asyncio.to_thread(repo.get, "discord", guild) == GuildRules(batch=3)
    too_many = await rules_cmd(sd, user_id, MANAGE_GUILD, batch=repo.batch_cap + 1)
    assert f"1 … {repo.batch_cap}" in too_many, too_many
    shown = await rules_cmd(sd, user_id + 1, MEMBER)  # anyone may look
    assert "at most 3 image(s)" in shown and "allowed" in shown
    with pytest.raises(AssertionError, match="not offered in DMs"):
        await sd.invoke(user_id, "guildrules", dm=True)


async def outputs_of_last_job(jobs: JobsClient, who: str, known: set[str]) -> int:
    """The number of images of the job started after `known` (waits for it to end)."""

    async def new() -> str | None:
        ids = [j.workflow_id for j in await jobs.list_jobs(user=who, limit=10)]
        fresh = [w for w in ids if w not in known]
        return fresh[0] if fresh else None

    wid: str | None = None
    for _ in range(200):
        wid = await new()
        if wid:
            break
        await asyncio.sleep(0.2)
    assert wid, "no new job"
    known.add(wid)
    status = await asyncio.wait_for(jobs.result(wid), 90)
    return len(status.outputs)


async def test_the_guilds_batch_applies_to_make_and_again_and_not_to_the_dm(
    discord_bot: DiscordBot, jobs: JobsClient, user_id: int, guild: str
) -> None:
    sd, who = discord_bot.standin, f"discord:{user_id}"
    await jobs.register(who)
    await jobs.grant(who, 6000, by="test", key=f"guild-batch-{user_id}")
    await jobs.update_settings(who, {"batch": 3})
    known: set[str] = set()
    assert "at most 2 image(s)" in await rules_cmd(sd, user_id, MANAGE_GUILD, batch=2)

    await sd.invoke(user_id, "make", {"prompt": "a pair of herons"})
    assert await outputs_of_last_job(jobs, who, known) == 2  # the guild's 2, not the user's 3
    again = await answer_of(sd, await sd.invoke(user_id, "again"))
    assert await outputs_of_last_job(jobs, who, known) == 2, again["content"]
    await wait_results(sd, sd.channel_id, user_id, n=4)

    assert "at most 1 image(s)" in await rules_cmd(sd, user_id, MANAGE_GUILD, batch=1)
    await sd.invoke(user_id, "again")
    assert await outputs_of_last_job(jobs, who, known) == 1
    await sd.invoke(user_id, "make", {"prompt": "three herons"}, dm=True)
    assert await outputs_of_last_job(jobs, who, known) == 3  # the DM keeps the user's batch


async def test_a_guild_without_collections_refuses_them_and_the_dm_still_makes_them(
    discord_bot: DiscordBot, jobs: JobsClient, user_id: int, guild: str
) -> None:
    sd, who = discord_bot.standin, f"discord:{user_id}"
    said = await rules_cmd(sd, user_id, MANAGE_GUILD, collections=False)
    assert "not allowed" in said, said
    refused = await answer_of(sd, await sd.invoke(user_id, "collections", {"new": "Nope"}))
    assert refused["ephemeral"] and "do not allow collections here" in refused["content"]
    assert await jobs.collections(who) == []
    made = await answer_of(sd, await sd.invoke(user_id, "collections", {"new": "In DM"}, dm=True))
    assert "✓ created In DM" in made["content"], made
    [col] = await jobs.collections(who)
    with pytest.raises(Exception, match="do not allow collections here"):
        await jobs.start_cook(col.id, who, platform="discord", place=_guild_place(sd))


def _guild_place(sd: DiscordStandin) -> ReplyTarget:
    return ReplyTarget(chat_id=str(sd.channel_id), group_chat=True, guild_id=str(sd.guild_id))


async def test_a_flood_of_commands_is_refused_with_one_private_answer(
    discord_bot: DiscordBot, jobs: JobsClient, user_id: int, guild: str
) -> None:
    sd = discord_bot.standin
    sent = [await sd.invoke(user_id, "guildrules") for _ in range(24)]  # 20 a minute allowed
    await asyncio.sleep(3.0)  # past Discord's 3 s: every interaction has its final state
    states = [await sd.interaction(s["interaction_id"]) for s in sent]
    answered = [s for s in states if s["acked"]]
    assert len(answered) == 21, [s["acked"] for s in states]  # 20 commands + one warning
    warnings = []
    for s in answered:
        msg = await sd.message(s["original_id"])
        assert msg["ephemeral"] and msg["visible_to"] == str(user_id)
        if "faster than this bot takes them" in msg["content"]:
            warnings.append(msg)
    assert len(warnings) == 1
    # Another member is not limited by this one's flood.
    other = await answer_of(sd, await sd.invoke(user_id + 1, "guildrules"))
    assert "This server's rules" in other["content"]
    assert not job_messages(await sd.messages(), user_id)
