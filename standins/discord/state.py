"""What the Discord stand-in remembers: the bot, one guild, users, channels, messages,
interactions, registered commands, gateway sessions, rate-limit buckets and the switches.

Kept apart from the HTTP and websocket code so the gateway, the REST routes and the control
API read and change one model. Ids are real Discord snowflakes (milliseconds since the Discord
epoch shifted left 22 bits), so discord.py's `created_at` of every object is right.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from standins.discord.limits import DEFAULT_UPLOAD_LIMIT

DEFAULT_TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.stand.in-discord-token"
"""The bot token the stand-in accepts unless told otherwise (`--token`)."""
DISCORD_EPOCH_MS = 1420070400000
ACK_DEADLINE = 3.0
"""Seconds a bot has to acknowledge an interaction (Receiving and Responding)."""
TOKEN_TTL = 15 * 60.0
"""Seconds an interaction token stays valid for followups and edits."""
HEARTBEAT_INTERVAL_MS = 41250
"""What Discord sends in HELLO today (Gateway, Sending Heartbeats: ~41.25 s)."""

# Message flags (Message resource, Message Flags).
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7

# Intents (Gateway, Gateway Intents): the privileged ones need a switch in the portal.
INTENT_GUILDS = 1 << 0
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | (1 << 15)  # GUILD_MEMBERS, PRESENCES, MESSAGE_CONTENT


def now_iso(ts: float | None = None) -> str:
    """Discord's ISO8601 timestamps, with microseconds and +00:00."""
    return datetime.fromtimestamp(ts if ts is not None else time.time(), UTC).isoformat()


# An ordinary member's permission bits (no Manage Server, bit 5, nor Administrator, bit 3).
MEMBER_PERMISSIONS = "2248473465835073"


@dataclass
class Options:
    """Per-test switches (control `POST /_control/options`); `reset` restores these defaults."""

    ack_deadline: float = ACK_DEADLINE
    token_ttl: float = TOKEN_TTL
    upload_limit: int = DEFAULT_UPLOAD_LIMIT
    heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS
    bucket_limit: int = 5
    bucket_window: float = 2.0
    global_per_second: int = 50
    honour_compress: bool = True
    ack_heartbeats: bool = True
    privileged_intents: int = 0

    def view(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Bucket:
    """One rate-limit bucket: at most `limit` requests in any `window` seconds."""

    name: str
    limit: int
    window: float
    sent: list[float] = field(default_factory=list)

    def take(self, now: float) -> float:
        """Count a request; return 0, or the seconds to wait when the bucket is empty."""
        self.sent = [t for t in self.sent if now - t < self.window]
        if len(self.sent) >= self.limit:
            return self.sent[0] + self.window - now
        self.sent.append(now)
        return 0.0

    def headers(self, now: float) -> dict[str, str]:
        remaining = max(0, self.limit - len(self.sent))
        reset_after = (self.sent[0] + self.window - now) if self.sent else self.window
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": hashlib.sha1(self.name.encode()).hexdigest()[:32],
        }


@dataclass
class ForcedLimit:
    """A 429 injected for the next `count` requests whose "METHOD /route" matches `route`."""

    route: str
    count: int
    retry_after: float
    is_global: bool = False
    via: bool = True
    scope: str = "user"

    def matches(self, key: str) -> bool:
        return self.route in ("*", key)


@dataclass
class Interaction:
    """An interaction the control API injected, with what the bot did about it."""

    id: int
    token: str
    kind: int
    user_id: int
    channel_id: int
    guild_id: int | None
    created: float
    payload: dict[str, Any]
    message_id: int | None = None  # of a component's message
    acked: bool = False
    ack_type: int | None = None
    acked_at: float | None = None
    original_id: int | None = None
    followups: list[int] = field(default_factory=list)
    late_ack_refused: bool = False
    modal: dict[str, Any] | None = None  # the form a type-9 response opened (custom_id, rows)

    def view(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "token": self.token,
            "type": self.kind,
            "user_id": str(self.user_id),
            "channel_id": str(self.channel_id),
            "guild_id": str(self.guild_id) if self.guild_id else None,
            "acked": self.acked,
            "ack_type": self.ack_type,
            "ack_after": (self.acked_at - self.created) if self.acked_at else None,
            "original_id": str(self.original_id) if self.original_id else None,
            "followups": [str(m) for m in self.followups],
            "late_ack_refused": self.late_ack_refused,
            "modal": self.modal,
        }


@dataclass
class Connection:
    """One gateway websocket."""

    ws: web.WebSocketResponse
    path: str
    compress: bool
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    compressor: Any = None
    session_id: str | None = None
    heartbeats: int = 0
    dropped: bool = False
    transport: Any = None  # to cut the TCP connection (control `drop` with `abrupt`)


@dataclass
class Session:
    """A gateway session: survives its socket until RESUMEd or invalidated."""

    id: str
    intents: int
    seq: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)
    conn: Connection | None = None
    identified: int = 1
    resumes: list[dict[str, Any]] = field(default_factory=list)
    valid: bool = True


class DiscordState:
    """Everything the stand-in knows; one instance per server."""

    def __init__(self, token: str = DEFAULT_TOKEN) -> None:
        self.token = token
        self._counter = itertools.count(1)
        self.application_id = self.snowflake()
        self.bot_user: dict[str, Any] = {
            "id": str(self.application_id),
            "username": "StationThis Test",
            "global_name": None,
            "discriminator": "0000",
            "avatar": None,
            "bot": True,
            "flags": 0,
            "public_flags": 0,
        }
        self.owner_id = self.snowflake()
        self.guild_id = self.snowflake()
        self.channel_id = self.snowflake()
        self.sessions: dict[str, Session] = {}
        self.current: Session | None = None
        self.connections: list[Connection] = []
        self.hold_hello = asyncio.Event()
        self.hold_hello.set()
        self.reset()

    def reset(self) -> None:
        """Forget messages, interactions, registered commands, calls, buckets and switches.
        Gateway sessions and ids stay: a running bot keeps its session across a reset."""
        self.options = Options()
        self.commands: dict[int | None, list[dict[str, Any]]] = {}
        self.users: dict[int, dict[str, Any]] = {}
        self.channels: dict[int, dict[str, Any]] = {
            self.channel_id: {
                "id": str(self.channel_id),
                "type": 0,
                "guild_id": str(self.guild_id),
                "name": "general",
                "position": 0,
                "permission_overwrites": [],
                "nsfw": False,
                "parent_id": None,
                "topic": None,
                "last_message_id": None,
                "rate_limit_per_user": 0,
            }
        }
        self.dm_of_user: dict[int, int] = {}
        self.messages: dict[int, dict[str, Any]] = {}
        self.meta: dict[int, dict[str, Any]] = {}
        self.attachments: dict[int, tuple[str, str, bytes]] = {}
        self.interactions: dict[int, Interaction] = {}
        self.by_token: dict[str, Interaction] = {}
        self.calls: list[dict[str, Any]] = []
        self.buckets: dict[str, Bucket] = {}
        self.global_sent: list[float] = []
        self.forced: list[ForcedLimit] = []
        self.hold_hello.set()

    # --------------------------------------------------------------------------- ids

    def snowflake(self) -> int:
        """A new id: timestamp since the Discord epoch, then a counter (Reference, Snowflakes)."""
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return (ms << 22) | (next(self._counter) & 0x3FFFFF)

    @staticmethod
    def new_token() -> str:
        return "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(96)

    # ------------------------------------------------------------------------ people

    def user(self, user_id: int, name: str | None = None) -> dict[str, Any]:
        if user_id not in self.users:
            self.users[user_id] = {
                "id": str(user_id),
                "username": name or f"user{user_id}",
                "global_name": name or f"User {user_id}",
                "discriminator": "0",
                "avatar": None,
                "public_flags": 0,
                "flags": 0,
            }
        return self.users[user_id]

    def member(self, user_id: int, permissions: str | None = None) -> dict[str, Any]:
        """A guild member as an interaction carries it: `permissions` are the member's
        resolved permission bits in the channel (Discord computes them; a test chooses)."""
        return {
            "user": self.user(user_id),
            "roles": [],
            "joined_at": now_iso(),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "nick": None,
            "avatar": None,
            "permissions": permissions or MEMBER_PERMISSIONS,
            "communication_disabled_until": None,
        }

    def dm_channel(self, user_id: int) -> dict[str, Any]:
        """The DM channel between the bot and a user, made on first use."""
        if user_id not in self.dm_of_user:
            cid = self.snowflake()
            self.dm_of_user[user_id] = cid
            self.channels[cid] = {
                "id": str(cid),
                "type": 1,
                "last_message_id": None,
                "recipients": [self.user(user_id)],
                "flags": 0,
            }
        return self.channels[self.dm_of_user[user_id]]

    def guild(self) -> dict[str, Any]:
        """GUILD_CREATE's guild: one text channel, the @everyone role, the bot as a member."""
        return {
            "id": str(self.guild_id),
            "name": "StationThis Test Guild",
            "icon": None,
            "owner_id": str(self.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "features": [],
            "mfa_level": 0,
            "system_channel_id": str(self.channel_id),
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "public_updates_channel_id": None,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "joined_at": now_iso(),
            "large": False,
            "unavailable": False,
            "member_count": 2,
            "roles": [
                {
                    "id": str(self.guild_id),
                    "name": "@everyone",
                    "color": 0,
                    "hoist": False,
                    "position": 0,
                    "permissions": "2248473465835073",
                    "managed": False,
                    "mentionable": False,
                    "flags": 0,
                }
            ],
            "emojis": [],
            "stickers": [],
            "channels": [
                c for c in self.channels.values() if c.get("guild_id") == str(self.guild_id)
            ],
            "threads": [],
            "members": [self.member(self.application_id) | {"user": self.bot_user}],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    # ------------------------------------------------------------------------ buckets

    def bucket(self, name: str) -> Bucket:
        if name not in self.buckets:
            self.buckets[name] = Bucket(name, self.options.bucket_limit, self.options.bucket_window)
        return self.buckets[name]

    def take_global(self, now: float) -> float:
        """Discord's global limit (50 requests a second per bot); 0 or the wait."""
        self.global_sent = [t for t in self.global_sent if now - t < 1.0]
        if len(self.global_sent) >= self.options.global_per_second:
            return self.global_sent[0] + 1.0 - now
        self.global_sent.append(now)
        return 0.0
