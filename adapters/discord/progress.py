"""Live progress: one task per running job edits the job's deferred response as it moves.

The "thinking" message a command deferred is the job's status: the watcher polls the job's
status query and edits that message (through the interaction's webhook token) when the text
changed, at most once per `MIN_EDIT_GAP`, with a Cancel button while the job can be cancelled.
It stops once the job is delivering or final: the result arrives from the `deliver-discord`
queue as a new message (delivery.py).

An interaction token lasts 15 minutes; a longer job (a big upscale in a queue, a training run)
would lose its status. When an edit is refused for the token (401 50027 Invalid Webhook Token,
or 404 10015 Unknown Webhook) — or the token is older than `TOKEN_SAFE_AGE` — the watcher posts
one channel message with the bot's own token and edits that from then on. A 429 that
discord.py did not retry itself (no `Via` header) waits `retry_after` and tries again; edits
are best effort and never fail a job. After a restart the interaction tokens are gone (kept
nowhere): `reattach` watches every running Discord job again, its status going on in a new
channel message, read from the job's own reply target.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import discord

from adapters.discord.views import status_view
from adapters.telegram.render import status_text
from domain.errors import StationError
from domain.jobs import JobState, JobStatus

log = logging.getLogger(__name__)

POLL = 0.5
MIN_EDIT_GAP = 1.0
TOKEN_SAFE_AGE = 14 * 60.0  # seconds: Discord's tokens last 15 minutes
EXPIRED_TOKEN_CODES = frozenset({50027, 10015})
MAX_MISSES = 40


def token_expired(err: discord.HTTPException) -> bool:
    return err.code in EXPIRED_TOKEN_CODES or err.status == 401


def retry_after(err: discord.HTTPException) -> float:
    """The wait a 429 asks for (header, else body), at least a little."""
    headers: Any = getattr(err.response, "headers", {}) or {}
    try:
        return max(0.2, float(headers.get("Retry-After", 1.0)))
    except (TypeError, ValueError):
        return 1.0


class StatusMessage:
    """Where a job's status is shown: the interaction's response, then a channel message."""

    def __init__(
        self,
        client: discord.Client,
        interaction: discord.Interaction | None,
        channel_id: int | None = None,
    ) -> None:
        self.client = client
        self.interaction = interaction
        self.channel_id = channel_id or (interaction.channel_id if interaction else None) or 0
        self.started = time.monotonic()
        self.channel_message: discord.Message | None = None

    async def show(self, text: str, view: discord.ui.View | None) -> None:
        fresh = time.monotonic() - self.started < TOKEN_SAFE_AGE
        if self.interaction is not None and self.channel_message is None and fresh:
            try:
                await self.interaction.edit_original_response(content=text, view=view)
                return
            except discord.HTTPException as err:
                if not token_expired(err):
                    raise
                log.info("interaction token of a status expired: following up in the channel")
        if self.channel_message is None:
            channel = self.client.get_partial_messageable(self.channel_id)
            kwargs: dict[str, Any] = {"view": view} if view is not None else {}
            self.channel_message = await channel.send(text, **kwargs)
            return
        await self.channel_message.edit(content=text, view=view)


class KeyedTasks:
    """At most one running task per key (a job's or a cook's status watcher), kept until it
    ends and cancelled on close: no fire-and-forget tasks."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, key: str, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Start `run()` for `key` unless a task for it still runs."""
        old = self._tasks.get(key)
        if old is not None and not old.done():
            return
        task = asyncio.create_task(run(), name=f"{self.what} {key}")
        self._tasks[key] = task
        task.add_done_callback(lambda t: self._done(key, t))

    def _done(self, key: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s of %s ended with %r", self.what, key, task.exception())

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class ProgressWatchers:
    """The running watcher tasks, kept by workflow id."""

    def __init__(self, client: discord.Client, jobs: Any) -> None:
        self.client = client
        self.jobs = jobs
        self._tasks = KeyedTasks("status watcher")

    def watch(self, wid: str, interaction: discord.Interaction) -> None:
        target = StatusMessage(self.client, interaction)
        self._tasks.start(wid, lambda: self._run(wid, target))

    def watch_in_channel(self, wid: str, channel_id: int) -> None:
        """Watch a job whose interaction this process never saw (started before a restart):
        its status goes on in a new channel message."""
        target = StatusMessage(self.client, None, channel_id)
        self._tasks.start(wid, lambda: self._run(wid, target))

    async def reattach(self) -> int:
        """After a restart: watch every running Discord job again, in its channel (the
        interaction tokens died with the old process). Returns how many."""
        count = 0
        for job in await self.jobs.list_jobs(running=True, platform="discord", limit=500):
            if job.kind == "cook":  # a cook's status is its collection's (collections.py)
                continue
            try:
                reply = await self.jobs.reply_target(job.workflow_id)
            except Exception as err:  # one unreadable job must not stop the others
                log.warning("cannot read the reply target of %s: %r", job.workflow_id, err)
                continue
            if reply is None or not reply.chat_id.isdigit():
                continue
            self.watch_in_channel(job.workflow_id, int(reply.chat_id))
            count += 1
        log.info("re-attached %d status watcher(s)", count)
        return count

    async def close(self) -> None:
        await self._tasks.close()

    async def _run(self, wid: str, target: StatusMessage) -> None:
        shown: str | None = None
        last_edit = 0.0
        misses = 0
        while True:
            try:
                status: JobStatus = await self.jobs.status(wid)
            except StationError:
                misses += 1  # just started: not visible yet
                if misses > MAX_MISSES:
                    return
                await asyncio.sleep(POLL)
                continue
            ended = status.state is JobState.DELIVERING or status.final
            text = status_text(status)
            if text != shown and (ended or time.monotonic() - last_edit >= MIN_EDIT_GAP):
                try:
                    await target.show(text, None if ended else status_view(status))
                    shown, last_edit = text, time.monotonic()
                except discord.HTTPException as err:
                    if err.status == 429:
                        await asyncio.sleep(retry_after(err))
                        continue
                    log.info("status of %s not editable (%s %s)", wid, err.status, err.code)
                    return
            if ended:
                return
            await asyncio.sleep(POLL)
