"""Discord /train and /models: LoRA training and the user's models, as slash commands and
persistent buttons over services/training.py.

Telegram's /train is a guided conversation (name → photos → trigger word → captions → quote →
confirm) that reads the user's next messages; a Discord bot sees no messages without the
privileged Message Content intent, so here one slash command carries the inputs:
`/train name:<name> [trigger:<word>] [caption_number:<n> caption:<text>] [photo1 … photo10]`
creates or reopens the dataset NAME and adds what it is given; run again to add more (up to
20 photos). Its answer is the dataset card (photo previews, captions, trigger word) with the
next step as buttons: Caption (quote → confirm → caption job), Train (quote with price and
step choices → confirm → the job, its live status in the press's deferred response like /make's, its
result — the model name and trigger word — through `deliver-discord`, delivery.py's
`final_text`). /train is DM-only (`allowed_contexts`), like Telegram keeps it out of groups:
a dataset's photos and captions are personal.

Buttons are `discord.ui.DynamicItem`s matched by their custom id (so they work after a
restart): `tr:<action>:<dataset id>[:<steps>]` and `md:<action>[:<model id>][:p<page>]`, at
most 38 characters. The ids in them are only hints: every call goes through the services with
the presser's identity, so another user's dataset or model (a forged id) reads as not found.
Money moves only in the services: captions are charged by the caption workflow, training by
`start_train`'s saga. A press that starts something paid (Caption, Train) is keyed by the
message it sits on plus its custom id (`commands.press_key`): a double tap or a replayed
INTERACTION_CREATE starts one job — `Claims` in this process, the job's request id (the
workflow id) across processes.

/models is ephemeral: the account's own models with Rename (a modal), Delete (with a
confirm), Publish/Unpublish, the public models it added with Remove, and "Add a public model"
(a modal), four models a page (Discord allows 5 rows of 5 buttons). A modal's submit is
answered from its custom id alone (`on_modal_submit`, called from the client's
`on_interaction`), not from a `discord.ui.Modal` kept in memory, so one opened before a
restart still works.
"""

from __future__ import annotations

import asyncio
import io
import logging
import mimetypes
import re
from collections.abc import Sequence
from typing import Any, Literal

import discord
from discord import app_commands, ui

from adapters.discord.commands import (
    DiscordCommands,
    error_text,
    identity_of,
    press_key,
    say,
    stopped_modal,
    submitted_value,
)
from adapters.telegram.delivery import preview_jpeg
from adapters.telegram.render import TRAIN_STEP_CHOICES
from domain.errors import InsufficientPoints, StationError, UserInputError
from domain.jobs import ReplyTarget, StoredOutput
from domain.training import (
    CAPTION_PRICE_PER_IMAGE,
    MAX_IMAGES,
    MIN_IMAGES,
    STEPS_DEFAULT,
    STEPS_MAX,
    STEPS_MIN,
    Dataset,
    LoraModel,
    NotFound,
    TrainingParams,
    TrainRequest,
)
from media.safety import DEFAULT_LIMITS

log = logging.getLogger(__name__)

MAX_PHOTO_OPTIONS = 10  # photo1 … photo10 (a command takes 25 options; /train again adds more)
MAX_ATTACHMENT = DEFAULT_LIMITS.max_bytes  # what media/safety.py's load_image accepts
MAX_BATCH = 60 * 1024 * 1024  # all of one /train's photos, held in memory together
CARD_PHOTOS = 10  # previews on the dataset card: Discord takes 10 files a message
MODELS_PER_PAGE = 4  # one row of buttons each, the fifth row for Add and the pages
NOT_YOUR_DATASET = "That dataset is not among yours (or is gone): /train NAME shows yours."
NOT_YOUR_MODEL = "That model is not among yours (or is gone): /models lists yours."

OBJECT_ID = r"[0-9a-f]{24}"
TRAIN_TEMPLATE = (
    rf"tr:(?P<action>cap|capok|quote|steps|go):(?P<ds>{OBJECT_ID})(?::(?P<steps>\d{{1,4}}))?"
)
MODEL_TEMPLATE = (
    rf"md:(?P<action>ren|del|delok|pub|priv|rm|add|list)(?::(?P<ref>{OBJECT_ID}))?"
    r"(?::p(?P<page>\d{1,3}))?"
)
RENAME_MODAL = re.compile(rf"md:ren:(?P<ref>{OBJECT_ID})")
ADD_MODAL = "md:add"
NAME_INPUT = "name"

TrainAction = Literal["cap", "capok", "quote", "steps", "go"]
ModelAction = Literal["ren", "del", "delok", "pub", "priv", "rm", "add", "list"]


# ---- buttons -------------------------------------------------------------------------------


def train_id(action: TrainAction, ds_id: str, steps: int | None = None) -> str:
    """`tr:<action>:<dataset id>[:<steps>]` (at most 38 of Discord's 100 characters)."""
    return f"tr:{action}:{ds_id}" + (f":{steps}" if steps is not None else "")


def model_id(action: ModelAction, ref: str | None = None, page: int | None = None) -> str:
    """`md:<action>[:<model id>][:p<page>]` (at most 38 characters)."""
    return f"md:{action}" + (f":{ref}" if ref else "") + (f":p{page}" if page is not None else "")


class TrainButton(ui.DynamicItem[ui.Button[Any]], template=TRAIN_TEMPLATE):
    """A /train button (Caption, Train, a step count), rebuilt from its custom id."""

    actions: DiscordTraining | None = None
    """Set once by `register_training` (class-level: discord.py builds the item itself)."""

    def __init__(
        self,
        action: str,
        ds_id: str,
        steps: int | None = None,
        *,
        label: str = "",
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
    ) -> None:
        self.action, self.ds_id, self.steps = action, ds_id, steps
        cid = train_id(action, ds_id, steps)  # type: ignore[arg-type]
        super().__init__(ui.Button(label=label or action, style=style, custom_id=cid))

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: ui.Item[Any], match: re.Match[str], /
    ) -> TrainButton:
        steps = match["steps"]
        return cls(match["action"], match["ds"], int(steps) if steps else None)

    async def callback(self, interaction: discord.Interaction) -> None:
        if TrainButton.actions is not None:
            await TrainButton.actions.on_train_button(
                interaction, self.action, self.ds_id, self.steps
            )


class ModelButton(ui.DynamicItem[ui.Button[Any]], template=MODEL_TEMPLATE):
    """A /models button (Rename, Delete, Publish, Remove, Add, pages), rebuilt from its id."""

    actions: DiscordTraining | None = None

    def __init__(
        self,
        action: str,
        ref: str | None = None,
        page: int | None = None,
        *,
        label: str = "",
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
    ) -> None:
        self.action, self.ref, self.page = action, ref, page
        cid = model_id(action, ref, page)  # type: ignore[arg-type]
        super().__init__(ui.Button(label=label or action, style=style, custom_id=cid))

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: ui.Item[Any], match: re.Match[str], /
    ) -> ModelButton:
        page = match["page"]
        return cls(match["action"], match["ref"], int(page) if page else None)

    async def callback(self, interaction: discord.Interaction) -> None:
        if ModelButton.actions is not None:
            await ModelButton.actions.on_model_button(
                interaction, self.action, self.ref, self.page or 0
            )


# ---- what the messages say ------------------------------------------------------------------


def dataset_text(ds: Dataset, note: str = "") -> str:
    """The dataset card: photos, captions, trigger word and what to do next."""
    lines = [note] if note else []
    trigger = ds.trigger_word or "none yet"
    lines.append(f"📚 Dataset **{ds.name}**: {len(ds.images)} photo(s), trigger word {trigger}")
    for n, im in enumerate(ds.images, 1):
        lines.append(f"{n}. {im.caption or '(no caption yet)'}"[:160])
    if len(ds.images) < MIN_IMAGES:
        more = MIN_IMAGES - len(ds.images)
        lines.append(
            f"Attach {more} more photo(s) (at least {MIN_IMAGES}, up to {MAX_IMAGES}): "
            f"/train name:{ds.name} photo1:…"
        )
    elif not ds.trigger_word:
        lines.append(f"Choose a trigger word: /train name:{ds.name} trigger:WORD")
    elif ds.uncaptioned():
        lines.append("Tap Caption to describe the photos (or type one: caption_number, caption).")
    else:
        lines.append(
            "Change a caption with /train caption_number:N caption:TEXT, or tap Train for the "
            "price."
        )
    return "\n".join(lines)[:2000]


def dataset_view(ds: Dataset) -> ui.View | None:
    """Caption while photos lack one; Train once there are enough photos and a trigger word."""
    view = ui.View(timeout=None)
    missing = len(ds.uncaptioned())
    if missing:
        price = missing * CAPTION_PRICE_PER_IMAGE
        view.add_item(TrainButton("cap", ds.id, label=f"📝 Caption {missing} ({price} points)"))
    if len(ds.images) >= MIN_IMAGES and ds.trigger_word:
        view.add_item(
            TrainButton(
                "quote",
                ds.id,
                STEPS_DEFAULT,
                label="🏋️ Train…",
                style=discord.ButtonStyle.primary,
            )
        )
    return view if view.children else None


def quote_view(ds_id: str, steps: int, price: int) -> ui.View:
    """Train for the quoted price, or another step count (edits the quote in place)."""
    view = ui.View(timeout=None)
    view.add_item(
        TrainButton(
            "go",
            ds_id,
            steps,
            label=f"✅ Train for {price} points",
            style=discord.ButtonStyle.success,
        )
    )
    for s in TRAIN_STEP_CHOICES:
        if s != steps:
            view.add_item(TrainButton("steps", ds_id, s, label=f"{s} steps"))
    return view


def models_text(own: Sequence[LoraModel], added: Sequence[LoraModel], page: int) -> str:
    """The /models list (numbered as the buttons are), four models a page."""
    everything = [*own, *added]
    if not everything:
        return (
            "You have no models yet. /train (in a DM with me) makes one from 4 … 20 photos of "
            "your subject. ➕ adds someone's public model by name."
        )
    lines = [
        "Your LoRA models: your own apply when their trigger word is in a prompt; a public "
        "model you added, when the prompt names it, <lora:NAME>."
    ]
    first = page * MODELS_PER_PAGE
    added_ids = {m.id for m in added}
    for i, m in enumerate(everything[first : first + MODELS_PER_PAGE], first + 1):
        if m.id in added_ids:
            lines.append(f"{i}. {m.name} — trigger {m.trigger_word} — public, added")
        else:
            shared = "public" if m.public else "private"
            lines.append(
                f"{i}. {m.name} — trigger {m.trigger_word} — {m.family}, weight "
                f"{m.default_weight:g}, {shared}"
            )
    pages = (len(everything) + MODELS_PER_PAGE - 1) // MODELS_PER_PAGE
    if pages > 1:
        lines.append(f"Page {page + 1} of {pages}.")
    return "\n".join(lines)[:2000]


def placed(item: ModelButton, row: int) -> ModelButton:
    """`item` on row `row` (0 … 4) of its message."""
    item.row = row
    return item


def models_view(own: Sequence[LoraModel], added: Sequence[LoraModel], page: int) -> ui.View:
    """One row per model of the page (≤ 4), then Add and the page buttons: ≤ 5 rows."""
    view = ui.View(timeout=None)
    everything = [*own, *added]
    first = page * MODELS_PER_PAGE
    added_ids = {m.id for m in added}
    for row, (i, m) in enumerate(enumerate(everything[first : first + MODELS_PER_PAGE], first + 1)):
        if m.id in added_ids:
            view.add_item(placed(ModelButton("rm", m.id, label=f"➖ Remove {i}"), row))
            continue
        share = ("priv", f"🔒 Unpublish {i}") if m.public else ("pub", f"🌐 Publish {i}")
        view.add_item(placed(ModelButton("ren", m.id, label=f"✏️ Rename {i}"), row))
        view.add_item(placed(ModelButton("del", m.id, label=f"🗑 Delete {i}"), row))
        view.add_item(placed(ModelButton(share[0], m.id, label=share[1]), row))
    last = MODELS_PER_PAGE
    view.add_item(placed(ModelButton("add", label="➕ Add a public model"), last))
    if page > 0:
        view.add_item(placed(ModelButton("list", page=page - 1, label="◀ Previous"), last))
    if first + MODELS_PER_PAGE < len(everything):
        view.add_item(placed(ModelButton("list", page=page + 1, label="Next ▶"), last))
    return view


def name_modal(custom_id: str, title: str, label: str, default: str = "") -> ui.Modal:
    """A one-field form (Rename, Add), answered by `on_modal_submit` from `custom_id`."""
    return stopped_modal(
        title,
        custom_id,
        ui.TextInput(
            label=label[:45], custom_id=NAME_INPUT, default=default or None, max_length=100
        ),
    )


# ---- attachments ----------------------------------------------------------------------------


def check_attachment(att: discord.Attachment, n: int) -> None:
    """Refuse what cannot be a dataset photo from what Discord says of it, before reading it:
    a size over the image limit, a type that is no image (Discord guesses the type from the
    name; an unknown one is left to media/safety.py's check of the bytes)."""
    ctype = (att.content_type or "").split(";")[0].strip().lower()
    if not ctype or ctype == "application/octet-stream":
        ctype = mimetypes.guess_type(att.filename)[0] or ""
    if ctype and not ctype.startswith("image/"):
        raise UserInputError(
            f"{att.filename} (photo{n}) is not an image: attach photos (PNG, JPEG or WebP)"
        )
    if att.size > MAX_ATTACHMENT:
        raise UserInputError(
            f"{att.filename} (photo{n}) is {att.size / 1024 / 1024:.1f} MB; a photo may be "
            f"{MAX_ATTACHMENT // 1024 // 1024} MB at most"
        )


async def read_attachment(att: discord.Attachment, n: int) -> bytes:
    """The attachment's bytes, through discord.py's own HTTP session (`Attachment.read`),
    checked again against the limit (the declared size is Discord's, the bytes are what came)."""
    data = await att.read()
    if len(data) > MAX_ATTACHMENT:
        raise UserInputError(f"{att.filename} (photo{n}) is over {MAX_ATTACHMENT} bytes")
    return data


# ---- the actions ----------------------------------------------------------------------------


class DiscordTraining:
    """/train, /models and their buttons and modals, over the jobs client."""

    def __init__(self, jobs: Any, bot: DiscordCommands) -> None:
        self.jobs = jobs
        self.bot = bot

    async def _answer(
        self,
        interaction: discord.Interaction,
        text: str,
        view: ui.View | None = None,
        files: Sequence[discord.File] = (),
    ) -> None:
        """The deferred response's content (buttons, files), else a first response."""
        kwargs: dict[str, Any] = {"view": view} if view is not None else {}
        if interaction.response.is_done():
            if files:
                kwargs["attachments"] = list(files)
            await interaction.edit_original_response(content=text[:2000], **kwargs)
        else:
            await interaction.response.send_message(text[:2000], files=list(files), **kwargs)

    async def _card(self, interaction: discord.Interaction, ds: Dataset, note: str) -> None:
        """The dataset card: its text, its next-step buttons and a preview of each photo (the
        first ten; 320 px JPEGs, numbered as the captions are)."""
        files: list[discord.File] = []
        for n, im in enumerate(ds.images[:CARD_PHOTOS], 1):
            data = await asyncio.to_thread(self.jobs.image, StoredOutput(blob_id=im.image_id))
            small = await asyncio.to_thread(preview_jpeg, data)
            if small is not None:
                files.append(discord.File(io.BytesIO(small), filename=f"{ds.name}-{n}.jpg"))
        await self._answer(interaction, dataset_text(ds, note), dataset_view(ds), files)

    async def _refused(
        self, interaction: discord.Interaction, err: StationError, not_yours: str
    ) -> None:
        """A refusal, privately: a not-found id (another user's, or a forged one) word for word
        the same as a gone one."""
        text = not_yours if isinstance(err, NotFound) else error_text(err)
        if interaction.response.is_done():
            await interaction.followup.send(text[:2000], ephemeral=True)
        else:
            await interaction.response.send_message(text[:2000], ephemeral=True)

    # ------------------------------------------------------------------ /train

    async def train(
        self,
        interaction: discord.Interaction,
        name: str,
        trigger: str | None,
        caption_number: int | None,
        caption: str | None,
        photos: Sequence[discord.Attachment | None],
    ) -> None:
        """/train: open (or create) the dataset NAME, add what was given, show its card.

        Every attachment is checked from its metadata first, so an over-size or non-image one
        is refused before any is downloaded; the photos then go in as one batch
        (`add_dataset_images`, refused whole on any bad file: nothing added, nothing charged)."""
        if interaction.guild_id is not None:  # declared DM-only; a forged call is refused too
            await say(interaction, "/train works in a DM with me: your photos stay private.")
            return
        given = [(n, a) for n, a in enumerate(photos, 1) if a is not None]
        try:
            for n, att in given:
                check_attachment(att, n)
            if sum(a.size for _, a in given) > MAX_BATCH:
                raise UserInputError(
                    f"these photos are over {MAX_BATCH // 1024 // 1024} MB together: attach "
                    "fewer at a time (run /train again for the rest)"
                )
        except StationError as err:
            await say(interaction, f"⚠️ {error_text(err)} Nothing was added or charged.")
            return
        await interaction.response.defer(thinking=True)
        try:
            ds, notes = await self._fill(interaction, name, trigger, caption_number, caption, given)
        except StationError as err:  # said in the deferred answer, which would else spin on
            await self._answer(interaction, f"⚠️ {error_text(err)} Nothing was charged.")
            return
        await self._card(interaction, ds, "\n".join(notes))

    async def _fill(
        self,
        interaction: discord.Interaction,
        name: str,
        trigger: str | None,
        caption_number: int | None,
        caption: str | None,
        given: list[tuple[int, discord.Attachment]],
    ) -> tuple[Dataset, list[str]]:
        """Open or create the dataset, then set the trigger word, add photos, set a caption."""
        who = await self.bot._who(interaction)
        notes: list[str] = []
        try:
            ds = await self.jobs.dataset(who, name)
        except NotFound:
            ds = await self.jobs.create_dataset(who, name)
            notes.append(f"✓ new dataset {ds.name}")
        if trigger:
            ds = await self.jobs.set_trigger_word(who, ds.id, trigger)
            notes.append(f"✓ trigger word {ds.trigger_word}")
        if given:
            files = [(await read_attachment(a, n), a.filename) for n, a in given]
            result = await self.jobs.add_dataset_images(who, ds.id, files)
            notes.append(f"✓ {len(given)} photo(s) added, {result.total} in all")
            ds = await self.jobs.dataset(who, ds.id)
        if caption_number is not None or caption:
            if caption_number is None or not caption:
                raise UserInputError("give both caption_number and caption to change a caption")
            ds = await self.jobs.set_caption(who, ds.id, caption_number, caption)
            notes.append(f"✓ caption #{caption_number} saved")
        return ds, notes

    async def on_train_button(
        self, interaction: discord.Interaction, action: str, ds_id: str, steps: int | None
    ) -> None:
        """Caption, Train and the step choices, on the presser's own dataset only."""
        who = identity_of(interaction.user)
        try:
            if action == "cap":
                await self._caption_quote(interaction, who, ds_id)
            elif action == "capok":
                await self._caption(interaction, who, ds_id)
            elif action in ("quote", "steps"):
                await self._train_quote(interaction, who, ds_id, steps or STEPS_DEFAULT, action)
            elif action == "go" and steps is not None:
                await self._train(interaction, who, ds_id, steps)
        except StationError as err:
            await self._refused(interaction, err, NOT_YOUR_DATASET)

    async def _caption_quote(self, interaction: discord.Interaction, who: str, ds_id: str) -> None:
        quote = await self.jobs.quote_captions(who, ds_id)
        if quote.images == 0:
            ds = await self.jobs.dataset(who, ds_id)
            await self._answer(interaction, dataset_text(ds, "Every photo has a caption."))
            return
        text = (
            f"Caption {quote.images} photo(s) of {quote.dataset} for {quote.total} points "
            f"({quote.per_image} each, refunded for any that gets no caption). Your balance: "
            f"{quote.balance} points. Captions you typed are kept."
        )
        view = ui.View(timeout=None)
        view.add_item(
            TrainButton(
                "capok",
                quote.dataset_id,
                label=f"✅ Caption for {quote.total} points",
                style=discord.ButtonStyle.success,
            )
        )
        await interaction.response.send_message(text, view=view)

    async def _caption(self, interaction: discord.Interaction, who: str, ds_id: str) -> None:
        """Confirmed: run the caption job (charged per photo by its workflow) once per press
        of this message's button; the answer is the captioned dataset's card."""
        quote = await self.jobs.quote_captions(who, ds_id)  # the presser's own, else NotFound
        if quote.balance < quote.total:  # refused privately, before the public "thinking"
            raise InsufficientPoints(quote.total, quote.balance)
        key = press_key(interaction)
        if not self.bot.claims.claim(key):
            await say(interaction, "That was already started.")
            return
        await interaction.response.defer(thinking=True)
        try:
            outcome = await self.jobs.caption_dataset(who, ds_id)
        except StationError:
            self.bot.claims.release(key)
            raise
        ds = await self.jobs.dataset(who, ds_id)
        paid = outcome.price - outcome.refunded
        note = f"✓ captioned {outcome.captioned} photo(s) for {paid} points"
        if outcome.failed:
            note += f"; {len(outcome.failed)} could not be captioned (type one with /train)"
        await self._card(interaction, ds, note)

    def _request(
        self, who: str, ds_id: str, steps: int, reply: ReplyTarget | None = None, rid: str = ""
    ) -> TrainRequest:
        return TrainRequest(
            user=who,
            platform="discord",
            dataset=ds_id,
            params=TrainingParams(steps=steps),
            reply=reply,
            request_id=rid or None,
        )

    async def _train_quote(
        self, interaction: discord.Interaction, who: str, ds_id: str, steps: int, action: str
    ) -> None:
        """The price of a training run; nothing is charged before Train for N points."""
        if not STEPS_MIN <= steps <= STEPS_MAX:
            raise UserInputError(f"the step count is {STEPS_MIN} … {STEPS_MAX}")
        ds = await self.jobs.dataset(who, ds_id)
        plan = await self.jobs.quote_training(self._request(who, ds.id, steps))
        user = await self.jobs.user(who)
        text = (
            f"Train {plan.summary}: {plan.price} points.\nTrigger word: {ds.trigger_word}. "
            f"Your balance: {user.points} points. More steps learn more and cost more. "
            "Nothing is charged before you tap Train."
        )
        if user.points < plan.price:
            text += f"\nYou need {plan.price - user.points} more points: fewer steps cost less."
        view = quote_view(ds.id, steps, plan.price)
        if action == "steps":  # a step choice under a quote: that quote changes
            await interaction.response.edit_message(content=text, view=view)
        else:
            await interaction.response.send_message(text, view=view)

    async def _train(
        self, interaction: discord.Interaction, who: str, ds_id: str, steps: int
    ) -> None:
        """Confirmed: start the training; the press's deferred response is its live status.

        Keyed by this button on this message (`press_key`): Claims stop a second tap while
        the first is starting, the request id (the workflow id) one from another process or
        after a restart; `start_train` charges through the ledger, once, in the job's saga."""
        await self.jobs.dataset(who, ds_id)  # the presser's own, else NotFound, said privately
        key = press_key(interaction)

        async def start(reply: ReplyTarget) -> Any:
            request = self._request(who, ds_id, steps, reply, key)
            plan = await self.jobs.quote_training(request)
            user = await self.jobs.user(who)
            if user.points < plan.price:
                raise InsufficientPoints(plan.price, user.points)
            return await self.jobs.start_train(request)

        await self.bot._start_job(interaction, key, start)

    # ------------------------------------------------------------------ /models

    async def _lists(self, who: str) -> tuple[list[LoraModel], list[LoraModel]]:
        own = await self.jobs.models(who, include_public=False)
        added = await self.jobs.added_models(who)
        return list(own), list(added)

    async def _page(self, who: str, page: int) -> tuple[str, ui.View]:
        own, added = await self._lists(who)
        pages = max(1, (len(own) + len(added) + MODELS_PER_PAGE - 1) // MODELS_PER_PAGE)
        page = min(max(page, 0), pages - 1)
        return models_text(own, added, page), models_view(own, added, page)

    async def models(self, interaction: discord.Interaction) -> None:
        """/models: the list with its buttons, only for who asked."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        who = await self.bot._who(interaction)
        text, view = await self._page(who, 0)
        await interaction.edit_original_response(content=text, view=view)

    async def _redraw(self, interaction: discord.Interaction, who: str, note: str = "") -> None:
        """Show the list again on the message the button was on."""
        text, view = await self._page(who, 0)
        text = f"{note}\n\n{text}" if note else text
        await interaction.response.edit_message(content=text[:2000], view=view)

    async def _own(self, who: str, ref: str) -> LoraModel:
        own, _ = await self._lists(who)
        found = next((m for m in own if m.id == ref), None)
        if found is None:
            raise NotFound("that model is gone")
        return found

    async def on_model_button(
        self, interaction: discord.Interaction, action: str, ref: str | None, page: int
    ) -> None:
        """Every /models button, on the presser's own list only (the services check owners)."""
        who = identity_of(interaction.user)
        try:
            await self._model_action(interaction, who, action, ref, page)
        except StationError as err:
            await self._refused(interaction, err, NOT_YOUR_MODEL)

    async def _model_action(
        self, interaction: discord.Interaction, who: str, action: str, ref: str | None, page: int
    ) -> None:
        if action == "list":
            text, view = await self._page(who, page)
            await interaction.response.edit_message(content=text, view=view)
            return
        if action == "add":
            modal = name_modal(ADD_MODAL, "Add a public model", "The public model's name (or id)")
            await interaction.response.send_modal(modal)
            return
        if ref is None:
            raise UserInputError("that button is out of date: /models again")
        if action == "ren":
            model = await self._own(who, ref)
            modal = name_modal(
                model_id("ren", ref), f"Rename {model.name}", "New name", default=model.name
            )
            await interaction.response.send_modal(modal)
        elif action == "del":
            model = await self._own(who, ref)
            view = ui.View(timeout=None)
            view.add_item(
                ModelButton(
                    "delok", ref, label="🗑 Yes, delete it", style=discord.ButtonStyle.danger
                )
            )
            view.add_item(ModelButton("list", label="No, keep it"))
            await interaction.response.edit_message(
                content=f"Delete {model.name} (trigger word {model.trigger_word})? Prompts with "
                "its trigger word will no longer use it. This cannot be undone.",
                view=view,
            )
        elif action == "delok":
            model = await self.jobs.delete_model(who, ref)
            await self._redraw(interaction, who, f"🗑 deleted {model.name}")
        elif action in ("pub", "priv"):
            model = await self.jobs.publish_model(who, ref, action == "pub")
            note = (
                f"🌐 {model.name} is public: anyone can use it with <lora:{model.name}>"
                if model.public
                else f"🔒 {model.name} is private again"
            )
            await self._redraw(interaction, who, note)
        elif action == "rm":
            model = await self.jobs.remove_model(who, ref)
            await self._redraw(interaction, who, f"➖ {model.name} is off your list")

    async def on_modal(self, interaction: discord.Interaction, custom_id: str) -> None:
        """A Rename or Add modal submitted: act, then show the list (privately)."""
        who = identity_of(interaction.user)
        value = submitted_value(interaction, NAME_INPUT).strip()
        renamed = RENAME_MODAL.fullmatch(custom_id)
        try:
            if renamed is not None:
                model = await self.jobs.rename_model(who, renamed["ref"], value)
                note = f"✓ renamed to {model.name}"
            else:
                model = await self.jobs.add_model(who, value)
                note = f"➕ added {model.name}: use it with <lora:{model.name}>"
        except StationError as err:
            await self._refused(interaction, err, NOT_YOUR_MODEL)
            return
        text, view = await self._page(who, 0)
        await interaction.response.send_message(
            f"{note}\n\n{text}"[:2000], view=view, ephemeral=True
        )


async def on_modal_submit(interaction: discord.Interaction) -> None:
    """Answer a submitted /models modal (the client's `on_interaction` calls this for every
    interaction; anything else is left to discord.py)."""
    if interaction.type is not discord.InteractionType.modal_submit:
        return
    data: Any = interaction.data or {}
    cid = str(data.get("custom_id", ""))
    actions = ModelButton.actions
    if actions is None or not (cid == ADD_MODAL or RENAME_MODAL.fullmatch(cid)):
        return
    await actions.on_modal(interaction, cid)


# ---- declaring the commands -----------------------------------------------------------------


def register_training(tree: app_commands.CommandTree, jobs: Any, bot: DiscordCommands) -> None:
    """Add /train (DM-only) and /models to `tree`, and hand the buttons their actions."""
    training = DiscordTraining(jobs, bot)
    TrainButton.actions = training
    ModelButton.actions = training

    @tree.command(name="train", description="Train a LoRA on your photos (in a DM with me)")
    @app_commands.allowed_contexts(guilds=False, dms=True, private_channels=False)
    @app_commands.describe(
        name="The dataset (created on first use; run again to add photos)",
        trigger="The trigger word that calls the model in a prompt",
        caption_number="A photo's number, to type its caption",
        caption="That photo's caption",
        **{
            f"photo{n}": "A photo of your subject (PNG, JPEG or WebP)"
            for n in range(1, MAX_PHOTO_OPTIONS + 1)
        },
    )
    async def train(
        interaction: discord.Interaction,
        name: app_commands.Range[str, 1, 64],
        trigger: app_commands.Range[str, 1, 32] | None = None,
        caption_number: app_commands.Range[int, 1, MAX_IMAGES] | None = None,
        caption: app_commands.Range[str, 1, 1000] | None = None,
        photo1: discord.Attachment | None = None,
        photo2: discord.Attachment | None = None,
        photo3: discord.Attachment | None = None,
        photo4: discord.Attachment | None = None,
        photo5: discord.Attachment | None = None,
        photo6: discord.Attachment | None = None,
        photo7: discord.Attachment | None = None,
        photo8: discord.Attachment | None = None,
        photo9: discord.Attachment | None = None,
        photo10: discord.Attachment | None = None,
    ) -> None:
        """DM-only: a dataset's photos and captions are personal (Telegram keeps /train out of
        groups too)."""
        photos = [photo1, photo2, photo3, photo4, photo5]
        photos += [photo6, photo7, photo8, photo9, photo10]
        await training.train(interaction, name, trigger, caption_number, caption, photos)

    @tree.command(name="models", description="Your LoRA models: rename, delete, publish, add")
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
    async def models(interaction: discord.Interaction) -> None:
        """Ephemeral: only who asked sees the list and its buttons."""
        await training.models(interaction)
