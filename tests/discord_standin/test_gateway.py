"""A real discord.py 2.7.1 client on the stand-in's Gateway v10: connect, heartbeat, resume."""

from __future__ import annotations

import asyncio
import json
import zlib

import aiohttp
import discord
import pytest
from discord import app_commands

from tests.discord_standin.standin import DiscordStandin, running_bot

pytestmark = pytest.mark.timeout(60)


def _balance(client: discord.Client, tree: app_commands.CommandTree) -> None:
    @tree.command(name="balance", description="How many points you have")
    async def balance(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("100 points", ephemeral=True)


async def test_a_discord_py_client_reaches_on_ready_over_zlib_stream(
    discord_standin: DiscordStandin,
) -> None:
    async with running_bot(discord_standin) as bot:
        assert bot.client.user is not None
        assert bot.client.user.id == discord_standin.bot_user_id
        assert bot.client.application_id == discord_standin.application_id
        assert [g.id for g in bot.client.guilds] == [discord_standin.guild_id]
        gateway = await discord_standin.gateway()
        conn = [c for c in gateway["connections"] if c["open"]][-1]
        # discord.py asks for zlib-stream and gets binary zlib frames it decompresses.
        assert conn["compress"] is True
        assert conn["path"] == "/"
        session = next(s for s in gateway["sessions"] if s["id"] == gateway["current"])
        assert session["events"][:2] == ["READY", "GUILD_CREATE"]


async def test_plain_json_text_frames_work_although_the_client_asks_for_zlib(
    discord_standin: DiscordStandin,
) -> None:
    await discord_standin.options(honour_compress=False)
    async with running_bot(discord_standin) as bot:
        assert bot.client.user is not None
        gateway = await discord_standin.gateway()
        assert [c for c in gateway["connections"] if c["open"]][-1]["compress"] is False


async def test_heartbeats_are_acknowledged(discord_standin: DiscordStandin) -> None:
    await discord_standin.options(heartbeat_interval_ms=200)
    async with running_bot(discord_standin, sync=False) as bot:
        await asyncio.sleep(1.0)
        gateway = await discord_standin.gateway()
        conn = [c for c in gateway["connections"] if c["open"]][-1]
        # one at HELLO, then every 200 ms; ACKed, so discord.py measures a latency
        assert conn["heartbeats"] >= 3
        assert bot.client.latency < 1.0


async def test_a_heartbeat_request_is_answered_at_once(discord_standin: DiscordStandin) -> None:
    async with running_bot(discord_standin, sync=False):
        asked = await discord_standin.request_heartbeat()

        async def answered() -> bool:
            gateway = await discord_standin.gateway()
            conn = [c for c in gateway["connections"] if c["open"]][-1]
            return conn["heartbeats"] > asked["heartbeats_before"]

        # the interval is 41.25 s: only the request explains a heartbeat within 5 s
        await discord_standin.wait_for(answered, timeout=5, what="heartbeat")


async def test_a_zombied_connection_is_closed_by_the_client_and_resumed(
    discord_standin: DiscordStandin,
) -> None:
    """No heartbeat ACKs: discord.py closes the socket after `heartbeat_timeout` and resumes."""
    await discord_standin.options(heartbeat_interval_ms=200, ack_heartbeats=False)
    async with running_bot(discord_standin, sync=False, heartbeat_timeout=1.0) as bot:
        await asyncio.wait_for(bot.resumed.wait(), 15)
        gateway = await discord_standin.gateway()
        session = next(s for s in gateway["sessions"] if s["id"] == gateway["current"])
        assert session["resumes"] and session["resumes"][0]["path"] == "/resume"


async def test_a_dropped_socket_resumes_and_gets_the_missed_interaction(
    discord_standin: DiscordStandin,
) -> None:
    async with running_bot(discord_standin, _balance) as bot:
        before = await discord_standin.drop(hold=True)
        # The user runs /balance while the bot's socket is down: Discord keeps the event.
        sent = await discord_standin.invoke(7001, "balance")
        assert sent["delivered"] is False
        await discord_standin.release()
        await asyncio.wait_for(bot.resumed.wait(), 15)
        answered = await discord_standin.wait_for(
            lambda: _answered(discord_standin, sent["interaction_id"]), what="answer"
        )
        assert answered["content"] == "100 points"
        assert answered["ephemeral"] is True
        gateway = await discord_standin.gateway()
        session = next(s for s in gateway["sessions"] if s["id"] == before["session_id"])
        # RESUME on READY's resume_gateway_url from the last seen sequence: one event replayed
        assert session["resumes"] == [{"from_seq": before["seq"], "replayed": 1, "path": "/resume"}]
        assert session["events"][-2:] == ["INTERACTION_CREATE", "RESUMED"]
        assert len(gateway["sessions"]) >= 1 and gateway["current"] == before["session_id"]


async def test_an_abruptly_cut_connection_resumes_too(discord_standin: DiscordStandin) -> None:
    async with running_bot(discord_standin, _balance) as bot:
        before = await discord_standin.drop(abrupt=True)
        await asyncio.wait_for(bot.resumed.wait(), 20)
        sent = await discord_standin.invoke(7002, "balance")
        assert sent["delivered"] is True
        await discord_standin.wait_for(
            lambda: _answered(discord_standin, sent["interaction_id"]), what="answer"
        )
        gateway = await discord_standin.gateway()
        assert gateway["current"] == before["session_id"]


async def test_op7_reconnect_makes_the_client_resume(discord_standin: DiscordStandin) -> None:
    async with running_bot(discord_standin, sync=False) as bot:
        await discord_standin.reconnect()
        await asyncio.wait_for(bot.resumed.wait(), 15)


async def test_privileged_intents_not_enabled_close_with_4014(
    discord_standin: DiscordStandin,
) -> None:
    with pytest.raises(discord.PrivilegedIntentsRequired):
        async with running_bot(discord_standin, intents=discord.Intents.all(), sync=False):
            pass


async def test_gateway_close_codes_and_resume_of_an_unknown_session(
    discord_standin: DiscordStandin,
) -> None:
    async with aiohttp.ClientSession() as http:
        url = discord_standin.gateway_url
        async with http.ws_connect(url + "?v=9&encoding=json") as ws:
            await ws.receive()
            assert ws.close_code == 4012  # Invalid API version
        async with http.ws_connect(url + "?v=10&encoding=json") as ws:
            hello = json.loads((await ws.receive()).data)
            assert hello["op"] == 10 and hello["d"]["heartbeat_interval"] == 41250
            await ws.send_str(json.dumps({"op": 2, "d": {"token": "wrong", "intents": 1}}))
            await ws.receive()
            assert ws.close_code == 4004  # Authentication failed
        async with http.ws_connect(url + "?v=10&encoding=json") as ws:
            await ws.receive()
            await ws.send_str(json.dumps({"op": 3, "d": {}}))
            await ws.receive()
            assert ws.close_code == 4003  # Not authenticated
        async with http.ws_connect(url + "?v=10&encoding=json&compress=zlib-stream") as ws:
            inflate = zlib.decompressobj()
            hello = json.loads(inflate.decompress((await ws.receive()).data))
            assert hello["op"] == 10
            resume = {"token": discord_standin.token, "session_id": "nope", "seq": 3}
            await ws.send_str(json.dumps({"op": 6, "d": resume}))
            invalid = json.loads(inflate.decompress((await ws.receive()).data))
            assert invalid == {"op": 9, "d": False}  # Invalid Session, not resumable


async def _answered(standin: DiscordStandin, interaction_id: str) -> dict | None:
    state = await standin.interaction(interaction_id)
    if not state["original_id"]:
        return None
    message = await standin.message(state["original_id"])
    return message if not message["loading"] else None
