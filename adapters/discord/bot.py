"""The Discord bot process: the discord.py client plus the `deliver-discord` worker.

The delivery worker runs here because this is the only process holding the bot token; both
share one event loop and one discord.py HTTP client (its rate-limit buckets). The worker starts
once the client has logged in (the REST client the delivery sends with is ready); the gateway
connection runs beside it and reconnects (RESUME) on its own. Stopped by SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import timedelta

from temporalio.worker import Worker

from adapters.discord.client import DiscordSettings, StationThisDiscord, build_client
from adapters.discord.collections import CollectionButton
from adapters.discord.delivery import DiscordDelivery
from adapters.jobs import JobsClient
from adapters.telegram.log_redaction import install_redaction
from workers.config import Config
from workers.devstack import resolve_endpoints
from workers.runtime import connect_temporal, open_stores

log = logging.getLogger(__name__)

GRACE = timedelta(seconds=10)


def settings_from(config: Config) -> DiscordSettings:
    return DiscordSettings(
        api_base=config.discord_api_base,
        gateway_url=config.discord_gateway_url,
        sync_commands=config.discord_sync_commands,
        command_rate=config.discord_command_rate,
        command_window=config.discord_command_window,
    )


async def _reattach_when_ready(client: StationThisDiscord) -> None:
    """Once the gateway is ready, watch the jobs and cooks running before this start."""
    await client.wait_until_ready()
    try:
        await client.watchers.reattach()
        if CollectionButton.handler is not None:
            await CollectionButton.handler.reattach(client)
    except Exception:  # live status is best effort: never stop the bot for it
        log.exception("re-attaching status watchers failed")


async def run_discord_bot(config: Config) -> int:
    """Run until SIGINT/SIGTERM: the slash commands, buttons, live status and delivery.

    Configure logging before: the token is masked in every handler from here on."""
    if config.discord_bot_token is None:
        raise SystemExit("DISCORD_BOT_TOKEN is not set: see adapters/discord/README.md")
    token = config.discord_bot_token.get_secret_value()
    install_redaction(token)
    endpoints = resolve_endpoints(config)
    temporal = await connect_temporal(config, endpoints)
    stores = open_stores(config, endpoints, indexes=False)
    jobs = JobsClient(temporal, stores, config, ui_url=endpoints.temporal_ui_url)
    client = build_client(jobs, settings_from(config))
    delivery = DiscordDelivery(client, jobs, config.discord_upload_limit)
    queue = config.task_queues.deliver("discord")
    worker = Worker(
        temporal,
        task_queue=queue,
        activities=[delivery.deliver_result],
        max_concurrent_activities=16,
        graceful_shutdown_timeout=GRACE,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with client:
            await client.login(token)
            gateway = asyncio.create_task(client.connect(), name="discord gateway")
            worker_task = asyncio.create_task(worker.run(), name="deliver-discord worker")
            log.info("delivery worker polling %s", queue)
            reattach = asyncio.create_task(_reattach_when_ready(client), name="reattach")
            waiter = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait(
                [gateway, worker_task, waiter], return_when=asyncio.FIRST_COMPLETED
            )
            waiter.cancel()
            for task in (gateway, worker_task):
                if task in done:
                    task.result()  # the gateway or the worker died: surface why
            log.info("stopping the Discord bot")
            reattach.cancel()
            await client.watchers.close()
            if worker.is_running:
                await worker.shutdown()
            gateway.cancel()
    finally:
        stores.close()
    return 0
