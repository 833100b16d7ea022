"""Telegram /train and /models: a guided LoRA training flow and the user's trained models.

Handlers stay thin (parse → jobs client → render): datasets, captions, quotes, training and
models all go through `JobsClient`; every rule lives in domain/ and store/.

The guided flow is name → photos → trigger word → captions review → quote → confirm. Its chat
state is a small dict in `context.user_data[FLOW]`, bound to the chat where it started; the text
and photo handlers registered here only match while a step of it waits for input there
(`TrainPending`), so prompts, typed settings and the collections flow keep working otherwise.
Everything a button needs (dataset id, image number, step count) is in its callback data, so the
buttons keep working when the in-memory flow state is gone (a bot restart): `/train NAME`
also picks an unfinished dataset up where it stopped.

Photos are added one at a time as they arrive (each through the media safety checks in
`add_dataset_images`), serialised per user so an album of ten counts up in order. Once training
starts, the confirm message becomes the job's live status message, edited by the bot's
`StatusWatchers` (at most once every 2 s per message); the delivery worker then sends the done
message with the model name and trigger word (delivery.py, `render.train_done_text`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from telegram import Message, ReplyParameters, Update
from telegram.error import BadRequest
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, MessageHandler, filters

from adapters.telegram import render
from adapters.telegram.handlers import (
    MAX_DOWNLOAD,
    PENDING,
    Ctx,
    answer,
    answer_private,
    ask,
    deps,
    identity,
    is_group,
    thread_of,
    user_error_text,
)
from domain.errors import InsufficientPoints, SettingsError, StationError, UserInputError
from domain.jobs import ReplyTarget, StoredOutput
from domain.training import (
    MAX_IMAGES,
    MIN_IMAGES,
    STEPS_DEFAULT,
    STEPS_MAX,
    STEPS_MIN,
    TRIGGER_MAX,
    TRIGGER_MIN,
    Dataset,
    NotFound,
    TrainingParams,
    TrainRequest,
)

log = logging.getLogger(__name__)

FLOW = "train_flow"  # context.user_data key of the pending guided step
COLLECTION_FLOW = "collection_flow"  # the collections flow's key: it goes first when pending
LOCKS = "train_photo_locks"  # application.bot_data key: one lock per user adding photos

# Steps that wait for typed text, and what to send to retry each one.
RETRY = {
    "name": "Send another name.",
    "photos": "Send another photo, or tap Done when all are in.",
    "trigger": "Send another trigger word.",
    "caption": "Send the caption again (up to 1000 characters).",
    "quote": f"Send a step count ({STEPS_MIN} … {STEPS_MAX}) or tap a button.",
    "rename": "Send another name, or /models to go back.",
}


# ---- wiring --------------------------------------------------------------------------------


class TrainPending(filters.MessageFilter):
    """Matches a message while its sender has a /train or /models step waiting in that chat
    (and no typed setting or collection step, which were asked for more recently)."""

    def __init__(self, app: Application, steps: tuple[str, ...] | None = None) -> None:
        super().__init__(name="TrainPending")
        self.app = app
        self.steps = steps

    def filter(self, message: Message) -> bool:
        user = message.from_user
        if user is None:
            return False
        data = self.app.user_data.get(user.id)
        if not data or data.get(PENDING) or data.get(COLLECTION_FLOW):
            return False
        flow = data.get(FLOW)
        if not isinstance(flow, dict) or flow.get("chat") != message.chat.id:
            return False
        if self.steps is not None and flow.get("step") not in self.steps:
            return False
        caption = message.caption or ""
        return not caption.startswith("/")  # a photo sent with /upscale is not for the dataset


def register(app: Application) -> None:
    """Add the training handlers; call before the bot's generic photo and text handlers."""
    app.add_handler(CommandHandler("train", train_cmd))
    app.add_handler(CommandHandler("models", models_cmd))
    app.add_handler(
        MessageHandler(
            (filters.PHOTO | filters.Document.ALL) & TrainPending(app, ("photos",)), flow_photo
        )
    )
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND & TrainPending(app), flow_text))
    app.add_handler(CallbackQueryHandler(train_button, pattern=r"^train:"))
    app.add_handler(CallbackQueryHandler(model_button, pattern=r"^model:"))


# ---- errors the user reads -----------------------------------------------------------------


def error_text(err: StationError, retry: str = "") -> str:
    """The refusal plus what to do next (`retry` says how to try this step again)."""
    if isinstance(err, SettingsError):
        text = "; ".join(f"{e.field}: {e.message}" for e in err.errors) + "."
    else:
        text = user_error_text(err)
    code = getattr(err, "code", "")
    if code == "not_found" and not retry:
        retry = "/train starts a new LoRA, /models lists your models."
    elif code == "insufficient_points":
        text = f"{err.message}. Fewer steps cost less (/balance shows your points)."
    return f"{text} {retry}".strip()


Handler = Callable[[Update, Ctx], Coroutine[Any, Any, None]]


def _explained(handler: Handler) -> Handler:
    """Refusals are worded here with the step's own next move; anything else still reaches the
    bot's one error handler (logged, generic apology)."""

    @functools.wraps(handler)
    async def wrapper(update: Update, context: Ctx) -> None:
        try:
            await handler(update, context)
        except StationError as err:
            log.info("update %s refused: %s", update.update_id, err.message)
            flow = (context.user_data or {}).get(FLOW) or {}
            await answer(update, error_text(err, RETRY.get(str(flow.get("step")), "")))

    return wrapper


# ---- flow state ----------------------------------------------------------------------------


def _flow(context: Ctx) -> dict[str, Any] | None:
    flow = (context.user_data or {}).get(FLOW)
    return flow if isinstance(flow, dict) else None


def _set_flow(context: Ctx, chat_id: int, step: str, **data: Any) -> None:
    if context.user_data is None:
        return
    context.user_data.pop(PENDING, None)  # a typed setting no longer waits
    context.user_data.pop(COLLECTION_FLOW, None)
    context.user_data[FLOW] = {"chat": chat_id, "step": step, **data}


def _end_flow(context: Ctx) -> None:
    if context.user_data is not None:
        context.user_data.pop(FLOW, None)


def _lock(context: Ctx, user_id: int) -> asyncio.Lock:
    locks: dict[int, asyncio.Lock] = context.application.bot_data.setdefault(LOCKS, {})
    return locks.setdefault(user_id, asyncio.Lock())


# ---- /train --------------------------------------------------------------------------------


@_explained
async def train_cmd(update: Update, context: Ctx) -> None:
    """/train [NAME]: start a new LoRA (asks for a name), or continue dataset NAME."""
    chat = update.effective_chat
    if chat is None:
        return
    if is_group(chat):
        await answer(update, "Training takes a private chat with me: send /train there.")
        return
    d = deps(context)
    who = identity(update)
    await d.jobs.user(who)  # unknown users are told to /start first
    name = " ".join(context.args or []).strip()
    if not name:
        _set_flow(context, chat.id, "name")
        await answer(
            update,
            "New LoRA (1/5): what should your model be called? One word of letters, digits, "
            "'_', '-' or '.', e.g. rex-the-dog. (Send /train again to start over.)",
        )
        return
    await _open(update, context, name)


async def _open(update: Update, context: Ctx, name: str) -> None:
    """Continue the user's dataset `name`, or create it and ask for photos."""
    d = deps(context)
    who = identity(update)
    try:
        ds = await d.jobs.dataset(who, name)
    except NotFound:
        ds = await d.jobs.create_dataset(who, name)
        await _ask_photos(update, context, ds)
        return
    await _resume(update, context, ds)


async def _resume(update: Update, context: Ctx, ds: Dataset) -> None:
    """Pick an existing dataset up at its first unfinished step."""
    if len(ds.images) < MIN_IMAGES:
        await _ask_photos(update, context, ds)
    elif not ds.trigger_word:
        await answer(update, f"Continuing {ds.name}: it has {len(ds.images)} photos.")
        await _ask_trigger(update, context, ds)
    else:
        await answer(
            update,
            f"Continuing {ds.name}: {len(ds.images)} photos, trigger word {ds.trigger_word}.",
        )
        await _review(update, context, ds)


async def _ask_photos(update: Update, context: Ctx, ds: Dataset) -> None:
    chat = update.effective_chat
    assert chat is not None
    _set_flow(context, chat.id, "photos", ds=ds.id, name=ds.name)
    have = f" It has {len(ds.images)} already." if ds.images else ""
    await answer(
        update,
        f"(2/5) Send {MIN_IMAGES} … {MAX_IMAGES} photos of your subject for {ds.name}, as photos "
        f"or image files: different angles, light and backgrounds work best.{have} "
        "Tap Done when all are in.",
        reply_markup=render.train_photos_keyboard(ds.id) if len(ds.images) >= MIN_IMAGES else None,
    )


async def _ask_trigger(update: Update, context: Ctx, ds: Dataset) -> None:
    chat = update.effective_chat
    assert chat is not None
    _set_flow(context, chat.id, "trigger", ds=ds.id, name=ds.name)
    await answer(
        update,
        f"(3/5) Pick a trigger word: one made-up word ({TRIGGER_MIN}-{TRIGGER_MAX} letters, "
        "digits, '_' or '-', starting with a letter, not an ordinary English word) that calls "
        "your model in prompts, e.g. zxrex.",
    )


@_explained
async def flow_text(update: Update, context: Ctx) -> None:
    """A typed answer to the pending step of /train or /models."""
    msg = update.effective_message
    flow = _flow(context)
    if msg is None or not msg.text or flow is None:
        return
    text = msg.text.strip()
    step = flow.get("step")
    d = deps(context)
    who = identity(update)
    if step == "name":
        await _open(update, context, text)
    elif step == "photos":
        if text.lower() in ("done", "next", "ok"):
            await _photos_done(update, context, str(flow["ds"]))
            return
        ds = await d.jobs.dataset(who, str(flow["ds"]))
        await answer(
            update,
            f"I'm waiting for photos ({len(ds.images)} in {ds.name} so far): send a photo, or "
            + ("tap Done." if len(ds.images) >= MIN_IMAGES else f"at least {MIN_IMAGES} in all."),
        )
    elif step == "trigger":
        ds = await d.jobs.set_trigger_word(who, str(flow["ds"]), text)
        await answer(update, f"✓ trigger word {ds.trigger_word}")
        await _review(update, context, ds)
    elif step == "caption":
        await _typed_caption(update, context, flow, text)
    elif step == "quote":
        if not text.isdigit():
            raise UserInputError(f"the step count is a whole number, {STEPS_MIN} … {STEPS_MAX}")
        await _quote(update, context, str(flow["ds"]), int(text))
    elif step == "rename":
        model = await d.jobs.rename_model(who, str(flow["model"]), text)
        _end_flow(context)
        await _send_models(update, context, f"✓ renamed to {model.name}")
    elif step == "review":
        await answer(
            update,
            "Your captions are above: tap ✏️ Edit under a photo to change one, or Next: price.",
            reply_markup=render.train_next_keyboard(str(flow["ds"])),
        )
    else:
        await answer(update, "Please wait a moment: I'm still working on your photos.")


@_explained
async def flow_photo(update: Update, context: Ctx) -> None:
    """A photo or image file for the dataset being built."""
    msg = update.effective_message
    flow = _flow(context)
    user = update.effective_user
    if msg is None or flow is None or user is None:
        return
    if msg.photo:
        file_id, size, filename = msg.photo[-1].file_id, msg.photo[-1].file_size, "photo.jpg"
    elif msg.document is not None:
        doc = msg.document
        if doc.mime_type and not doc.mime_type.startswith("image/"):
            raise UserInputError(
                f"{doc.file_name or 'that file'} is not an image: send photos or image files "
                "(PNG, JPEG or WebP)"
            )
        file_id, size, filename = doc.file_id, doc.file_size, doc.file_name or "image"
    else:
        return
    if size and size > MAX_DOWNLOAD:
        raise UserInputError("that file is over 20 MB, more than bots can download")
    d = deps(context)
    who = identity(update)
    ds_id = str(flow["ds"])
    tg_file = await context.bot.get_file(file_id)
    data = bytes(await tg_file.download_as_bytearray())
    async with _lock(context, user.id):
        result = await d.jobs.add_dataset_images(who, ds_id, [(data, filename)])
    await answer(
        update,
        render.train_photos_text(str(flow.get("name", "your dataset")), result.total),
        reply_markup=render.train_photos_keyboard(ds_id) if result.total >= MIN_IMAGES else None,
        reply_parameters=ReplyParameters(msg.message_id, allow_sending_without_reply=True),
    )


async def _photos_done(update: Update, context: Ctx, ds_id: str) -> None:
    ds = await deps(context).jobs.dataset(identity(update), ds_id)
    if len(ds.images) < MIN_IMAGES:
        more = MIN_IMAGES - len(ds.images)
        raise UserInputError(
            f"{ds.name} has {len(ds.images)} photo(s); send {more} more first "
            f"(at least {MIN_IMAGES})"
        )
    if ds.trigger_word:
        await _review(update, context, ds)
    else:
        await _ask_trigger(update, context, ds)


async def _review(update: Update, context: Ctx, ds: Dataset) -> None:
    """Caption what has no caption, then show every photo with its caption and an Edit button."""
    d = deps(context)
    chat = update.effective_chat
    assert chat is not None
    who = identity(update)
    _set_flow(context, chat.id, "captioning", ds=ds.id, name=ds.name)
    failed = 0
    if ds.uncaptioned():
        # Captioning is paid per photo (refunded for the ones that get no caption): the
        # price is in the message, and too few points refuse it before anything starts.
        quote = await d.jobs.quote_captions(who, ds.id)
        note = await answer(
            update, f"⏳ Captioning {quote.images} photo(s) for {quote.total} points…"
        )
        await chat.send_action("typing")
        outcome = await d.jobs.caption_dataset(who, ds.id)
        failed = len(outcome.failed)
        if note is not None:
            paid = outcome.price - outcome.refunded
            await note.edit_text(f"✓ captioned {outcome.captioned} photo(s) for {paid} points")
        ds = await d.jobs.dataset(who, ds.id)
    try:
        # Up to 20 photos in a row: the bot's rate limiter (flood.py) paces them to Telegram's
        # per-chat limit and waits out a 429, so none is lost.
        for n, im in enumerate(ds.images, 1):
            data = await asyncio.to_thread(d.jobs.image, StoredOutput(blob_id=im.image_id))
            await chat.send_photo(
                data,
                caption=render.train_caption_text(n, im.caption),
                reply_markup=render.train_caption_keyboard(ds.id, n),
                filename=f"{ds.name}-{n}.png",
                message_thread_id=thread_of(update),
            )
    finally:
        # Even if Telegram refused a photo for good, the flow leaves "captioning": a user left
        # there gets "still working on your photos" for every message, forever.
        _set_flow(context, chat.id, "review", ds=ds.id, name=ds.name)
    await answer(
        update,
        render.train_review_footer_text(ds, failed),
        reply_markup=render.train_next_keyboard(ds.id),
    )


async def _typed_caption(update: Update, context: Ctx, flow: dict[str, Any], text: str) -> None:
    d = deps(context)
    chat = update.effective_chat
    assert chat is not None
    ds_id, n = str(flow["ds"]), int(flow["image"])
    ds = await d.jobs.set_caption(identity(update), ds_id, n, text)
    caption = ds.images[n - 1].caption if n <= len(ds.images) else text
    shown = flow.get("message")
    if isinstance(shown, int):
        try:
            await context.bot.edit_message_caption(
                chat_id=chat.id,
                message_id=shown,
                caption=render.train_caption_text(n, caption),
                reply_markup=render.train_caption_keyboard(ds_id, n),
            )
        except BadRequest as err:
            log.info("caption message %s not edited (%s)", shown, err.message)
    _set_flow(context, chat.id, "review", ds=ds_id, name=ds.name)
    await answer(
        update,
        f"✓ caption #{n} saved: {caption}\nEdit another one, or tap Next: price.",
        reply_markup=render.train_next_keyboard(ds_id),
    )


async def _quote(update: Update, context: Ctx, ds_id: str, steps: int) -> None:
    """The price of training with `steps` steps, with the confirm and step-choice buttons.

    A quote only checks and prices: nothing is charged before Train is tapped.
    """
    d = deps(context)
    chat = update.effective_chat
    assert chat is not None
    who = identity(update)
    ds = await d.jobs.dataset(who, ds_id)
    _set_flow(context, chat.id, "quote", ds=ds.id, name=ds.name, steps=steps)
    plan = await d.jobs.quote_training(
        TrainRequest(
            user=who, platform="telegram", dataset=ds.id, params=TrainingParams(steps=steps)
        )
    )
    user = await d.jobs.user(who)
    await answer(
        update,
        render.train_quote_text(ds, plan, steps, user.points),
        reply_markup=render.train_quote_keyboard(ds.id, steps, plan.price),
    )


async def _go(update: Update, context: Ctx, ds_id: str, steps: int) -> None:
    """Confirmed: start the training and turn the quote message into its live status."""
    d = deps(context)
    query = update.callback_query
    chat = update.effective_chat
    assert query is not None and chat is not None
    msg = query.message
    if msg is None:
        return
    who = identity(update)
    pacer = d.watchers.pacer
    cid = str(chat.id)
    async with pacer.lock(cid, msg.message_id):
        await query.edit_message_text("🏋️ starting the training…")
        pacer.mark(cid, msg.message_id)
    request = TrainRequest(
        user=who,
        platform="telegram",
        dataset=ds_id,
        params=TrainingParams(steps=steps),
        reply=ReplyTarget(
            chat_id=cid, status_message_id=msg.message_id, message_thread_id=thread_of(update)
        ),
        # One confirm message starts one job, however often Train is tapped.
        request_id=f"{ds_id}-{msg.message_id}",
    )
    try:
        plan = await d.jobs.quote_training(request)
        user = await d.jobs.user(who)
        if user.points < plan.price:
            raise InsufficientPoints(plan.price, user.points)
        started = await d.jobs.start_train(request)
    except StationError as err:
        await pacer.wait(cid, msg.message_id)
        await query.edit_message_text(
            error_text(err, "Fix that and tap Next: price again."),
            reply_markup=render.train_next_keyboard(ds_id),
        )
        return
    _end_flow(context)
    if started.existing:
        log.info("training %s was already started from this message", started.workflow_id)
    d.watchers.watch(started.workflow_id, cid, msg.message_id)


@_explained
async def train_button(update: Update, context: Ctx) -> None:
    """Every `train:*` button: answer the query first, then act."""
    query = update.callback_query
    chat = update.effective_chat
    if query is None or query.data is None or chat is None:
        return
    await query.answer()
    parts = query.data.split(":")
    action, args = (parts[1] if len(parts) > 1 else ""), parts[2:]
    if not args:
        raise UserInputError("that button is out of date: send /train again")
    ds_id = args[0]
    if action == "photos":
        await _photos_done(update, context, ds_id)
    elif action == "edit" and len(args) == 2 and args[1].isdigit():
        ds = await deps(context).jobs.dataset(identity(update), ds_id)
        n = int(args[1])
        if not 1 <= n <= len(ds.images):
            raise UserInputError(f"{ds.name} has no photo #{n} any more: send /train {ds.name}")
        msg = query.message
        _set_flow(
            context,
            chat.id,
            "caption",
            ds=ds.id,
            name=ds.name,
            image=n,
            message=msg.message_id if msg is not None else None,
        )
        now = ds.images[n - 1].caption
        await answer(
            update,
            f"Send the new caption for photo #{n} (up to 1000 characters; it replaces "
            f"{'“' + now + '”' if now else 'the empty one'}). Include the trigger word "
            f"{ds.trigger_word} or it is added in front.",
        )
    elif action == "quote":
        flow = _flow(context) or {}
        steps = int(flow.get("steps") or STEPS_DEFAULT) if flow.get("ds") == ds_id else 0
        await _quote(update, context, ds_id, steps or STEPS_DEFAULT)
    elif action == "steps" and len(args) == 2 and args[1].isdigit():
        await _quote(update, context, ds_id, int(args[1]))
    elif action == "go" and len(args) == 2 and args[1].isdigit():
        await _go(update, context, ds_id, int(args[1]))
    elif action == "stop":
        _end_flow(context)
        ds = await deps(context).jobs.dataset(identity(update), ds_id)
        await query.edit_message_text(
            f"Not trained, nothing charged. {ds.name} keeps its photos and captions: "
            f"send /train {ds.name} when you are ready."
        )
    else:
        raise UserInputError("that button is out of date: send /train again")


# ---- /models -------------------------------------------------------------------------------


async def _send_models(update: Update, context: Ctx, note: str = "") -> None:
    models = await deps(context).jobs.models(identity(update), include_public=False)
    text = render.models_text(models)
    await answer_private(
        update,
        context,
        f"{note}\n\n{text}" if note else text,
        reply_markup=render.models_keyboard(models),
    )


@_explained
async def models_cmd(update: Update, context: Ctx) -> None:
    """/models: the user's trained models with Rename / Delete / Publish buttons."""
    flow = _flow(context)
    if flow is not None and flow.get("step") == "rename":
        _end_flow(context)
    await _send_models(update, context)


async def _show_models_in(update: Update, context: Ctx, note: str = "") -> None:
    """Redraw the /models message the button was on."""
    query = update.callback_query
    assert query is not None
    models = await deps(context).jobs.models(identity(update), include_public=False)
    text = render.models_text(models)
    try:
        await query.edit_message_text(
            f"{note}\n\n{text}" if note else text, reply_markup=render.models_keyboard(models)
        )
    except BadRequest as err:
        if "not modified" not in err.message.lower():
            raise


@_explained
async def model_button(update: Update, context: Ctx) -> None:
    """Every `model:*` button: answer the query first, then act on the presser's own model."""
    query = update.callback_query
    chat = update.effective_chat
    if query is None or query.data is None or chat is None:
        return
    await query.answer()
    d = deps(context)
    who = identity(update)
    parts = query.data.split(":")
    action, args = (parts[1] if len(parts) > 1 else ""), parts[2:]
    if action == "list":
        await _show_models_in(update, context)
        return
    if not args:
        raise UserInputError("that button is out of date: send /models again")
    ref = args[0]
    if action == "ren":
        model = next(
            (m for m in await d.jobs.models(who, include_public=False) if m.id == ref), None
        )
        if model is None:
            raise NotFound("that model is gone")
        _set_flow(context, chat.id, "rename", model=ref)
        await ask(
            update,
            f"Send the new name for {model.name} (letters, digits, '_', '-' or '.'). "
            f"Its trigger word {model.trigger_word} stays the same.",
        )
    elif action == "del":
        model = next(
            (m for m in await d.jobs.models(who, include_public=False) if m.id == ref), None
        )
        if model is None:
            raise NotFound("that model is gone")
        await query.edit_message_text(
            f"Delete {model.name} (trigger word {model.trigger_word})? Prompts with its trigger "
            "word will no longer use it. This cannot be undone.",
            reply_markup=render.model_delete_keyboard(ref),
        )
    elif action == "delok":
        model = await d.jobs.delete_model(who, ref)
        await _show_models_in(update, context, f"🗑 deleted {model.name}")
    elif action in ("pub", "priv"):
        model = await d.jobs.publish_model(who, ref, action == "pub")
        note = (
            f"🌐 {model.name} is public: anyone can use it with <lora:{model.name}>"
            if model.public
            else f"🔒 {model.name} is private again"
        )
        await _show_models_in(update, context, note)
    else:
        raise UserInputError("that button is out of date: send /models again")
