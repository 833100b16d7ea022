"""The Bot API stand-in: state, Telegram methods and the test control API.

Telegram side (what the bot sees), as in https://core.telegram.org/bots/api:
  `GET|POST /bot{token}/{method}` answers `{"ok": true, "result": ...}` or
  `{"ok": false, "error_code": N, "description": "...", "parameters": {...}}`; a wrong token is
  401, an unknown method 404 (method names are case-insensitive, as on Telegram).
  `GET /file/bot{token}/{file_path}` downloads a stored file.

Control side (what a test uses; JSON, never seen by the bot):
  POST /_control/users/{user_id}/send   {"text", "chat_id"?, "chat_type"?, "chat_title"?,
        "reply_to_message_id"?, "photo"? (base64), "document"? (base64) + "filename"?,
        "mime_type"?, "caption"?, "first_name"?, "username"?, "anonymous"? (an anonymous group
        admin: `from` is GroupAnonymousBot, `sender_chat` the group), "sender_chat_id"? (sent
        on behalf of that channel), "is_forum"?, "message_thread_id"? (a forum topic)}
        -> {"update_id", "message_id", "delivered"} (privacy mode: a plain group message is
        stored but not delivered, update_id null)
  POST /_control/users/{user_id}/edit   {"chat_id"?, "message_id", "text"? | "caption"?}
        -> {"update_id", "message_id"}: the user edits a message; an `edited_message` update
  POST /_control/chats/{chat_id}/messages/{message_id}/redeliver -> {"update_id"}: the same
        message again as a `message` update with a new update id (a replayed update)
  POST /_control/users/{user_id}/press  {"chat_id"?, "message_id", "data", "forge"?}
        -> {"update_id", "callback_query_id"}; `forge` skips the check that the message has
        a button with that data (a modified client can send any callback data)
  GET  /_control/chats/{chat_id}/messages -> [message view, ...] (see `_message_view`)
  GET  /_control/files/{file_id}          -> the stored bytes
  GET  /_control/calls?method=X           -> [{"method", "params", "time", "status", ...}]
  POST /_control/faults  {"method", "error_code", "retry_after"?, "count"?, "description"?,
        "chat_id"?, "drop"?, "delay"?} | {"blocked_chat_id"} | {"unblocked_chat_id"}
        | {"migrated_chat_id", "migrate_to_chat_id"} (the group became that supergroup)
        | {"no_media_chat_id"} | {"media_allowed_chat_id"} (the bot may not send media there)
  POST /_control/options {"photo_recompression"?, "privacy_mode"?, "flood"?,
        "allow_http_webhook"?, "private_needs_start"?: bool, "flood_limits"?: {...},
        "first_message_id"?: int} -> all
        switches: the modelled real-Telegram behaviours, see README.md next to this file
        (`private_needs_start`: sending to a private chat whose user never wrote to the bot is
        403 "bot can't initiate conversation"; off by default so tests may talk to any user)
        (`first_message_id`: new chats number their messages from there: message ids of busy
        chats have 10 digits)
  POST /_control/reset   {"all"?: bool}
  GET  /_control/commands, /_control/answered_callbacks, /_control/updates, /_control/webhook,
       /_control/health

Deliberate simplifications: a chat the bot has never seen is created on first use (positive id
= private chat, negative = group) instead of answering "chat not found"; webhook updates are
delivered one at a time, in order. What it models of real Telegram (photo recompression,
privacy mode, flood limits, 413, https-only webhooks, forum topics, albums) and what not is in
README.md next to this file. The reset at the start of
each test also clears every standing refusal (blocked, migrated, no media rights, options).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import itertools
import json
import logging
import math
import mimetypes
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import aiohttp
from aiohttp import web
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

GROUP_ANONYMOUS_BOT_ID = 1087968824
"""The `from` of every message an anonymous group admin sends (its `sender_chat` is the group)."""
CHANNEL_BOT_ID = 136817688
"""The `from` of messages sent on behalf of a channel (its `sender_chat` is the channel)."""
MEDIA_METHODS = {
    "sendphoto": "photos",
    "senddocument": "documents",
    "sendmediagroup": "photos",
    "sendanimation": "animations",
    "sendvideo": "videos",
    "sendsticker": "stickers",
}

DEFAULT_TOKEN = "123456:TEST-TOKEN"
"""The token the stand-in accepts unless told otherwise (`--token`)."""

PHOTO_MAX_BYTES = 10 * 1024 * 1024
PHOTO_MAX_SIDE = 2560
"""Telegram stores a photo as JPEG variants, the largest at most 2560 px a side."""
PHOTO_VARIANT_SIDES = (90, 320, 800, 1280, 2560)
"""The PhotoSize variants Telegram makes (each only when the photo is larger than it)."""
PHOTO_JPEG_QUALITY = 87
PHOTO_MAX_DIMENSION_SUM = 10000
PHOTO_MAX_RATIO = 20
DOCUMENT_MAX_BYTES = 50 * 1024 * 1024
GET_FILE_MAX_BYTES = 20 * 1024 * 1024
THUMBNAIL_SIDE = 320
UPLOAD_MAX_BYTES = 50 * 1024 * 1024
"""The Bot API server's request size limit: a bigger upload is 413 Request Entity Too Large."""
MAX_BODY_BYTES = 80 * 1024 * 1024
COUNTED_SENDS = {
    "sendmessage",
    "sendphoto",
    "senddocument",
    "sendmediagroup",
    "sendanimation",
    "sendvideo",
    "sendsticker",
    "sendaudio",
    "sendvoice",
    "copymessage",
    "forwardmessage",
}
"""The methods that post a new message: the ones Telegram's flood control counts here."""
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}

UPDATE_TYPES = (
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "callback_query",
    "inline_query",
    "chosen_inline_result",
    "my_chat_member",
    "chat_member",
)
CHAT_ACTIONS = {
    "typing",
    "upload_photo",
    "record_video",
    "upload_video",
    "record_voice",
    "upload_voice",
    "upload_document",
    "choose_sticker",
    "find_location",
    "record_video_note",
    "upload_video_note",
}
_COMMAND_RE = re.compile(r"^[a-z0-9_]{1,32}$")
_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_LEADING_COMMAND_RE = re.compile(r"^/[A-Za-z0-9_]{1,32}(@[A-Za-z0-9_]+)?")
_MENTION_RE = re.compile(r"(?<![\w@])@[A-Za-z0-9_]{5,32}")


class ApiError(Exception):
    """A Bot API error answer: the HTTP status, Telegram's description and optional parameters."""

    def __init__(
        self, code: int, description: str, parameters: dict[str, Any] | None = None
    ) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": False,
            "error_code": self.code,
            "description": self.description,
        }
        if self.parameters:
            out["parameters"] = self.parameters
        return out


def bad_request(what: str) -> ApiError:
    return ApiError(400, f"Bad Request: {what}")


# ---------------------------------------------------------------------------------------- state


@dataclass
class StoredFile:
    """One file the stand-in holds, uploaded by the bot or sent by a test user."""

    file_id: str
    file_unique_id: str
    file_path: str
    data: bytes
    kind: str  # "photo" | "document"
    mime_type: str | None = None
    file_name: str | None = None
    width: int | None = None
    height: int | None = None


@dataclass
class ChatMessage:
    """A message in a chat: its Telegram shape plus what the control API reports about it."""

    message: dict[str, Any]
    from_bot: bool
    edit_times: list[float] = field(default_factory=list)
    deleted: bool = False
    deleted_time: float | None = None


@dataclass
class Chat:
    id: int
    type: str
    title: str | None = None
    first_name: str | None = None
    username: str | None = None
    is_forum: bool = False
    messages: dict[int, ChatMessage] = field(default_factory=dict)
    admins: set[int] = field(default_factory=set)  # user ids getChatMember calls administrator

    def as_telegram(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.is_forum:
            out["is_forum"] = True
        if self.title is not None:
            out["title"] = self.title
        if self.first_name is not None:
            out["first_name"] = self.first_name
        if self.username is not None:
            out["username"] = self.username
        return out


@dataclass
class Fault:
    """An injected failure for the next `count` calls of `method` ("*" = any method)."""

    method: str
    error_code: int
    count: int
    retry_after: int | None = None
    description: str | None = None
    chat_id: int | None = None
    drop: bool = False
    delay: float = 0.0

    def matches(self, method: str, chat_id: int | None) -> bool:
        if self.method != "*" and self.method.lower() != method.lower():
            return False
        return self.chat_id is None or self.chat_id == chat_id

    def error(self) -> ApiError:
        if self.error_code == 429:
            wait = self.retry_after or 1
            return ApiError(
                429,
                self.description or f"Too Many Requests: retry after {wait}",
                {"retry_after": wait},
            )
        defaults = {
            400: "Bad Request: injected fault",
            403: "Forbidden: bot was blocked by the user",
            409: "Conflict: injected fault",
            413: "Request Entity Too Large",
            500: "Internal Server Error",
            502: "Bad Gateway",
            503: "Service Unavailable",
            504: "Gateway Timeout",
        }
        return ApiError(
            self.error_code, self.description or defaults.get(self.error_code, "Injected fault")
        )


@dataclass
class Flood:
    """Telegram's flood control (Bot API FAQ, "My bot is hitting limits"): about one message a
    second per chat, short bursts allowed (a token bucket of `chat_burst` refilled at
    `chat_per_second`), and at most `group_per_minute` messages a minute in a group. Over a
    limit the call answers 429 with `parameters.retry_after` (whole seconds, at least 1)."""

    chat_per_second: float = 1.0
    chat_burst: int = 20
    group_per_minute: int = 20
    _tokens: dict[int, tuple[float, float]] = field(default_factory=dict)
    _group_sends: dict[int, list[float]] = field(default_factory=dict)

    def take(self, chat_id: int, now: float) -> None:
        """Count one message to `chat_id`, or raise the 429 Telegram would answer."""
        tokens, last = self._tokens.get(chat_id, (float(self.chat_burst), now))
        tokens = min(float(self.chat_burst), tokens + (now - last) * self.chat_per_second)
        waits: list[float] = []
        if tokens < 1.0:
            waits.append((1.0 - tokens) / self.chat_per_second)
        sent: list[float] = []
        if chat_id < 0:
            sent = [t for t in self._group_sends.get(chat_id, []) if now - t < 60.0]
            self._group_sends[chat_id] = sent
            if len(sent) >= self.group_per_minute:
                waits.append(60.0 - (now - sent[len(sent) - self.group_per_minute]))
        if waits:
            self._tokens[chat_id] = (tokens, now)
            wait = max(1, math.ceil(max(waits)))
            raise ApiError(429, f"Too Many Requests: retry after {wait}", {"retry_after": wait})
        self._tokens[chat_id] = (tokens - 1.0, now)
        if chat_id < 0:
            sent.append(now)


@dataclass
class Options:
    """The per-test switches of modelled Telegram behaviours (control API `/_control/options`).

    Defaults are what real Telegram always does, except `allow_http_webhook` (a test's loopback
    webhook receiver has no TLS) and `private_needs_start` (tests talk to users first)."""

    photo_recompression: bool = True
    privacy_mode: bool = True
    flood: bool = True
    allow_http_webhook: bool = False
    private_needs_start: bool = False

    def view(self, flood: Flood) -> dict[str, Any]:
        return {
            "photo_recompression": self.photo_recompression,
            "privacy_mode": self.privacy_mode,
            "flood": self.flood,
            "flood_limits": {
                "chat_per_second": flood.chat_per_second,
                "chat_burst": flood.chat_burst,
                "group_per_minute": flood.group_per_minute,
            },
            "allow_http_webhook": self.allow_http_webhook,
            "private_needs_start": self.private_needs_start,
        }


@dataclass
class Webhook:
    url: str
    secret_token: str | None
    allowed_updates: list[str] | None
    max_connections: int = 40
    last_error_date: int | None = None
    last_error_message: str | None = None


class StandinState:
    """Everything the stand-in remembers; one instance per server."""

    def __init__(self, token: str = DEFAULT_TOKEN) -> None:
        self.token = token
        bot_id = int(token.split(":", 1)[0]) if token.split(":", 1)[0].isdigit() else 123456
        self.bot_user: dict[str, Any] = {
            "id": bot_id,
            "is_bot": True,
            "first_name": "StationThis Test",
            "username": "stationthis_test_bot",
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self._update_ids = itertools.count(1)
        self._file_ids = itertools.count(1)
        self._callback_ids = itertools.count(1)
        self._next_message_id: dict[int, int] = {}  # never reset: a running bot may hold ids
        self.updates: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._poller: object | None = None
        self.allowed_updates: list[str] | None = None
        self.webhook: Webhook | None = None
        self._webhook_task: asyncio.Task[None] | None = None
        self.commands: dict[str, list[dict[str, str]]] = {}
        self.commands_log: list[dict[str, Any]] = []
        self.closing = False
        self.reset()

    def reset(self, everything: bool = False) -> None:
        """Forget conversations, files, calls and faults (and, with `everything`, the bot's
        commands and webhook). Update and message ids keep counting so a running bot's offset
        and remembered message ids stay valid."""
        self.chats: dict[int, Chat] = {}
        self.users: dict[int, dict[str, Any]] = {}
        self.files: dict[str, StoredFile] = {}
        self.calls: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self.blocked: set[int] = set()
        self.migrated: dict[int, int] = {}  # old group id -> its supergroup's id
        self.no_media: set[int] = set()  # chats where the bot has no right to send media
        self.options = Options()
        self.flood = Flood()
        self.bot_user["can_read_all_group_messages"] = False
        self.first_message_id = 1  # of a chat's first message (busy chats reach 10 digits)
        self.callback_queries: dict[str, dict[str, Any]] = {}
        self.answered_callbacks: list[dict[str, Any]] = []
        self.updates.clear()
        if everything:
            self.commands.clear()
            self.commands_log.clear()
            self.allowed_updates = None
            self.set_webhook(None)
        self.notify()

    # ----------------------------------------------------------------------- updates

    def notify(self) -> None:
        """Wake every long poll and the webhook sender."""
        self._changed.set()
        self._changed = asyncio.Event()

    def enqueue(self, kind: str, payload: dict[str, Any]) -> int:
        update_id = next(self._update_ids)
        self.updates.append({"update_id": update_id, kind: payload})
        self.notify()
        return update_id

    def confirm(self, offset: int) -> None:
        """getUpdates' offset: every update below it is confirmed and forgotten."""
        if offset < 0:
            keep = -offset
            self.updates = self.updates[-keep:]
        else:
            self.updates = [u for u in self.updates if u["update_id"] >= offset]

    def deliverable(self, allowed: list[str] | None) -> list[dict[str, Any]]:
        """Pending updates of allowed types; others are dropped, as Telegram never sends them."""
        if allowed:
            self.updates = [u for u in self.updates if _update_type(u) in allowed]
        return list(self.updates)

    async def long_poll(self, offset: int | None, limit: int, timeout: float) -> list[Any]:
        if self.webhook is not None:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        if offset is not None:
            self.confirm(offset)
        me = object()
        self._poller = me
        self.notify()  # an older poll still waiting is told it lost (409), like Telegram
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            changed = self._changed
            ready = self.deliverable(self.allowed_updates)
            if ready:
                if self._poller is me:
                    self._poller = None
                return ready[:limit]
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closing:
                if self._poller is me:
                    self._poller = None
                return []
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)
            if self._poller is not me:
                raise ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; "
                    "make sure that only one bot instance is running",
                )
            if self.webhook is not None:
                self._poller = None
                raise ApiError(409, "Conflict: terminated by setWebhook request")

    # ----------------------------------------------------------------------- webhook

    def set_webhook(self, hook: Webhook | None) -> None:
        self.webhook = hook
        if self._webhook_task is not None:
            self._webhook_task.cancel()
            self._webhook_task = None
        if hook is not None:
            self._webhook_task = asyncio.get_running_loop().create_task(self._deliver(hook))
        self.notify()

    async def _deliver(self, hook: Webhook) -> None:
        """POST pending updates to the webhook in order; retry failures with back-off."""
        headers = {"Content-Type": "application/json"}
        if hook.secret_token:
            headers["X-Telegram-Bot-Api-Secret-Token"] = hook.secret_token
        backoff = 0.2
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while self.webhook is hook:
                changed = self._changed
                pending = self.deliverable(hook.allowed_updates)
                if not pending:
                    await changed.wait()
                    continue
                update = pending[0]
                error: str | None = None
                try:
                    async with session.post(
                        hook.url, data=json.dumps(update), headers=headers
                    ) as resp:
                        await resp.read()
                        if not 200 <= resp.status < 300:
                            error = f"Wrong response from the webhook: {resp.status} {resp.reason}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    error = f"Connection failed: {exc.__class__.__name__}"
                if error is None:
                    self.updates = [u for u in self.updates if u is not update]
                    backoff = 0.2
                    continue
                hook.last_error_date = int(time.time())
                hook.last_error_message = error
                log.info("webhook delivery of update %s failed: %s", update["update_id"], error)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    # ------------------------------------------------------------------------- chats

    def chat(self, chat_id: int, *, chat_type: str | None = None, title: str | None = None) -> Chat:
        """The chat with this id, created on first use (see module docstring)."""
        existing = self.chats.get(chat_id)
        if existing is not None:
            return existing
        kind = chat_type or ("private" if chat_id > 0 else "group")
        if kind == "private":
            user = self.users.get(chat_id)
            first = user["first_name"] if user else f"User{chat_id}"
            made = Chat(chat_id, "private", first_name=first, username=(user or {}).get("username"))
        else:
            made = Chat(chat_id, kind, title=title or f"Group {chat_id}")
        self.chats[chat_id] = made
        return made

    def add_message(self, chat: Chat, body: dict[str, Any], sender: dict[str, Any]) -> ChatMessage:
        message_id = self._next_message_id.get(chat.id, self.first_message_id - 1) + 1
        self._next_message_id[chat.id] = message_id
        message: dict[str, Any] = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": chat.as_telegram(),
            "from": sender,
        }
        message.update({k: v for k, v in body.items() if v is not None})
        # GroupAnonymousBot and Channel_Bot are bots too, but their messages are a user's.
        stored = ChatMessage(message, from_bot=sender.get("id") == self.bot_user["id"])
        chat.messages[message_id] = stored
        return stored

    def delivered_to_bot(self, chat: Chat, message: dict[str, Any]) -> bool:
        """Privacy mode (Bot API features, "Privacy mode"): in groups the bot gets only
        commands (unaddressed, or /cmd@this_bot; not /cmd@other_bot), replies to its own
        messages, and messages that mention it by username. Service messages are not sent by
        the control API, so not modelled here."""
        if chat.type == "private" or not self.options.privacy_mode:
            return True
        me = str(self.bot_user["username"]).lower()
        text = message.get("text") or message.get("caption") or ""
        command = _LEADING_COMMAND_RE.match(text)
        if command:
            addressed = command.group(1)
            return addressed is None or addressed[1:].lower() == me
        reply = message.get("reply_to_message")
        if reply is not None and reply.get("from", {}).get("id") == self.bot_user["id"]:
            return True
        return any(m.group()[1:].lower() == me for m in _MENTION_RE.finditer(text))

    def find_message(self, chat_id: int, message_id: int) -> ChatMessage | None:
        chat = self.chats.get(chat_id)
        if chat is None:
            return None
        found = chat.messages.get(message_id)
        return None if found is None or found.deleted else found

    def user(self, user_id: int, first_name: str | None, username: str | None) -> dict[str, Any]:
        known = self.users.get(user_id)
        if known is None:
            known = {
                "id": user_id,
                "is_bot": False,
                "first_name": first_name or f"User{user_id}",
                "language_code": "en",
            }
            if username:
                known["username"] = username
            self.users[user_id] = known
        return dict(known)

    # ------------------------------------------------------------------------- files

    def store_file(
        self,
        data: bytes,
        kind: str,
        *,
        mime_type: str | None = None,
        file_name: str | None = None,
        width: int | None = None,
        height: int | None = None,
    ) -> StoredFile:
        n = next(self._file_ids)
        prefix = "AgAC" if kind == "photo" else "BQAC"
        file_id = f"{prefix}{n:06d}{secrets.token_hex(6)}"
        ext = mimetypes.guess_extension(mime_type or "") or ".bin"
        if file_name and "." in file_name:
            ext = "." + file_name.rsplit(".", 1)[1]
        folder = "photos" if kind == "photo" else "documents"
        stored = StoredFile(
            file_id=file_id,
            file_unique_id=f"AQAD{n:06d}",
            file_path=f"{folder}/file_{n}{ext}",
            data=data,
            kind=kind,
            mime_type=mime_type,
            file_name=file_name,
            width=width,
            height=height,
        )
        self.files[file_id] = stored
        return stored

    def photo_sizes(self, data: bytes) -> list[dict[str, Any]]:
        """Store an image as Telegram would show it: a thumbnail and the full size."""
        width, height, fmt = _image_size(data)
        if len(data) > PHOTO_MAX_BYTES:
            raise bad_request("PHOTO_INVALID_DIMENSIONS")
        if width + height > PHOTO_MAX_DIMENSION_SUM:
            raise bad_request("PHOTO_INVALID_DIMENSIONS")
        if max(width, height) > PHOTO_MAX_RATIO * min(width, height):
            raise bad_request("PHOTO_INVALID_DIMENSIONS")
        if self.options.photo_recompression:
            return self._recompressed(data)
        sizes: list[dict[str, Any]] = []
        if max(width, height) > THUMBNAIL_SIDE:
            with Image.open(io.BytesIO(data)) as img:
                thumb = img.convert("RGB")
                thumb.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
                buf = io.BytesIO()
                thumb.save(buf, format="JPEG", quality=80)
                tw, th = thumb.size
            sizes.append(self._photo_size(buf.getvalue(), "image/jpeg", tw, th))
        mime = Image.MIME.get(fmt or "", "image/jpeg")
        sizes.append(self._photo_size(data, mime, width, height))
        return sizes

    def _recompressed(self, data: bytes) -> list[dict[str, Any]]:
        """What Telegram makes of any photo: opaque JPEG variants (alpha flattened onto white,
        the format and the original bytes gone), the largest at most 2560 px a side, smaller
        ones at 90/320/800/1280 px where the photo is bigger than that."""
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                full = Image.new("RGB", rgba.size, (255, 255, 255))
                full.paste(rgba, mask=rgba.getchannel("A"))
            else:
                full = img.convert("RGB")
        full.thumbnail((PHOTO_MAX_SIDE, PHOTO_MAX_SIDE))
        biggest = max(full.size)
        sides = [side for side in PHOTO_VARIANT_SIDES if side < biggest] + [biggest]
        sizes: list[dict[str, Any]] = []
        for side in sides:
            variant = full.copy()
            variant.thumbnail((side, side))
            buf = io.BytesIO()
            variant.save(buf, format="JPEG", quality=PHOTO_JPEG_QUALITY)
            vw, vh = variant.size
            sizes.append(self._photo_size(buf.getvalue(), "image/jpeg", vw, vh))
        return sizes

    def _photo_size(self, data: bytes, mime: str, width: int, height: int) -> dict[str, Any]:
        stored = self.store_file(data, "photo", mime_type=mime, width=width, height=height)
        return photo_size_view(stored)

    def document(self, data: bytes, file_name: str | None, mime: str | None) -> dict[str, Any]:
        if len(data) > DOCUMENT_MAX_BYTES:
            raise ApiError(413, "Request Entity Too Large")
        mime = mime or mimetypes.guess_type(file_name or "")[0] or "application/octet-stream"
        stored = self.store_file(data, "document", mime_type=mime, file_name=file_name)
        out: dict[str, Any] = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(data),
            "mime_type": mime,
        }
        if file_name:
            out["file_name"] = file_name
        return out

    def file_by_path(self, file_path: str) -> StoredFile | None:
        return next((f for f in self.files.values() if f.file_path == file_path), None)

    # ------------------------------------------------------------------------ faults

    def refuse_chat(self, method: str, chat_id: int) -> None:
        """The standing refusals of a chat, in the order Telegram checks them: blocked,
        migrated to a supergroup (400 with `migrate_to_chat_id`, which PTB turns into
        ChatMigrated), a private chat the user never opened, no right to send media."""
        if chat_id in self.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        new_id = self.migrated.get(chat_id)
        if new_id is not None:
            raise ApiError(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                {"migrate_to_chat_id": new_id},
            )
        if self.options.private_needs_start and chat_id > 0 and not self.user_wrote(chat_id):
            raise ApiError(403, "Forbidden: bot can't initiate conversation with a user")
        media = MEDIA_METHODS.get(method.lower())
        if media is not None and chat_id in self.no_media:
            raise bad_request(f"not enough rights to send {media} to the chat")

    def user_wrote(self, chat_id: int) -> bool:
        """Whether the user of this private chat ever wrote to the bot there (/start)."""
        chat = self.chats.get(chat_id)
        return chat is not None and any(not m.from_bot for m in chat.messages.values())

    def take_fault(self, method: str, chat_id: int | None) -> Fault | None:
        for fault in self.faults:
            if fault.count > 0 and fault.matches(method, chat_id):
                fault.count -= 1
                if fault.count == 0:
                    self.faults.remove(fault)
                return fault
        return None


def _update_type(update: dict[str, Any]) -> str:
    return next((k for k in update if k != "update_id"), "")


def _image_size(data: bytes) -> tuple[int, int, str | None]:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.width, img.height, img.format
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise bad_request("IMAGE_PROCESS_FAILED") from exc


# ---------------------------------------------------------------------------- request params


@dataclass
class Upload:
    data: bytes
    filename: str | None
    content_type: str | None


class Params:
    """A Bot API call's parameters, from the query string, a form, multipart or JSON."""

    def __init__(self, values: dict[str, Any], uploads: dict[str, Upload]) -> None:
        self.values = values
        self.uploads = uploads

    @classmethod
    async def read(cls, request: web.Request) -> Params:
        values: dict[str, Any] = dict(request.query)
        uploads: dict[str, Upload] = {}
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                body = await request.json()
                if isinstance(body, dict):
                    values.update(body)
            else:
                form = await request.post()
                for key, value in form.items():
                    if isinstance(value, web.FileField):
                        uploads[key] = Upload(value.file.read(), value.filename, value.content_type)
                    else:
                        values[key] = value
        return cls(values, uploads)

    def raw(self, name: str) -> Any:
        return self.values.get(name)

    def text(self, name: str, *, required: bool = False) -> str | None:
        value = self.values.get(name)
        if value is None:
            if required:
                raise bad_request(f"{name} is empty" if name == "text" else f"{name} is required")
            return None
        return value if isinstance(value, str) else json.dumps(value)

    def integer(self, name: str, *, required: bool = False) -> int | None:
        value = self.values.get(name)
        if value is None or value == "":
            if required:
                raise bad_request(f"{name} is required")
            return None
        try:
            return int(value)
        except (TypeError, ValueError) as exc:
            raise bad_request(f"invalid {name} specified") from exc

    def number(self, name: str) -> float | None:
        value = self.values.get(name)
        if value is None or value == "":
            return None
        try:
            return float(value)
        except (TypeError, ValueError) as exc:
            raise bad_request(f"invalid {name} specified") from exc

    def flag(self, name: str) -> bool:
        value = self.values.get(name)
        if isinstance(value, str):
            return value.lower() in ("true", "1")
        return bool(value)

    def parsed(self, name: str) -> Any:
        value = self.values.get(name)
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise bad_request(f"can't parse {name} JSON object") from exc
        return value

    def chat_id(self) -> int:
        value = self.values.get("chat_id")
        if value is None or value == "":
            raise bad_request("chat_id is empty")
        try:
            return int(value)
        except (TypeError, ValueError) as exc:
            raise bad_request("chat not found") from exc

    def loggable(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.values)
        for key, up in self.uploads.items():
            out[key] = {"upload": up.filename, "size": len(up.data), "mime_type": up.content_type}
        return out


# ------------------------------------------------------------------------------ Bot API methods

Method = Callable[[StandinState, Params], Awaitable[Any]]
METHODS: dict[str, Method] = {}


def method(name: str) -> Callable[[Method], Method]:
    def register(fn: Method) -> Method:
        METHODS[name.lower()] = fn
        return fn

    return register


@method("getMe")
async def get_me(state: StandinState, p: Params) -> Any:
    return dict(state.bot_user)


@method("getUpdates")
async def get_updates(state: StandinState, p: Params) -> Any:
    allowed = p.parsed("allowed_updates")
    if allowed is not None:
        state.allowed_updates = [a for a in allowed if a in UPDATE_TYPES] or None
    limit = p.integer("limit") or 100
    return await state.long_poll(
        p.integer("offset"), max(1, min(limit, 100)), p.number("timeout") or 0
    )


@method("setWebhook")
async def set_webhook(state: StandinState, p: Params) -> Any:
    url = p.text("url") or ""
    if p.flag("drop_pending_updates"):
        state.updates.clear()
    if not url:
        state.set_webhook(None)
        return True
    if not url.startswith("https://") and not _loopback_http_allowed(state, url):
        raise bad_request("bad webhook: HTTPS url must be provided for webhook")
    secret = p.text("secret_token")
    if secret is not None and not _SECRET_RE.match(secret):
        raise bad_request("secret token contains unallowed characters")
    allowed = p.parsed("allowed_updates")
    hook = Webhook(
        url=url,
        secret_token=secret,
        allowed_updates=[a for a in allowed if a in UPDATE_TYPES] if allowed else None,
        max_connections=p.integer("max_connections") or 40,
    )
    state.set_webhook(hook)
    return True


def _loopback_http_allowed(state: StandinState, url: str) -> bool:
    """`allow_http_webhook` lets a test's plain-http receiver on loopback through; Telegram
    itself takes only https (setWebhook: "HTTPS url must be provided")."""
    parsed = urlparse(url)
    return (
        state.options.allow_http_webhook
        and parsed.scheme == "http"
        and (parsed.hostname or "") in LOOPBACK_HOSTS
    )


@method("deleteWebhook")
async def delete_webhook(state: StandinState, p: Params) -> Any:
    if p.flag("drop_pending_updates"):
        state.updates.clear()
    state.set_webhook(None)
    return True


@method("getWebhookInfo")
async def get_webhook_info(state: StandinState, p: Params) -> Any:
    hook = state.webhook
    info: dict[str, Any] = {
        "url": hook.url if hook else "",
        "has_custom_certificate": False,
        "pending_update_count": len(state.updates),
    }
    if hook is not None:
        info["max_connections"] = hook.max_connections
        if hook.allowed_updates:
            info["allowed_updates"] = hook.allowed_updates
        if hook.last_error_date is not None:
            info["last_error_date"] = hook.last_error_date
            info["last_error_message"] = hook.last_error_message
    return info


def _reply_to(state: StandinState, chat: Chat, p: Params) -> dict[str, Any] | None:
    params = p.parsed("reply_parameters")
    target = p.integer("reply_to_message_id")
    allow_missing = p.flag("allow_sending_without_reply")
    if isinstance(params, dict):
        target = int(params["message_id"]) if params.get("message_id") is not None else None
        allow_missing = bool(params.get("allow_sending_without_reply"))
    if target is None:
        return None
    found = state.find_message(chat.id, target)
    if found is None:
        if allow_missing:
            return None
        raise bad_request("message to be replied not found")
    return _without_reply(found.message)


def _without_reply(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != "reply_to_message"}


def _markup(p: Params) -> dict[str, Any] | None:
    markup = p.parsed("reply_markup")
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise bad_request("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" in markup:
        rows = markup["inline_keyboard"]
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise bad_request("can't parse inline keyboard button: field is not an array")
        for row in rows:
            for button in row:
                data = button.get("callback_data")
                if data is not None and not 1 <= len(data.encode()) <= 64:
                    raise bad_request("BUTTON_DATA_INVALID")
                if not button.get("text"):
                    raise bad_request("can't parse inline keyboard button: Text must be non-empty")
        return markup
    return None  # reply keyboards are not part of the Message object Telegram returns


def _check_text(text: str, limit: int, what: str) -> None:
    if len(text) > limit:
        raise bad_request(f"{what} is too long")


async def _send(state: StandinState, p: Params, body: dict[str, Any]) -> Any:
    chat = state.chat(p.chat_id())
    body["reply_to_message"] = _reply_to(state, chat, p)
    markup = _markup(p)
    if markup is not None:
        body["reply_markup"] = markup
    _place_in_topic(chat, p, body)
    return state.add_message(chat, body, dict(state.bot_user)).message


def _place_in_topic(chat: Chat, p: Params, body: dict[str, Any]) -> None:
    """Forum topics (Bot API "sendMessage": message_thread_id, "for forum supergroups only";
    Message.is_topic_message): a message sent with message_thread_id lands in that topic;
    without it, in General (python-telegram-bot's Message.reply_* pass the thread of the
    message they answer; a bare bot.send_* does not). Outside forums it is ignored."""
    thread = p.integer("message_thread_id")
    if not chat.is_forum:
        return
    if thread is not None:
        body["message_thread_id"] = thread
        body["is_topic_message"] = True


@method("sendMessage")
async def send_message(state: StandinState, p: Params) -> Any:
    text = p.text("text") or ""
    if not text.strip():
        raise bad_request("message text is empty")
    _check_text(text, 4096, "message")
    return await _send(state, p, {"text": text, "entities": p.parsed("entities")})


def _caption(p: Params) -> dict[str, Any]:
    caption = p.text("caption")
    if caption is not None:
        _check_text(caption, 1024, "message caption")
    return {"caption": caption or None, "caption_entities": p.parsed("caption_entities")}


def _existing_file(state: StandinState, ref: str, kind: str) -> StoredFile:
    if ref.startswith(("http://", "https://")):
        raise bad_request("wrong file identifier/HTTP URL specified")
    stored = state.files.get(ref)
    if stored is None:
        raise bad_request("wrong file identifier/HTTP URL specified")
    if stored.kind != kind:
        raise bad_request(f"can't use file of type {stored.kind.title()} as {kind.title()}")
    return stored


@method("sendPhoto")
async def send_photo(state: StandinState, p: Params) -> Any:
    upload = p.uploads.get("photo")
    if upload is not None:
        sizes = state.photo_sizes(upload.data)
    else:
        ref = p.text("photo")
        if not ref:
            raise bad_request("there is no photo in the request")
        if ref.startswith("attach://"):
            raise bad_request("wrong file identifier/HTTP URL specified")
        stored = _existing_file(state, ref, "photo")
        sizes = [photo_size_view(f) for f in _photo_siblings(state, stored)]
    return await _send(state, p, {"photo": sizes, **_caption(p), **_spoiler(p.flag("has_spoiler"))})


def _spoiler(flag: Any) -> dict[str, Any]:
    """Message.has_media_spoiler, present only when the photo was sent with `has_spoiler`."""
    return {"has_media_spoiler": True} if flag is True or str(flag).lower() == "true" else {}


def photo_size_view(f: StoredFile) -> dict[str, Any]:
    """A stored photo as the Bot API's PhotoSize."""
    return {
        "file_id": f.file_id,
        "file_unique_id": f.file_unique_id,
        "file_size": len(f.data),
        "width": f.width,
        "height": f.height,
    }


def _photo_siblings(state: StandinState, stored: StoredFile) -> list[StoredFile]:
    """The sizes sent together with `stored` (reusing a file_id reuses the whole set)."""
    for chat in state.chats.values():
        for msg in chat.messages.values():
            sizes = msg.message.get("photo") or []
            if any(s["file_id"] == stored.file_id for s in sizes):
                return [state.files[s["file_id"]] for s in sizes if s["file_id"] in state.files]
    return [stored]


@method("sendDocument")
async def send_document(state: StandinState, p: Params) -> Any:
    upload = p.uploads.get("document")
    if upload is not None:
        doc = state.document(upload.data, upload.filename, upload.content_type)
    else:
        ref = p.text("document")
        if not ref:
            raise bad_request("there is no document in the request")
        stored = state.files.get(ref)
        if stored is None or ref.startswith(("http://", "https://")):
            raise bad_request("wrong file identifier/HTTP URL specified")
        doc = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.data),
            "mime_type": stored.mime_type or "application/octet-stream",
        }
        if stored.file_name:
            doc["file_name"] = stored.file_name
    thumb = _document_thumbnail(state, p, p.raw("thumbnail"))
    if thumb is not None:
        doc["thumbnail"] = thumb
    return await _send(state, p, {"document": doc, **_caption(p)})


def _document_thumbnail(state: StandinState, p: Params, ref: Any) -> dict[str, Any] | None:
    """A document's `thumbnail` (Bot API sendDocument: JPEG, under 200 kB, at most 320 px a
    side, uploaded with multipart/form-data, as `attach://<name>` or as the field itself)."""
    upload = p.uploads.get("thumbnail")
    if isinstance(ref, str) and ref.startswith("attach://"):
        upload = p.uploads.get(ref.removeprefix("attach://"))
    if upload is None:
        return None
    width, height, fmt = _image_size(upload.data)
    if fmt != "JPEG" or len(upload.data) >= 200 * 1024 or max(width, height) > THUMBNAIL_SIDE:
        return None  # Telegram ignores a thumbnail it cannot use
    return state._photo_size(upload.data, "image/jpeg", width, height)


@method("sendMediaGroup")
async def send_media_group(state: StandinState, p: Params) -> Any:
    """An album (Bot API sendMediaGroup): 2-10 photos/videos, or 2-10 documents, sent as one
    group of messages sharing a `media_group_id`. Items are uploaded as `attach://<name>` or
    reused by file_id; each photo passes the same checks as sendPhoto. The method has no
    `reply_markup`: an album cannot carry buttons."""
    media = p.parsed("media")
    if not isinstance(media, list) or not media:
        raise bad_request("media is empty")
    if not 2 <= len(media) <= 10:
        raise bad_request("media group must include 2-10 items")
    kinds = [item.get("type") if isinstance(item, dict) else None for item in media]
    if any(k not in ("photo", "video", "document", "audio") for k in kinds):
        raise bad_request("can't parse InputMedia: media type is invalid")
    for alone in ("document", "audio"):
        if alone in kinds and any(k != alone for k in kinds):
            raise bad_request(f"{alone} can't be mixed with other media types")
    bodies: list[dict[str, Any]] = []
    for n, item in enumerate(media, 1):
        ref = item.get("media")
        if not isinstance(ref, str) or not ref:
            raise bad_request(f"there is no media in the request item #{n}")
        upload = (
            p.uploads.get(ref.removeprefix("attach://")) if ref.startswith("attach://") else None
        )
        caption = item.get("caption")
        if caption is not None:
            _check_text(str(caption), 1024, "message caption")
        body: dict[str, Any] = {"caption": caption or None}
        try:
            if item["type"] == "photo":
                body.update(_spoiler(item.get("has_spoiler")))
                if upload is not None:
                    body["photo"] = state.photo_sizes(upload.data)
                else:
                    stored = _existing_file(state, ref, "photo")
                    body["photo"] = [photo_size_view(f) for f in _photo_siblings(state, stored)]
            elif upload is not None:
                body["document"] = state.document(upload.data, upload.filename, upload.content_type)
                thumb = _document_thumbnail(state, p, item.get("thumbnail"))
                if thumb is not None:
                    body["document"]["thumbnail"] = thumb
            else:
                raise bad_request("wrong file identifier/HTTP URL specified")
        except ApiError as exc:
            if exc.code != 400:
                raise
            raise ApiError(
                400,
                f"Bad Request: failed to send message #{n} with the error message "
                f'"{exc.description.removeprefix("Bad Request: ")}"',
            ) from exc
        bodies.append(body)
    group_id = str(10**17 + secrets.randbelow(10**17))
    without_markup = Params(
        {k: v for k, v in p.values.items() if k != "reply_markup"}, p.uploads
    )  # not a parameter of sendMediaGroup: Telegram ignores it
    sent = []
    for body in bodies:
        body["media_group_id"] = group_id
        sent.append(await _send(state, without_markup, body))
    return sent


def _editable(state: StandinState, p: Params, what: str) -> ChatMessage:
    if p.text("inline_message_id"):
        raise bad_request("inline messages are not supported by the stand-in")
    chat_id = p.chat_id()
    message_id = p.integer("message_id")
    if message_id is None:
        raise bad_request("message identifier is not specified")
    found = state.find_message(chat_id, message_id)
    if found is None:
        raise bad_request(f"message to {what} not found")
    if not found.from_bot and what == "edit":
        raise bad_request("message can't be edited")
    return found


_NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly "
    "the same as a current content and reply markup of the message"
)


def _apply_edit(found: ChatMessage, changes: dict[str, Any]) -> dict[str, Any]:
    msg = found.message
    if all(msg.get(k) == v for k, v in changes.items()):
        raise bad_request(_NOT_MODIFIED)
    for key, value in changes.items():
        if value is None:
            msg.pop(key, None)
        else:
            msg[key] = value
    now = time.time()
    msg["edit_date"] = int(now)
    found.edit_times.append(now)
    return msg


@method("editMessageText")
async def edit_message_text(state: StandinState, p: Params) -> Any:
    found = _editable(state, p, "edit")
    if "text" not in found.message:
        raise bad_request("there is no text in the message to edit")
    text = p.text("text") or ""
    if not text.strip():
        raise bad_request("message text is empty")
    _check_text(text, 4096, "message")
    changes = {"text": text, "entities": p.parsed("entities"), "reply_markup": _markup(p)}
    return _apply_edit(found, changes)


@method("editMessageCaption")
async def edit_message_caption(state: StandinState, p: Params) -> Any:
    found = _editable(state, p, "edit")
    if "text" in found.message:
        raise bad_request("there is no caption in the message to edit")
    return _apply_edit(found, {**_caption(p), "reply_markup": _markup(p)})


@method("editMessageReplyMarkup")
async def edit_message_reply_markup(state: StandinState, p: Params) -> Any:
    found = _editable(state, p, "edit")
    return _apply_edit(found, {"reply_markup": _markup(p)})


@method("deleteMessage")
async def delete_message(state: StandinState, p: Params) -> Any:
    found = _editable(state, p, "delete")
    found.deleted = True
    found.deleted_time = time.time()
    return True


@method("sendChatAction")
async def send_chat_action(state: StandinState, p: Params) -> Any:
    state.chat(p.chat_id())
    if p.text("action") not in CHAT_ACTIONS:
        raise bad_request("wrong parameter action in request")
    return True


@method("answerCallbackQuery")
async def answer_callback_query(state: StandinState, p: Params) -> Any:
    query_id = p.text("callback_query_id") or ""
    query = state.callback_queries.get(query_id)
    if query is None or query.get("answered"):
        raise bad_request("query is too old and response timeout expired or query ID is invalid")
    text = p.text("text")
    if text is not None and len(text) > 200:
        raise bad_request("MESSAGE_TOO_LONG")
    query["answered"] = True
    state.answered_callbacks.append(
        {
            "callback_query_id": query_id,
            "text": text,
            "show_alert": p.flag("show_alert"),
            "url": p.text("url"),
            "cache_time": p.integer("cache_time"),
            "time": time.time(),
        }
    )
    return True


@method("getFile")
async def get_file(state: StandinState, p: Params) -> Any:
    stored = state.files.get(p.text("file_id") or "")
    if stored is None:
        raise bad_request("invalid file_id")
    if len(stored.data) > GET_FILE_MAX_BYTES:
        raise bad_request("file is too big")
    return {
        "file_id": stored.file_id,
        "file_unique_id": stored.file_unique_id,
        "file_size": len(stored.data),
        "file_path": stored.file_path,
    }


def _commands_key(p: Params) -> str:
    scope = p.parsed("scope") or {"type": "default"}
    return json.dumps({"scope": scope, "language_code": p.text("language_code") or ""})


@method("setMyCommands")
async def set_my_commands(state: StandinState, p: Params) -> Any:
    commands = p.parsed("commands")
    if not isinstance(commands, list) or len(commands) > 100:
        raise bad_request("BOT_COMMANDS_TOO_MUCH" if commands else "commands is required")
    for c in commands:
        if not isinstance(c, dict) or not _COMMAND_RE.match(str(c.get("command", ""))):
            raise bad_request("BOT_COMMAND_INVALID")
        if not 1 <= len(str(c.get("description", "")).strip()) <= 256:
            raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
    cleaned = [{"command": c["command"], "description": c["description"]} for c in commands]
    state.commands[_commands_key(p)] = cleaned
    state.commands_log.append(
        {
            "scope": p.parsed("scope") or {"type": "default"},
            "language_code": p.text("language_code") or "",
            "commands": cleaned,
        }
    )
    return True


@method("getMyCommands")
async def get_my_commands(state: StandinState, p: Params) -> Any:
    return state.commands.get(_commands_key(p), [])


@method("deleteMyCommands")
async def delete_my_commands(state: StandinState, p: Params) -> Any:
    state.commands.pop(_commands_key(p), None)
    return True


@method("getChatMember")
async def get_chat_member(state: StandinState, p: Params) -> Any:
    """ChatMember of a user: `creator`/`administrator` for the chat's admins (a private chat's
    own user is its creator), `member` for anyone else. Admins are set by the control API
    (`send(..., admin=True)`)."""
    chat = state.chats.get(p.chat_id())
    if chat is None:
        raise bad_request("chat not found")
    user_id = p.integer("user_id", required=True)
    assert user_id is not None
    user = state.users.get(user_id) or {"id": user_id, "is_bot": False, "first_name": "User"}
    if chat.type == "private":
        status = "creator" if user_id == chat.id else "member"
    else:
        status = "administrator" if user_id in chat.admins else "member"
    out: dict[str, Any] = {"status": status, "user": user}
    if status == "administrator":  # Bot API ChatMemberAdministrator: every right is required
        out.update({right: False for right in ADMIN_RIGHTS})
        out.update(can_manage_chat=True, can_delete_messages=True, can_restrict_members=True)
    return out


ADMIN_RIGHTS = (
    "can_be_edited",
    "is_anonymous",
    "can_manage_chat",
    "can_delete_messages",
    "can_manage_video_chats",
    "can_restrict_members",
    "can_promote_members",
    "can_change_info",
    "can_invite_users",
    "can_post_stories",
    "can_edit_stories",
    "can_delete_stories",
)


@method("getChat")
async def get_chat(state: StandinState, p: Params) -> Any:
    chat = state.chats.get(p.chat_id())
    if chat is None:
        raise bad_request("chat not found")
    return {**chat.as_telegram(), "accent_color_id": 0, "max_reaction_count": 11}


# --------------------------------------------------------------------------------- HTTP routes

STATE_KEY = web.AppKey("state", StandinState)


def _state(request: web.Request) -> StandinState:
    return request.app[STATE_KEY]


def _ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


async def bot_api(request: web.Request) -> web.StreamResponse:
    """`/bot{token}/{method}`: check the token, apply faults, run the method, log the call."""
    state = _state(request)
    name = request.match_info["method"]
    started = time.time()
    entry: dict[str, Any] = {"method": name, "time": started}
    state.calls.append(entry)
    handler = METHODS.get(name.lower())
    if request.match_info["token"] != state.token or handler is None:
        refused = (
            ApiError(401, "Unauthorized")
            if request.match_info["token"] != state.token
            else ApiError(404, "Not Found")
        )
        entry.update(status=refused.code, description=refused.description, params={})
        return web.json_response(refused.body(), status=refused.code)
    try:
        if (request.content_length or 0) > UPLOAD_MAX_BYTES:
            raise ApiError(413, "Request Entity Too Large")
        params = await Params.read(request)
        entry["params"] = params.loggable()
        chat_id = _chat_id_or_none(params)
        fault = state.take_fault(name, chat_id)
        if fault is not None:
            entry["fault"] = fault.error_code
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.drop:
                entry["status"] = "dropped"
                if request.transport is not None:
                    request.transport.close()
                return web.Response(status=502)
            raise fault.error()
        if chat_id is not None:
            state.refuse_chat(name, chat_id)
            if state.options.flood and name.lower() in COUNTED_SENDS:
                state.flood.take(chat_id, time.monotonic())
        result = await handler(state, params)
    except ApiError as exc:
        entry.update(status=exc.code, description=exc.description, duration=time.time() - started)
        return web.json_response(exc.body(), status=exc.code)
    entry.update(status=200, duration=time.time() - started)
    return _ok(result)


def _chat_id_or_none(params: Params) -> int | None:
    try:
        return params.chat_id() if params.raw("chat_id") not in (None, "") else None
    except ApiError:
        return None


async def file_download(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    if request.match_info["token"] != state.token:
        return web.json_response(ApiError(401, "Unauthorized").body(), status=401)
    stored = state.file_by_path(request.match_info["path"])
    if stored is None:
        return web.json_response(ApiError(404, "Not Found").body(), status=404)
    return web.Response(
        body=stored.data, content_type=stored.mime_type or "application/octet-stream"
    )


# -------------------------------------------------------------------------------- control API


def control_error(message: str, status: int = 400) -> web.HTTPException:
    """A control-API request a test got wrong (400) or about a missing thing (404)."""
    cls = web.HTTPNotFound if status == 404 else web.HTTPBadRequest
    return cls(text=json.dumps({"error": message}), content_type="application/json")


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = await request.json()
    except json.JSONDecodeError as exc:
        raise control_error(f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise control_error("body must be a JSON object")
    return data


def _b64(value: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise control_error(f"{what} must be base64: {exc}") from exc


def _entities(text: str) -> list[dict[str, Any]]:
    """bot_command for a leading /command, mention for @names: what Telegram's client adds."""
    out: list[dict[str, Any]] = []
    command = _LEADING_COMMAND_RE.match(text)
    if command:
        out.append({"type": "bot_command", "offset": 0, "length": _utf16_len(command.group())})
    for m in _MENTION_RE.finditer(text):
        if command and m.start() < command.end():
            continue
        offset = _utf16_len(text[: m.start()])
        out.append({"type": "mention", "offset": offset, "length": _utf16_len(m.group())})
    return out


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


async def control_send(request: web.Request) -> web.Response:
    """A user sends a message (text, photo or document) to the bot; it becomes an Update."""
    state = _state(request)
    user_id = int(request.match_info["user_id"])
    body = await _body(request)
    chat_type = body.get("chat_type", "private")
    if chat_type not in ("private", "group", "supergroup"):
        raise control_error("chat_type must be private, group or supergroup")
    user = state.user(user_id, body.get("first_name"), body.get("username"))
    chat_id = int(body.get("chat_id") or (user_id if chat_type == "private" else -user_id))
    chat = state.chat(chat_id, chat_type=chat_type, title=body.get("chat_title"))
    if body.get("admin") and chat.type != "private":
        chat.admins.add(user_id)
    message: dict[str, Any] = {}
    sender_chat: dict[str, Any] | None = None
    if body.get("anonymous") or body.get("sender_chat_id") is not None:
        if chat.type == "private":
            raise control_error("anonymous admins and channel senders exist only in groups")
        if body.get("anonymous"):
            sender_chat = chat.as_telegram()
            user = {
                "id": GROUP_ANONYMOUS_BOT_ID,
                "is_bot": True,
                "first_name": "Group",
                "username": "GroupAnonymousBot",
            }
        else:
            channel = state.chat(int(body["sender_chat_id"]), chat_type="channel")
            sender_chat = channel.as_telegram()
            user = {
                "id": CHANNEL_BOT_ID,
                "is_bot": True,
                "first_name": "Channel",
                "username": "Channel_Bot",
            }
    text = body.get("text")
    caption = body.get("caption")
    try:
        if body.get("photo") is not None:
            message["photo"] = state.photo_sizes(_b64(body["photo"], "photo"))
        elif body.get("document") is not None:
            message["document"] = state.document(
                _b64(body["document"], "document"), body.get("filename"), body.get("mime_type")
            )
    except ApiError as exc:
        raise control_error(exc.description) from exc
    if message:
        caption = caption if caption is not None else text
        if caption:
            message["caption"] = caption
            message["caption_entities"] = _entities(caption) or None
    elif text:
        message["text"] = text
        message["entities"] = _entities(text) or None
    else:
        raise control_error("send needs text, photo or document")
    reply_to = body.get("reply_to_message_id")
    if reply_to is not None:
        target = state.find_message(chat_id, int(reply_to))
        if target is None:
            raise control_error(f"message {reply_to} not found in chat {chat_id}")
        message["reply_to_message"] = _without_reply(target.message)
    if sender_chat is not None:
        message["sender_chat"] = sender_chat
    if body.get("is_forum"):
        if chat.type != "supergroup":
            raise control_error("only a supergroup can be a forum")
        chat.is_forum = True
    thread = body.get("message_thread_id")
    if thread is not None:  # a message in a forum topic: the supergroup is a forum
        if chat.type != "supergroup":
            raise control_error("forum topics exist only in supergroups")
        chat.is_forum = True
        message["message_thread_id"] = int(thread)
        message["is_topic_message"] = True
    stored = state.add_message(chat, message, user)
    if not state.delivered_to_bot(chat, stored.message):
        # Privacy mode: the message is in the group, but Telegram never tells the bot.
        return web.json_response(
            {"update_id": None, "message_id": stored.message["message_id"], "delivered": False}
        )
    update_id = state.enqueue("message", dict(stored.message))
    return web.json_response(
        {"update_id": update_id, "message_id": stored.message["message_id"], "delivered": True}
    )


async def control_edit(request: web.Request) -> web.Response:
    """A user edits one of their messages; Telegram sends it again as `edited_message`."""
    state = _state(request)
    user_id = int(request.match_info["user_id"])
    body = await _body(request)
    chat_id = int(body.get("chat_id") or user_id)
    if body.get("message_id") is None:
        raise control_error("edit needs message_id")
    found = state.find_message(chat_id, int(body["message_id"]))
    if found is None or found.from_bot:
        raise control_error(f"no user message {body['message_id']} in chat {chat_id}")
    sender = found.message["from"]["id"]
    if sender != user_id and "sender_chat" not in found.message:
        raise control_error(f"message {body['message_id']} was sent by {sender}, not {user_id}")
    msg = found.message
    if body.get("text") is not None:
        if "text" not in msg:
            raise control_error("that message has no text (edit its caption)")
        msg["text"] = str(body["text"])
        msg["entities"] = _entities(msg["text"]) or None
    elif body.get("caption") is not None:
        msg["caption"] = str(body["caption"])
        msg["caption_entities"] = _entities(msg["caption"]) or None
    else:
        raise control_error("edit needs text or caption")
    for key in ("entities", "caption_entities"):
        if msg.get(key) is None:
            msg.pop(key, None)
    now = time.time()
    msg["edit_date"] = int(now)
    found.edit_times.append(now)
    update_id = state.enqueue("edited_message", dict(msg))
    return web.json_response({"update_id": update_id, "message_id": msg["message_id"]})


async def control_redeliver(request: web.Request) -> web.Response:
    """The same message once more as a new `message` update (a replay with a new update id)."""
    state = _state(request)
    chat_id = int(request.match_info["chat_id"])
    message_id = int(request.match_info["message_id"])
    found = state.find_message(chat_id, message_id)
    if found is None or found.from_bot:
        raise control_error(f"no user message {message_id} in chat {chat_id}")
    update_id = state.enqueue("message", dict(found.message))
    return web.json_response({"update_id": update_id})


def _buttons(message: dict[str, Any]) -> list[str]:
    rows = (message.get("reply_markup") or {}).get("inline_keyboard") or []
    return [b["callback_data"] for row in rows for b in row if "callback_data" in b]


async def control_press(request: web.Request) -> web.Response:
    """A user taps an inline button on one of the bot's messages; it becomes an Update."""
    state = _state(request)
    user_id = int(request.match_info["user_id"])
    body = await _body(request)
    chat_id = int(body.get("chat_id") or user_id)
    if body.get("message_id") is None or body.get("data") is None:
        raise control_error("press needs message_id and data")
    message_id = int(body["message_id"])
    data = str(body["data"])
    target = state.find_message(chat_id, message_id)
    if target is None:
        raise control_error(f"message {message_id} not found (or deleted) in chat {chat_id}")
    available = _buttons(target.message)
    # `forge`: a modified client sends callback data no button of the message carries (the
    # bot must treat callback data as user input).
    if data not in available and not body.get("forge"):
        raise control_error(f"message {message_id} has no button {data!r}; it has {available}")
    user = state.user(user_id, body.get("first_name"), body.get("username"))
    query_id = f"{next(state._callback_ids)}{secrets.randbelow(10**9):09d}"
    query = {
        "id": query_id,
        "from": user,
        "message": dict(target.message),
        "chat_instance": str(abs(hash(chat_id)) % 10**12),
        "data": data,
    }
    state.callback_queries[query_id] = {"chat_id": chat_id, "message_id": message_id}
    update_id = state.enqueue("callback_query", query)
    return web.json_response({"update_id": update_id, "callback_query_id": query_id})


def _message_view(stored: ChatMessage) -> dict[str, Any]:
    """What a test sees of one message: its current state plus edit and delete history."""
    msg = stored.message
    photo = None
    if msg.get("photo"):
        largest = msg["photo"][-1]
        photo = {
            "width": largest["width"],
            "height": largest["height"],
            "file_id": largest["file_id"],
            "file_unique_id": largest["file_unique_id"],
            "file_size": largest.get("file_size"),
            "sizes": msg["photo"],
        }
    doc = msg.get("document")
    document = None
    if doc:
        document = {
            "file_name": doc.get("file_name"),
            "mime_type": doc.get("mime_type"),
            "file_id": doc["file_id"],
            "size": doc.get("file_size"),
            "thumbnail": doc.get("thumbnail"),
        }
    reply = msg.get("reply_to_message")
    return {
        "message_id": msg["message_id"],
        "chat_id": msg["chat"]["id"],
        "from_bot": stored.from_bot,
        "from_id": msg["from"]["id"],
        "date": msg["date"],
        "text": msg.get("text"),
        "caption": msg.get("caption"),
        "photo": photo,
        "document": document,
        "reply_markup": msg.get("reply_markup"),
        "buttons": _buttons(msg),
        "reply_to_message_id": reply["message_id"] if reply else None,
        "message_thread_id": msg.get("message_thread_id"),  # None: General (or not a forum)
        "media_group_id": msg.get("media_group_id"),
        "has_media_spoiler": bool(msg.get("has_media_spoiler")),
        "edits": len(stored.edit_times),
        "edit_times": list(stored.edit_times),
        "deleted": stored.deleted,
        "deleted_time": stored.deleted_time,
    }


async def control_messages(request: web.Request) -> web.Response:
    state = _state(request)
    chat = state.chats.get(int(request.match_info["chat_id"]))
    views = [_message_view(m) for m in chat.messages.values()] if chat else []
    return web.json_response(views)


async def control_file(request: web.Request) -> web.Response:
    stored = _state(request).files.get(request.match_info["file_id"])
    if stored is None:
        raise control_error("no such file_id", status=404)
    return web.Response(
        body=stored.data, content_type=stored.mime_type or "application/octet-stream"
    )


async def control_calls(request: web.Request) -> web.Response:
    wanted = request.query.get("method")
    calls = _state(request).calls
    if wanted:
        calls = [c for c in calls if c["method"].lower() == wanted.lower()]
    return web.json_response(calls)


async def control_faults(request: web.Request) -> web.Response:
    state = _state(request)
    body = await _body(request)
    if "blocked_chat_id" in body:
        state.blocked.add(int(body["blocked_chat_id"]))
    if "unblocked_chat_id" in body:
        state.blocked.discard(int(body["unblocked_chat_id"]))
    if "migrated_chat_id" in body:
        old, new = int(body["migrated_chat_id"]), int(body["migrate_to_chat_id"])
        old_chat = state.chat(old, chat_type="group")
        state.chat(new, chat_type="supergroup", title=old_chat.title)
        state.migrated[old] = new
    if "no_media_chat_id" in body:
        state.no_media.add(int(body["no_media_chat_id"]))
    if "media_allowed_chat_id" in body:
        state.no_media.discard(int(body["media_allowed_chat_id"]))
    if "method" in body:
        code = int(body.get("error_code", 429))
        state.faults.append(
            Fault(
                method=str(body["method"]),
                error_code=code,
                count=int(body.get("count", 1)),
                retry_after=int(body["retry_after"]) if body.get("retry_after") else None,
                description=body.get("description"),
                chat_id=int(body["chat_id"]) if body.get("chat_id") is not None else None,
                drop=bool(body.get("drop", False)),
                delay=float(body.get("delay", 0.0)),
            )
        )
    return web.json_response(_faults_view(state))


def _faults_view(state: StandinState) -> dict[str, Any]:
    return {
        "faults": [f.__dict__ for f in state.faults],
        "blocked_chat_ids": sorted(state.blocked),
        "migrated_chat_ids": {str(k): v for k, v in state.migrated.items()},
        "no_media_chat_ids": sorted(state.no_media),
    }


async def control_options(request: web.Request) -> web.Response:
    state = _state(request)
    body = await _body(request)
    for name in (
        "photo_recompression",
        "privacy_mode",
        "flood",
        "allow_http_webhook",
        "private_needs_start",
    ):
        if name in body:
            setattr(state.options, name, bool(body[name]))
    limits = body.get("flood_limits")
    if isinstance(limits, dict):
        state.flood = Flood(
            chat_per_second=float(limits.get("chat_per_second", state.flood.chat_per_second)),
            chat_burst=int(limits.get("chat_burst", state.flood.chat_burst)),
            group_per_minute=int(limits.get("group_per_minute", state.flood.group_per_minute)),
        )
    if "first_message_id" in body:
        state.first_message_id = int(body["first_message_id"])
    state.bot_user["can_read_all_group_messages"] = not state.options.privacy_mode
    return web.json_response(
        {**state.options.view(state.flood), "first_message_id": state.first_message_id}
    )


async def control_faults_get(request: web.Request) -> web.Response:
    return web.json_response(_faults_view(_state(request)))


async def control_reset(request: web.Request) -> web.Response:
    body = await _body(request)
    _state(request).reset(everything=bool(body.get("all", False)))
    return web.json_response({"ok": True})


async def control_commands(request: web.Request) -> web.Response:
    state = _state(request)
    default = json.dumps({"scope": {"type": "default"}, "language_code": ""})
    return web.json_response(state.commands.get(default, []))


async def control_commands_log(request: web.Request) -> web.Response:
    return web.json_response(_state(request).commands_log)


async def control_answered(request: web.Request) -> web.Response:
    return web.json_response(_state(request).answered_callbacks)


async def control_updates(request: web.Request) -> web.Response:
    return web.json_response(_state(request).updates)


async def control_webhook(request: web.Request) -> web.Response:
    hook = _state(request).webhook
    return web.json_response(None if hook is None else hook.__dict__)


async def control_health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _release_polls(app: web.Application) -> None:
    """On shutdown, answer waiting long polls at once (empty) instead of holding the exit."""
    state = app[STATE_KEY]
    state.closing = True
    state.notify()


async def _stop_webhook(app: web.Application) -> None:
    state = app[STATE_KEY]
    task = state._webhook_task
    state.webhook = None
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def create_app(token: str = DEFAULT_TOKEN) -> web.Application:
    """The stand-in's aiohttp application (call inside a running loop)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[STATE_KEY] = StandinState(token)
    app.on_shutdown.append(_release_polls)
    app.on_cleanup.append(_stop_webhook)
    app.router.add_route("*", "/bot{token}/{method}", bot_api)
    app.router.add_get("/file/bot{token}/{path:.+}", file_download)
    app.router.add_post("/_control/users/{user_id}/send", control_send)
    app.router.add_post("/_control/users/{user_id}/press", control_press)
    app.router.add_post("/_control/users/{user_id}/edit", control_edit)
    app.router.add_post(
        "/_control/chats/{chat_id}/messages/{message_id}/redeliver", control_redeliver
    )
    app.router.add_post("/_control/options", control_options)
    app.router.add_get("/_control/chats/{chat_id}/messages", control_messages)
    app.router.add_get("/_control/files/{file_id}", control_file)
    app.router.add_get("/_control/calls", control_calls)
    app.router.add_post("/_control/faults", control_faults)
    app.router.add_get("/_control/faults", control_faults_get)
    app.router.add_post("/_control/reset", control_reset)
    app.router.add_get("/_control/commands", control_commands)
    app.router.add_get("/_control/commands/log", control_commands_log)
    app.router.add_get("/_control/answered_callbacks", control_answered)
    app.router.add_get("/_control/updates", control_updates)
    app.router.add_get("/_control/webhook", control_webhook)
    app.router.add_get("/_control/health", control_health)
    return app
