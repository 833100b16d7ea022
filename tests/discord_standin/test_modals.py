"""Modals through the stand-in, answered by a real discord.py bot: a command opens one (response
type 9, title and custom id within Discord's limits), the user submits it (a MODAL_SUBMIT
interaction whose text inputs carry their values) and discord.py hands the values to the
modal's `on_submit`; an interaction dispatched again (a replay) reaches the bot again."""

from __future__ import annotations

import asyncio
from typing import Any

import discord
import pytest
from discord import app_commands, ui

from tests.discord_standin.standin import DiscordStandin, running_bot

pytestmark = pytest.mark.timeout(60)


class Traits(ui.Modal, title="Traits"):
    trait: ui.TextInput[Any] = ui.TextInput(label="Trait type", custom_id="trait")
    values: ui.TextInput[Any] = ui.TextInput(
        label="Values", custom_id="values", style=discord.TextStyle.paragraph
    )

    def __init__(self, got: asyncio.Queue[tuple[str, str]]) -> None:
        super().__init__(custom_id="traits-form")
        self.got = got

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self.got.put((self.trait.value, self.values.value))
        await interaction.response.send_message("saved", ephemeral=True)


async def test_a_modal_is_opened_submitted_and_its_values_reach_on_submit(
    discord_standin: DiscordStandin,
) -> None:
    got: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    seen: list[int] = []

    def setup(client: discord.Client, tree: app_commands.CommandTree) -> None:
        @tree.command(name="traits", description="Set a trait's values")
        async def traits(interaction: discord.Interaction) -> None:
            seen.append(interaction.id)
            if len(seen) == 1:
                await interaction.response.send_modal(Traits(got))

    sd = discord_standin
    async with running_bot(sd, setup):
        sent = await sd.invoke(8101, "traits")

        async def opened() -> dict[str, Any] | None:
            state = await sd.interaction(sent["interaction_id"])
            return state if state["ack_type"] == 9 else None

        state = await sd.wait_for(opened, what="the modal")
        assert state["modal"]["title"] == "Traits"
        with pytest.raises(AssertionError, match="only to the user"):
            await sd.submit_modal(sent["interaction_id"], {"trait": "Fur"}, user_id=8102)
        with pytest.raises(AssertionError, match="is required"):
            await sd.submit_modal(sent["interaction_id"], {"trait": "Fur"})
        submit = await sd.submit_modal(
            sent["interaction_id"], {"trait": "Fur", "values": "red|red fur|3\ngrey"}
        )
        assert await asyncio.wait_for(got.get(), 10) == ("Fur", "red|red fur|3\ngrey")
        answered = await sd.wait_for(
            lambda: _acked(sd, submit["interaction_id"]), what="the submit's answer"
        )
        assert answered["type"] == 5 and answered["ack_type"] == 4

        replay = await sd.redeliver(sent["interaction_id"])
        assert replay["delivered"] is True
        await sd.wait_for(lambda: _count(seen, 2), what="the replayed command")
        assert seen == [int(sent["interaction_id"])] * 2  # the same interaction, twice


async def _acked(sd: DiscordStandin, iid: str) -> dict[str, Any] | None:
    state = await sd.interaction(iid)
    return state if state["acked"] else None


async def _count(seen: list[int], n: int) -> bool:
    return len(seen) >= n
