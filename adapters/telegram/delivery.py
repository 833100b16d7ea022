"""The `deliver_result` activity on `deliver-telegram`: the bot process sends finished jobs.

What the user paid for arrives intact. Telegram re-encodes every sendPhoto as a JPEG of at most
2560 px a side (alpha flattened, format lost, larger images shrunk), so a result whose value is
in the file goes as a document (sendDocument, with a 320 px JPEG `thumbnail` as its preview):
every media job (upscale, rmbg, resize, convert: their pixels, size, alpha and format are the
product), and any image with alpha, not PNG/JPEG, over 2560 px a side or beyond sendPhoto's
limits. A document over Telegram's 50 MB upload limit (a noisy 20 MP upscale as PNG) goes
re-encoded as JPEG (WebP with alpha) at quality 95, full size, the caption saying so, instead of
a 413 on every retry. Plain makes stay photos. A batch goes as ONE album (sendMediaGroup; photos, or
documents if any item must be one, since Telegram does not mix them), and because an album
cannot carry an inline keyboard, its one button row (Regen, Again, ⬆ 1…N) follows in one
message. In a forum topic every message passes the topic's `message_thread_id`.

Exactly once, across activity retries and bot restarts: each part of a delivery (`image:<i>`,
`album:<first index>`, `buttons`, `text`, `status`) is recorded in MongoDB (collection
`deliveries`, via the jobs client) right after Telegram accepted it, and a retried delivery
skips the parts already recorded. An album is ONE part, recorded in one upsert once
sendMediaGroup returned, so a retry never sends half an album. The one window left is a crash
(or a lost connection) between Telegram accepting a message and that record being written — a
few milliseconds, one MongoDB upsert; the Bot API has no idempotency key that could close it.
In that case the retry sends that one part again (one image, or the whole album once).

Errors become retry decisions: Telegram's flood control (RetryAfter) is a retry after exactly
the delay Telegram asked for (`next_retry_delay`); network errors are plain exceptions retried
by the policy (workflows/policies.py DELIVER_RETRY); a chat that blocked the bot ends the
delivery successfully (there is nobody to tell, and the job itself did not fail). A group that
became a supergroup answers ChatMigrated (not a BadRequest) with the new chat id: the delivery
follows it there at once (without reply or status message: those stay in the old chat). A
request Telegram refuses for good — chat not found, or no right to send media here ("not
enough rights to send photos": the bot was restricted) — raises a non-retryable
ApplicationError of type `NOT_DELIVERED`, after telling the chat in text where text is still
allowed; the saga ends such a job done but not delivered, its result kept.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Sequence
from datetime import timedelta

from PIL import Image, UnidentifiedImageError
from telegram import (
    Bot,
    InlineKeyboardMarkup,
    InputMediaDocument,
    InputMediaPhoto,
    Message,
    ReplyParameters,
)
from telegram.error import BadRequest, ChatMigrated, Forbidden, RetryAfter, TelegramError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import metrics
from activities.heartbeat import heartbeating
from adapters.jobs import JobsClient
from adapters.telegram.ratelimit import EditPacer
from adapters.telegram.render import (
    ALBUM_BUTTONS_TEXT,
    album_caption,
    album_keyboard,
    final_text,
    result_caption,
    result_keyboard,
)
from adapters.telegram.status_watch import retry_seconds
from domain.errors import StationError
from domain.jobs import ActivityNames, DeliverInput, JobState, JobStatus, ReplyTarget, StoredOutput

log = logging.getLogger(__name__)

# Telegram's limits for sendPhoto; beyond them an image goes as a document.
PHOTO_MAX_BYTES = 10 * 1024 * 1024
PHOTO_MAX_SIDES = 10_000  # width + height
PHOTO_MAX_RATIO = 20
PHOTO_REFUSALS = ("photo_invalid_dimensions", "too big", "image_process_failed", "photo_")

EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}

# What Telegram does to a photo (Bot API sendPhoto; the stand-in models it): a JPEG of at most
# 2560 px a side. Whatever that would damage goes as a document.
PHOTO_KEPT_SIDE = 2560
PHOTO_KEPT_TYPES = frozenset({"image/png", "image/jpeg"})
FILE_KINDS = frozenset({"upscale", "rmbg", "resize", "convert"})
"""Job kinds whose product is the file itself: sent as documents whatever their size."""
THUMBNAIL_SIDE = 320  # sendDocument `thumbnail`: JPEG, < 200 kB, at most 320 px a side
DOCUMENT_MAX_BYTES = 50 * 1024 * 1024  # a bot's upload limit (Bot API "Sending files")
ALBUM_MAX = 10  # sendMediaGroup takes 2-10 items

NOT_DELIVERED = "not_delivered"
"""ApplicationError type of a delivery Telegram refused for good: not retried; the saga
(workflows/job_saga.py) reads it as "done, not delivered"."""

# Telegram's words for a bot restricted in a chat (per media kind, or altogether).
RIGHTS_REFUSALS = (
    "not enough rights",
    "have no rights",
    "need administrator rights",
    "chat_send_",  # CHAT_SEND_PHOTOS_FORBIDDEN, CHAT_SEND_MEDIA_FORBIDDEN, …
    "chat_write_forbidden",
)
NO_RIGHTS_TEXT = (
    "I'm not allowed to send images in this chat, so this result was not delivered here. "
    "An admin can allow me to send photos and files; or ask me in a private chat."
)
MAX_MIGRATIONS = 3  # a chat migrates once; more hops means something else is wrong


def is_rights_refusal(err: BadRequest) -> bool:
    return any(s in err.message.lower() for s in RIGHTS_REFUSALS)


def fits_photo(out: StoredOutput, size: int) -> bool:
    """Whether Telegram accepts this image as a photo (else it goes as a document)."""
    if size > PHOTO_MAX_BYTES:
        return False
    w, h = out.width, out.height
    if not (w and h):
        return True
    return w + h <= PHOTO_MAX_SIDES and max(w, h) / min(w, h) <= PHOTO_MAX_RATIO


def has_alpha(data: bytes) -> bool:
    """Whether the image has any transparency (read from the header; nothing is decoded)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    except (UnidentifiedImageError, OSError, ValueError):
        return False


def as_document(kind: str, out: StoredOutput, data: bytes) -> bool:
    """Whether this result must go as a document for the user to get what they paid for."""
    return (
        kind in FILE_KINDS
        or out.content_type not in PHOTO_KEPT_TYPES
        or max(out.width, out.height) > PHOTO_KEPT_SIDE
        or has_alpha(data)
        or not fits_photo(out, len(data))
    )


def preview_jpeg(data: bytes) -> bytes | None:
    """A document's preview: at most 320 px a side, JPEG, transparency shown on white."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            small = im.convert("RGBA")
        small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        flat = Image.new("RGB", small.size, (255, 255, 255))
        flat.paste(small, mask=small.getchannel("A"))
        buf = io.BytesIO()
        flat.save(buf, "JPEG", quality=80)
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    return buf.getvalue() if buf.tell() < 200 * 1024 else None


def fit_document(data: bytes, filename: str) -> tuple[bytes, str, str]:
    """A file over Telegram's 50 MB upload limit (a large upscale of a noisy photo as PNG can
    be) would be refused with 413 on every retry: send it re-encoded at high quality instead —
    JPEG, or WebP where it has alpha, at quality 95 (lower only if still too big) — and say so
    in the caption. Returns (data, filename, note)."""
    if len(data) <= DOCUMENT_MAX_BYTES:
        return data, filename, ""
    alpha = has_alpha(data)
    fmt, ext = ("WEBP", "webp") if alpha else ("JPEG", "jpg")
    with Image.open(io.BytesIO(data)) as im:
        pixels = im.convert("RGBA") if alpha else im.convert("RGB")
    for quality in (95, 85, 75):
        buf = io.BytesIO()
        pixels.save(buf, fmt, quality=quality)
        if buf.tell() <= DOCUMENT_MAX_BYTES:
            break
    stem = filename.rsplit(".", 1)[0]
    note = f"the PNG is over Telegram's 50 MB: this is {fmt} quality {quality}"
    return buf.getvalue(), f"{stem}.{ext}", note


class TelegramDelivery:
    """Sends results and final texts to the chat a job came from."""

    def __init__(self, bot: Bot, jobs: JobsClient, pacer: EditPacer | None = None) -> None:
        self.bot = bot
        self.jobs = jobs
        self.pacer = pacer or EditPacer()

    @activity.defn(name=ActivityNames.DELIVER_RESULT)
    async def deliver_result(self, inp: DeliverInput) -> None:
        """Send the job's images (or what happened to it) once; see the module docstring."""
        status, reply = inp.status, inp.reply
        if reply is None:
            log.warning("job %s has no chat to reply to; nothing delivered", status.workflow_id)
            return
        try:
            with metrics.counting_delivery_failures("telegram"):
                async with heartbeating():
                    await self._deliver_following_migrations(status, reply)
        except RetryAfter as err:
            delay = retry_seconds(err)
            log.info("flood control on %s: retrying in %.0f s", status.workflow_id, delay)
            raise ApplicationError(
                f"Telegram flood control: retry in {delay:.0f} s",
                type="flood_control",
                next_retry_delay=timedelta(seconds=delay),
            ) from err
        except Forbidden as err:
            log.warning(
                "chat %s cannot receive %s (%s); delivery ends",
                reply.chat_id,
                status.workflow_id,
                err.message,
            )

    async def _deliver_following_migrations(self, status: JobStatus, reply: ReplyTarget) -> None:
        """Deliver; where the group became a supergroup, again to the new chat id; a refusal
        for good is NOT_DELIVERED (the chat told first when it is about rights)."""
        for _ in range(MAX_MIGRATIONS):
            try:
                await self._deliver(status, reply)
                return
            except BadRequest as err:
                if is_rights_refusal(err):
                    await self._tell_no_rights(reply)
                raise ApplicationError(
                    f"Telegram refused the delivery: {err.message}",
                    type=NOT_DELIVERED,
                    non_retryable=True,
                ) from err
            except ChatMigrated as err:
                log.info(
                    "chat %s is now supergroup %s: delivering %s there",
                    reply.chat_id,
                    err.new_chat_id,
                    status.workflow_id,
                )
                reply = reply.model_copy(
                    update={
                        "chat_id": str(err.new_chat_id),
                        "message_id": None,
                        "status_message_id": None,
                        "message_thread_id": None,  # a basic group has no topics
                    }
                )
        raise ApplicationError(
            f"chat of {status.workflow_id} migrated more than {MAX_MIGRATIONS} times",
            type=NOT_DELIVERED,
            non_retryable=True,
        )

    async def _tell_no_rights(self, reply: ReplyTarget) -> None:
        """Say in text why nothing arrives: in place of the status message if it is still
        there, else as a new message; if text is refused too, there is nobody to tell."""
        try:
            if reply.status_message_id is not None:
                mid = reply.status_message_id
                self.pacer.close(reply.chat_id, mid)
                async with self.pacer.lock(reply.chat_id, mid):
                    try:
                        await self.bot.edit_message_text(
                            NO_RIGHTS_TEXT, chat_id=reply.chat_id, message_id=mid
                        )
                        return
                    except BadRequest as err:
                        log.info("status message %s not editable (%s)", mid, err.message)
            await self.bot.send_message(
                reply.chat_id, NO_RIGHTS_TEXT, message_thread_id=reply.message_thread_id
            )
        except TelegramError as err:
            log.info("chat %s cannot be told either (%s)", reply.chat_id, err.message)

    async def _deliver(self, status: JobStatus, reply: ReplyTarget) -> None:
        sent = await self.jobs.delivered_parts(status.workflow_id)
        if status.kind == "train" and status.state in (JobState.DELIVERING, JobState.DONE):
            await self._send_trained_model(status, reply, sent)
        elif status.outputs and status.state in (JobState.DELIVERING, JobState.DONE):
            await self._send_images(status, reply, sent)
        elif status.outputs:
            # Cancelled after part of a batch was made: that part kept its points, so it is
            # sent too, after the status message says what was cancelled and refunded.
            await self._send_text(status, reply, sent)
            await self._send_images(status, reply, sent, retire_status=False)
        else:
            await self._send_text(status, reply, sent)

    async def _send_images(
        self,
        status: JobStatus,
        reply: ReplyTarget,
        sent: dict[str, int],
        *,
        retire_status: bool = True,
    ) -> None:
        if len(status.outputs) > 1 and not any(p.startswith("image:") for p in sent):
            await self._send_albums(status, reply, sent)
        else:  # one image; or a delivery begun image by image before albums existed
            as_file = await self._send_as_file(status.user)
            for i, out in enumerate(status.outputs):
                part = f"image:{i}"
                if part in sent:
                    continue
                data = await asyncio.to_thread(self.jobs.image, out)
                ext = EXTENSIONS.get(out.content_type, "png")
                msg = await self._send_image(
                    reply,
                    data,
                    filename=f"{status.workflow_id}-{i + 1}.{ext}",
                    caption=result_caption(status, i),
                    keyboard=result_keyboard(status, i),
                    as_file=as_file or as_document(status.kind, out, data),
                    spoiler=out.spoiler,
                )
                await self.jobs.mark_delivered(status.workflow_id, part, msg.message_id)
        if retire_status and reply.status_message_id is not None and "status" not in sent:
            await self._retire_status(reply.chat_id, reply.status_message_id)
            await self.jobs.mark_delivered(status.workflow_id, "status", reply.status_message_id)

    async def _send_albums(
        self, status: JobStatus, reply: ReplyTarget, sent: dict[str, int]
    ) -> None:
        """A batch as one album (10 images a part at most), then its one row of buttons."""
        as_file = await self._send_as_file(status.user)
        outs = status.outputs
        for first in range(0, len(outs), ALBUM_MAX):
            part = f"album:{first}"
            if part in sent:
                continue
            chunk = outs[first : first + ALBUM_MAX]
            datas = [await asyncio.to_thread(self.jobs.image, out) for out in chunk]
            files = as_file or any(
                as_document(status.kind, out, data) for out, data in zip(chunk, datas, strict=True)
            )
            spoilers = [out.spoiler for out in chunk]
            names = [
                f"{status.workflow_id}-{first + n + 1}.{EXTENSIONS.get(out.content_type, 'png')}"
                for n, out in enumerate(chunk)
            ]
            caption = album_caption(status) if first == 0 else ""
            if len(chunk) == 1:  # an album needs two items: a lone last one goes by itself
                msg = await self._send_image(
                    reply,
                    datas[0],
                    filename=names[0],
                    caption=caption,
                    keyboard=None,
                    as_file=files,
                    spoiler=spoilers[0],
                )
            else:
                msg = (
                    await self._send_album(
                        reply, datas, names, caption, as_file=files, spoilers=spoilers
                    )
                )[0]
            await self.jobs.mark_delivered(status.workflow_id, part, msg.message_id)
        keyboard = album_keyboard(status)
        if keyboard is not None and "buttons" not in sent:
            msg = await self.bot.send_message(
                reply.chat_id,
                ALBUM_BUTTONS_TEXT.format(n=len(outs)),
                reply_markup=keyboard,
                message_thread_id=reply.message_thread_id,
            )
            await self.jobs.mark_delivered(status.workflow_id, "buttons", msg.message_id)

    async def _send_album(
        self,
        reply: ReplyTarget,
        datas: Sequence[bytes],
        names: Sequence[str],
        caption: str,
        *,
        as_file: bool,
        spoilers: Sequence[bool] = (),
    ) -> tuple[Message, ...]:
        """sendMediaGroup; photos refused for their size or shape go again as documents.

        An image the content filter flagged (`spoilers[n]`) goes as a photo behind a spoiler
        whatever the user's "send as file" choice (a document has no spoiler), and as a
        document only without its preview."""
        spoiler = list(spoilers) or [False] * len(datas)
        if not as_file or any(spoiler):
            try:
                return await self.bot.send_media_group(
                    reply.chat_id,
                    [
                        InputMediaPhoto(
                            data,
                            caption=caption if n == 0 else None,
                            filename=name,
                            has_spoiler=spoiler[n] or None,
                        )
                        for n, (data, name) in enumerate(zip(datas, names, strict=True))
                    ],
                    reply_parameters=_reply_parameters(reply),
                    message_thread_id=reply.message_thread_id,
                )
            except BadRequest as err:
                if not (
                    is_rights_refusal(err) or any(s in err.message.lower() for s in PHOTO_REFUSALS)
                ):
                    raise
                log.info("album of photos refused (%s); sending documents", err.message)
        media = []
        for n, (data, name) in enumerate(zip(datas, names, strict=True)):
            thumb = None if spoiler[n] else await asyncio.to_thread(preview_jpeg, data)
            media.append(
                InputMediaDocument(
                    data,
                    caption=caption if n == 0 else None,
                    filename=name,
                    thumbnail=thumb,
                )
            )
        return await self.bot.send_media_group(
            reply.chat_id,
            media,
            reply_parameters=_reply_parameters(reply),
            message_thread_id=reply.message_thread_id,
        )

    async def _send_trained_model(
        self, status: JobStatus, reply: ReplyTarget, sent: dict[str, int]
    ) -> None:
        """A trained LoRA is a file in GridFS, not a picture: send a message naming the model and
        its trigger word (a new message, so the user is notified), then retire the status."""
        if "text" not in sent:
            msg = await self.bot.send_message(
                reply.chat_id, final_text(status), message_thread_id=reply.message_thread_id
            )
            await self.jobs.mark_delivered(status.workflow_id, "text", msg.message_id)
        if reply.status_message_id is not None and "status" not in sent:
            await self._retire_status(reply.chat_id, reply.status_message_id)
            await self.jobs.mark_delivered(status.workflow_id, "status", reply.status_message_id)

    async def _send_image(
        self,
        reply: ReplyTarget,
        data: bytes,
        *,
        filename: str,
        caption: str,
        keyboard: InlineKeyboardMarkup | None,
        as_file: bool,
        spoiler: bool = False,
    ) -> Message:
        """One image as a photo, else as a document. A flagged image (`spoiler`) goes as a
        photo behind Telegram's spoiler even if the user asked for files, and as a document
        only without a preview: a document cannot hide its thumbnail."""
        params = _reply_parameters(reply)
        if not as_file or spoiler:
            try:
                return await self.bot.send_photo(
                    reply.chat_id,
                    data,
                    has_spoiler=spoiler or None,
                    caption=caption,
                    reply_markup=keyboard,
                    reply_parameters=params,
                    filename=filename,
                    message_thread_id=reply.message_thread_id,
                )
            except BadRequest as err:
                # Photos refused (too big, odd shape) or not allowed: a document may still go.
                if not (
                    is_rights_refusal(err) or any(s in err.message.lower() for s in PHOTO_REFUSALS)
                ):
                    raise
                log.info("photo refused (%s); sending %s as a document", err.message, filename)
        data, filename, note = await asyncio.to_thread(fit_document, data, filename)
        if note:
            log.info("%s is over 50 MB: sending it re-encoded", filename)
            caption = f"{caption} · {note}"[:1024]
        return await self.bot.send_document(
            reply.chat_id,
            data,
            filename=filename,
            caption=caption,
            reply_markup=keyboard,
            reply_parameters=params,
            message_thread_id=reply.message_thread_id,
            thumbnail=None if spoiler else await asyncio.to_thread(preview_jpeg, data),
        )

    async def _retire_status(self, chat_id: str, message_id: int) -> None:
        """The result replaces the status message: delete it (or, if that fails, say done)."""
        self.pacer.close(chat_id, message_id)
        async with self.pacer.lock(chat_id, message_id):
            try:
                await self.bot.delete_message(chat_id, message_id)
                return
            except BadRequest as err:
                log.info("status message %s not deleted (%s)", message_id, err.message)
            try:
                await self.pacer.wait(chat_id, message_id)
                await self.bot.edit_message_text("✅ done", chat_id=chat_id, message_id=message_id)
            except BadRequest:
                pass  # gone or unchanged: nothing left to replace

    async def _send_text(self, status: JobStatus, reply: ReplyTarget, sent: dict[str, int]) -> None:
        if "text" in sent:
            return
        text = final_text(status)
        mid = reply.status_message_id
        if mid is not None:
            self.pacer.close(reply.chat_id, mid)
            async with self.pacer.lock(reply.chat_id, mid):
                await self.pacer.wait(reply.chat_id, mid)
                try:
                    await self.bot.edit_message_text(text, chat_id=reply.chat_id, message_id=mid)
                    self.pacer.mark(reply.chat_id, mid)
                    await self.jobs.mark_delivered(status.workflow_id, "text", mid)
                    return
                except BadRequest as err:
                    if "not modified" in err.message.lower():
                        await self.jobs.mark_delivered(status.workflow_id, "text", mid)
                        return
                    log.info("status message %s not editable (%s); sending anew", mid, err)
        msg = await self.bot.send_message(
            reply.chat_id, text, message_thread_id=reply.message_thread_id
        )
        await self.jobs.mark_delivered(status.workflow_id, "text", msg.message_id)

    async def _send_as_file(self, identity: str) -> bool:
        try:
            return (await self.jobs.settings(identity)).send_as_file
        except StationError:
            return False


def _reply_parameters(reply: ReplyTarget) -> ReplyParameters | None:
    """Reply to the request's message where there is one (sent even if it was deleted)."""
    if not reply.message_id:
        return None
    return ReplyParameters(reply.message_id, allow_sending_without_reply=True)
