"""Live status: one task per running job edits the job's status message as it moves.

A watcher polls the job's status query, edits when the text changed and the message was not
edited in the last 2 s (the `EditPacer`), with a Cancel button while the job can be cancelled
(an edit without it removes it), and stops once the job is delivering or final: from
then on the delivery worker owns the message (it replaces it with the result). On startup the
bot re-attaches watchers to every running Telegram job, reading the chat and status message id
from the job's own start input, so live status survives a bot restart.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from telegram import Bot
from telegram.error import BadRequest, ChatMigrated, Forbidden, RetryAfter, TelegramError

from adapters.jobs import JobNotFound, JobsClient
from adapters.telegram.ratelimit import EditPacer
from adapters.telegram.render import status_keyboard, status_text
from domain.jobs import JobState

log = logging.getLogger(__name__)

POLL = 0.5


def retry_seconds(err: RetryAfter) -> float:
    """RetryAfter.retry_after is an int or a timedelta depending on PTB's settings."""
    value: object = err.retry_after
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)  # type: ignore[arg-type]


class StatusWatchers:
    """The running watcher tasks, kept by workflow id (no fire-and-forget tasks)."""

    def __init__(self, bot: Bot, jobs: JobsClient, pacer: EditPacer) -> None:
        self.bot = bot
        self.jobs = jobs
        self.pacer = pacer
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def watch(self, wid: str, chat_id: str, message_id: int) -> None:
        if wid in self._tasks and not self._tasks[wid].done():
            return
        task = asyncio.create_task(self._run(wid, chat_id, message_id), name=f"watch {wid}")
        self._tasks[wid] = task
        task.add_done_callback(lambda t: self._done(wid, t))

    def _done(self, wid: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(wid) is task:
            del self._tasks[wid]
        if not task.cancelled() and task.exception() is not None:
            log.warning("status watcher of %s ended with %r", wid, task.exception())

    @property
    def watching(self) -> list[str]:
        return list(self._tasks)

    async def reattach(self) -> int:
        """Watch every running Telegram job again (after a restart); returns how many."""
        count = 0
        for job in await self.jobs.list_jobs(running=True, platform="telegram", limit=500):
            if job.kind == "cook":  # a cook's status is its collection's (collections.py)
                continue
            try:
                reply = await self.jobs.reply_target(job.workflow_id)
            except Exception as err:  # one unreadable job must not stop the others
                log.warning("cannot read the reply target of %s: %r", job.workflow_id, err)
                continue
            if reply is None or reply.status_message_id is None:
                continue
            self.watch(job.workflow_id, reply.chat_id, reply.status_message_id)
            count += 1
        log.info("re-attached %d status watcher(s)", count)
        return count

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, wid: str, chat_id: str, message_id: int) -> None:
        shown: tuple[str, bool] | None = None
        misses = 0
        while True:
            try:
                status = await self.jobs.status(wid)
            except JobNotFound:
                misses += 1  # just started: not visible yet
                if misses > 40:
                    return
                await asyncio.sleep(POLL)
                continue
            if status.state is JobState.DELIVERING or status.final:
                return  # the delivery replaces the message
            text = status_text(status)
            keyboard = status_keyboard(status)  # Cancel while it can be cancelled
            view = (text, keyboard is not None)
            if view != shown and self.pacer.ready_in(chat_id, message_id) == 0:
                async with self.pacer.lock(chat_id, message_id):
                    if self.pacer.is_closed(chat_id, message_id):
                        return
                    try:
                        await self.bot.edit_message_text(
                            text, chat_id=chat_id, message_id=message_id, reply_markup=keyboard
                        )
                        shown = view
                    except BadRequest as err:
                        if "not modified" in err.message.lower():
                            shown = view
                        else:
                            log.info("status message of %s gone (%s)", wid, err.message)
                            return
                    except (Forbidden, ChatMigrated):
                        return  # nobody to show it to here (the delivery follows a migration)
                    except TelegramError as err:
                        # RetryAfter lands here only once the bot's rate limiter (flood.py)
                        # has waited out MAX_RETRIES 429s: try again at the next poll.
                        log.info("status edit of %s failed (%s); will retry", wid, err)
                    self.pacer.mark(chat_id, message_id)
            await asyncio.sleep(POLL)
