"""Telegram /collections and /traits: design a collection, cook it, review and export it.

Handlers stay thin (parse → jobs client → render): every rule lives in domain/ and store/, and
the jobs client is the only way in. Two pieces of chat state live here:

* The guided flow (name → description → master prompt → supply → the values of each trait type
  the prompt names) is a small state machine in `context.user_data[FLOW]`, bound to the chat
  where it started. Its text handler is registered before the bot's generic text handler and
  only matches while a flow is pending (`FlowPending`), so prompts and typed settings keep
  working otherwise. The collection is created at the supply step *without* the master prompt,
  whose slots name trait types that do not exist yet (the store refuses unknown traits); the
  prompt is set once the last trait type has values.
* The live cook message is edited by one `CookWatchers` task per message, paced by the bot's
  shared `EditPacer` (at most one edit per message every 2 s), with Pause/Resume/Cancel buttons
  while the cook runs and Review/Export once it has ended. Watchers are in-process: after a bot
  restart the cook carries on (it is a workflow) and 📊 Status opens a new live message.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from telegram import Bot, Message, Update
from telegram.error import BadRequest, Forbidden, NetworkError, TelegramError
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    MessageHandler,
    filters,
)

from adapters.jobs import JobsClient
from adapters.telegram import render
from adapters.telegram.handlers import (
    PENDING,
    Ctx,
    answer,
    answer_private,
    ask,
    deps,
    identity,
    thread_of,
    user_error_text,
)
from adapters.telegram.ratelimit import EditPacer
from domain.collections import MAX_SUPPLY, CollectionConfig, CookProgress, parse_master_prompt
from domain.errors import StationError, UserInputError
from domain.jobs import StoredOutput

log = logging.getLogger(__name__)

FLOW = "collection_flow"  # context.user_data key of the pending guided step
WATCHERS = "cook_watchers"  # application.bot_data key of the CookWatchers
REVIEW_PAGE = 10  # pieces sent per Review tap
EXPORT_MAX_BYTES = 50 * 1024 * 1024
"""The largest file a bot may send (Bot API "Sending files": 50 MB for other files)."""
POLL = 1.0


# ---- wiring --------------------------------------------------------------------------------


class FlowPending(filters.MessageFilter):
    """Matches a text message while its sender has a guided step pending in that chat."""

    def __init__(self, app: Application) -> None:
        super().__init__(name="FlowPending")
        self.app = app

    def filter(self, message: Message) -> bool:
        user = message.from_user
        if user is None:
            return False
        data = self.app.user_data.get(user.id)
        flow = data.get(FLOW) if data else None
        return isinstance(flow, dict) and flow.get("chat") == message.chat.id


def register(app: Application) -> None:
    """Add the collection handlers; call before the bot's generic text handler."""
    app.add_handler(CommandHandler("collections", collections_cmd))
    app.add_handler(CommandHandler("traits", traits_cmd))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND & FlowPending(app), flow_text))
    app.add_handler(CallbackQueryHandler(button, pattern=r"^coll:"))


async def close(app: Application) -> None:
    """Stop the live cook messages (the cooks themselves go on)."""
    watchers: CookWatchers | None = app.bot_data.get(WATCHERS)
    if watchers is not None:
        await watchers.close()


def watchers_of(context: Ctx) -> CookWatchers:
    found: CookWatchers | None = context.application.bot_data.get(WATCHERS)
    if found is None:
        d = deps(context)
        found = CookWatchers(context.bot, d.jobs, d.watchers.pacer)
        context.application.bot_data[WATCHERS] = found
    return found


# ---- errors the user reads -----------------------------------------------------------------


def error_text(err: StationError, retry: str = "") -> str:
    """The refusal plus what to do next (`retry` says how to try this step again)."""
    text = user_error_text(err)
    code = getattr(err, "code", "")
    if code == "collection_not_found":
        return f"{text} /collections lists yours."
    if code == "invalid_collection" and "unknown trait" in err.message:
        text += " Give that trait type values first (/traits COLLECTION TRAIT), or fix the name."
    elif code == "invalid_collection" and "combinations" in err.message:
        text += " Use /traits to add values."
    return f"{text} {retry}".strip()


Handler = Callable[[Update, Ctx], Coroutine[Any, Any, None]]


def _explained(handler: Handler) -> Handler:
    """Refusals of a collection command are worded here, with the collection-specific next
    step; anything else still reaches the bot's one error handler."""

    @functools.wraps(handler)
    async def wrapper(update: Update, context: Ctx) -> None:
        try:
            await handler(update, context)
        except StationError as err:
            log.info("update %s refused: %s", update.update_id, err.message)
            await answer(update, error_text(err))

    return wrapper


# ---- /collections and the guided flow ------------------------------------------------------


def _start_flow(context: Ctx, chat_id: int, step: str, **data: Any) -> None:
    if context.user_data is None:
        return
    context.user_data.pop(PENDING, None)  # a typed setting no longer waits
    context.user_data[FLOW] = {"chat": chat_id, "step": step, **data}


def _end_flow(context: Ctx) -> None:
    if context.user_data is not None:
        context.user_data.pop(FLOW, None)


@_explained
async def collections_cmd(update: Update, context: Ctx) -> None:
    """/collections [new | COLLECTION]: list, start the guided creation, or open one."""
    _end_flow(context)
    args = context.args or []
    if args and args[0].lower() == "new":
        await _ask_name(update, context)
        return
    if args:
        await _show(update, context, args[0])
        return
    cols = await deps(context).jobs.collections(identity(update))
    await answer_private(
        update,
        context,
        render.collections_text(cols),
        reply_markup=render.collections_keyboard(cols),
    )


async def _ask_name(update: Update, context: Ctx) -> None:
    chat = update.effective_chat
    if chat is None:
        return
    await deps(context).jobs.user(identity(update))  # unknown users are told to /start first
    _start_flow(context, chat.id, "name")
    await ask(
        update, "New collection (1/4): what is its name? (send /collections to stop at any step)"
    )


async def _show(update: Update, context: Ctx, cid: str, note: str = "") -> None:
    d = deps(context)
    who = identity(update)
    col = await d.jobs.collection(cid, who)
    counts = Counter(str(p.state) for p in await d.jobs.collection_pieces(cid, who))
    text = render.collection_text(col, counts)
    await answer(
        update,
        f"{note}\n\n{text}" if note else text,
        reply_markup=render.collection_keyboard(col, counts),
    )


@_explained
async def traits_cmd(update: Update, context: Ctx) -> None:
    """/traits COLLECTION TRAIT [value lines]: set one trait type's values."""
    msg = update.effective_message
    chat = update.effective_chat
    if msg is None or chat is None:
        return
    first, _, rest = (msg.text or "").partition("\n")
    words = first.split()[1:]
    if len(words) < 2:
        await answer(
            update,
            "Usage: /traits COLLECTION TRAIT, then send the values "
            f"{render.TRAIT_LINES_HELP}\n/collections shows your collection ids.",
        )
        return
    cid, trait = words[0], " ".join(words[1:])
    await deps(context).jobs.collection(cid, identity(update))  # not found: say so now
    if rest.strip():
        _start_flow(context, chat.id, "trait", cid=cid, traits=[trait], prompt=None)
        await _flow_trait(update, context, rest)
        return
    _start_flow(context, chat.id, "trait", cid=cid, traits=[trait], prompt=None)
    await ask(update, f"Send the values of [[{trait}]]: {render.TRAIT_LINES_HELP}")


@_explained
async def flow_text(update: Update, context: Ctx) -> None:
    """A typed answer to the pending guided step."""
    msg = update.effective_message
    flow = (context.user_data or {}).get(FLOW)
    if msg is None or not msg.text or not flow:
        return
    text = msg.text.strip()
    step = flow["step"]
    if step == "name":
        flow.update(step="description", name=text[:100])
        await ask(update, "(2/4) Describe it in a sentence (send - to skip).")
    elif step == "description":
        flow.update(step="prompt", description="" if text == "-" else text[:1000])
        await ask(
            update,
            "(3/4) The master prompt, with a [[Trait]] slot for each trait type, e.g.\n"
            "a [[Fur]] fox [wearing [[Hat]]] in the snow\n"
            "([text [[Trait]]] is left out when the trait is empty.)",
        )
    elif step == "prompt":
        try:
            traits = parse_master_prompt(text).traits()
        except StationError as err:
            await ask(update, error_text(err, "Send the master prompt again."))
            return
        if not traits:
            await ask(
                update, "Put at least one [[Trait]] slot in it, e.g. a [[Fur]] fox. Send it again."
            )
            return
        flow.update(step="supply", prompt=text, slots=traits)
        await ask(update, f"(4/4) How many pieces should it have? (1 … {MAX_SUPPLY})")
    elif step == "supply":
        await _flow_supply(update, context, flow, text)
    elif step in ("trait", "trait_name"):
        if step == "trait_name":
            flow.update(step="trait", traits=[text.strip("[] ")])
            await ask(
                update, f"Send the values of [[{text.strip('[] ')}]]: {render.TRAIT_LINES_HELP}"
            )
            return
        await _flow_trait(update, context, msg.text)
    elif step == "prompt_edit":
        try:
            await deps(context).jobs.edit_collection(
                flow["cid"], identity(update), {"master_prompt": text}
            )
        except StationError as err:
            await ask(update, error_text(err, "Send the master prompt again."))
            return
        _end_flow(context)
        await _show(update, context, flow["cid"], "✓ master prompt set")


async def _flow_supply(update: Update, context: Ctx, flow: dict[str, Any], text: str) -> None:
    if not text.isdigit() or not 1 <= int(text) <= MAX_SUPPLY:
        await ask(update, f"The supply is a whole number from 1 to {MAX_SUPPLY}: send it again.")
        return
    col = await deps(context).jobs.create_collection(
        identity(update),
        flow["name"],
        description=flow.get("description", ""),
        supply=int(text),
        config=CollectionConfig(),
    )
    slots: list[str] = flow["slots"]
    flow.update(step="trait", cid=col.id, traits=slots)
    await ask(
        update,
        f"✓ created {col.name} ({col.id}). Now the values of each trait type "
        f"({', '.join(slots)}).\nSend the values of [[{slots[0]}]]: {render.TRAIT_LINES_HELP}",
    )


async def _flow_trait(update: Update, context: Ctx, lines: str) -> None:
    """Values for the first trait type still to do; then the next, or the finished collection."""
    flow = (context.user_data or {}).get(FLOW)
    if not flow:
        return
    d = deps(context)
    who = identity(update)
    cid: str = flow["cid"]
    todo: list[str] = flow["traits"]
    try:
        col = await d.jobs.set_traits(cid, who, todo[0], lines)
    except StationError as err:
        await ask(update, error_text(err, f"Send the values of [[{todo[0]}]] again."))
        return
    saved = col.config.trait(todo[0])
    values = len(saved.values) if saved is not None else 0
    done = f"✓ [[{todo[0]}]]: {values} values"
    flow["traits"] = todo = todo[1:]
    if todo:
        await ask(update, f"{done}\nSend the values of [[{todo[0]}]]: {render.TRAIT_LINES_HELP}")
        return
    _end_flow(context)
    note = done
    if flow.get("prompt"):
        try:
            await d.jobs.edit_collection(cid, who, {"master_prompt": flow["prompt"]})
            note += "\n✓ master prompt set: ready to cook"
        except StationError as err:
            note += "\n" + error_text(err, "Tap ✏️ prompt to set it again.")
    await _show(update, context, cid, note)


# ---- buttons -------------------------------------------------------------------------------


async def button(update: Update, context: Ctx) -> None:
    """Every `coll:*` button: answer the query first, then act; refusals go to the chat."""
    query = update.callback_query
    if query is None or query.data is None:
        return
    parts = query.data.split(":")
    action = parts[1] if len(parts) > 1 else ""
    await query.answer()
    try:
        await _button(update, context, action, parts[2:])
    except StationError as err:
        await answer(update, error_text(err))


async def _button(update: Update, context: Ctx, action: str, args: list[str]) -> None:
    d = deps(context)
    who = identity(update)
    query = update.callback_query
    chat = update.effective_chat
    assert query is not None
    if chat is None:
        return
    if action == "new":
        await _ask_name(update, context)
        return
    if not args:
        raise UserInputError("that button is out of date: send /collections again")
    cid = args[-1] if action == "ctl" else args[0]
    if action == "show":
        await _show(update, context, cid)
    elif action == "trait" and len(args) == 2 and args[1].isdigit():
        col = await d.jobs.collection(cid, who)
        i = int(args[1])
        if i >= len(col.config.traits):
            raise UserInputError("that trait type is gone: send /collections again")
        trait = col.config.traits[i]
        _start_flow(context, chat.id, "trait", cid=cid, traits=[trait.name], prompt=None)
        await ask(
            update,
            f"Send the new values of [[{trait.name}]] (they replace the current ones): "
            f"{render.TRAIT_LINES_HELP}",
        )
    elif action == "addtrait":
        await d.jobs.collection(cid, who)
        _start_flow(context, chat.id, "trait_name", cid=cid, prompt=None)
        await ask(update, "Name of the new trait type? (then put [[NAME]] in the prompt)")
    elif action == "prompt":
        col = await d.jobs.collection(cid, who)
        _start_flow(context, chat.id, "prompt_edit", cid=cid)
        await ask(
            update,
            f"Send the new master prompt (now: {col.config.master_prompt or 'not set'}). "
            f"Trait types: {', '.join(t.name for t in col.config.traits) or 'none yet'}.",
        )
    elif action == "cook":
        quote = await d.jobs.quote_cook(cid, who)
        col = await d.jobs.collection(cid, who)
        if quote.pieces == 0:
            await answer(update, f"Every piece of {col.name} is made: tap Review or Export.")
            return
        await answer(
            update,
            render.cook_quote_text(
                col.name, quote.pieces, quote.piece_price, quote.total, quote.balance
            ),
            reply_markup=render.cook_confirm_keyboard(cid, quote.total),
        )
    elif action == "keep":
        await query.edit_message_text("Not cooked. /collections when you are ready.")
    elif action == "go":
        await _go(update, context, cid)
    elif action == "ctl" and len(args) == 2:
        reason = "cancelled in Telegram" if args[0] == "cancel" else ""
        progress = await d.jobs.control_cook(cid, who, args[0], reason=reason)
        msg = query.message
        if msg is not None:
            col = await d.jobs.collection(cid, who)
            watchers_of(context).watch(cid, who, col.name, str(chat.id), msg.message_id)
        log.info("cook of %s: %s by %s -> %s", cid, args[0], who, progress.state.value)
    elif action == "status":
        col = await d.jobs.collection(cid, who)
        progress = await d.jobs.cook_progress(cid, who)
        sent = await answer(
            update,
            render.cook_text(col.name, progress),
            reply_markup=render.cook_keyboard(cid, progress),
        )
        if sent is not None and not progress.state.final:
            watchers_of(context).watch(cid, who, col.name, str(chat.id), sent.message_id)
    elif action == "review":
        await _review(update, context, cid)
    elif action in ("ok", "no") and len(args) == 2 and args[1].isdigit():
        verdict = "approved" if action == "ok" else "rejected"
        [piece] = await d.jobs.review_pieces(cid, who, [int(args[1])], verdict)
        try:
            await query.edit_message_caption(
                render.piece_caption(piece), reply_markup=render.piece_keyboard(cid, piece)
            )
        except BadRequest as err:
            if "not modified" not in err.message.lower():
                raise
    elif action == "export":
        await chat.send_action("upload_document")
        col = await d.jobs.collection(cid, who)
        export = await d.jobs.export_collection(cid, who)
        if len(export.data) > EXPORT_MAX_BYTES:
            await answer(update, _export_too_big(col.name, cid, who, len(export.data)))
            return
        try:
            await chat.send_document(
                export.data,
                filename=f"{col.name[:40]}-{cid}.zip".replace(" ", "_"),
                caption=render.export_caption(col.name, export.summary),
                message_thread_id=thread_of(update),
            )
        except NetworkError as err:
            # PTB reports Telegram's HTTP 413 as a NetworkError, not a BadRequest.
            if "too large" not in str(err).lower() and "413" not in str(err):
                raise
            log.info("export of %s refused by Telegram as too large (%s)", cid, err)
            await answer(update, _export_too_big(col.name, cid, who, len(export.data)))
    else:
        raise UserInputError("that button is out of date: send /collections again")


async def _go(update: Update, context: Ctx, cid: str) -> None:
    """The confirmed cook: start it and turn the confirm message into its live status."""
    d = deps(context)
    who = identity(update)
    query = update.callback_query
    chat = update.effective_chat
    assert query is not None and chat is not None
    col = await d.jobs.collection(cid, who)
    try:
        started = await d.jobs.start_cook(cid, who, platform="telegram")
    except StationError as err:
        await query.edit_message_text(error_text(err))
        return
    log.info("cook %s started by %s", started.workflow_id, who)
    msg = query.message
    if msg is None:
        return
    pacer = d.watchers.pacer
    async with pacer.lock(str(chat.id), msg.message_id):
        await query.edit_message_text(
            f"🍳 {col.name}: cooking {col.supply} pieces…",
            reply_markup=render.cook_keyboard(cid, CookProgress(supply=col.supply)),
        )
        pacer.mark(str(chat.id), msg.message_id)
    watchers_of(context).watch(cid, who, col.name, str(chat.id), msg.message_id)


async def _review(update: Update, context: Ctx, cid: str) -> None:
    """Send the next pending pieces as photos, each with Approve / Reject, then a footer."""
    d = deps(context)
    who = identity(update)
    chat = update.effective_chat
    assert chat is not None
    pending = await d.jobs.collection_pieces(cid, who, states=["pending_review"])
    if not pending:
        counts = Counter(str(p.state) for p in await d.jobs.collection_pieces(cid, who))
        await answer(
            update,
            "Nothing waits for review ("
            + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no pieces yet")
            + "). Cook first, or tap Export for the approved ones.",
            reply_markup=render.review_footer_keyboard(cid, more=False),
        )
        return
    page = [p for p in pending if p.blob_id][:REVIEW_PAGE]
    for piece in page:
        assert piece.blob_id is not None
        data = await asyncio.to_thread(d.jobs.image, StoredOutput(blob_id=piece.blob_id))
        await chat.send_photo(
            data,
            caption=render.piece_caption(piece),
            reply_markup=render.piece_keyboard(cid, piece),
            message_thread_id=thread_of(update),
        )
    await answer(
        update,
        render.review_footer_text(len(page), len(pending)),
        reply_markup=render.review_footer_keyboard(cid, more=len(pending) > len(page)),
    )


def _export_too_big(name: str, cid: str, who: str, size: int) -> str:
    """Telegram takes files of at most 50 MB from bots: say so, and how to get it anyway."""
    return (
        f"The export of {name} ({size / 1024 / 1024:.1f} MB) is too large for Telegram, which "
        "takes files of at most 50 MB from bots. It is kept for you: get it with\n"
        f"stationthis collection export {cid} --user {who} --out {cid}.zip\n"
        "or reject some pieces and export a smaller part here."
    )


# ---- the live cook message -----------------------------------------------------------------


class CookWatchers:
    """One task per live cook message, kept by (chat, message) (no fire-and-forget tasks)."""

    def __init__(self, bot: Bot, jobs: JobsClient, pacer: EditPacer) -> None:
        self.bot = bot
        self.jobs = jobs
        self.pacer = pacer
        self._tasks: dict[tuple[str, int], asyncio.Task[None]] = {}

    def watch(self, cid: str, user: str, name: str, chat_id: str, message_id: int) -> None:
        key = (chat_id, message_id)
        if key in self._tasks and not self._tasks[key].done():
            return
        task = asyncio.create_task(
            self._run(cid, user, name, chat_id, message_id), name=f"cook watch {cid}"
        )
        self._tasks[key] = task
        task.add_done_callback(lambda t: self._done(key, t))

    def _done(self, key: tuple[str, int], task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled() and task.exception() is not None:
            log.warning("cook watcher %s ended with %r", key, task.exception())

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, cid: str, user: str, name: str, chat_id: str, message_id: int) -> None:
        shown: str | None = None
        failures = 0
        while True:
            try:
                progress: CookProgress = await self.jobs.cook_progress(cid, user)
                failures = 0
            except Exception as err:  # a query can fail while the server restarts: try again
                failures += 1
                if failures > 30:
                    log.warning("cook watcher of %s gives up: %r", cid, err)
                    return
                await asyncio.sleep(POLL)
                continue
            text = render.cook_text(name, progress)
            final = progress.state.final
            if text != shown:
                if final:
                    await self.pacer.wait(chat_id, message_id)  # the last word is never skipped
                if self.pacer.ready_in(chat_id, message_id) == 0:
                    result = await self._edit(chat_id, message_id, text, cid, progress)
                    if result is None:
                        return  # the message is gone or the bot was blocked
                    if result:
                        shown = text
            if final and shown == text:
                return
            await asyncio.sleep(POLL)

    async def _edit(
        self, chat_id: str, message_id: int, text: str, cid: str, progress: CookProgress
    ) -> bool | None:
        """Edit once (paced); True if shown, False to retry later, None to stop watching."""
        async with self.pacer.lock(chat_id, message_id):
            try:
                await self.bot.edit_message_text(
                    text,
                    chat_id=chat_id,
                    message_id=message_id,
                    reply_markup=render.cook_keyboard(cid, progress),
                )
                return True
            except BadRequest as err:
                if "not modified" in err.message.lower():
                    return True
                log.info("cook message of %s gone (%s)", cid, err.message)
                return None
            except Forbidden:
                return None
            except TelegramError as err:  # RetryAfter too, after the limiter's own retries
                log.info("cook message edit of %s failed (%s); will retry", cid, err)
                return False
            finally:
                self.pacer.mark(chat_id, message_id)
