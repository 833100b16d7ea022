"""The `deliver_result` activity on `deliver-discord`: the bot process sends finished jobs.

It runs in the bot process because that alone holds the token. Results go to the channel the
job came from (the guild channel, or the user's DM channel) as channel messages with the bot's
own token, never through the interaction's webhook token: a job may finish after that token's
15 minutes, and a delivery retried an hour later must still work.

Each image goes as an attachment in one message with its Regen / Again / Upscale buttons
(views.py: persistent custom ids). Discord refuses a file over the upload limit (10 MiB for a
server without boosts, `Config.discord_upload_limit`) with 413 on every retry, so a larger
result goes as text with a link to the job instead. A job that ended without images (refused,
failed, cancelled) gets one text message saying what happened and what was refunded; so
does a training run, whose output is a model file: its message names the model and its
trigger word (`render.train_done_text`).

Exactly once, across activity retries and bot restarts, as in the Telegram delivery: each part
(`image:<i>`, `text`) is recorded in MongoDB (`JobsClient.mark_delivered`) right after Discord
accepted it, and a retried delivery skips the parts already recorded. The window left is a
crash between Discord's answer and that record (one upsert).

Errors become retry decisions: a 429 that discord.py gave up on is a retry after the wait
Discord asked for (`next_retry_delay`); 5xx and network errors are plain exceptions retried by
the policy (workflows/policies.py DELIVER_RETRY); a refusal for good (403 Missing Access or
Permissions, 404 Unknown Channel, another 4xx) raises a non-retryable ApplicationError of type
`not_delivered`, which the saga reads as "done, not delivered", the result kept. The delivery
deadline (`ReplyTarget.deliver_within`) is the saga's, the same for every push platform.
"""

from __future__ import annotations

import asyncio
import io
import logging
from datetime import timedelta
from typing import Any

import discord
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import metrics
from activities.heartbeat import heartbeating
from adapters.discord.progress import retry_after
from adapters.discord.views import result_view
from adapters.telegram.render import final_text, result_caption
from domain.jobs import ActivityNames, DeliverInput, JobState, JobStatus, ReplyTarget

log = logging.getLogger(__name__)

NOT_DELIVERED = "not_delivered"
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024


class DiscordDelivery:
    """Sends results and final texts to the channel a job came from."""

    def __init__(
        self, client: discord.Client, jobs: Any, upload_limit: int = DEFAULT_UPLOAD_LIMIT
    ) -> None:
        self.client = client
        self.jobs = jobs
        self.upload_limit = upload_limit

    @activity.defn(name=ActivityNames.DELIVER_RESULT)
    async def deliver_result(self, inp: DeliverInput) -> None:
        """Send the job's images (or what happened to it) once; see the module docstring."""
        status, reply = inp.status, inp.reply
        if reply is None:
            log.warning("job %s has no channel to reply to; nothing delivered", status.workflow_id)
            return
        try:
            with metrics.counting_delivery_failures("discord"):
                async with heartbeating():
                    await self._deliver(status, reply)
        except discord.HTTPException as err:
            if err.status == 429:
                delay = retry_after(err)
                raise ApplicationError(
                    f"Discord rate limit: retry in {delay:.1f} s",
                    type="rate_limited",
                    next_retry_delay=timedelta(seconds=delay),
                ) from err
            if err.status >= 500:
                raise
            raise ApplicationError(
                f"Discord refused the delivery: {err.status} {err.code} {err.text}",
                type=NOT_DELIVERED,
                non_retryable=True,
            ) from err

    async def _deliver(self, status: JobStatus, reply: ReplyTarget) -> None:
        sent = await self.jobs.delivered_parts(status.workflow_id)
        channel = self.client.get_partial_messageable(int(reply.chat_id))
        done = status.state in (JobState.DELIVERING, JobState.DONE)
        if status.kind == "train":
            # A trained LoRA is a file in GridFS (bucket `models`), not a picture: one message
            # naming the model and its trigger word (`train_done_text`), as on Telegram.
            if "text" not in sent:
                msg = await channel.send(final_text(status)[:2000])
                await self.jobs.mark_delivered(status.workflow_id, "text", msg.id)
            return
        if not (status.outputs and done) and "text" not in sent:
            msg = await channel.send(final_text(status)[:2000])
            await self.jobs.mark_delivered(status.workflow_id, "text", msg.id)
        for i, out in enumerate(status.outputs):
            part = f"image:{i}"
            if part in sent:
                continue
            data = await asyncio.to_thread(self.jobs.image, out)
            caption = result_caption(status, i)[:1800]
            view = result_view(status, i)
            if len(data) > self.upload_limit:
                link = self.jobs.job_url(status.workflow_id) or status.workflow_id
                mib = len(data) / 1024 / 1024
                text = f"{caption}\n{mib:.1f} MiB, over Discord's upload limit: {link}"
                msg = await channel.send(text[:2000], view=view)
            else:
                ext = EXTENSIONS.get(out.content_type, "png")
                file = discord.File(
                    io.BytesIO(data),
                    filename=f"{status.workflow_id}-{i + 1}.{ext}",
                    spoiler=out.spoiler,
                )
                msg = await channel.send(caption, file=file, view=view)
            await self.jobs.mark_delivered(status.workflow_id, part, msg.id)
