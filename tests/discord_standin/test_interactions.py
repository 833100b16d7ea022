"""Slash commands and buttons through the stand-in, answered by a real discord.py bot: the
callback with `?with_response=1`, deferral, edits, followups with attachments, the 3-second
acknowledgement deadline, the 15-minute token, 429s on edits."""

from __future__ import annotations

import asyncio
import io
from functools import partial

import discord
import pytest
from discord import app_commands

from tests.discord_standin.standin import DiscordStandin, running_bot

pytestmark = pytest.mark.timeout(60)

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
    b"\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)
EDIT_ROUTE = "PATCH /webhooks/{application_id}/{token}/messages/{message_id}"
CALLBACK_ROUTE = "POST /interactions/{interaction_id}/{token}/callback"


async def test_slash_commands_are_registered_and_keep_their_ids(
    discord_standin: DiscordStandin,
) -> None:
    def setup(client: discord.Client, tree: app_commands.CommandTree) -> None:
        @tree.command(name="make", description="Make an image")
        @app_commands.describe(prompt="What to draw")
        async def make(interaction: discord.Interaction, prompt: str) -> None:
            await interaction.response.send_message(prompt)

        @tree.command(name="upscale", description="Upscale an image")
        async def upscale(interaction: discord.Interaction, image: discord.Attachment) -> None:
            await interaction.response.send_message(image.filename)

    async with running_bot(discord_standin, setup) as bot:
        first = {c["name"]: c for c in await discord_standin.commands()}
        assert set(first) == {"make", "upscale"}
        assert first["make"]["options"][0]["name"] == "prompt"
        assert first["upscale"]["options"][0]["type"] == 11  # ATTACHMENT
        synced = await bot.tree.sync()  # a restart re-registers: same ids (bulk overwrite)
        assert {c.name: c.id for c in synced} == {n: int(c["id"]) for n, c in first.items()}
        guild = discord.Object(discord_standin.guild_id)
        bot.tree.copy_global_to(guild=guild)
        await bot.tree.sync(guild=guild)
        in_guild = await discord_standin.commands(discord_standin.guild_id)
        assert {c["name"] for c in in_guild} == {"make", "upscale"}
        assert all(c["guild_id"] == str(discord_standin.guild_id) for c in in_guild)
    puts = await discord_standin.calls("PUT /applications/{application_id}/commands")
    assert [c["status"] for c in puts] == [200, 200]


async def test_a_deferred_command_is_edited_then_followed_by_an_attachment(
    discord_standin: DiscordStandin,
) -> None:
    def setup(client: discord.Client, tree: app_commands.CommandTree) -> None:
        @tree.command(name="make", description="Make an image")
        async def make(interaction: discord.Interaction, prompt: str) -> None:
            await interaction.response.defer(thinking=True)
            await interaction.edit_original_response(content=f"Rendering {prompt}: 50%")
            await interaction.followup.send(
                f"Done: {prompt}", file=discord.File(io.BytesIO(PNG), "result.png")
            )

    async with running_bot(discord_standin, setup):
        sent = await discord_standin.invoke(8001, "make", {"prompt": "a red fox"})
        assert sent["delivered"] is True
        state = await discord_standin.wait_for(
            lambda: _with_followups(discord_standin, sent["interaction_id"], 1), what="followup"
        )
        assert state["ack_type"] == 5  # DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE
        assert state["ack_after"] < 3.0
        original = await discord_standin.message(state["original_id"])
        assert original["content"] == "Rendering a red fox: 50%"
        assert original["loading"] is False and original["edits"] == 1
        followup = await discord_standin.message(state["followups"][0])
        assert followup["content"] == "Done: a red fox"
        [att] = followup["attachments"]
        assert att["filename"] == "result.png" and att["content_type"] == "image/png"
        assert (att["width"], att["height"]) == (1, 1)
        assert await discord_standin.attachment(att["id"]) == PNG
    [callback] = await discord_standin.calls(CALLBACK_ROUTE)
    assert callback["query"] == {"with_response": "1"} and callback["status"] == 200


async def test_an_attachment_option_reaches_the_bot_and_downloads(
    discord_standin: DiscordStandin,
) -> None:
    got: list[bytes] = []

    def setup(client: discord.Client, tree: app_commands.CommandTree) -> None:
        @tree.command(name="upscale", description="Upscale an image")
        async def upscale(interaction: discord.Interaction, image: discord.Attachment) -> None:
            await interaction.response.defer()
            got.append(await image.read())
            await interaction.edit_original_response(content=f"{image.filename} {image.size}")

    async with running_bot(discord_standin, setup):
        sent = await discord_standin.invoke(8002, "upscale", files={"image": ("in.png", PNG)})
        answer = await discord_standin.wait_for(
            lambda: _original_text(discord_standin, sent["interaction_id"]), what="answer"
        )
        assert answer == f"in.png {len(PNG)}"
        assert got == [PNG]


async def test_a_late_acknowledgement_gets_10062_unknown_interaction(
    discord_standin: DiscordStandin,
) -> None:
    await discord_standin.options(ack_deadline=0.3)
    errors: list[discord.HTTPException] = []

    def setup(client: discord.Client, tree: app_commands.CommandTree) -> None:
        @tree.command(name="slow", description="Answers too late")
        async def slow(interaction: discord.Interaction) -> None:
            await asyncio.sleep(0.6)
            try:
                await interaction.response.defer()
            except discord.HTTPException as exc:
                errors.append(exc)
            try:  # "If the 3 second deadline is exceeded, the token will be invalidated."
                await interaction.followup.send("late")
            except discord.HTTPException as exc:
                errors.append(exc)

    async with running_bot(discord_standin, setup):
        sent = await discord_standin.invoke(8003, "slow")
        await discord_standin.wait_for(lambda: _len(errors, 2), what="refusals")
        err, followup = errors
        assert isinstance(err, discord.NotFound)
        assert (err.status, err.code, err.text) == (404, 10062, "Unknown interaction")
        assert (followup.status, followup.code) == (401, 50027)
        state = await discord_standin.interaction(sent["interaction_id"])
        assert state["late_ack_refused"] is True and state["acked"] is False


async def test_an_expired_interaction_token_gets_invalid_webhook_token(
    discord_standin: DiscordStandin,
) -> None:
    await discord_standin.options(token_ttl=0.5)
    errors: list[discord.HTTPException] = []

    def setup(client: discord.Client, tree: app_commands.CommandTree) -> None:
        @tree.command(name="long", description="Outlives its token")
        async def long(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            await asyncio.sleep(0.8)
            for attempt in (
                interaction.edit_original_response(content="done"),
                interaction.followup.send("done"),
            ):
                try:
                    await attempt
                except discord.HTTPException as exc:
                    errors.append(exc)
            # after 15 minutes the bot falls back to a plain channel message, which works
            assert isinstance(interaction.channel, discord.TextChannel)
            await interaction.channel.send("done (the token had expired)")

    async with running_bot(discord_standin, setup):
        await discord_standin.invoke(8004, "long")
        await discord_standin.wait_for(lambda: _len(errors, 2), what="refusals")
        assert [(e.status, e.code) for e in errors] == [(401, 50027), (401, 50027)]
        fallback = await discord_standin.wait_for(
            lambda: _said(discord_standin, "the token had expired"), what="channel message"
        )
        assert fallback["interaction_id"] is None and fallback["ephemeral"] is False


async def test_a_429_on_an_edit_is_retried_when_it_carries_via(
    discord_standin: DiscordStandin,
) -> None:
    await discord_standin.rate_limit(EDIT_ROUTE, count=2, retry_after=0.2)

    def setup(client: discord.Client, tree: app_commands.CommandTree) -> None:
        @tree.command(name="make", description="Make an image")
        async def make(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            await interaction.edit_original_response(content="progress 10%")

    async with running_bot(discord_standin, setup):
        sent = await discord_standin.invoke(8005, "make")
        text = await discord_standin.wait_for(
            lambda: _original_text(discord_standin, sent["interaction_id"]), what="edit"
        )
        assert text == "progress 10%"
    edits = await discord_standin.calls(EDIT_ROUTE)
    assert [c["status"] for c in edits] == [429, 429, 200]
    assert edits[2]["time"] - edits[0]["time"] >= 0.4  # it waited retry_after each time


async def test_a_429_without_via_is_not_retried(discord_standin: DiscordStandin) -> None:
    """A 429 with no `Via` header is what a Cloudflare ban looks like: discord.py gives up."""
    await discord_standin.rate_limit(EDIT_ROUTE, count=1, via=False)
    errors: list[discord.HTTPException] = []

    def setup(client: discord.Client, tree: app_commands.CommandTree) -> None:
        @tree.command(name="make", description="Make an image")
        async def make(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            try:
                await interaction.edit_original_response(content="progress")
            except discord.HTTPException as exc:
                errors.append(exc)

    async with running_bot(discord_standin, setup):
        await discord_standin.invoke(8006, "make")
        await discord_standin.wait_for(lambda: _len(errors), what="refusal")
    assert errors[0].status == 429
    assert [c["status"] for c in await discord_standin.calls(EDIT_ROUTE)] == [429]


async def test_a_persistent_button_is_pressed_and_updates_its_message(
    discord_standin: DiscordStandin,
) -> None:
    class JobButtons(discord.ui.View):
        def __init__(self) -> None:
            super().__init__(timeout=None)

        @discord.ui.button(label="Cancel", custom_id="job:cancel:abc123")
        async def cancel(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
            await interaction.response.edit_message(content="Cancelled", view=None)

    def setup(client: discord.Client, tree: app_commands.CommandTree) -> None:
        client.add_view(JobButtons())  # persistent: survives a restart by custom id

        @tree.command(name="make", description="Make an image")
        async def make(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("Rendering", view=JobButtons())

    async with running_bot(discord_standin, setup):
        sent = await discord_standin.invoke(8007, "make")
        state = await discord_standin.wait_for(
            lambda: _acked(discord_standin, sent["interaction_id"]), what="answer"
        )
        message = await discord_standin.message(state["original_id"])
        assert message["custom_ids"] == ["job:cancel:abc123"]
        with pytest.raises(AssertionError, match="no component"):
            await discord_standin.press(8007, message["id"], "job:cancel:someone-else")
        press = await discord_standin.press(8007, message["id"], "job:cancel:abc123")
        pressed = await discord_standin.wait_for(
            lambda: _acked(discord_standin, press["interaction_id"]), what="press answer"
        )
        assert pressed["ack_type"] == 7  # UPDATE_MESSAGE
        after = await discord_standin.message(message["id"])
        assert after["content"] == "Cancelled" and after["custom_ids"] == []


async def test_an_ephemeral_answer_is_only_for_its_user(discord_standin: DiscordStandin) -> None:
    def setup(client: discord.Client, tree: app_commands.CommandTree) -> None:
        @tree.command(name="balance", description="How many points you have")
        async def balance(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("100 points", ephemeral=True)

    async with running_bot(discord_standin, setup):
        sent = await discord_standin.invoke(8008, "balance", dm=True)
        state = await discord_standin.wait_for(
            lambda: _acked(discord_standin, sent["interaction_id"]), what="answer"
        )
        message = await discord_standin.message(state["original_id"])
        assert message["ephemeral"] is True and message["visible_to"] == "8008"
        assert message["channel_id"] == sent["channel_id"]  # the user's DM with the bot


async def test_guild_only_and_dm_only_commands_are_offered_only_there(
    discord_standin: DiscordStandin,
) -> None:
    def setup(client: discord.Client, tree: app_commands.CommandTree) -> None:
        @tree.command(name="batch", description="Guild batch rules")
        @app_commands.guild_only()
        async def batch(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("guild")

        @tree.command(name="login", description="Link your account")
        @app_commands.allowed_contexts(guilds=False, dms=True, private_channels=False)
        async def login(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("dm", ephemeral=True)

    async with running_bot(discord_standin, setup):
        with pytest.raises(AssertionError, match="not offered in DMs"):
            await discord_standin.invoke(8010, "batch", dm=True)
        with pytest.raises(AssertionError, match="not offered in guilds"):
            await discord_standin.invoke(8010, "login")
        for name, dm, answer in (("batch", False, "guild"), ("login", True, "dm")):
            sent = await discord_standin.invoke(8010, name, dm=dm)
            iid = str(sent["interaction_id"])
            text = await discord_standin.wait_for(
                partial(_original_text, discord_standin, iid), what=name
            )
            assert text == answer


async def test_a_forged_custom_id_reaches_the_bot_only_when_forged(
    discord_standin: DiscordStandin,
) -> None:
    def setup(client: discord.Client, tree: app_commands.CommandTree) -> None:
        @tree.command(name="make", description="Make an image")
        async def make(interaction: discord.Interaction) -> None:
            view = discord.ui.View(timeout=None)
            view.add_item(discord.ui.Button(label="Regen", custom_id="job:regen:mine"))
            await interaction.response.send_message("Done", view=view)

    async with running_bot(discord_standin, setup):
        sent = await discord_standin.invoke(8011, "make")
        state = await discord_standin.wait_for(
            lambda: _acked(discord_standin, sent["interaction_id"]), what="answer"
        )
        with pytest.raises(AssertionError, match="no component"):
            await discord_standin.press(8012, state["original_id"], "job:regen:someone-elses")
        forged = await discord_standin.press(
            8012, state["original_id"], "job:regen:someone-elses", forge=True
        )
        assert forged["delivered"] is True  # a modified client can send any custom id
        events = (await discord_standin.gateway())["sessions"]
        assert any(s["events"][-1] == "INTERACTION_CREATE" for s in events)


# ------------------------------------------------------------------------------ helpers


async def _len(items: list, n: int = 1) -> bool:
    return len(items) >= n


async def _acked(standin: DiscordStandin, interaction_id: str) -> dict | None:
    state = await standin.interaction(interaction_id)
    return state if state["acked"] else None


async def _with_followups(standin: DiscordStandin, interaction_id: str, n: int) -> dict | None:
    state = await standin.interaction(interaction_id)
    return state if len(state["followups"]) >= n else None


async def _said(standin: DiscordStandin, needle: str) -> dict | None:
    return next((m for m in await standin.messages() if needle in m["content"]), None)


async def _original_text(standin: DiscordStandin, interaction_id: str) -> str | None:
    state = await standin.interaction(interaction_id)
    if not state["original_id"]:
        return None
    message = await standin.message(state["original_id"])
    return None if message["loading"] else message["content"]
