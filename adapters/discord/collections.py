"""Discord /collections: create a collection, give it traits and a master prompt, cook it with a
quote and a live status, review its pieces and export them (issue 20).

The same steps as Telegram's /collections over the same calls of the jobs client
(services/collections.py): every rule — who owns a collection, what may be cooked, what it
costs, a guild's "no collections here" — is checked there, so a forged custom id or another
member's button reaches a service that answers "not found". This module only asks and shows.

* `/collections` lists the user's collections (ephemeral, an Open button each);
  `/collections new:NAME supply:N [description]` creates one; `/collections open:ID` shows one.
* The card (ephemeral: a collection is personal) has persistent buttons (`CollectionButton`, a
  `discord.ui.DynamicItem` matched by `sc:<action>:<collection id>[:<piece>]`, at most 28
  characters): Traits and Prompt open a modal — Traits takes the same `name|prompt|rarity` lines
  as Telegram's /traits, parsed by the one parser (`domain.collections.parse_trait_lines`, in
  `set_traits`) —, Cook answers the quote with a Confirm button, Review sends the pieces waiting
  for review (attachments with Approve / Reject), Export the zip (an attachment within the
  interaction's upload limit, else how to get it).
* Confirm is keyed by its message and custom id (`press_key`, as result buttons are) and the
  service starts one cook per collection: a double tap or a replayed interaction starts one
  cook and charges each piece once. The cook's status is the public "thinking" message of the
  confirm, edited as `progress.StatusMessage` does for jobs (a channel message once the
  interaction token has expired), with Cancel cook while it runs and Review / Export after.
* The Traits and Prompt forms are answered from their custom id (`sc:m:<form>:<collection
  id>`, `on_modal_submit`), as /models' are, so a form open across a bot restart still works.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
from collections import Counter
from typing import Any

import discord
from discord import app_commands, ui

from adapters.discord.commands import (
    GUILD_AND_DM,
    error_text,
    identity_of,
    press_key,
    say,
    stopped_modal,
    submitted_value,
)
from adapters.discord.progress import MIN_EDIT_GAP, KeyedTasks, StatusMessage, retry_after
from adapters.telegram import render
from adapters.telegram.request_keys import Claims
from domain.collections import MAX_SUPPLY, CookProgress
from domain.errors import StationError, UserInputError
from domain.jobs import ReplyTarget, StoredOutput
from store.collections import Piece

log = logging.getLogger(__name__)

PREFIX = "sc"
ACTIONS = ("show", "traits", "prompt", "cook", "go", "stop", "review", "export", "ok", "no")
TEMPLATE = (
    rf"{PREFIX}:(?P<action>{'|'.join(ACTIONS)}):(?P<cid>col[0-9a-f]{{8}})(?::(?P<n>\d{{1,6}}))?"
)
REVIEW_PAGE = 5  # pieces sent per Review tap (one message each, with its two buttons)
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024  # a server without boosts (when Discord says none)
POLL = 1.0
MAX_MISSES = 30
LABELS = {
    "show": "Open",
    "traits": "Traits",
    "prompt": "Prompt",
    "cook": "Cook",
    "go": "Confirm",
    "stop": "Cancel cook",
    "review": "Review",
    "export": "Export",
    "ok": "Approve",
    "no": "Reject",
}
STYLES = {
    "cook": discord.ButtonStyle.primary,
    "go": discord.ButtonStyle.success,
    "stop": discord.ButtonStyle.danger,
    "ok": discord.ButtonStyle.success,
    "no": discord.ButtonStyle.danger,
}


def custom_id(action: str, cid: str, n: int | None = None) -> str:
    return f"{PREFIX}:{action}:{cid}" + (f":{n}" if n is not None else "")


class CollectionButton(ui.DynamicItem[ui.Button[Any]], template=TEMPLATE):
    """A collection's button, rebuilt from its custom id on every press (survives restarts)."""

    handler: DiscordCollections | None = None  # set once by `register`

    def __init__(self, action: str, cid: str, n: int | None = None, label: str = "") -> None:
        self.action = action
        self.cid = cid
        self.n = n
        style = STYLES.get(action, discord.ButtonStyle.secondary)
        button: ui.Button[Any] = ui.Button(
            label=(label or LABELS[action])[:80], style=style, custom_id=custom_id(action, cid, n)
        )
        super().__init__(button)

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: ui.Item[Any], match: re.Match[str], /
    ) -> CollectionButton:
        n = match["n"]
        return cls(match["action"], match["cid"], int(n) if n else None)

    async def callback(self, interaction: discord.Interaction) -> None:
        if CollectionButton.handler is None:  # pragma: no cover - set before the gateway
            return
        await CollectionButton.handler.on_button(interaction, self.action, self.cid, self.n)


def view_of(*items: CollectionButton) -> ui.View:
    view = ui.View(timeout=None)
    for item in items:
        view.add_item(item)
    return view


def card_view(cid: str, cooked: bool, counts: Counter[str]) -> ui.View:
    """Traits / Prompt until the first cook freezes them; Cook; Review and Export once there
    are pieces."""
    items = [] if cooked else [CollectionButton("traits", cid), CollectionButton("prompt", cid)]
    items.append(CollectionButton("cook", cid))
    if cooked:
        items.append(CollectionButton("stop", cid))
    if counts.get("pending_review") or counts.get("approved") or counts.get("rejected"):
        items += [CollectionButton("review", cid), CollectionButton("export", cid)]
    return view_of(*items)


def cook_view(cid: str, progress: CookProgress) -> ui.View:
    """Cancel cook while it runs; Review and Export once it has ended."""
    if progress.state.final:
        return view_of(CollectionButton("review", cid), CollectionButton("export", cid))
    return view_of(CollectionButton("stop", cid))


def piece_view(cid: str, piece: Piece) -> ui.View:
    return view_of(
        CollectionButton("ok", cid, piece.number), CollectionButton("no", cid, piece.number)
    )


def reply_target(interaction: discord.Interaction) -> ReplyTarget:
    """Where the command came from: a guild's rules apply in its channels."""
    guild = interaction.guild_id
    return ReplyTarget(
        chat_id=str(interaction.channel_id),
        group_chat=guild is not None,
        guild_id=str(guild) if guild is not None else None,
    )


MODAL = re.compile(rf"{PREFIX}:m:(?P<form>traits|prompt):(?P<cid>col[0-9a-f]{{8}})")


def traits_modal(cid: str) -> ui.Modal:
    """One trait type's values, in Telegram's /traits format (replacing the current ones)."""
    return stopped_modal(
        "Traits",
        f"{PREFIX}:m:traits:{cid}",
        ui.TextInput(label="Trait type (its [[slot]] name)", custom_id="trait", max_length=60),
        ui.TextInput(
            label="Values: name|prompt|rarity, one per line",
            custom_id="values",
            style=discord.TextStyle.paragraph,
            placeholder="red|red fur|3\ngrey|grey fur|1",
            max_length=4000,
        ),
    )


def prompt_modal(cid: str) -> ui.Modal:
    """The master prompt, with a [[Trait]] slot for each trait type."""
    return stopped_modal(
        "Master prompt",
        f"{PREFIX}:m:prompt:{cid}",
        ui.TextInput(
            label="Master prompt with [[Trait]] slots",
            custom_id="prompt",
            style=discord.TextStyle.paragraph,
            placeholder="a [[Fur]] fox [wearing [[Hat]]] in the snow",
            max_length=2000,
        ),
    )


async def on_modal_submit(interaction: discord.Interaction) -> None:
    """Answer a submitted Traits or Prompt form from its custom id (the client's
    `on_interaction` calls this for every interaction; anything else is left alone). The
    collection id in it is only a claim: the service resolves it with the submitter as owner."""
    if interaction.type is not discord.InteractionType.modal_submit:
        return
    data: Any = interaction.data or {}
    found = MODAL.fullmatch(str(data.get("custom_id", "")))
    handler = CollectionButton.handler
    if found is None or handler is None:
        return
    cid = found["cid"]
    if found["form"] == "traits":
        trait, lines = submitted_value(interaction, "trait"), submitted_value(interaction, "values")
        await handler.traits_submitted(interaction, cid, trait, lines)
    else:
        await handler.prompt_submitted(interaction, cid, submitted_value(interaction, "prompt"))


class DiscordCollections:
    """The /collections command, its buttons and modals, and the live cook messages."""

    def __init__(self, jobs: Any) -> None:
        self.jobs = jobs
        self.claims = Claims()
        self._tasks = KeyedTasks("cook watcher")

    async def _who(self, interaction: discord.Interaction) -> str:
        who = identity_of(interaction.user)
        await self.jobs.register(who)
        return who

    # ---------------------------------------------------------------- the command

    async def command(
        self,
        interaction: discord.Interaction,
        open_id: str | None,
        new: str | None,
        supply: int | None,
        description: str | None,
    ) -> None:
        """/collections [open:ID | new:NAME supply:N [description]] (answered privately)."""
        if not self.claims.claim(f"ia{interaction.id}"):
            return  # a replayed event: its answer was given
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            who = await self._who(interaction)
            if new:
                col = await self.jobs.create_collection(
                    who,
                    new.strip()[:100],
                    description=(description or "").strip()[:1000],
                    supply=supply or 1,
                    platform="discord",
                    place=reply_target(interaction),
                )
                await self._card(
                    interaction,
                    col.id,
                    who,
                    f"✓ created {col.name} ({col.id}). "
                    "Add trait types with Traits, then set the prompt.",
                )
                return
            if open_id:
                await self._card(interaction, open_id.strip(), who)
                return
            cols = await self.jobs.collections(who)
            items = [CollectionButton("show", c.id, label=f"{c.name} ({c.id})") for c in cols[:20]]
            text = render.collections_text(cols).replace(
                "Tap “New collection” (or send /collections new)",
                "Send /collections new:NAME supply:N",
            )
            await interaction.edit_original_response(
                content=text[:2000], view=view_of(*items) if items else None
            )
        except StationError as err:
            await interaction.edit_original_response(content=_refusal(err))

    async def _card(
        self, interaction: discord.Interaction, cid: str, who: str, note: str = ""
    ) -> None:
        """The collection's card as the (deferred) answer."""
        col = await self.jobs.collection(cid, who)
        counts = Counter(str(p.state) for p in await self.jobs.collection_pieces(cid, who))
        text = render.collection_text(col, counts).replace(
            f"/traits {col.id} NAME, then the value lines", "tap Traits"
        )
        text = text.replace("tap ✏️ prompt", "tap Prompt")
        text = f"{note}\n\n{text}" if note else text
        view = card_view(col.id, col.cook_started, counts)
        if interaction.response.is_done():
            await interaction.edit_original_response(content=text[:2000], view=view)
        else:
            await interaction.response.send_message(text[:2000], view=view, ephemeral=True)

    # ---------------------------------------------------------------- buttons

    async def on_button(
        self, interaction: discord.Interaction, action: str, cid: str, n: int | None
    ) -> None:
        """Every `sc:` press; a refusal (another's collection reads "not found") is private."""
        try:
            await self._button(interaction, action, cid, n)
        except StationError as err:
            await say(interaction, _refusal(err))

    async def _button(
        self, interaction: discord.Interaction, action: str, cid: str, n: int | None
    ) -> None:
        who = await self._who(interaction)
        if action == "show":
            await interaction.response.defer(ephemeral=True, thinking=True)
            await self._card(interaction, cid, who)
        elif action == "traits":
            await self.jobs.collection(cid, who)  # not found: say so now, not after the form
            await interaction.response.send_modal(traits_modal(cid))
        elif action == "prompt":
            await self.jobs.collection(cid, who)
            await interaction.response.send_modal(prompt_modal(cid))
        elif action == "cook":
            await self._quote(interaction, cid, who)
        elif action == "go":
            await self._go(interaction, cid, who)
        elif action == "stop":
            await interaction.response.defer(ephemeral=True, thinking=True)
            progress = await self.jobs.control_cook(
                cid, who, "cancel", reason="cancelled on Discord"
            )
            await interaction.edit_original_response(
                content=f"🛑 Cook cancelled: {progress.made} made, "
                f"{progress.refunded} points refunded."
            )
        elif action == "review":
            await self._review(interaction, cid, who)
        elif action in ("ok", "no") and n is not None:
            verdict = "approved" if action == "ok" else "rejected"
            [piece] = await self.jobs.review_pieces(cid, who, [n], verdict)
            await interaction.response.edit_message(
                content=render.piece_caption(piece), view=piece_view(cid, piece)
            )
        elif action == "export":
            await self._export(interaction, cid, who)
        else:
            raise UserInputError("that button is out of date: send /collections again")

    async def _quote(self, interaction: discord.Interaction, cid: str, who: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        quote = await self.jobs.quote_cook(cid, who)
        col = await self.jobs.collection(cid, who)
        if quote.pieces == 0:
            await interaction.edit_original_response(
                content=f"Every piece of {col.name} is made: tap Review or Export."
            )
            return
        text = render.cook_quote_text(
            col.name, quote.pieces, quote.piece_price, quote.total, quote.balance
        )
        confirm = CollectionButton("go", cid, label=f"Cook for {quote.total} points")
        await interaction.edit_original_response(content=text[:2000], view=view_of(confirm))

    async def _go(self, interaction: discord.Interaction, cid: str, who: str) -> None:
        """The confirmed cook: one start per confirm message (however often tapped or
        replayed), its public "thinking" message becoming the live cook status."""
        key = press_key(interaction)
        if not self.claims.claim(key):
            try:  # a second tap is answered; a replayed event was answered already (40060)
                await say(interaction, "That cook was already started.")
            except discord.HTTPException as err:
                log.info("repeated confirm of %s not answered (%s)", cid, err.code)
            return
        await interaction.response.defer(thinking=True)
        try:
            col = await self.jobs.collection(cid, who)
            started = await self.jobs.start_cook(
                cid, who, platform="discord", place=reply_target(interaction)
            )
        except StationError as err:
            self.claims.release(key)
            await interaction.edit_original_response(content=_refusal(err))
            return
        log.info("cook %s started by %s", started.workflow_id, who)
        # From here the cook runs: the status is best effort and never fails the press.
        self.watch(cid, who, col.name, interaction)

    async def _review(self, interaction: discord.Interaction, cid: str, who: str) -> None:
        """The next pieces waiting for review, each an attachment with Approve / Reject, only
        to who asked."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        pending = await self.jobs.collection_pieces(cid, who, states=["pending_review"])
        page = [p for p in pending if p.blob_id][:REVIEW_PAGE]
        if not page:
            counts = Counter(str(p.state) for p in await self.jobs.collection_pieces(cid, who))
            said = ", ".join(f"{k} {s}" for s, k in sorted(counts.items())) or "no pieces yet"
            await interaction.edit_original_response(
                content=f"Nothing waits for review ({said}). Cook first, or tap Export."
            )
            return
        await interaction.edit_original_response(
            content=render.review_footer_text(len(page), len(pending))
        )
        for piece in page:
            assert piece.blob_id is not None
            data = await asyncio.to_thread(self.jobs.image, StoredOutput(blob_id=piece.blob_id))
            await interaction.followup.send(
                render.piece_caption(piece)[:2000],
                file=discord.File(io.BytesIO(data), filename=f"{cid}-{piece.number}.png"),
                view=piece_view(cid, piece),
                ephemeral=True,
            )

    async def _export(self, interaction: discord.Interaction, cid: str, who: str) -> None:
        """The approved pieces as a zip attachment; over the upload limit Discord gives this
        interaction, where to get it instead (it is kept as an export blob)."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        col = await self.jobs.collection(cid, who)
        export = await self.jobs.export_collection(cid, who)
        limit = getattr(interaction, "filesize_limit", 0) or DEFAULT_UPLOAD_LIMIT
        caption = render.export_caption(col.name, export.summary)[:2000]
        if len(export.data) > limit:
            await interaction.edit_original_response(
                content=f"{caption[:1200]}\nThe zip ({len(export.data) / 1024 / 1024:.1f} MiB) "
                "is over Discord's upload limit here. It is kept for you: download it from "
                f"the HTTP API with an API key (`GET /v1/outputs/{export.blob_id}`), or ask "
                f"the operator for `stationthis collection export {cid} --out {cid}.zip`"
            )
            return
        name = f"{col.name[:40]}-{cid}.zip".replace(" ", "_")
        await interaction.followup.send(
            caption, file=discord.File(io.BytesIO(export.data), filename=name), ephemeral=True
        )

    # ---------------------------------------------------------------- modals

    async def traits_submitted(
        self, interaction: discord.Interaction, cid: str, trait: str, lines: str
    ) -> None:
        who = identity_of(interaction.user)
        await interaction.response.defer(ephemeral=True, thinking=True)
        name = trait.strip().strip("[] ")
        try:
            col = await self.jobs.set_traits(cid, who, name, lines)
        except StationError as err:
            await interaction.edit_original_response(
                content=_refusal(err) + "\nTap Traits to send them again."
            )
            return
        saved = col.config.trait(name)
        await self._card(
            interaction, cid, who, f"✓ [[{name}]]: {len(saved.values) if saved else 0} values"
        )

    async def prompt_submitted(
        self, interaction: discord.Interaction, cid: str, prompt: str
    ) -> None:
        who = identity_of(interaction.user)
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            await self.jobs.edit_collection(cid, who, {"master_prompt": prompt.strip()})
        except StationError as err:
            await interaction.edit_original_response(
                content=_refusal(err) + "\nTap Prompt to send it again."
            )
            return
        await self._card(interaction, cid, who, "✓ master prompt set")

    # ---------------------------------------------------------------- live cook status

    def watch(self, cid: str, who: str, name: str, interaction: discord.Interaction) -> None:
        """One task per collection's cook status (kept, never fire-and-forget)."""
        self._watch(cid, who, name, StatusMessage(interaction.client, interaction))

    def _watch(self, cid: str, who: str, name: str, target: StatusMessage) -> None:
        self._tasks.start(cid, lambda: self._run(cid, who, name, target))

    async def reattach(self, client: discord.Client) -> int:
        """After a restart: show every running Discord cook's status again, in a new message
        of the channel it was confirmed in (the interaction tokens died with the old
        process; the place is the cook's own start input). Returns how many."""
        count = 0
        for job in await self.jobs.list_jobs(running=True, platform="discord", limit=500):
            if job.kind != "cook":
                continue
            try:
                inp = await self.jobs.start_input(job.workflow_id)
                reply = inp.get("reply") or {}
                cid, who = str(inp["collection_id"]), str(inp["user"])
                if not str(reply.get("chat_id", "")).isdigit():
                    continue  # started before cooks kept their place, or not from a channel
                col = await self.jobs.collection(cid, who)
            except Exception as err:  # one unreadable cook must not stop the others
                log.warning("cannot re-attach the cook %s: %r", job.workflow_id, err)
                continue
            self._watch(cid, who, col.name, StatusMessage(client, None, int(reply["chat_id"])))
            count += 1
        log.info("re-attached %d cook status watcher(s)", count)
        return count

    async def close(self) -> None:
        await self._tasks.close()

    async def _run(self, cid: str, who: str, name: str, target: StatusMessage) -> None:
        shown: str | None = None
        last_edit = 0.0
        misses = 0
        while True:
            try:
                progress: CookProgress = await self.jobs.cook_progress(cid, who)
                misses = 0
            except Exception as err:  # just started, or the server restarting: try again
                misses += 1
                if misses > MAX_MISSES:
                    log.info("cook watcher of %s gives up: %r", cid, err)
                    return
                await asyncio.sleep(POLL)
                continue
            final = progress.state.final
            text = render.cook_text(name, progress)
            if text != shown and (final or time.monotonic() - last_edit >= MIN_EDIT_GAP):
                try:
                    await target.show(text[:2000], cook_view(cid, progress))
                    shown, last_edit = text, time.monotonic()
                except discord.HTTPException as err:
                    if err.status == 429:
                        await asyncio.sleep(retry_after(err))
                        continue
                    log.info("cook status of %s not editable (%s %s)", cid, err.status, err.code)
                    return
            if final and shown == text:
                return
            await asyncio.sleep(POLL)


def _refusal(err: StationError) -> str:
    text = error_text(err)
    if getattr(err, "code", "") == "collection_not_found":
        text += " /collections lists yours."
    return text[:2000]


def register(tree: app_commands.CommandTree, jobs: Any) -> DiscordCollections:
    """Add /collections to `tree` and answer the collection buttons (persistent)."""
    handler = DiscordCollections(jobs)
    CollectionButton.handler = handler
    tree.client.add_dynamic_items(CollectionButton)

    @tree.command(name="collections", description="Your collections: list, create, open")
    @app_commands.allowed_contexts(**GUILD_AND_DM)
    @app_commands.describe(
        open_id="A collection id to open",
        new="The name of a new collection",
        supply="How many pieces the new collection has",
        description="A sentence about the new collection",
    )
    @app_commands.rename(open_id="open")
    async def collections(
        interaction: discord.Interaction,
        open_id: str | None = None,
        new: str | None = None,
        supply: app_commands.Range[int, 1, MAX_SUPPLY] | None = None,
        description: str | None = None,
    ) -> None:
        await handler.command(interaction, open_id, new, supply, description)

    return handler
