"""The bot process: the python-telegram-bot Application plus the `deliver-telegram` worker.

The delivery worker runs here because this is the only process holding the bot token. Both
share one event loop and one `Bot`. Updates arrive by long polling (default) or by webhook
(`run_bot(webhook_url=...)`), where a small aiohttp server checks Telegram's secret-token header
(403 otherwise) and queues the update for the Application. On startup the status watchers of
running Telegram jobs are re-attached, so a restart does not freeze their status messages.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import signal
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any
from urllib.parse import urlparse

from aiohttp import web
from telegram import BotCommandScopeAllGroupChats, Update
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ExtBot,
    MessageHandler,
    TypeHandler,
    filters,
)
from temporalio.worker import Worker

from adapters.jobs import JobsClient
from adapters.telegram import apikeys, linking, safety
from adapters.telegram import collections as coll
from adapters.telegram import handlers as h
from adapters.telegram import training as train
from adapters.telegram.delivery import TelegramDelivery
from adapters.telegram.flood import ChatRateLimiter
from adapters.telegram.log_redaction import install_redaction
from adapters.telegram.ratelimit import EditPacer, RateLimiter
from adapters.telegram.render import MEDIA_COMMANDS, bot_commands
from adapters.telegram.status_watch import StatusWatchers
from workers.config import Config
from workers.devstack import resolve_endpoints
from workers.runtime import connect_temporal, open_stores

log = logging.getLogger(__name__)

GRACE = timedelta(seconds=10)


class TolerantBot(ExtBot[int]):
    """An ExtBot that survives an update it cannot parse.

    python-telegram-bot parses a getUpdates batch as a whole: one update it cannot read (a new
    Bot API field, a malformed object) fails the batch, the offset never moves past it, and the
    bot ignores every later update from every user (found by tests/fuzz). Here each update is
    parsed on its own; one that fails is logged by id and replaced by an empty update with the
    same id, which no handler matches and which moves the offset on.
    """

    async def _post(self, endpoint: str, *args: Any, **kwargs: Any) -> Any:
        result = await super()._post(endpoint, *args, **kwargs)
        if endpoint != "getUpdates" or not isinstance(result, list):
            return result
        readable: list[Any] = []
        for raw in result:
            try:
                Update.de_json(raw, self)
                readable.append(raw)
            except Exception:
                update_id = raw.get("update_id") if isinstance(raw, dict) else None
                log.warning("dropped update %s: python-telegram-bot cannot parse it", update_id)
                if isinstance(update_id, int):
                    readable.append({"update_id": update_id})
        return readable


def build_application(config: Config, jobs: JobsClient, pacer: EditPacer) -> Application:
    """The Application with every handler registered and its dependencies in bot_data."""
    if config.telegram_bot_token is None:
        raise SystemExit("TELEGRAM_BOT_TOKEN is not set: get a token from @BotFather")
    # The one sender: every call of the bot, its handlers, watchers and the delivery worker
    # passes this limiter (Telegram's flood limits, 429 retried after retry_after; flood.py).
    bot = TolerantBot(
        config.telegram_bot_token.get_secret_value(),
        base_url=config.telegram_base_url,
        base_file_url=config.telegram_base_file_url,
        rate_limiter=ChatRateLimiter(),
    )
    app = ApplicationBuilder().bot(bot).concurrent_updates(16).build()
    watchers = StatusWatchers(app.bot, jobs, pacer)
    limiter = RateLimiter(config.telegram_command_rate, config.telegram_command_window)
    app.bot_data["deps"] = h.BotDeps(jobs=jobs, config=config, watchers=watchers, limiter=limiter)

    # Gates before every handler, in this order: the rate limit (group -2), then edited
    # messages (-1): PTB's CommandHandler and MessageHandler match `edited_message` too, so
    # this one place keeps every command, prompt and flow step from running a second time.
    app.add_handler(TypeHandler(Update, h.rate_gate), group=-2)
    app.add_handler(MessageHandler(filters.UpdateType.EDITED, h.edited_message), group=-1)
    app.add_handler(CallbackQueryHandler(h.menu_owner_gate), group=-1)  # groups: own menus
    commands: dict[str, Callable[[Update, h.Ctx], Coroutine[Any, Any, None]]] = {
        "start": h.start,
        "help": h.help_cmd,
        "make": h.make,
        "settings": h.settings_cmd,
        "set": h.set_cmd,
        "reset": h.reset_cmd,
        "balance": h.balance,
        "status": h.status_cmd,
        "cancel": h.cancel_cmd,
        "regen": h.regen,
        "again": h.again,
        "grant": h.grant,
    }
    for kind in MEDIA_COMMANDS:
        commands[kind] = h.media_command(kind)
    for name, callback in commands.items():
        app.add_handler(CommandHandler(name, callback))
    coll.register(app)  # /collections, /traits; its flow text before generic text
    train.register(app)  # /train, /models; its flow photos and text before the generic ones
    safety.register(app)  # /safety: this chat's content filter
    apikeys.register(app)  # /apikey: HTTP API keys, private chats only
    linking.register(app)  # /login, /link: one account on every platform
    app.add_handler(MessageHandler(filters.PHOTO | filters.Document.IMAGE, h.photo_message))
    app.add_handler(MessageHandler(filters.COMMAND, h.unknown))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, h.text_message))
    app.add_handler(CallbackQueryHandler(h.settings_button, pattern=r"^settings:"))
    app.add_handler(CallbackQueryHandler(h.cancel_button, pattern=r"^job:cancel:"))
    app.add_handler(CallbackQueryHandler(h.regen_button, pattern=r"^regen:\d+$"))
    app.add_handler(CallbackQueryHandler(h.result_button, pattern=r"^res:"))
    app.add_handler(CallbackQueryHandler(h.text_confirm_button, pattern=r"^tp:go$"))
    app.add_error_handler(h.on_error)
    return app


SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


async def start_webhook(
    app: Application, config: Config, webhook_url: str, listen_port: int | None, secret: str
) -> web.AppRunner:
    """Serve Telegram's webhook POSTs and tell Telegram where they go.

    PTB's own webhook server needs tornado (the `webhooks` extra), which is not a dependency;
    this is PTB's documented custom-webhook pattern on aiohttp instead: check the secret
    header (403 otherwise), put the update on the Application's queue and answer at once,
    so Telegram never waits for a job to start.
    """
    path = "/" + (urlparse(webhook_url).path.strip("/") or "telegram")

    async def receive(request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), secret.encode()):
            log.warning("webhook request with a wrong or missing secret token refused")
            return web.Response(status=403, text="forbidden")
        # An update the bot cannot read is answered 200 and dropped (logged by id): any other
        # answer makes Telegram send it again and again, holding back every later update.
        data: Any = None
        try:
            data = await request.json()
            update = Update.de_json(data, app.bot)
        except Exception:
            update_id = data.get("update_id") if isinstance(data, dict) else None
            log.warning("dropped webhook update %s: python-telegram-bot cannot parse it", update_id)
            return web.Response(text="dropped")
        if update is None:
            log.warning("dropped an empty webhook update")
            return web.Response(text="dropped")
        await app.update_queue.put(update)
        return web.Response(text="ok")

    server = web.Application()
    server.router.add_post(path, receive)
    runner = web.AppRunner(server, access_log=None)
    await runner.setup()
    port = listen_port or config.telegram_webhook_port
    await web.TCPSite(runner, config.telegram_webhook_listen, port).start()
    await app.bot.set_webhook(webhook_url, secret_token=secret, allowed_updates=Update.ALL_TYPES)
    log.info("webhook server on %s:%d%s", config.telegram_webhook_listen, port, path)
    return runner


def webhook_secret(config: Config) -> str:
    """The configured secret, or a fresh one for this run (Telegram is told it by setWebhook)."""
    if config.telegram_webhook_secret is not None:
        return config.telegram_webhook_secret.get_secret_value()
    log.info("no TELEGRAM_WEBHOOK_SECRET configured: generated one for this run")
    return secrets.token_urlsafe(32)


async def run_bot(
    config: Config, *, webhook_url: str | None = None, listen_port: int | None = None
) -> int:
    """Run until SIGINT/SIGTERM: handlers, the delivery worker and the status watchers.

    Configure logging before: the bot token and webhook secret are masked in every handler
    from here on (log_redaction.py)."""
    token = config.telegram_bot_token
    redactor = install_redaction(token.get_secret_value() if token is not None else None)
    secret = webhook_secret(config) if webhook_url else None
    if secret is not None:
        redactor.add(secret)
    endpoints = resolve_endpoints(config)
    temporal = await connect_temporal(config, endpoints)
    stores = open_stores(config, endpoints, indexes=False)
    jobs = JobsClient(temporal, stores, config, ui_url=endpoints.temporal_ui_url)
    pacer = EditPacer()
    app = build_application(config, jobs, pacer)
    deps: h.BotDeps = app.bot_data["deps"]
    delivery = TelegramDelivery(app.bot, jobs, pacer)
    worker = Worker(
        temporal,
        task_queue=config.task_queues.deliver("telegram"),
        activities=[delivery.deliver_result],
        max_concurrent_activities=16,
        graceful_shutdown_timeout=GRACE,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    webhook: web.AppRunner | None = None
    try:
        async with app:
            await app.bot.set_my_commands(bot_commands())
            await app.bot.set_my_commands(
                bot_commands(group=True), scope=BotCommandScopeAllGroupChats()
            )
            await app.start()
            try:
                if webhook_url and secret is not None:
                    webhook = await start_webhook(app, config, webhook_url, listen_port, secret)
                else:
                    assert app.updater is not None
                    await app.updater.start_polling(allowed_updates=Update.ALL_TYPES)
                    log.info("polling for updates")
                worker_task = asyncio.create_task(worker.run(), name="deliver-telegram worker")
                log.info("delivery worker polling %s", config.task_queues.deliver("telegram"))
                await deps.watchers.reattach()
                waiter = asyncio.create_task(stop.wait())
                done, _ = await asyncio.wait(
                    [worker_task, waiter], return_when=asyncio.FIRST_COMPLETED
                )
                waiter.cancel()
                if worker_task in done:
                    worker_task.result()  # the worker died: surface why
                log.info("stopping the bot")
            finally:
                if webhook is not None:
                    await webhook.cleanup()
                if app.updater is not None and app.updater.running:
                    await app.updater.stop()
                await app.stop()
                await deps.watchers.close()
                await coll.close(app)
                if worker.is_running:
                    await worker.shutdown()
    finally:
        stores.close()
    return 0
