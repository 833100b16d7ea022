"""Telegram handlers: parse the update, ask the jobs client, render the answer.

No handler talks to Temporal or MongoDB itself. Refusals the user can act on are
`StationError`s: handlers let them rise and the one error handler words them (with what to do
next); anything else is logged with the update id and answered with a generic apology.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from telegram import Chat, ForceReply, Message, MessageEntity, ReplyParameters, Update
from telegram.constants import ChatType
from telegram.error import BadRequest, Forbidden, TelegramError
from telegram.ext import ApplicationHandlerStop, ContextTypes

from adapters.jobs import JobNotFound, JobsClient, NotCancellable, StartedJob
from adapters.telegram import render
from adapters.telegram.ratelimit import RateLimiter
from adapters.telegram.request_keys import (
    SHARED_SENDER_IDS,
    Claims,
    identity,
    request_key,
    speaks_as_chat,
)
from adapters.telegram.status_watch import StatusWatchers
from domain.errors import SettingsError, StationError, UnknownUser, UserInputError
from domain.identity import normalise_identity
from domain.jobs import (
    JOB_REF_LENGTH,
    MakeImageRequest,
    MediaRequest,
    ReplyTarget,
    new_job_id,
)
from domain.training import MAX_IMAGES
from workers.config import Config

log = logging.getLogger(__name__)

MAX_DOWNLOAD = 20 * 1024 * 1024  # getFile's limit for bots
PENDING = "pending_setting"  # context.user_data key: the setting whose value is typed next


TRAIN_PHOTO_WINDOW = 60.0  # seconds of the /train photo budget
FLOW_RATE, FLOW_WINDOW = 120, 60.0  # flow steps a minute: /train's 20 caption edits are 40


@dataclass
class BotDeps:
    """What handlers need, kept in `application.bot_data["deps"]` (no module globals)."""

    jobs: JobsClient
    config: Config
    watchers: StatusWatchers
    limiter: RateLimiter
    claims: Claims = field(default_factory=Claims)
    # Photos for /train's dataset have their own budget: an album of MAX_IMAGES passes, a
    # flood of photos (each downloaded, checked and stored) does not.
    photo_limiter: RateLimiter = field(
        default_factory=lambda: RateLimiter(2 * MAX_IMAGES, TRAIN_PHOTO_WINDOW)
    )
    # Steps of guided flows (`_flow_step`) have a budget that fits the longest flow.
    flow_limiter: RateLimiter = field(default_factory=lambda: RateLimiter(FLOW_RATE, FLOW_WINDOW))


Ctx = ContextTypes.DEFAULT_TYPE


def deps(context: Ctx) -> BotDeps:
    found: BotDeps = context.application.bot_data["deps"]
    return found


def is_group(chat: Chat | None) -> bool:
    return chat is not None and chat.type in (ChatType.GROUP, ChatType.SUPERGROUP)


def thread_of(update: Update) -> int | None:
    """The forum topic the update came from: every message sent in answer passes it as
    `message_thread_id`, or Telegram puts it in the group's General topic."""
    msg = update.effective_message
    return msg.message_thread_id if msg is not None and msg.is_topic_message else None


async def answer(update: Update, text: str, **kwargs: Any) -> Message | None:
    """Reply in the update's chat (in its forum topic), whatever kind of update it is."""
    chat = update.effective_chat
    if chat is None:
        return None
    kwargs.setdefault("message_thread_id", thread_of(update))
    msg = update.effective_message
    if msg is not None and is_group(chat) and "reply_parameters" not in kwargs:
        kwargs["reply_parameters"] = ReplyParameters(
            msg.message_id, allow_sending_without_reply=True
        )
    return await chat.send_message(text, **kwargs)


async def ask(update: Update, text: str, **kwargs: Any) -> Message | None:
    """A question whose answer is typed. In a group the answer is a plain message, which
    privacy mode (the default) never delivers to the bot; a reply to the bot is delivered, so
    the question carries a selective ForceReply (Bot API, ForceReply): the asker's app opens a
    reply to it. Selective targets the sender of the message the question replies to; a tap
    has no such message of the user, so the question then starts by mentioning the presser."""
    chat = update.effective_chat
    if not is_group(chat):
        return await answer(update, text, **kwargs)
    kwargs.setdefault(
        "reply_markup", ForceReply(selective=True, input_field_placeholder="your answer")
    )
    user = update.effective_user
    if update.callback_query is not None and user is not None:
        name = user.first_name or "you"
        text = f"{name}: {text}"
        kwargs["entities"] = [
            MessageEntity(
                MessageEntity.TEXT_MENTION, 0, len(name.encode("utf-16-le")) // 2, user=user
            )
        ]
        msg = update.effective_message
        if msg is not None:  # under the button's message, not as a reply to it
            kwargs.setdefault(
                "reply_parameters",
                ReplyParameters(msg.message_id, allow_sending_without_reply=True),
            )
    return await answer(update, text, **kwargs)


NOT_YOUR_MENU = "This is not your menu: send the command yourself to get your own."


async def menu_owner_gate(update: Update, context: Ctx) -> None:
    """A tap in a group on a message the bot sent in answer to another member: every member
    has their own menus and flows, so the tap is answered "not your menu" and nothing runs.
    The owner is the person the bot's message replies to (answer() replies to the asker in
    groups); messages answering no person (a channel, an anonymous admin) have no owner here."""
    query = update.callback_query
    if query is None or not is_group(update.effective_chat):
        return
    msg = query.message
    asker = msg.reply_to_message if isinstance(msg, Message) else None
    owner = asker.from_user if asker is not None and asker.sender_chat is None else None
    if owner is None or owner.is_bot or owner.id in SHARED_SENDER_IDS:
        return
    if owner.id != query.from_user.id:
        await query.answer(NOT_YOUR_MENU, show_alert=True)
        raise ApplicationHandlerStop


PRIVATE_SENT = "I sent you a private message."
ALREADY_STARTED = "This was already started: one tap is enough."
EDIT_HINT = "Edits are not run again: send a new message instead."
JOB_NOT_FOUND = "That job was not found."


async def answer_private(update: Update, context: Ctx, text: str, **kwargs: Any) -> None:
    """Personal data (balance, ledger, history, settings values, running jobs) is answered in a
    private chat only: asked in a group, it goes to the asker's private chat and the group
    reads a pointer. Where the bot cannot write first (the person never opened a chat with it:
    403) or the sender is a channel, the group is told so, without the data. An anonymous admin
    speaks as the group itself (`speaks_as_chat`): that account's data is the group's own."""
    chat = update.effective_chat
    if not is_group(chat) or speaks_as_chat(update):
        await answer(update, text, **kwargs)
        return
    msg = update.effective_message
    user = update.effective_user
    if (msg is not None and msg.sender_chat is not None) or user is None:
        await answer(update, "I show account details only in a private chat with me.")
        return
    try:
        await context.bot.send_message(user.id, text, **kwargs)
    except Forbidden:
        name = f" @{context.bot.username}" if context.bot.username else ""
        await answer(
            update,
            f"I can't message you privately yet: open a chat with me{name}, send /start, "
            "and ask there.",
        )
        return
    await answer(update, PRIVATE_SENT)


def user_error_text(err: StationError) -> str:
    """A refusal as the user reads it, always with a next step."""
    if isinstance(err, UnknownUser):
        return "I don't know you yet: send /start to register and get your starter points."
    if isinstance(err, SettingsError):
        lines = [f"{e.field}: {e.message}" for e in err.errors]
        return "\n".join(lines) + "\nSee /settings for your current values and limits."
    code = getattr(err, "code", "")
    if code == "insufficient_points":
        return f"{err.message}. Lower steps, size or batch in /settings, or check /balance."
    if code == "too_many_jobs":
        return f"{err.message}. /status lists them."
    if code == "bad_image":
        return f"{err.message}. Please send another image (PNG, JPEG or WebP)."
    text = err.message
    return text if text.endswith((".", "!", "?")) else text + "."


# ---- gate: rate limit --------------------------------------------------------------------


async def rate_gate(update: Update, context: Ctx) -> None:
    """Per-user rate limit on everything a user sends; polite once per window, then silent."""
    if update.effective_message is None and update.callback_query is None:
        return
    try:
        who = identity(update)  # anonymous admins of different groups are limited apart
    except UserInputError:
        return
    d = deps(context)
    if _training_photo(update, context):
        limiter = d.photo_limiter
    elif _flow_step(update, context):
        limiter = d.flow_limiter
    else:
        limiter = d.limiter
    wait = limiter.check(who)
    if wait <= 0:
        return
    if update.callback_query is not None:
        await update.callback_query.answer(render.rate_limited_text(wait), show_alert=False)
    elif d.limiter.should_warn(who):
        await answer(update, render.rate_limited_text(wait))
    raise ApplicationHandlerStop


FLOW_BUTTONS = ("settings:", "coll:", "train:", "model:")
FLOW_KEYS = (PENDING, "collection_flow", "train_flow")  # user_data keys of pending flows


def _flow_step(update: Update, context: Ctx) -> bool:
    """A step of a guided flow (settings, collections, /train, /models): a tap on its
    buttons, or a typed answer while one waits. A flow takes dozens of these a minute (20
    captions to edit, trait lines, retries), so they count against `flow_limiter`, not the
    command limit; commands and prompts (what starts paid work) keep the tighter one."""
    query = update.callback_query
    if query is not None:
        return (query.data or "").startswith(FLOW_BUTTONS)
    msg = update.effective_message
    data = context.user_data or {}
    return (
        msg is not None
        and bool(msg.text)
        and not (msg.text or "").startswith("/")
        and any(data.get(k) for k in FLOW_KEYS)
    )


def _training_photo(update: Update, context: Ctx) -> bool:
    """A photo for the dataset /train is collecting (training.py's `train_flow`): an album of
    up to MAX_IMAGES must not trip the command limit, so these count against `photo_limiter`."""
    flow = (context.user_data or {}).get("train_flow")
    msg = update.effective_message
    return (
        isinstance(flow, dict)
        and flow.get("step") == "photos"
        and msg is not None
        and bool(msg.photo or msg.document)
    )


# ---- basics ------------------------------------------------------------------------------


async def edited_message(update: Update, context: Ctx) -> None:
    """An edited message: never run again (a new update id, the same request); the sender is
    told, in a private chat or when the message was for this bot, and nothing else runs."""
    msg = update.effective_message
    chat = update.effective_chat
    if msg is not None and chat is not None:
        text = (msg.text or msg.caption or "").strip()
        mention = f"@{context.bot.username}".lower() if context.bot.username else None
        mentioned = mention is not None and mention in text.lower()
        for_me = chat.type == ChatType.PRIVATE or (
            is_group(chat) and (_command_for_me(text, context) or mentioned)
        )
        if for_me:
            await answer(update, EDIT_HINT)
    raise ApplicationHandlerStop


def _command_for_me(text: str, context: Ctx) -> bool:
    """A leading /command addressed to no bot or to this one."""
    if not text.startswith("/"):
        return False
    _, _, bot_name = text.split(maxsplit=1)[0].partition("@")
    return not bot_name or bot_name.lower() == (context.bot.username or "").lower()


async def start(update: Update, context: Ctx) -> None:
    """Register the user (starter grant once) and show a short guide."""
    user, created = await deps(context).jobs.register(identity(update))
    await answer_private(update, context, render.welcome_text(user.points, created))


async def help_cmd(update: Update, context: Ctx) -> None:
    """List the commands."""
    await answer(update, render.help_text())


async def unknown(update: Update, context: Ctx) -> None:
    """An unknown command: say so and show help."""
    msg = update.effective_message
    word = (msg.text or "").split()[0] if msg is not None and msg.text else "that"
    if word.startswith("/") and not _command_for_me(word, context):
        return  # `/cmd@other_bot` is for another bot: not a word from here
    shown = word if len(word) <= 64 else word[:60] + "…"  # the answer must fit 4096 chars
    await answer(update, f"I don't know {shown}.\n\n{render.help_text()}")


# ---- starting jobs -----------------------------------------------------------------------


async def _start_job(
    update: Update,
    context: Ctx,
    kind: str,
    start: Callable[[ReplyTarget], Awaitable[StartedJob]],
) -> None:
    """Send the status message, start the job replying there, and watch it.

    The workflow id comes from the request key (request_keys.py: the chat and message, plus
    the button's data for a tap), so a redelivered update, a second tap of the same button or
    a tap after the job ended finds its job and starts nothing new; the tap is answered
    "already started". Claims close the window where two taps are handled at once.
    """
    d = deps(context)
    chat = update.effective_chat
    query = update.callback_query
    if chat is None:
        return
    key = request_key(update)
    wid = new_job_id(kind, normalise_identity(identity(update)), key)
    if not d.claims.claim(wid) or await _known_job(d, wid):
        log.info("request %s was handled before (%s); not starting it again", key, wid)
        if query is not None:
            await query.answer(ALREADY_STARTED)
        return
    try:
        started = await _start_claimed(update, d, chat, start)
    except BaseException:
        d.claims.release(wid)
        raise
    if not started:
        d.claims.release(wid)  # refused with nothing started: the same tap may try again


async def _known_job(d: BotDeps, wid: str) -> bool:
    try:
        await d.jobs.status(wid)
    except JobNotFound:
        return False
    return True


async def _start_claimed(
    update: Update,
    d: BotDeps,
    chat: Chat,
    start: Callable[[ReplyTarget], Awaitable[StartedJob]],
) -> bool:
    """Status message, start, watch; False if the start was refused (the user was told)."""
    if update.callback_query is not None:
        await update.callback_query.answer()
    msg = update.effective_message
    status_msg = await chat.send_message(
        "⏳ starting…",
        reply_parameters=ReplyParameters(msg.message_id, allow_sending_without_reply=True)
        if msg is not None and update.callback_query is None
        else None,
        message_thread_id=thread_of(update),
    )
    target = ReplyTarget(
        chat_id=str(chat.id),
        message_id=msg.message_id if msg is not None else None,
        status_message_id=status_msg.message_id,
        group_chat=is_group(chat),
        message_thread_id=thread_of(update),
    )
    try:
        started = await start(target)
    except StationError as err:
        await status_msg.edit_text(user_error_text(err))
        return False
    if started.existing:
        await status_msg.edit_text("This request was already handled above.")
        return True
    d.watchers.watch(started.workflow_id, target.chat_id, status_msg.message_id)
    return True


async def _make(update: Update, context: Ctx, prompt: str) -> None:
    who = identity(update)
    group = is_group(update.effective_chat)

    async def go(target: ReplyTarget) -> StartedJob:
        return await deps(context).jobs.start_make(
            MakeImageRequest(
                user=who,
                platform="telegram",
                prompt=prompt,
                overrides={"batch": 1} if group else {},
                reply=target,
                request_id=request_key(update),
            )
        )

    await _start_job(update, context, "make", go)


async def make(update: Update, context: Ctx) -> None:
    """/make PROMPT: start an image."""
    prompt = " ".join(context.args or []).strip()
    if not prompt:
        await answer(update, "Tell me what to make, e.g. /make a red fox in the snow")
        return
    await _make(update, context, prompt)


async def text_message(update: Update, context: Ctx) -> None:
    """Plain text: a typed setting value if one was asked for, else a prompt (private chats,
    or group messages that mention the bot)."""
    msg = update.effective_message
    if msg is None or not msg.text:
        return
    chat = update.effective_chat
    pending = (context.user_data or {}).get(PENDING)
    if pending and chat is not None and pending.get("chat") == chat.id:
        await _typed_setting(update, context, str(pending["field"]), msg.text)
        return
    text = msg.text
    if text.startswith("/"):
        # Telegram marks only ASCII words as commands: "/ЁжикВТумане" arrives as plain text,
        # and a slash word is a mistyped command, never a prompt to charge for.
        if chat is not None and chat.type == ChatType.PRIVATE:
            await unknown(update, context)
        return
    if is_group(chat):
        mention = f"@{context.bot.username}" if context.bot.username else None
        if not mention or mention.lower() not in text.lower():
            return  # groups: only commands and mentions
        text = re.sub(re.escape(mention), " ", text, flags=re.IGNORECASE).strip()
        if not text:
            await answer(update, "Tell me what to make, e.g. /make a red fox in the snow")
            return
    elif chat is None or chat.type != ChatType.PRIVATE:
        return
    elif (await deps(context).jobs.settings(identity(update))).confirm_text_prompts:
        await _confirm_text(update, context, text)
        return
    await _make(update, context, text)


async def _confirm_text(update: Update, context: Ctx, prompt: str) -> None:
    """Plain text is a paid prompt: quote it and wait for one tap ("hi" cost 30 points when
    text started a job by itself). The question replies to the prompt, so the tap reads the
    prompt from there: nothing to keep in memory, and it survives a restart."""
    msg = update.effective_message
    assert msg is not None
    plan = await deps(context).jobs.quote_make(
        MakeImageRequest(user=identity(update), platform="telegram", prompt=prompt)
    )
    await answer(
        update,
        render.text_confirm_text(prompt, plan),
        reply_markup=render.text_confirm_keyboard(plan.price),
        reply_parameters=ReplyParameters(msg.message_id, allow_sending_without_reply=True),
    )


async def text_confirm_button(update: Update, context: Ctx) -> None:
    """`tp:go` under a quoted prompt: make it. Keyed by the question's message and the button
    (request_keys.py), so any number of taps start one job."""
    query = update.callback_query
    assert query is not None
    asked = query.message
    source = asked.reply_to_message if isinstance(asked, Message) else None
    prompt = (source.text or "").strip() if source is not None else ""
    if not prompt:
        await query.answer("I can't see that prompt any more: send it again.", show_alert=True)
        return
    await _make(update, context, prompt)
    try:
        await query.edit_message_reply_markup(None)  # asked and answered
    except TelegramError as err:
        log.info("confirm button not removed (%s)", err)


def media_params(kind: str, args: list[str]) -> dict[str, Any]:
    """Parameters of a media command from its words; the job's own checks do the rest."""
    if kind == "upscale":
        scale = args[0].lower().removeprefix("x").removesuffix("x") if args else "2"
        if scale not in ("2", "4"):
            raise UserInputError(f"upscale by 2 or 4, e.g. /upscale 2 (got {args[0]!r})")
        return {"scale": int(scale)}
    if kind == "resize":
        if len(args) < 2 or not (args[0].isdigit() and args[1].isdigit()):
            raise UserInputError("say the new size, e.g. /resize 512 512 (or add fit|fill|exact)")
        params: dict[str, Any] = {"width": int(args[0]), "height": int(args[1])}
        if len(args) > 2:
            params["mode"] = args[2].lower()
        return params
    if kind == "convert":
        if not args:
            raise UserInputError("say the format, e.g. /convert png (png, jpeg or webp)")
        params = {"format": args[0].lower().replace("jpg", "jpeg")}
        if len(args) > 1:
            if not args[1].isdigit():
                raise UserInputError(f"quality is a number 1 … 100, got {args[1]!r}")
            params["quality"] = int(args[1])
        return params
    return {}


async def _media(update: Update, context: Ctx, kind: str, args: list[str]) -> None:
    msg = update.effective_message
    if msg is None:
        return
    source = msg if (msg.photo or msg.document) else msg.reply_to_message
    if source is None or not (source.photo or source.document):
        await answer(
            update,
            f"Send a photo with /{kind} as its caption, or reply to a photo with /{kind}.",
        )
        return
    params = media_params(kind, args)
    if source.photo:
        file_id, size, name = source.photo[-1].file_id, source.photo[-1].file_size, "photo.jpg"
    else:
        doc = source.document
        assert doc is not None
        if doc.mime_type and not doc.mime_type.startswith("image/"):
            raise UserInputError("that file is not an image: send a photo or an image file")
        file_id, size, name = doc.file_id, doc.file_size, doc.file_name or "image"
    if size and size > MAX_DOWNLOAD:
        raise UserInputError("that file is over 20 MB, more than bots can download: send less")
    d = deps(context)
    who = identity(update)
    tg_file = await context.bot.get_file(file_id)
    data = bytes(await tg_file.download_as_bytearray())
    blob = await d.jobs.store_source(who, data, name)

    async def go(target: ReplyTarget) -> StartedJob:
        return await d.jobs.start_media(
            MediaRequest(
                user=who,
                platform="telegram",
                kind=kind,  # type: ignore[arg-type]
                source_image_id=blob,
                params=params,
                reply=target,
                request_id=request_key(update),
            )
        )

    await _start_job(update, context, kind, go)


def media_command(kind: str) -> Callable[[Update, Ctx], Coroutine[Any, Any, None]]:
    async def handler(update: Update, context: Ctx) -> None:
        """/upscale, /rmbg, /resize, /convert as a reply to a photo."""
        await _media(update, context, kind, list(context.args or []))

    handler.__name__ = f"{kind}_cmd"
    return handler


async def photo_message(update: Update, context: Ctx) -> None:
    """A photo or image document: its caption says what to do with it."""
    msg = update.effective_message
    if msg is None:
        return
    words = (msg.caption or "").split()
    if words and words[0].startswith("/"):
        command, _, bot_name = words[0][1:].partition("@")
        if bot_name and context.bot.username and bot_name.lower() != context.bot.username.lower():
            return  # a command for another bot
        if command.lower() in render.MEDIA_COMMANDS:
            await _media(update, context, command.lower(), words[1:])
            return
        await answer(update, f"I can't do /{command} on a photo.\n\n{render.help_text()}")
        return
    if update.effective_chat is not None and update.effective_chat.type == ChatType.PRIVATE:
        await answer(
            update,
            "What should I do with it? Send it again with /upscale, /rmbg, /resize W H or "
            "/convert FORMAT as caption, or reply to it with one of those.",
        )


async def regen(update: Update, context: Ctx) -> None:
    """/regen [N]: repeat one of the last 5 runs with its seed (buttons without N)."""
    d = deps(context)
    who = identity(update)
    args = context.args or []
    if args:
        if not args[0].isdigit():
            raise UserInputError("say which run, e.g. /regen 1 (or /regen for buttons)")
        await _repeat(update, context, int(args[0]))
        return
    runs = await d.jobs.recent_runs(who, 5)
    await answer_private(
        update, context, render.regen_text(runs), reply_markup=render.regen_keyboard(runs)
    )


async def again(update: Update, context: Ctx) -> None:
    """/again: the last run with a new seed."""
    await _repeat(update, context, None)


async def _repeat(update: Update, context: Ctx, n: int | None) -> None:
    who = identity(update)

    async def go(target: ReplyTarget) -> StartedJob:
        return await deps(context).jobs.start_repeat(
            who, n=n, platform="telegram", reply=target, request_id=request_key(update)
        )

    await _start_job(update, context, "make", go)


# ---- buttons under results and /regen ----------------------------------------------------


async def regen_button(update: Update, context: Ctx) -> None:
    """`regen:<n>` from the /regen list."""
    query = update.callback_query
    assert query is not None and query.data is not None
    await _repeat(update, context, int(query.data.split(":")[1]))  # answers the tap


async def result_button(update: Update, context: Ctx) -> None:
    """Regen / Again / Upscale under a delivered image (`_start_job` answers the tap).

    Regen and Again repeat the job the button sits under (`res:regen:<ref>`: its seed;
    `res:again:<ref>`: a new one), read from that job itself, so they work the moment the image
    arrives and whatever the user ran since. Buttons of older messages (`res:again`, a full
    workflow id) keep working."""
    query = update.callback_query
    assert query is not None and query.data is not None
    d = deps(context)
    who = identity(update)
    _, action, *rest = query.data.split(":", 2)
    if action in ("again", "regen") and rest:
        try:
            wid = await _job_of_button(d, rest[0], who)
            await d.jobs.status(wid, user=normalise_identity(who))
        except JobNotFound:
            await query.answer("That image is not among your jobs any more: see /regen.")
            return
        keep_seed = action == "regen"

        async def repeat(target: ReplyTarget) -> StartedJob:
            return await d.jobs.start_repeat_of(
                who,
                wid,
                keep_seed=keep_seed,
                platform="telegram",
                reply=target,
                request_id=request_key(update),
            )

        await _start_job(update, context, "make", repeat)
    elif action == "again":
        await _repeat(update, context, None)
    elif action == "up" and rest:
        blob = rest[0]

        async def go(target: ReplyTarget) -> StartedJob:
            return await d.jobs.start_media(
                MediaRequest(
                    user=who,
                    platform="telegram",
                    kind="upscale",
                    source_image_id=blob,
                    params={"scale": 2},
                    reply=target,
                    request_id=request_key(update),
                )
            )

        await _start_job(update, context, "upscale", go)
    else:
        await query.answer()


async def _job_of_button(d: BotDeps, ref: str, who: str) -> str:
    """The workflow id a button names: a `job_ref` (resolved with the owner check) or, on
    buttons sent before refs existed, the id itself (checked by the status that follows)."""
    if len(ref) == JOB_REF_LENGTH:
        return await d.jobs.job_by_ref(ref, normalise_identity(who))
    return ref


# ---- settings ----------------------------------------------------------------------------


async def _settings_view(update: Update, context: Ctx) -> tuple[str, Any]:
    d = deps(context)
    who = identity(update)
    user = await d.jobs.user(who)
    limits = await d.jobs.limits(who)
    return render.settings_text(user.settings, limits, user.points), render.settings_keyboard(
        user.settings
    )


async def settings_cmd(update: Update, context: Ctx) -> None:
    """/settings: current values and limits, a button per setting."""
    if context.user_data is not None:
        context.user_data.pop(PENDING, None)
    text, keyboard = await _settings_view(update, context)
    await answer_private(update, context, text, reply_markup=keyboard)


async def _show_settings_in(update: Update, context: Ctx, note: str = "") -> None:
    query = update.callback_query
    assert query is not None
    text, keyboard = await _settings_view(update, context)
    try:
        await query.edit_message_text((note + "\n\n" if note else "") + text, reply_markup=keyboard)
    except BadRequest as err:
        if "not modified" not in err.message.lower():
            raise


async def settings_button(update: Update, context: Ctx) -> None:
    """`settings:*` buttons: pick a setting, a choice, back, reset."""
    query = update.callback_query
    assert query is not None and query.data is not None
    if is_group(update.effective_chat):
        # The presser's values would be shown to the group: settings live in private chats.
        await query.answer("Use /settings in a private chat with me.", show_alert=True)
        return
    d = deps(context)
    who = identity(update)
    parts = query.data.split(":", 3)
    await query.answer()
    if context.user_data is not None:
        context.user_data.pop(PENDING, None)
    if parts[1] == "back":
        await _show_settings_in(update, context)
    elif parts[1] == "reset":
        if len(parts) == 2:
            await query.edit_message_text(
                "Reset every setting to its default? Balance and history are kept.",
                reply_markup=render.reset_confirm_keyboard(),
            )
        elif parts[2] == "yes":
            await d.jobs.reset_settings(who)
            await _show_settings_in(update, context, "✓ settings reset to the defaults")
        else:
            await _show_settings_in(update, context, "Settings kept.")
    elif parts[1] == "set" and len(parts) == 4:
        field, value = parts[2], parts[3]
        try:
            await d.jobs.update_settings(
                who, {field: value}, group_chat=is_group(update.effective_chat)
            )
        except SettingsError as err:
            await _show_settings_in(update, context, user_error_text(err))
            return
        await _show_settings_in(update, context, f"✓ {field} set to {value}")
    elif parts[1] in render.SETTINGS_FIELDS:
        field = parts[1]
        if field in render.CHOICES:
            await query.edit_message_text(
                f"Pick {field}:", reply_markup=render.choice_keyboard(field)
            )
            return
        user = await d.jobs.user(who)
        limits = await d.jobs.limits(who)
        chat = update.effective_chat
        if context.user_data is not None and chat is not None:
            context.user_data[PENDING] = {"field": field, "chat": chat.id}
        await query.edit_message_text(
            render.ask_value_text(field, getattr(user.settings, field), limits, is_group(chat))
        )


async def _typed_setting(update: Update, context: Ctx, field: str, text: str) -> None:
    d = deps(context)
    value = "" if field == "negative" and text.strip() == "-" else text.strip()
    try:
        await d.jobs.update_settings(
            identity(update), {field: value}, group_chat=is_group(update.effective_chat)
        )
    except SettingsError as err:
        await answer(
            update,
            "\n".join(f"{e.field}: {e.message}" for e in err.errors)
            + "\nSend another value, or /settings to go back.",
        )
        return
    if context.user_data is not None:
        context.user_data.pop(PENDING, None)
    text_view, keyboard = await _settings_view(update, context)
    await answer_private(
        update, context, f"✓ {field} set to {value}\n\n{text_view}", reply_markup=keyboard
    )


async def set_cmd(update: Update, context: Ctx) -> None:
    """/set KEY VALUE."""
    args = context.args or []
    if len(args) < 2:
        await answer(update, "Usage: /set KEY VALUE, e.g. /set steps 20. /settings shows them all.")
        return
    field, value = args[0].lower(), " ".join(args[1:])
    await deps(context).jobs.update_settings(
        identity(update), {field: value}, group_chat=is_group(update.effective_chat)
    )
    await answer(update, f"✓ {field} set to {value}")


async def reset_cmd(update: Update, context: Ctx) -> None:
    """/reset: ask before resetting every setting."""
    await answer(
        update,
        "Reset every setting to its default? Balance and history are kept.",
        reply_markup=render.reset_confirm_keyboard(),
    )


# ---- points and jobs ---------------------------------------------------------------------


async def balance(update: Update, context: Ctx) -> None:
    """/balance: points, limits, recent charges and refunds."""
    d = deps(context)
    who = identity(update)
    points, entries = await d.jobs.balance_summary(who, 5)
    limits = await d.jobs.limits(who)
    await answer_private(update, context, render.balance_text(points, limits, entries))


async def status_cmd(update: Update, context: Ctx) -> None:
    """/status: every running job with a Cancel button."""
    statuses = await deps(context).jobs.active(identity(update))
    await answer_private(
        update, context, render.jobs_text(statuses), reply_markup=render.jobs_keyboard(statuses)
    )


async def cancel_cmd(update: Update, context: Ctx) -> None:
    """/cancel: cancel the only running job, or list them with buttons."""
    d = deps(context)
    statuses = [s for s in await d.jobs.active(identity(update)) if s.state.cancellable]
    if len(statuses) != 1:
        await status_cmd(update, context)
        return
    who = normalise_identity(identity(update))
    result = await d.jobs.cancel(statuses[0].workflow_id, reason=f"cancelled by {who}", user=who)
    await answer(update, f"🛑 Cancelled, refunded {result.refund} points.")


async def cancel_button(update: Update, context: Ctx) -> None:
    """`job:cancel:<ref>`: cancel that job (the presser's own only; anyone else's job reads as
    not found, word for word, so a forged button learns nothing). Under /status and under a
    live status message."""
    query = update.callback_query
    assert query is not None and query.data is not None
    d = deps(context)
    who = normalise_identity(identity(update))
    try:  # the presser's own jobs only: another user's id reads as a missing one
        wid = await _job_of_button(d, query.data.split(":", 2)[2], who)
        status = await d.jobs.status(wid, user=who)
    except JobNotFound:
        await query.answer(JOB_NOT_FOUND)
        return
    await query.answer("Cancelling…")
    try:
        result = await d.jobs.cancel(wid, reason=f"cancelled by {who}", user=who)
    except JobNotFound:
        await query.edit_message_text("That job is gone.")
        return
    except NotCancellable as err:
        await query.edit_message_text(f"{err.message}.")
        return
    what = status.prompt or status.settings.get("collection") or status.kind
    await query.edit_message_text(f"🛑 Cancelled {what}: refunded {result.refund} points.")


async def grant(update: Update, context: Ctx) -> None:
    """/grant USER N, for admins in the configuration."""
    d = deps(context)
    who = identity(update)  # an anonymous admin is the group, not a configured admin
    admins = set(d.config.admin_ids)
    if not ({who, who.removeprefix("telegram:")} & admins):
        await unknown(update, context)
        return
    args = context.args or []
    if len(args) != 2 or not args[1].isdigit():
        await answer(update, "Usage: /grant USER N, e.g. /grant 5472638766 100")
        return
    target = args[0] if ":" in args[0] else f"telegram:{args[0]}"
    new_balance = await d.jobs.grant(
        normalise_identity(target),
        int(args[1]),
        by=who,
        key=f"telegram-grant:{request_key(update)}",
    )
    await answer(update, f"✓ granted {args[1]} points to {target}; balance now {new_balance}.")


# ---- errors ------------------------------------------------------------------------------


async def on_error(update: object, context: Ctx) -> None:
    """The one error handler: explainable refusals go to the user, the rest to the log."""
    err = context.error
    upd = update if isinstance(update, Update) else None
    uid = upd.update_id if upd is not None else None
    if isinstance(err, StationError):
        log.info("update %s refused: %s", uid, err.message)
        text = user_error_text(err)
    elif isinstance(err, TelegramError):
        log.warning("update %s: Telegram error %s", uid, err.message)
        return
    else:
        log.error("update %s failed", uid, exc_info=err)
        text = (
            "Sorry, something went wrong on my side. Please try again in a minute; "
            "if it keeps happening, tell the admins."
        )
    if upd is None:
        return
    try:
        if upd.callback_query is not None:
            try:
                await upd.callback_query.answer(text[:200], show_alert=True)
                return
            except TelegramError:
                pass  # answered already: say it in the chat
        await answer(upd, text)
    except TelegramError as send_err:
        log.warning("update %s: could not tell the user (%s)", uid, send_err)
