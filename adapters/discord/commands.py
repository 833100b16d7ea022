"""Slash commands and result buttons: declared once on the tree, each a thin call into the jobs
client.

Who: `discord:<user id>`, the same in guilds and DMs; `/link CODE` adds it to an account made
on another platform (a code from Telegram, the web page or `stationthis`), `/login` gives a
code for the other way round, so balance, settings, history and jobs are one account's.
What: a slash command is keyed by its interaction id (`ia<id>`, the same when the gateway
replays the event after a RESUME), a button press by the message it sits on plus its custom id
(`btn<message>.<hash>`), never by the press's own interaction id (new for every tap): any number
of taps of one button start one job. `Claims` closes the window of two taps handled at once.

Where: personal data (balance, settings, status, link codes, refusals) is only ever answered
ephemerally, so in a guild channel only the person who asked sees it (issue 20, item 5); a job
is answered in public, its deferred "thinking" response becoming its live status
(progress.py) and its result arriving through the `deliver-discord` queue (delivery.py). In a
guild a make runs at most the guild's batch (1 unless its managers set more with /guildrules),
applied by the planner, so one member cannot flood the channel; guild-only and DM-only
commands are declared with `allowed_contexts`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, Protocol

import discord
from discord import app_commands, ui

from adapters.discord.progress import ProgressWatchers, retry_after
from adapters.discord.views import JobButton, status_view
from adapters.telegram.ratelimit import RateLimiter
from adapters.telegram.request_keys import Claims
from domain.errors import StationError, UserInputError
from domain.identity import normalise_identity
from domain.jobs import MakeImageRequest, MediaRequest, ReplyTarget
from domain.settings import Limits
from domain.users import LedgerEntry

log = logging.getLogger(__name__)

RECENT_ENTRIES = 5
NOT_YOURS = "That job is not among yours (or is gone)."
MEDIA_KINDS = ("upscale", "rmbg", "resize", "convert")


class BalanceSource(Protocol):
    """The part of `adapters.jobs.JobsClient` /balance uses (the tests' fakes give only this)."""

    async def balance_summary(
        self, identity: str, n: int = 5
    ) -> tuple[int, Sequence[LedgerEntry]]: ...

    async def limits(self, identity: str) -> Limits: ...


def identity_of(user: discord.abc.User) -> str:
    """The StationThis identity of a Discord user (the same in guilds and DMs)."""
    return f"discord:{user.id}"


def stopped_modal(title: str, custom_id: str, *inputs: ui.TextInput[Any]) -> ui.Modal:
    """A form whose submit is answered from its custom id by the client's `on_interaction`
    (training.py, collections.py): stopped before it is sent, so discord.py keeps nothing of
    it in memory and a form open across a bot restart still works."""
    modal = ui.Modal(title=title[:45], custom_id=custom_id, timeout=None)
    for item in inputs:
        modal.add_item(item)
    modal.stop()
    return modal


def submitted_value(interaction: discord.Interaction, custom_id: str) -> str:
    """The value of the text input `custom_id` in a modal submit (rows or labels)."""
    data: Any = interaction.data or {}
    stack = list(data.get("components") or [])
    while stack:
        comp = stack.pop()
        if not isinstance(comp, dict):
            continue
        if comp.get("custom_id") == custom_id and "value" in comp:
            return str(comp["value"])
        stack.extend(comp.get("components") or [])
        if isinstance(comp.get("component"), dict):
            stack.append(comp["component"])
    return ""


def press_key(interaction: discord.Interaction) -> str:
    """A button press's request key: the message it sits on and the button (see module doc)."""
    data: Any = interaction.data or {}
    cid = str(data.get("custom_id", ""))
    digest = hashlib.sha256(cid.encode()).hexdigest()[:12]
    mid = interaction.message.id if interaction.message is not None else 0
    return f"btn{mid}.{digest}"


def error_text(err: StationError) -> str:
    """A refusal as the user reads it (the Telegram adapter's words, with a next step)."""
    from adapters.telegram.handlers import user_error_text

    return user_error_text(err)


async def say(interaction: discord.Interaction, text: str, *, ephemeral: bool = True) -> None:
    """Answer: the first response if none was given yet, else a followup (2 000 characters)."""
    text = text[:2000]
    if interaction.response.is_done():
        await interaction.followup.send(text, ephemeral=ephemeral)
    else:
        await interaction.response.send_message(text, ephemeral=ephemeral)


async def edit_answer(interaction: discord.Interaction, text: str, attempts: int = 3) -> None:
    """Edit the deferred response, best effort: a 429 discord.py did not retry itself (no
    `Via` header) waits the time Discord asked for; other refusals are logged."""
    for _ in range(attempts):
        try:
            await interaction.edit_original_response(content=text[:2000])
            return
        except discord.HTTPException as err:
            if err.status != 429:
                log.info("answer not editable (%s %s)", err.status, err.code)
                return
            await asyncio.sleep(retry_after(err))
    log.info("answer not edited: rate limited %d times", attempts)


class DiscordCommands:
    """Every command and button, over the jobs client and the live-status watchers."""

    def __init__(self, jobs: Any, watchers: ProgressWatchers | None = None) -> None:
        self.jobs = jobs
        self.watchers = watchers
        self.claims = Claims()

    # ---------------------------------------------------------------- starting jobs

    async def _start_job(
        self,
        interaction: discord.Interaction,
        key: str,
        start: Callable[[ReplyTarget], Awaitable[Any]],
    ) -> None:
        """Defer publicly (the "thinking" message becomes the live status), start, watch."""
        if not self.claims.claim(key):
            await say(interaction, "That was already started.")
            return
        if not interaction.response.is_done():
            await interaction.response.defer(thinking=True)
        guild = interaction.guild_id
        target = ReplyTarget(
            chat_id=str(interaction.channel_id),
            group_chat=guild is not None,
            guild_id=str(guild) if guild is not None else None,
        )
        try:
            started = await start(target)
        except StationError as err:
            self.claims.release(key)
            await edit_answer(interaction, error_text(err))
            return
        if started.existing:
            await edit_answer(interaction, "This request was already handled.")
            return
        # From here the job runs (and is charged): nothing below may fail the command, or
        # the error handler would tell the user nothing was charged. The watcher owns the
        # status message from now on, and its edits are best effort.
        if self.watchers is not None:
            self.watchers.watch(started.workflow_id, interaction)
        else:
            await edit_answer(interaction, "⏳ started")

    async def _who(self, interaction: discord.Interaction) -> str:
        """The presser's identity, registered (with the starter grant) on first use."""
        who = identity_of(interaction.user)
        await self.jobs.register(who)
        return who

    async def make(self, interaction: discord.Interaction, prompt: str) -> None:
        """/make PROMPT."""
        who = await self._who(interaction)

        async def go(target: ReplyTarget) -> Any:
            return await self.jobs.start_make(
                MakeImageRequest(
                    user=who,
                    platform="discord",
                    prompt=prompt,
                    overrides={},  # a guild's batch rule is the planner's (job_plans.py)
                    reply=target,
                    request_id=f"ia{interaction.id}",
                )
            )

        await self._start_job(interaction, f"ia{interaction.id}", go)

    async def media(
        self,
        interaction: discord.Interaction,
        kind: str,
        image: discord.Attachment,
        params: dict[str, Any],
    ) -> None:
        """/upscale, /rmbg, /resize, /convert on an attached image."""
        # Discord guesses the type from the name; an unknown one (octet-stream, none) is left
        # to the job's own check of the bytes (`bad_image`, refunded), a named other type not.
        ctype = (image.content_type or "").split(";")[0]
        if ctype and not ctype.startswith("image/") and ctype != "application/octet-stream":
            await say(interaction, "That file is not an image: attach a PNG, JPEG or WebP.")
            return
        who = await self._who(interaction)
        await interaction.response.defer(thinking=True)
        data = await image.read()
        blob = await self.jobs.store_source(who, data, image.filename)

        async def go(target: ReplyTarget) -> Any:
            return await self.jobs.start_media(
                MediaRequest(
                    user=who,
                    platform="discord",
                    kind=kind,  # type: ignore[arg-type]
                    source_image_id=blob,
                    params=params,
                    reply=target,
                    request_id=f"ia{interaction.id}",
                )
            )

        await self._start_job(interaction, f"ia{interaction.id}", go)

    async def repeat(self, interaction: discord.Interaction, n: int | None) -> None:
        """/regen N (run N of the last five with its seed) and /again (the last, new seed)."""
        who = await self._who(interaction)

        async def go(target: ReplyTarget) -> Any:
            return await self.jobs.start_repeat(
                who, n=n, platform="discord", reply=target, request_id=f"ia{interaction.id}"
            )

        await self._start_job(interaction, f"ia{interaction.id}", go)

    # ---------------------------------------------------------------- buttons

    async def on_button(
        self, interaction: discord.Interaction, action: str, ref: str, index: int
    ) -> None:
        """A press of a result or status button: on the presser's own job only; another
        user's job or a forged ref reads as not found, word for word, and starts nothing."""
        who = normalise_identity(identity_of(interaction.user))
        try:
            wid = await self.jobs.job_by_ref(ref, who)
            status = await self.jobs.status(wid, user=who)
        except StationError:
            await say(interaction, NOT_YOURS)
            return
        if action == "cancel":
            await self._cancel(interaction, wid, who)
            return
        key = press_key(interaction)
        if action in ("regen", "again"):

            async def repeat(target: ReplyTarget) -> Any:
                return await self.jobs.start_repeat_of(
                    who,
                    wid,
                    keep_seed=action == "regen",
                    platform="discord",
                    reply=target,
                    request_id=key,
                )

            await self._start_job(interaction, key, repeat)
            return
        if index >= len(status.outputs):
            await say(interaction, NOT_YOURS)
            return
        blob = status.outputs[index].blob_id

        async def upscale(target: ReplyTarget) -> Any:
            return await self.jobs.start_media(
                MediaRequest(
                    user=who,
                    platform="discord",
                    kind="upscale",
                    source_image_id=blob,
                    params={"scale": 2},
                    reply=target,
                    request_id=key,
                )
            )

        await self._start_job(interaction, key, upscale)

    async def _cancel(self, interaction: discord.Interaction, wid: str, who: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            result = await self.jobs.cancel(wid, reason=f"cancelled by {who}", user=who)
        except StationError as err:
            await interaction.edit_original_response(content=f"{err.message}.")
            return
        await interaction.edit_original_response(
            content=f"🛑 Cancelled, refunded {result.refund} points."
        )

    # ---------------------------------------------------------------- personal, ephemeral

    async def balance(self, interaction: discord.Interaction) -> None:
        """/balance: deferred first so a slow store never misses the 3 s deadline."""
        from adapters.telegram.render import balance_text

        await interaction.response.defer(ephemeral=True, thinking=True)
        who = identity_of(interaction.user)
        if hasattr(self.jobs, "register"):
            await self.jobs.register(who)
        points, entries = await self.jobs.balance_summary(who, RECENT_ENTRIES)
        limits = await self.jobs.limits(who)
        await interaction.edit_original_response(
            content=balance_text(points, limits, list(entries))
        )

    async def settings(
        self, interaction: discord.Interaction, name: str | None, value: str | None
    ) -> None:
        """/settings [name value]: show them, or change one (validated by the store)."""
        from adapters.telegram.render import settings_text

        await interaction.response.defer(ephemeral=True, thinking=True)
        who = await self._who(interaction)
        if name is not None:
            if value is None:
                raise UserInputError(f"say the new value of {name}, e.g. /settings steps 30")
            await self.jobs.update_settings(
                who, {name: value}, group_chat=interaction.guild_id is not None
            )
        user = await self.jobs.user(who)
        limits = await self.jobs.limits(who)
        text = settings_text(user.settings, limits, user.points)
        await interaction.edit_original_response(content=text[:2000])

    async def status(self, interaction: discord.Interaction) -> None:
        """/status: the running jobs of this account (from every platform), Cancel under each."""
        from adapters.telegram.render import jobs_text

        await interaction.response.defer(ephemeral=True, thinking=True)
        who = await self._who(interaction)
        statuses = await self.jobs.active(who)
        view = discord.ui.View(timeout=None)
        for s in statuses[:25]:
            one = status_view(s)
            if one is not None:
                for item in one.children:
                    view.add_item(item)
        await interaction.edit_original_response(
            content=jobs_text(statuses)[:2000], view=view if view.children else None
        )

    async def cancel(self, interaction: discord.Interaction) -> None:
        """/cancel: the only running job; with several, the list with a Cancel each."""
        who = normalise_identity(await self._who(interaction))
        running = [s for s in await self.jobs.active(who) if s.state.cancellable]
        if len(running) != 1:
            await self.status(interaction)
            return
        await self._cancel(interaction, running[0].workflow_id, who)

    async def login(self, interaction: discord.Interaction) -> None:
        """/login: a one-time code that links another platform to this account."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        who = await self._who(interaction)
        code = await self.jobs.link_code(who)
        await interaction.edit_original_response(
            content=f"Your link code: `{code}` (10 minutes, once). Enter it on the web page or "
            "in the Telegram bot to use this same account there."
        )

    async def link(self, interaction: discord.Interaction, code: str) -> None:
        """/link CODE: join the account that made the code (before using this bot alone)."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        user = await self.jobs.link_identity(code, identity_of(interaction.user))
        await interaction.edit_original_response(
            content=f"Linked: this Discord account now shares {user.points} points, settings "
            "and jobs with your other platforms."
        )


GUILD_AND_DM = {"guilds": True, "dms": True, "private_channels": False}


def register_commands(
    tree: app_commands.CommandTree,
    jobs: Any,
    bot: DiscordCommands | None = None,
    limiter: RateLimiter | None = None,
) -> None:
    """Add every slash command to `tree` (registration with Discord is `tree.sync()`).

    `bot` defaults to one without live status (the tests of the skeleton give a fake jobs
    client with only the balance calls)."""
    bot = bot or DiscordCommands(jobs)
    JobButton.actions = bot
    everywhere = app_commands.allowed_contexts(**GUILD_AND_DM)

    @tree.command(name="balance", description="Your points, limits and recent charges")
    @everywhere
    async def balance(interaction: discord.Interaction) -> None:
        """/balance (ephemeral)."""
        await bot.balance(interaction)

    if not hasattr(jobs, "start_make"):
        return  # a balance-only fake
    from adapters.discord import collections as discord_collections
    from adapters.discord import guild_rules

    discord_collections.register(tree, jobs)  # /collections, its buttons and modals
    guild_rules.register(tree, jobs, limiter)  # /guildrules and the per-member rate limit

    @tree.command(name="make", description="Make an image from a prompt")
    @everywhere
    @app_commands.describe(prompt="What to make")
    async def make(interaction: discord.Interaction, prompt: str) -> None:
        await bot.make(interaction, prompt)

    @tree.command(name="upscale", description="Upscale an image 2x or 4x")
    @everywhere
    async def upscale(
        interaction: discord.Interaction, image: discord.Attachment, scale: Literal[2, 4] = 2
    ) -> None:
        await bot.media(interaction, "upscale", image, {"scale": scale})

    @tree.command(name="rmbg", description="Remove an image's background")
    @everywhere
    async def rmbg(interaction: discord.Interaction, image: discord.Attachment) -> None:
        await bot.media(interaction, "rmbg", image, {})

    @tree.command(name="resize", description="Resize an image")
    @everywhere
    async def resize(
        interaction: discord.Interaction,
        image: discord.Attachment,
        width: int,
        height: int,
        mode: Literal["fit", "fill", "exact"] = "fit",
    ) -> None:
        await bot.media(
            interaction, "resize", image, {"width": width, "height": height, "mode": mode}
        )

    @tree.command(name="convert", description="Convert an image to PNG, JPEG or WebP")
    @everywhere
    async def convert(
        interaction: discord.Interaction,
        image: discord.Attachment,
        format: Literal["png", "jpeg", "webp"],
        quality: int | None = None,
    ) -> None:
        params: dict[str, Any] = {"format": format}
        if quality is not None:
            params["quality"] = quality
        await bot.media(interaction, "convert", image, params)

    @tree.command(name="settings", description="Your settings (or change one: name value)")
    @everywhere
    async def settings(
        interaction: discord.Interaction, name: str | None = None, value: str | None = None
    ) -> None:
        await bot.settings(interaction, name, value)

    @tree.command(name="status", description="Your running jobs, from every platform")
    @everywhere
    async def status(interaction: discord.Interaction) -> None:
        await bot.status(interaction)

    @tree.command(name="cancel", description="Cancel your running job (refunded)")
    @everywhere
    async def cancel(interaction: discord.Interaction) -> None:
        await bot.cancel(interaction)

    @tree.command(name="regen", description="Repeat one of your last five runs with its seed")
    @everywhere
    async def regen(
        interaction: discord.Interaction, run: app_commands.Range[int, 1, 5] = 1
    ) -> None:
        await bot.repeat(interaction, run)

    @tree.command(name="again", description="Your last run with a new seed")
    @everywhere
    async def again(interaction: discord.Interaction) -> None:
        await bot.repeat(interaction, None)

    @tree.command(name="safety", description="This server's content filter (or this DM's)")
    @everywhere
    @app_commands.describe(choice="off, blur, block or default (Manage Server in a server)")
    async def safety(
        interaction: discord.Interaction,
        choice: Literal["off", "blur", "block", "default"] | None = None,
    ) -> None:
        """Shown to the asker only; set by Manage Server members (adapters/discord/safety.py)."""
        from adapters.discord import safety as guild_safety

        await guild_safety.safety(interaction, jobs, choice)

    @tree.command(name="login", description="A code to use this account on the web or Telegram")
    @app_commands.allowed_contexts(guilds=False, dms=True, private_channels=False)
    async def login(interaction: discord.Interaction) -> None:
        """DM-only: a link code is a key to the account, never shown in a channel."""
        await bot.login(interaction)

    @tree.command(name="link", description="Join the account of a code from Telegram or the web")
    @app_commands.allowed_contexts(guilds=False, dms=True, private_channels=False)
    async def link(interaction: discord.Interaction, code: str) -> None:
        """DM-only, like /login."""
        await bot.link(interaction, code)

    from adapters.discord.training import register_training

    register_training(tree, jobs, bot)  # /train (DM-only) and /models with their buttons
