"""Modals through the stand-in with a real discord.py bot: a modal response is checked and
kept, its user submits it (MODAL_SUBMIT, type 5) and the bot reads what was typed; another
user cannot submit it, an empty required input or a value over the input's max_length is
refused as Discord's client would, a title over 45 characters is 400 Invalid Form Body; a
replayed INTERACTION_CREATE reaches the bot again with the same id and token."""

from __future__ import annotations

import asyncio
from typing import Any

import discord
import pytest
from discord import app_commands, ui

from tests.discord_standin.standin import DiscordStandin, running_bot

pytestmark = pytest.mark.timeout(60)


async def test_a_modal_is_submitted_by_its_user_only_and_its_values_reach_the_bot(
    discord_standin: DiscordStandin,
) -> None:
    sd = discord_standin
    got: list[tuple[int, str, str]] = []
    errors: list[int] = []

    class Ask(ui.Modal, title="Rename"):
        name: ui.TextInput[Any] = ui.TextInput(label="New name", custom_id="name", max_length=8)

        async def on_submit(self, interaction: discord.Interaction) -> None:
            data: Any = interaction.data or {}
            got.append((interaction.user.id, str(data.get("custom_id")), self.name.value))
            await interaction.response.send_message(f"ok {self.name.value}", ephemeral=True)

    def setup(client: discord.Client, tree: app_commands.CommandTree) -> None:
        @tree.command(name="rename", description="Rename")
        async def rename(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(Ask(custom_id="ask:1"))

        @tree.command(name="badmodal", description="A modal over Discord's limits")
        async def badmodal(interaction: discord.Interaction) -> None:
            try:
                await interaction.response.send_modal(Ask(title="T" * 46, custom_id="ask:2"))
            except discord.HTTPException as err:
                errors.append(err.status)

    async with running_bot(sd, setup):
        opened = await sd.invoke(5001, "rename")
        state = await sd.wait_for(
            lambda: _modal_of(sd, opened["interaction_id"]), 10, "the modal shown"
        )
        assert state["ack_type"] == 9 and state["modal"]["custom_id"] == "ask:1"
        with pytest.raises(AssertionError, match="only to the user"):
            await sd.submit(5002, opened["interaction_id"], {"name": "x"})
        with pytest.raises(AssertionError, match="required or too short"):
            await sd.submit(5001, opened["interaction_id"], {})
        with pytest.raises(AssertionError, match="too long"):
            await sd.submit(5001, opened["interaction_id"], {"name": "x" * 9})
        sent = await sd.submit(5001, opened["interaction_id"], {"name": "fox"})
        await sd.wait_for(lambda: _acked(sd, sent["interaction_id"]), 10, "the submit answered")
        assert got == [(5001, "ask:1", "fox")]
        reply = await sd.message((await sd.interaction(sent["interaction_id"]))["original_id"])
        assert reply["content"] == "ok fox" and reply["ephemeral"] is True

        await sd.invoke(5001, "badmodal")
        await sd.wait_for(lambda: _nonempty(errors), 10, "the refused modal")
        assert errors == [400]


async def test_a_redelivered_interaction_reaches_the_bot_again(
    discord_standin: DiscordStandin,
) -> None:
    sd = discord_standin
    seen: list[int] = []

    def setup(client: discord.Client, tree: app_commands.CommandTree) -> None:
        @tree.command(name="ping", description="Ping")
        async def ping(interaction: discord.Interaction) -> None:
            seen.append(interaction.id)
            try:
                await interaction.response.send_message("pong")
            except discord.HTTPException:
                seen.append(-1)  # the second response: 400 40060 already acknowledged

    async with running_bot(sd, setup):
        sent = await sd.invoke(5003, "ping")
        await sd.wait_for(lambda: _acked(sd, sent["interaction_id"]), 10, "pong")
        await sd.redeliver(sent["interaction_id"])
        await sd.wait_for(lambda: _len_at_least(seen, 3), 10, "the replayed event")
    iid = int(sent["interaction_id"])
    assert seen == [iid, iid, -1]


async def _modal_of(sd: DiscordStandin, iid: str) -> dict[str, Any] | None:
    state = await sd.interaction(iid)
    return state if state["modal"] else None


async def _acked(sd: DiscordStandin, iid: str) -> bool:
    return bool((await sd.interaction(iid))["acked"])


async def _nonempty(items: list[int]) -> bool:
    await asyncio.sleep(0)
    return bool(items)


async def _len_at_least(items: list[int], n: int) -> bool:
    await asyncio.sleep(0)
    return len(items) >= n
