"""Discord's limits and error bodies as the stand-in answers them, seen by discord.py and raw."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import discord
import httpx
import pytest
from discord import app_commands
from discord.http import Route

from tests.discord_standin.standin import Bot, DiscordStandin, running_bot

pytestmark = pytest.mark.timeout(60)


def _row(*custom_ids: str) -> dict[str, Any]:
    return {
        "type": 1,
        "components": [{"type": 2, "style": 1, "label": "b", "custom_id": c} for c in custom_ids],
    }


async def _post(bot: Bot, standin: DiscordStandin, payload: dict[str, Any]) -> Any:
    route = Route("POST", "/channels/{channel_id}/messages", channel_id=standin.channel_id)
    return await bot.client.http.request(route, json=payload)


async def test_content_is_at_most_2000_characters(discord_standin: DiscordStandin) -> None:
    async with running_bot(discord_standin, sync=False) as bot:
        channel = bot.client.get_channel(discord_standin.channel_id)
        assert isinstance(channel, discord.TextChannel)
        sent = await channel.send("x" * 2000)
        assert len(sent.content) == 2000
        with pytest.raises(discord.HTTPException) as caught:
            await channel.send("x" * 2001)
        assert (caught.value.status, caught.value.code) == (400, 50035)
        assert "In content: Must be 2000 or fewer in length." in caught.value.text
        with pytest.raises(discord.HTTPException) as empty:
            await _post(bot, discord_standin, {"content": ""})
        assert (empty.value.code, empty.value.text) == (50006, "Cannot send an empty message")


async def test_components_rows_buttons_and_custom_ids(discord_standin: DiscordStandin) -> None:
    async with running_bot(discord_standin, sync=False) as bot:
        ok = [_row(*(f"r{r}b{b}" for b in range(5))) for r in range(5)]  # 25 buttons
        await _post(bot, discord_standin, {"content": "ok", "components": ok})
        await _post(bot, discord_standin, {"content": "ok", "components": [_row("x" * 100)]})
        cases = {
            "In components: Must be 5 or fewer in length.": [_row(f"r{r}") for r in range(6)],
            "In components.0.components: Must be 5 or fewer in length.": [
                _row(*(f"b{b}" for b in range(6)))
            ],
            "In components.0.components.0.custom_id: Must be 100 or fewer in length.": [
                _row("x" * 101)
            ],
            "In components.1.components.0.custom_id: Component custom id cannot be duplicated": [
                _row("same"),
                _row("same"),
            ],
        }
        for text, components in cases.items():
            with pytest.raises(discord.HTTPException) as caught:
                await _post(bot, discord_standin, {"content": "no", "components": components})
            assert caught.value.code == 50035
            assert text in caught.value.text


async def test_an_attachment_over_the_upload_limit_is_413_40005(
    discord_standin: DiscordStandin,
) -> None:
    await discord_standin.options(upload_limit=1000)
    async with running_bot(discord_standin, sync=False) as bot:
        channel = bot.client.get_channel(discord_standin.channel_id)
        assert isinstance(channel, discord.TextChannel)
        ok = await channel.send(file=discord.File(io.BytesIO(b"a" * 1000), "ok.bin"))
        assert ok.attachments[0].size == 1000
        with pytest.raises(discord.HTTPException) as caught:
            await channel.send(file=discord.File(io.BytesIO(b"a" * 1001), "big.bin"))
        assert (caught.value.status, caught.value.code) == (413, 40005)


async def test_an_interaction_is_answered_once_and_its_body_is_checked(
    discord_standin: DiscordStandin,
) -> None:
    errors: list[discord.HTTPException] = []

    def setup(client: discord.Client, tree: app_commands.CommandTree) -> None:
        @tree.command(name="make", description="Make an image")
        async def make(interaction: discord.Interaction) -> None:
            try:
                await interaction.response.send_message("y" * 2001)
            except discord.HTTPException as exc:
                errors.append(exc)
            await interaction.response.send_message("fine")
            try:  # discord.py refuses a second response itself; the raw route is refused too
                route = Route(
                    "POST",
                    "/interactions/{interaction_id}/{token}/callback",
                    interaction_id=interaction.id,
                    token=interaction.token,
                )
                await client.http.request(route, json={"type": 4, "data": {"content": "again"}})
            except discord.HTTPException as exc:
                errors.append(exc)

    async with running_bot(discord_standin, setup):
        sent = await discord_standin.invoke(9001, "make")
        assert sent["delivered"]
        for _ in range(100):
            if len(errors) >= 2:
                break
            await asyncio.sleep(0.05)
    too_long, twice = errors
    assert too_long.code == 50035
    assert "In data.content: Must be 2000 or fewer in length." in too_long.text
    assert (twice.status, twice.code) == (400, 40060)
    state = await discord_standin.interaction(sent["interaction_id"])
    assert state["ack_type"] == 4


async def test_rest_answers_carry_exact_json_content_type_via_and_bucket_headers(
    discord_standin: DiscordStandin,
) -> None:
    auth = {"Authorization": f"Bot {discord_standin.token}"}
    async with httpx.AsyncClient(base_url=discord_standin.api_base) as http:
        me = await http.get("/users/@me", headers=auth)
        assert me.status_code == 200
        assert me.headers["content-type"] == "application/json"
        assert me.headers["via"]
        for header in ("limit", "remaining", "reset", "reset-after", "bucket"):
            assert f"x-ratelimit-{header}" in me.headers
        bad = await http.get("/users/@me", headers={"Authorization": "Bot wrong"})
        assert (bad.status_code, bad.json()) == (401, {"message": "401: Unauthorized", "code": 0})
        missing = await http.get("/nowhere", headers=auth)
        assert (missing.status_code, missing.json()["code"]) == (404, 0)
        channel = await http.post("/channels/1/messages", headers=auth, json={"content": "x"})
        assert channel.json() == {"message": "Unknown Channel", "code": 10003}


async def test_a_bucket_answers_429_with_retry_after_and_discord_py_waits_before_it(
    discord_standin: DiscordStandin,
) -> None:
    await discord_standin.options(bucket_limit=3, bucket_window=1.0)
    auth = {"Authorization": f"Bot {discord_standin.token}"}
    path = f"/channels/{discord_standin.channel_id}/messages"
    async with httpx.AsyncClient(base_url=discord_standin.api_base) as http:
        answers = [await http.post(path, headers=auth, json={"content": "hi"}) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["x-ratelimit-remaining"] for a in answers] == ["2", "1", "0", "0"]
    limited = answers[3]
    assert limited.headers["x-ratelimit-scope"] == "user" and limited.headers["via"]
    assert 0 < limited.json()["retry_after"] <= 1.0 and limited.json()["global"] is False

    await discord_standin.reset()
    await discord_standin.options(bucket_limit=3, bucket_window=1.0)
    async with running_bot(discord_standin, sync=False) as bot:
        channel = bot.client.get_channel(discord_standin.channel_id)
        assert isinstance(channel, discord.TextChannel)
        started = time.monotonic()
        for i in range(5):
            await channel.send(f"message {i}")
        elapsed = time.monotonic() - started
    statuses = [
        c["status"] for c in await discord_standin.calls("POST /channels/{channel_id}/messages")
    ]
    # discord.py read the headers and waited for the bucket instead of hitting it
    assert statuses == [200] * 5
    assert elapsed >= 0.8


async def test_the_global_limit_answers_a_global_429(discord_standin: DiscordStandin) -> None:
    await discord_standin.options(global_per_second=3, bucket_limit=100)
    auth = {"Authorization": f"Bot {discord_standin.token}"}
    async with httpx.AsyncClient(base_url=discord_standin.api_base) as http:
        answers = [await http.get("/users/@me", headers=auth) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[3].json()["global"] is True
    assert answers[3].headers["x-ratelimit-global"] == "true"
    assert answers[3].headers["x-ratelimit-scope"] == "global"
