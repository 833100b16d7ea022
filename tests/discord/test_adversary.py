"""Adversary cases against the Discord bot through the stand-in: another user's buttons,
forged custom ids (a modified client can send any), and personal data kept private."""

from __future__ import annotations

import asyncio

import pytest

from adapters.discord.commands import NOT_YOURS
from adapters.jobs import JobsClient
from tests.discord.conftest import DiscordBot
from tests.discord.test_stories import answer_of, job_messages, wait_results

pytestmark = pytest.mark.stack


async def charges(jobs: JobsClient, who: str) -> int:
    entries = (await jobs.balance_summary(who, 50))[1]
    return len([e for e in entries if e.kind == "charge"])


async def test_another_users_buttons_and_forged_ids_start_nothing(
    discord_bot: DiscordBot, jobs: JobsClient, user_id: int
) -> None:
    sd, owner, mallory = discord_bot.standin, user_id, user_id + 1
    await sd.invoke(owner, "make", {"prompt": "my own lighthouse"})
    [result] = await wait_results(sd, sd.channel_id, owner)
    await sd.invoke(mallory, "balance")  # mallory exists, with points
    await asyncio.sleep(1.0)
    before = (await charges(jobs, f"discord:{owner}"), await charges(jobs, f"discord:{mallory}"))

    # The real buttons of someone else's public result, in the shared channel.
    for cid in result["custom_ids"]:
        answer = await answer_of(sd, await sd.press(mallory, result["id"], cid))
        assert answer["content"] == NOT_YOURS and answer["ephemeral"] is True
        assert answer["visible_to"] == str(mallory)
    # Forged ids (a modified client can send any): an unknown ref of the right shape, an
    # output index out of range, another cancel, ids of no shape of ours. discord.py acts only
    # on a custom id the pressed message really has, so these are never answered or acted on.
    ref = result["custom_ids"][0].split(":")[2]
    forged = [
        "st:regen:" + "A" * 22,
        f"st:up:{ref}:99",
        f"st:cancel:{'B' * 22}",
        "st:regen:" + "A" * 90,
        "res:regen:x",
        "st:up:../../etc:1",
    ]
    presses = [await sd.press(owner, result["id"], cid, forge=True) for cid in forged]
    await asyncio.sleep(2.0)
    after = (await charges(jobs, f"discord:{owner}"), await charges(jobs, f"discord:{mallory}"))
    assert after == before, "no press started a job"
    assert len(job_messages(await sd.messages(), owner)) == 1
    assert await jobs.active(f"discord:{mallory}") == []
    for press in presses:
        assert (await sd.interaction(press["interaction_id"]))["acked"] is False


async def test_balance_and_settings_are_seen_only_by_who_asked(
    discord_bot: DiscordBot, user_id: int
) -> None:
    sd = discord_bot.standin
    for name in ("balance", "settings", "status", "models", "collections"):
        answer = await answer_of(sd, await sd.invoke(user_id, name))
        assert answer["ephemeral"] is True and answer["visible_to"] == str(user_id), name


async def test_link_codes_are_dm_only_commands(discord_bot: DiscordBot, user_id: int) -> None:
    """A link code is a key to the account: /login and /link are offered only in the bot's
    DMs (the Discord client, like the stand-in, does not offer them in a guild)."""
    sd = discord_bot.standin
    contexts = {c["name"]: c["contexts"] for c in await sd.commands()}
    assert contexts["login"] == [1] and contexts["link"] == [1]
    assert contexts["make"] == [0, 1] and contexts["balance"] == [0, 1]
    with pytest.raises(AssertionError):
        await sd.invoke(user_id, "login")  # in the guild channel: refused
    answer = await answer_of(sd, await sd.invoke(user_id, "login", dm=True))
    assert answer["ephemeral"] is True and "link code" in answer["content"]
