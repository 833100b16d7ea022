"""The Discord stand-in's aiohttp application: Gateway v10, the REST routes a bot uses, controls.

Gateway (what discord.py connects to; https://discord.com/developers/docs/events/gateway):
  `GET /?v=10&encoding=json[&compress=zlib-stream]` (the bot's `DEFAULT_GATEWAY`) and
  `GET /resume?...` (READY's `resume_gateway_url`) upgrade to a websocket: HELLO (op 10),
  IDENTIFY (op 2) -> READY then GUILD_CREATE, heartbeats (op 1) answered by ACKs (op 11),
  RESUME (op 6) replaying every event after the client's sequence then RESUMED, INVALID_SESSION
  (op 9) for a session it does not know, RECONNECT (op 7) on demand, and Discord's close codes
  (4001 unknown opcode, 4002 decode error, 4003 not authenticated, 4004 authentication failed,
  4005 already authenticated, 4007 invalid seq, 4012 invalid API version, 4013 invalid intents,
  4014 disallowed intents). Frames are zlib-stream binary when the URL asks for it, else text.

REST under `/api/v10` (https://discord.com/developers/docs/reference): users/@me,
  oauth2/applications/@me, gateway(/bot), application commands (GET, bulk-overwrite PUT, global
  and guild), interaction callback, followups and the original response (GET/PATCH/DELETE),
  channel messages (POST with attachments, GET/PATCH/DELETE), DM channel creation; plus the
  attachment "CDN" at `/attachments/{channel}/{id}/{filename}`. Every answer has exactly
  `Content-Type: application/json` (or none, for 204), a `Via` header and X-RateLimit-* headers.

Control side (JSON; never seen by the bot), wrapped by tests/discord_standin/standin.py:
  GET  /_control/health -> {"application_id", "guild_id", "channel_id", "bot_user_id"}
  POST /_control/commands/invoke {"user_id", "name", "options"?: {name: value}, "files"?:
        {option: {"filename", "data" (base64), "content_type"?}}, "dm"?: bool, "channel_id"?,
        "forge"?: bool, "permissions"?: the member's permission bits (a guild's member has
        Discord's usual @everyone ones, without Manage Server, unless given)}
        -> {"interaction_id", "token", "delivered", "channel_id"}
        A user runs a slash command; `forge` skips the check that it is registered.
  POST /_control/components/press {"user_id", "message_id", "custom_id", "forge"?}
        -> same shape: the user presses a button the message has (or any id, with `forge`).
  POST /_control/modals/submit {"interaction_id" (that opened it), "values": {custom_id: text}}
        -> same shape: the user submits the modal that interaction's response opened.
  GET  /_control/interactions/{id} -> ack state, original response id, followups
  POST /_control/interactions/{id}/redeliver -> the same INTERACTION_CREATE again (a replay)
  GET  /_control/channels/{id}/messages, GET /_control/messages/{id} -> message views
  GET  /_control/dm/{user_id} -> {"channel_id"}; GET /_control/attachments/{id} -> bytes
  GET  /_control/calls?route=METHOD%20/template -> REST calls (without file bytes)
  GET  /_control/commands?guild_id=G -> registered commands (global without guild_id)
  POST /_control/rate_limits {"route" ("PATCH /webhooks/{application_id}/{token}/messages/
        @original" or "*"), "count"?, "retry_after"?, "global"?, "via"?, "scope"?}
  POST /_control/options {see state.Options} -> all switches
  GET  /_control/gateway -> sessions and connections
  POST /_control/gateway/drop {"code"? (4000), "abrupt"?, "hold"?}; /release; /reconnect;
        /heartbeat (op 1: the client must heartbeat at once)
  POST /_control/reset
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import logging
import math
import mimetypes
import secrets
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web
from PIL import Image, UnidentifiedImageError

from standins.discord import limits
from standins.discord.limits import DiscordError
from standins.discord.state import (
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    INTENT_GUILDS,
    PRIVILEGED_INTENTS,
    Connection,
    DiscordState,
    ForcedLimit,
    Interaction,
    Session,
    now_iso,
)

log = logging.getLogger(__name__)

STATE_KEY: web.AppKey[DiscordState] = web.AppKey("discord_state", DiscordState)
API = "/api/v10"
MAX_BODY_BYTES = 120 * 1024 * 1024
EVENT_LOG_MAX = 1000
"""Dispatched events a session keeps for RESUME."""

Json = dict[str, Any]


# ----------------------------------------------------------------------------------- answers


def json_response(status: int, data: Any, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer with exactly `Content-Type: application/json`, as Discord sends it.

    discord.py compares the header for equality (`json_or_text`); aiohttp's own
    `json_response` would add `; charset=utf-8` and the bot would see a string."""
    out = {"Content-Type": "application/json", "Via": "1.1 google"}
    out.update(headers or {})
    return web.Response(status=status, body=json.dumps(data).encode(), headers=out)


def no_content(headers: dict[str, str] | None = None) -> web.Response:
    out = {"Via": "1.1 google"}
    out.update(headers or {})
    return web.Response(status=204, headers=out)


def error_response(err: DiscordError, headers: dict[str, str] | None = None) -> web.Response:
    return json_response(err.status, err.body(), headers)


# ------------------------------------------------------------------------------------ bodies


class Body:
    """A REST request body: the JSON payload and the uploaded files (multipart `files[n]`)."""

    def __init__(self, payload: Json, files: list[tuple[int, str, str, bytes]]) -> None:
        self.payload = payload
        self.files = files  # (index, filename, content_type, data)


async def read_body(request: web.Request, upload_limit: int) -> Body:
    """JSON, or multipart with `payload_json` and `files[n]` (Reference, Uploading Files)."""
    if request.content_type.startswith("multipart/"):
        payload: Json = {}
        files: list[tuple[int, str, str, bytes]] = []
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            name = getattr(part, "name", None) or ""
            if name == "payload_json":
                payload = json.loads(await part.text())  # type: ignore[union-attr]
            elif name.startswith("files[") or name.startswith("file"):
                data = await part.read()  # type: ignore[union-attr]
                if len(data) > upload_limit:
                    raise limits.too_large()
                index = int(name[6:-1]) if name.startswith("files[") else len(files)
                filename = getattr(part, "filename", None) or name
                ctype = part.headers.get("Content-Type", "application/octet-stream")
                if ctype == "application/octet-stream":  # Discord sniffs the type by name
                    ctype = mimetypes.guess_type(filename)[0] or ctype
                files.append((index, filename, ctype, data))
        return Body(payload, files)
    raw = await request.read()
    if not raw:
        return Body({}, [])
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise DiscordError(400, 50109, "The request body contains invalid JSON.") from exc
    return Body(data if isinstance(data, dict) else {"_list": data}, [])


# --------------------------------------------------------------------------------- messages


def attachment_object(
    state: DiscordState, base: str, channel_id: int, filename: str, ctype: str, data: bytes
) -> Json:
    """Store an uploaded file; its Attachment object (Message resource, Attachment Object)."""
    aid = state.snowflake()
    state.attachments[aid] = (filename, ctype, data)
    url = f"{base}/attachments/{channel_id}/{aid}/{filename}"
    out: Json = {
        "id": str(aid),
        "filename": filename,
        "size": len(data),
        "url": url,
        "proxy_url": url,
        "content_type": ctype,
    }
    if ctype.startswith("image/"):
        with (
            contextlib.suppress(UnidentifiedImageError, OSError),
            Image.open(io.BytesIO(data)) as img,
        ):
            out["width"], out["height"] = img.size
    return out


def base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def new_message(
    state: DiscordState,
    request: web.Request,
    channel_id: int,
    body: Body,
    *,
    interaction: Interaction | None = None,
    flags: int = 0,
    loading: bool = False,
) -> Json:
    """Create and store a bot message in a channel (Create Message / an interaction response)."""
    payload = body.payload
    mid = state.snowflake()
    attachments = [
        attachment_object(state, base_url(request), channel_id, name, ctype, data)
        for _i, name, ctype, data in sorted(body.files)
    ]
    msg: Json = {
        "id": str(mid),
        "type": 0,
        "channel_id": str(channel_id),
        "author": state.bot_user,
        "content": "" if loading else str(payload.get("content") or ""),
        "timestamp": now_iso(),
        "edited_timestamp": None,
        "tts": bool(payload.get("tts", False)),
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "attachments": attachments,
        "embeds": [] if loading else list(payload.get("embeds") or []),
        "components": [] if loading else list(payload.get("components") or []),
        "pinned": False,
        "flags": flags | (FLAG_LOADING if loading else 0),
    }
    channel = state.channels[channel_id]
    if channel.get("guild_id"):
        msg["guild_id"] = channel["guild_id"]
    if interaction is not None:
        msg["type"] = 20 if interaction.kind == 2 else 19
        msg["webhook_id"] = str(state.application_id)
        msg["application_id"] = str(state.application_id)
        msg["interaction_metadata"] = {
            "id": str(interaction.id),
            "type": interaction.kind,
            "user": state.user(interaction.user_id),
            "authorizing_integration_owners": interaction.payload["authorizing_integration_owners"],
        }
    state.messages[mid] = msg
    state.meta[mid] = {
        "edits": 0,
        "deleted": False,
        "interaction_id": interaction.id if interaction else None,
        "visible_to": interaction.user_id if flags & FLAG_EPHEMERAL and interaction else None,
    }
    channel["last_message_id"] = str(mid)
    return msg


def edit_message(state: DiscordState, request: web.Request, mid: int, body: Body) -> Json:
    """Edit Message semantics: fields present replace; `attachments` lists what stays."""
    msg = state.messages[mid]
    payload = body.payload
    for key in ("content", "embeds", "components"):
        if key in payload and payload[key] is not None:
            msg[key] = payload[key]
    new = [
        attachment_object(state, base_url(request), int(msg["channel_id"]), name, ctype, data)
        for _i, name, ctype, data in sorted(body.files)
    ]
    if "attachments" in payload and payload["attachments"] is not None:
        keep_ids = {str(a.get("id")) for a in payload["attachments"]}
        msg["attachments"] = [a for a in msg["attachments"] if a["id"] in keep_ids]
    msg["attachments"] = msg["attachments"] + new
    msg["flags"] = msg["flags"] & ~FLAG_LOADING
    msg["edited_timestamp"] = now_iso()
    state.meta[mid]["edits"] += 1
    return msg


def message_view(state: DiscordState, mid: int) -> Json:
    """What a test reads about a message (control API)."""
    msg = state.messages[mid]
    meta = state.meta[mid]
    return {
        "id": msg["id"],
        "channel_id": msg["channel_id"],
        "author_id": msg["author"]["id"],
        "from_bot": msg["author"]["id"] == state.bot_user["id"],
        "content": msg["content"],
        "embeds": msg["embeds"],
        "components": msg["components"],
        "custom_ids": limits.custom_ids(msg["components"]),
        "attachments": msg["attachments"],
        "flags": msg["flags"],
        "ephemeral": bool(msg["flags"] & FLAG_EPHEMERAL),
        "loading": bool(msg["flags"] & FLAG_LOADING),
        "visible_to": str(meta["visible_to"]) if meta["visible_to"] else None,
        "interaction_id": str(meta["interaction_id"]) if meta["interaction_id"] else None,
        "edits": meta["edits"],
        "deleted": meta["deleted"],
    }


# ----------------------------------------------------------------------------------- gateway


async def send_frame(conn: Connection, frame: Json) -> bool:
    """Send one payload, zlib-stream compressed when the connection asked for it."""
    data = json.dumps(frame)
    async with conn.send_lock:
        if conn.ws.closed:
            return False
        try:
            if conn.compress:
                chunk = conn.compressor.compress(data.encode()) + conn.compressor.flush(
                    zlib.Z_SYNC_FLUSH
                )
                await conn.ws.send_bytes(chunk)
            else:
                await conn.ws.send_str(data)
        except (ConnectionError, RuntimeError):
            return False
    return True


async def dispatch(session: Session, event: str, data: Json) -> bool:
    """Number and log an event; send it if the session has a socket (else it waits for RESUME).

    Returns whether it went out on a live socket."""
    session.seq += 1
    frame = {"op": 0, "t": event, "s": session.seq, "d": data}
    session.log.append(frame)
    del session.log[:-EVENT_LOG_MAX]
    conn = session.conn
    if conn is None or conn.dropped:
        return False
    return await send_frame(conn, frame)


def ready_payload(state: DiscordState, session: Session, request: web.Request) -> Json:
    """READY (Gateway Events, Ready): user, guilds, session_id, resume_gateway_url, application."""
    ws_base = f"ws://{request.host}"
    return {
        "v": 10,
        "user": state.bot_user | {"verified": True, "mfa_enabled": False, "email": None},
        "guilds": [{"id": str(state.guild_id), "unavailable": True}],
        "session_id": session.id,
        "resume_gateway_url": f"{ws_base}/resume",
        "session_type": "normal",
        "shard": [0, 1],
        "application": {"id": str(state.application_id), "flags": 0},
        "private_channels": [],
        "relationships": [],
        "presences": [],
        "guild_join_requests": [],
        "geo_ordered_rtc_regions": [],
        "_trace": ["stationthis-discord-standin"],
    }


async def gateway(request: web.Request) -> web.StreamResponse:
    """One gateway connection, from HELLO to close."""
    state = request.app[STATE_KEY]
    ws = web.WebSocketResponse(max_msg_size=4 * 1024 * 1024, autoping=True)
    await ws.prepare(request)
    if request.query.get("v") != "10":
        await ws.close(code=4012, message=b"Invalid API version")
        return ws
    if request.query.get("encoding", "json") != "json":
        await ws.close(code=4002, message=b"Error while decoding payload.")
        return ws
    compress = request.query.get("compress") == "zlib-stream" and state.options.honour_compress
    conn = Connection(ws=ws, path=request.path, compress=compress)
    if compress:
        conn.compressor = zlib.compressobj()
    state.connections.append(conn)
    conn.transport = request.transport
    await state.hold_hello.wait()
    await send_frame(
        conn, {"op": 10, "d": {"heartbeat_interval": state.options.heartbeat_interval_ms}}
    )
    try:
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                await ws.close(code=4002, message=b"Error while decoding payload.")
                break
            try:
                frame = json.loads(msg.data)
                op = frame["op"]
            except (ValueError, KeyError, TypeError):
                await ws.close(code=4002, message=b"Error while decoding payload.")
                break
            if not await handle_op(state, conn, request, op, frame.get("d")):
                break
    finally:
        conn.dropped = True
        for session in state.sessions.values():
            if session.conn is conn:
                session.conn = None
    return ws


async def handle_op(
    state: DiscordState, conn: Connection, request: web.Request, op: Any, d: Any
) -> bool:
    """One client payload; False once the socket is closed."""
    ws = conn.ws
    if op == 1:  # Heartbeat
        conn.heartbeats += 1
        if state.options.ack_heartbeats:  # off: a "zombied" connection (Gateway, Heartbeat
            await send_frame(conn, {"op": 11})  # Interval): the client must close and resume
        return True
    if op == 2:  # Identify
        if conn.session_id is not None:
            await ws.close(code=4005, message=b"Already authenticated.")
            return False
        if not isinstance(d, dict) or d.get("token") != state.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return False
        intents = d.get("intents")
        if not isinstance(intents, int) or intents < 0:
            await ws.close(code=4013, message=b"Invalid intent(s).")
            return False
        if intents & PRIVILEGED_INTENTS & ~state.options.privileged_intents:
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return False
        session = Session(id=secrets.token_hex(16), intents=intents, conn=conn)
        state.sessions[session.id] = session
        state.current = session
        conn.session_id = session.id
        await dispatch(session, "READY", ready_payload(state, session, request))
        if intents & INTENT_GUILDS:
            await dispatch(session, "GUILD_CREATE", state.guild())
        return True
    if op == 6:  # Resume
        if not isinstance(d, dict) or d.get("token") != state.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return False
        found = state.sessions.get(str(d.get("session_id")))
        if found is None or not found.valid:
            await send_frame(conn, {"op": 9, "d": False})
            return True
        seq = d.get("seq") or 0
        if seq > found.seq:
            await ws.close(code=4007, message=b"Invalid seq.")
            return False
        old = found.conn
        if old is not None and old is not conn and not old.ws.closed:
            old.dropped = True
            await old.ws.close(code=4000, message=b"Session resumed elsewhere.")
        found.conn = conn
        conn.session_id = found.id
        state.current = found
        missed = [f for f in found.log if f["s"] > seq]
        found.resumes.append({"from_seq": seq, "replayed": len(missed), "path": conn.path})
        for frame in missed:
            await send_frame(conn, frame)
        await dispatch(found, "RESUMED", {"_trace": ["stationthis-discord-standin"]})
        return True
    if conn.session_id is None:
        await ws.close(code=4003, message=b"Not authenticated.")
        return False
    if op in (3, 4, 8, 31):  # presence, voice state, request members, soundboard: accepted
        return True
    await ws.close(code=4001, message=b"Unknown opcode.")
    return False


# -------------------------------------------------------------------------------- REST plumbing

Handler = Callable[[web.Request, DiscordState, Body], Awaitable[web.StreamResponse]]


def rest(
    template: str, handler: Handler, *, webhook: bool = False
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Wrap a REST handler: auth, forced and real rate limits, body, errors, headers, call log.

    `webhook` routes (interaction callback, followups) carry their token in the URL, need no
    Authorization header and are not counted against the global limit (Rate Limits, Global
    Rate Limit: "Interaction endpoints are not bound to the bot's Global Rate Limit")."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE_KEY]
        key = f"{request.method} {template}"
        call: Json = {
            "route": key,
            "path": request.path,
            "query": dict(request.query),
            "time": time.time(),
        }
        state.calls.append(call)
        now = time.monotonic()
        major = request.match_info.get(
            "channel_id", request.match_info.get("token", request.match_info.get("guild_id", ""))
        )
        bucket = state.bucket(f"{key}:{major}")
        try:
            if not webhook and request.headers.get("Authorization") != f"Bot {state.token}":
                raise limits.unauthorized()
            forced = next((f for f in state.forced if f.matches(key)), None)
            if forced is not None:
                forced.count -= 1
                if forced.count <= 0:
                    state.forced.remove(forced)
                call["status"] = 429
                return limited(
                    forced.retry_after,
                    forced.is_global,
                    forced.scope,
                    forced.via,
                    bucket.headers(now),
                )
            wait = bucket.take(now)
            if wait > 0:
                call["status"] = 429
                return limited(wait, False, "user", True, bucket.headers(now))
            if not webhook:
                wait = state.take_global(now)
                if wait > 0:
                    call["status"] = 429
                    return limited(wait, True, "global", True, {})
            body = await read_body(request, state.options.upload_limit)
            call["json"] = body.payload
            call["files"] = [
                {"index": i, "filename": n, "content_type": c, "size": len(d)}
                for i, n, c, d in body.files
            ]
            response = await handler(request, state, body)
        except DiscordError as err:
            call["status"] = err.status
            call["error"] = err.body()
            return error_response(err, bucket.headers(now))
        call["status"] = response.status
        response.headers.update(bucket.headers(now))
        return response

    return wrapped


def limited(
    retry_after: float, is_global: bool, scope: str, via: bool, headers: dict[str, str]
) -> web.Response:
    """A 429 as Discord sends it (Rate Limits, Exceeding A Rate Limit).

    Without `via` it is what a Cloudflare ban looks like: no Via header and an HTML body,
    which discord.py does not retry."""
    retry_after = round(max(retry_after, 0.001), 3)
    out = dict(headers)
    out.update(
        {
            "Retry-After": str(math.ceil(retry_after)),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset-After": f"{retry_after:.3f}",
            "X-RateLimit-Scope": scope,
        }
    )
    if is_global:
        out["X-RateLimit-Global"] = "true"
    if not via:
        return web.Response(
            status=429,
            body=b"<html><body>error code: 1015</body></html>",
            headers={"Content-Type": "text/html", **out},
        )
    body = {
        "message": "You are being rate limited.",
        "retry_after": retry_after,
        "global": is_global,
    }
    if is_global:
        body["code"] = 0
    return json_response(429, body, out)


def int_param(request: web.Request, name: str) -> int:
    try:
        return int(request.match_info[name])
    except ValueError as exc:
        raise DiscordError(
            400,
            limits.INVALID_FORM_BODY,
            "Invalid Form Body",
            {
                name: {
                    "_errors": [
                        {"code": "NUMBER_TYPE_COERCE", "message": "Value is not snowflake."}
                    ]
                }
            },
        ) from exc


# ------------------------------------------------------------------------------- REST: basics


async def get_me(request: web.Request, state: DiscordState, body: Body) -> web.StreamResponse:
    return json_response(200, state.bot_user)


async def get_application(
    request: web.Request, state: DiscordState, body: Body
) -> web.StreamResponse:
    """Get Current Bot Application Information (discord.py's login asks it)."""
    return json_response(
        200,
        {
            "id": str(state.application_id),
            "name": "StationThis Test",
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": "0" * 64,
            "flags": 0,
            "owner": state.user(state.owner_id),
            "team": None,
            "bot": state.bot_user,
            "interactions_endpoint_url": None,
            "install_params": None,
            "integration_types_config": {"0": {}, "1": {}},
        },
    )


async def get_gateway(request: web.Request, state: DiscordState, body: Body) -> web.StreamResponse:
    out: Json = {"url": f"ws://{request.host}"}
    if request.path.endswith("/bot"):
        out |= {
            "shards": 1,
            "session_start_limit": {
                "total": 1000,
                "remaining": 999,
                "reset_after": 86_400_000,
                "max_concurrency": 1,
            },
        }
    return json_response(200, out)


# ---------------------------------------------------------------------- REST: app commands


def _check_application(state: DiscordState, request: web.Request) -> int | None:
    if int_param(request, "application_id") != state.application_id:
        raise DiscordError(403, 50001, "Missing Access")
    if "guild_id" not in request.match_info:
        return None
    guild_id = int_param(request, "guild_id")
    if guild_id != state.guild_id:
        raise DiscordError(403, 50001, "Missing Access")
    return guild_id


async def put_commands(request: web.Request, state: DiscordState, body: Body) -> web.StreamResponse:
    """Bulk Overwrite (Global|Guild) Application Commands: the list replaces all; a command
    keeps its id when its name and type stay (Application Commands, Registering a Command)."""
    guild_id = _check_application(state, request)
    commands = body.payload.get("_list")
    if not isinstance(commands, list):
        raise DiscordError(
            400,
            limits.INVALID_FORM_BODY,
            "Invalid Form Body",
            {
                "_errors": [
                    {
                        "code": "LIST_TYPE_CONVERT",
                        "message": "Only iterables may be used in a ListType",
                    }
                ]
            },
        )
    limits.check_commands(commands, guild=guild_id is not None)
    old = {(c["type"], c["name"]): c for c in state.commands.get(guild_id, [])}
    stored: list[Json] = []
    for cmd in commands:
        kind = int(cmd.get("type", 1))
        prev = old.get((kind, cmd["name"]))
        out: Json = {
            "id": prev["id"] if prev else str(state.snowflake()),
            "application_id": str(state.application_id),
            "version": str(state.snowflake()),
            "type": kind,
            "name": cmd["name"],
            "description": cmd.get("description", "") if kind == 1 else "",
            "options": cmd.get("options") or [],
            "default_member_permissions": cmd.get("default_member_permissions"),
            "nsfw": bool(cmd.get("nsfw", False)),
            "contexts": cmd.get("contexts"),
            "integration_types": cmd.get("integration_types") or [0],
            "name_localizations": cmd.get("name_localizations"),
            "description_localizations": cmd.get("description_localizations"),
        }
        if "dm_permission" in cmd:
            out["dm_permission"] = cmd["dm_permission"]
        if guild_id is not None:
            out["guild_id"] = str(guild_id)
        stored.append(out)
    state.commands[guild_id] = stored
    return json_response(200, stored)


async def get_commands(request: web.Request, state: DiscordState, body: Body) -> web.StreamResponse:
    guild_id = _check_application(state, request)
    return json_response(200, state.commands.get(guild_id, []))


# ------------------------------------------------------------------------ REST: interactions


def find_interaction(state: DiscordState, request: web.Request) -> Interaction:
    """The interaction of a callback URL; 10062 when unknown, its token wrong or expired."""
    interaction = state.interactions.get(int_param(request, "interaction_id"))
    if interaction is None or interaction.token != request.match_info["token"]:
        raise limits.unknown_interaction()
    if time.monotonic() - interaction.created > state.options.token_ttl:
        raise limits.unknown_interaction()
    return interaction


async def interaction_callback(
    request: web.Request, state: DiscordState, body: Body
) -> web.StreamResponse:
    """Create Interaction Response (Receiving and Responding, Responding to an Interaction).

    One response per interaction, within 3 seconds of it; `with_response` answers the
    InteractionCallbackResponse, else 204."""
    interaction = find_interaction(state, request)
    if interaction.acked:
        raise limits.already_acknowledged()
    elapsed = time.monotonic() - interaction.created
    if elapsed > state.options.ack_deadline:
        interaction.late_ack_refused = True
        raise limits.unknown_interaction()
    kind = body.payload.get("type")
    data = body.payload.get("data") or {}
    component = interaction.kind in (3, 5)
    allowed = {4, 5, 9} | ({6, 7} if component else set())
    if kind not in allowed:
        raise DiscordError(
            400,
            limits.INVALID_FORM_BODY,
            "Invalid Form Body",
            {
                "type": {
                    "_errors": [
                        {
                            "code": "BASE_TYPE_CHOICES",
                            "message": f"Value must be one of {sorted(allowed)}.",
                        }
                    ]
                }
            },
        )
    flags = int(data.get("flags") or 0) & FLAG_EPHEMERAL
    message: Json | None = None
    if kind == 4:
        limits.check_message(data, len(body.files), prefix=("data",))
        message = new_message(
            state,
            request,
            interaction.channel_id,
            Body(data, body.files),
            interaction=interaction,
            flags=flags,
        )
        interaction.original_id = int(message["id"])
    elif kind == 5:
        message = new_message(
            state,
            request,
            interaction.channel_id,
            Body({}, []),
            interaction=interaction,
            flags=flags,
            loading=True,
        )
        interaction.original_id = int(message["id"])
    elif kind == 9:
        limits.check_modal(data)
        interaction.modal = data
    elif kind == 7:
        assert interaction.message_id is not None
        limits.check_message(data, len(body.files), prefix=("data",), edit=True)
        message = edit_message(state, request, interaction.message_id, Body(data, body.files))
    interaction.acked = True
    interaction.ack_type = kind
    interaction.acked_at = time.monotonic()
    if request.query.get("with_response", "").lower() not in ("1", "true"):
        return no_content()
    out: Json = {"interaction": {"id": str(interaction.id), "type": interaction.kind}}
    if message is not None:
        out["interaction"] |= {
            "response_message_id": message["id"],
            "response_message_loading": bool(message["flags"] & FLAG_LOADING),
            "response_message_ephemeral": bool(message["flags"] & FLAG_EPHEMERAL),
        }
        out["resource"] = {"type": kind, "message": message}
    else:
        out["resource"] = {"type": kind}
    return json_response(200, out)


def webhook_interaction(state: DiscordState, request: web.Request) -> Interaction:
    """The interaction behind `/webhooks/{application_id}/{token}`: 50027 once its 15 minutes
    are over, once its 3 seconds passed without a response ("the token will be
    invalidated"), or for a token never issued; 10015 while it waits for its response."""
    if int_param(request, "application_id") != state.application_id:
        raise limits.unknown(limits.UNKNOWN_WEBHOOK, "Webhook")
    interaction = state.by_token.get(request.match_info["token"])
    if interaction is None:
        raise limits.invalid_webhook_token()
    age = time.monotonic() - interaction.created
    if age > state.options.token_ttl:
        raise limits.invalid_webhook_token()
    if not interaction.acked:
        if age > state.options.ack_deadline:
            raise limits.invalid_webhook_token()
        raise limits.unknown(limits.UNKNOWN_WEBHOOK, "Webhook")
    return interaction


def webhook_message_id(interaction: Interaction, request: web.Request) -> int:
    raw = request.match_info["message_id"]
    if raw == "@original":
        if interaction.original_id is None:
            raise limits.unknown(limits.UNKNOWN_MESSAGE, "Message")
        return interaction.original_id
    mid = int_param(request, "message_id")
    if mid != interaction.original_id and mid not in interaction.followups:
        raise limits.unknown(limits.UNKNOWN_MESSAGE, "Message")
    return mid


async def webhook_message(
    request: web.Request, state: DiscordState, body: Body
) -> web.StreamResponse:
    """Get / Edit / Delete Original Interaction Response and Followup Message."""
    interaction = webhook_interaction(state, request)
    mid = webhook_message_id(interaction, request)
    if state.meta[mid]["deleted"]:
        raise limits.unknown(limits.UNKNOWN_MESSAGE, "Message")
    if request.method == "GET":
        return json_response(200, state.messages[mid])
    if request.method == "DELETE":
        state.meta[mid]["deleted"] = True
        return no_content()
    limits.check_message(body.payload, len(body.files), edit=True)
    return json_response(200, edit_message(state, request, mid, body))


async def followup(request: web.Request, state: DiscordState, body: Body) -> web.StreamResponse:
    """Create Followup Message. After a deferred (thinking) response the first followup
    replaces the loading message instead of adding one (Receiving and Responding,
    Followup Messages)."""
    interaction = webhook_interaction(state, request)
    limits.check_message(body.payload, len(body.files))
    flags = int(body.payload.get("flags") or 0) & FLAG_EPHEMERAL
    original = state.messages.get(interaction.original_id or 0)
    if original is not None and original["flags"] & FLAG_LOADING:
        message = edit_message(state, request, int(original["id"]), body)
    else:
        message = new_message(
            state, request, interaction.channel_id, body, interaction=interaction, flags=flags
        )
        interaction.followups.append(int(message["id"]))
    if request.query.get("wait", "").lower() in ("1", "true"):
        return json_response(200, message)
    return no_content()


# ---------------------------------------------------------------------------- REST: channels


def channel_of(state: DiscordState, request: web.Request) -> int:
    cid = int_param(request, "channel_id")
    if cid not in state.channels:
        raise limits.unknown(limits.UNKNOWN_CHANNEL, "Channel")
    return cid


def message_of(state: DiscordState, request: web.Request, cid: int) -> int:
    mid = int_param(request, "message_id")
    msg = state.messages.get(mid)
    if msg is None or int(msg["channel_id"]) != cid or state.meta[mid]["deleted"]:
        raise limits.unknown(limits.UNKNOWN_MESSAGE, "Message")
    if state.meta[mid]["visible_to"] is not None:
        raise limits.unknown(limits.UNKNOWN_MESSAGE, "Message")  # ephemeral: no channel API
    return mid


async def get_channel(request: web.Request, state: DiscordState, body: Body) -> web.StreamResponse:
    return json_response(200, state.channels[channel_of(state, request)])


async def create_message(
    request: web.Request, state: DiscordState, body: Body
) -> web.StreamResponse:
    """Create Message, JSON or multipart with attachments."""
    cid = channel_of(state, request)
    limits.check_message(body.payload, len(body.files))
    return json_response(200, new_message(state, request, cid, body))


async def channel_message(
    request: web.Request, state: DiscordState, body: Body
) -> web.StreamResponse:
    """Get / Edit / Delete Message: only the bot's own messages can be edited."""
    cid = channel_of(state, request)
    mid = message_of(state, request, cid)
    msg = state.messages[mid]
    if request.method == "GET":
        return json_response(200, msg)
    if request.method == "DELETE":
        state.meta[mid]["deleted"] = True
        return no_content()
    if msg["author"]["id"] != state.bot_user["id"]:
        raise DiscordError(
            403,
            limits.CANNOT_EDIT_OTHERS_MESSAGE,
            "Cannot edit a message authored by another user",
        )
    limits.check_message(body.payload, len(body.files), edit=True)
    return json_response(200, edit_message(state, request, mid, body))


async def create_dm(request: web.Request, state: DiscordState, body: Body) -> web.StreamResponse:
    try:
        user_id = int(body.payload["recipient_id"])
    except (KeyError, ValueError, TypeError) as exc:
        raise DiscordError(
            400,
            limits.INVALID_FORM_BODY,
            "Invalid Form Body",
            {
                "recipient_id": {
                    "_errors": [{"code": "BASE_TYPE_REQUIRED", "message": "This field is required"}]
                }
            },
        ) from exc
    return json_response(200, state.dm_channel(user_id))


async def attachment_download(request: web.Request) -> web.StreamResponse:
    """The attachment "CDN": the bytes of an uploaded file."""
    state = request.app[STATE_KEY]
    found = state.attachments.get(int(request.match_info["attachment_id"]))
    if found is None:
        return web.Response(status=404, text="Not Found")
    _name, ctype, data = found
    return web.Response(body=data, headers={"Content-Type": ctype})


async def api_not_found(request: web.Request) -> web.StreamResponse:
    request.app[STATE_KEY].calls.append(
        {"route": f"{request.method} ?", "path": request.path, "time": time.time(), "status": 404}
    )
    return error_response(limits.not_found())


# ------------------------------------------------------------------------------- control API


async def _json(request: web.Request) -> Json:
    if not request.can_read_body:
        return {}
    data = await request.json()
    return data if isinstance(data, dict) else {}


def _bad(text: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": text}), content_type="application/json")


def _find_command(state: DiscordState, name: str, guild: bool) -> Json | None:
    scopes: list[int | None] = [state.guild_id, None] if guild else [None]
    for scope in scopes:
        for cmd in state.commands.get(scope, []):
            if cmd["name"] == name and cmd["type"] == 1:
                return cmd
    return None


def _offered_in(command: Json, dm: bool) -> bool:
    """Whether Discord's client offers the command there: `contexts` (0 guild, 1 the bot's
    DM, 2 private channels), else the legacy `dm_permission` (Application Commands,
    Contexts)."""
    contexts = command.get("contexts")
    if contexts is not None:
        return (1 if dm else 0) in contexts
    if dm:
        return bool(command.get("dm_permission", True)) and command.get("guild_id") is None
    return True


def _interaction_base(
    state: DiscordState,
    kind: int,
    user_id: int,
    channel_id: int,
    permissions: str | None = None,
) -> tuple[Interaction, Json]:
    channel = state.channels[channel_id]
    guild_id = int(channel["guild_id"]) if channel.get("guild_id") else None
    iid = state.snowflake()
    token = state.new_token()
    payload: Json = {
        "id": str(iid),
        "application_id": str(state.application_id),
        "type": kind,
        "token": token,
        "version": 1,
        "channel_id": str(channel_id),
        "channel": channel,
        "locale": "en-US",
        "app_permissions": "2248473465835073",
        "entitlements": [],
        "attachment_size_limit": state.options.upload_limit,
    }
    if guild_id is not None:
        payload |= {
            "guild_id": str(guild_id),
            "guild": {"id": str(guild_id), "locale": "en-US", "features": []},
            "guild_locale": "en-US",
            "member": state.member(user_id, permissions),
            "authorizing_integration_owners": {"0": str(guild_id)},
            "context": 0,
        }
    else:
        payload |= {
            "user": state.user(user_id),
            "authorizing_integration_owners": {"0": str(state.guild_id)},
            "context": 1,
        }
    interaction = Interaction(
        id=iid,
        token=token,
        kind=kind,
        user_id=user_id,
        channel_id=channel_id,
        guild_id=guild_id,
        created=time.monotonic(),
        payload=payload,
    )
    return interaction, payload


async def _deliver(state: DiscordState, interaction: Interaction) -> web.Response:
    state.interactions[interaction.id] = interaction
    state.by_token[interaction.token] = interaction
    session = state.current
    delivered = False
    if session is not None:
        delivered = await dispatch(session, "INTERACTION_CREATE", interaction.payload)
    return web.json_response(
        {
            "interaction_id": str(interaction.id),
            "token": interaction.token,
            "delivered": delivered,
            "channel_id": str(interaction.channel_id),
            "seq": session.seq if session else None,
        }
    )


async def control_invoke(request: web.Request) -> web.StreamResponse:
    """A user runs a slash command (an APPLICATION_COMMAND interaction)."""
    state = request.app[STATE_KEY]
    body = await _json(request)
    user_id = int(body["user_id"])
    dm = bool(body.get("dm", False))
    channel_id = (
        int(state.dm_channel(user_id)["id"])
        if dm
        else int(body.get("channel_id") or state.channel_id)
    )
    if channel_id not in state.channels:
        raise _bad(f"no channel {channel_id}")
    name = str(body["name"])
    command = _find_command(state, name, guild=not dm)
    if command is None and not body.get("forge"):
        raise _bad(f"no registered chat command {name!r} (forge=true sends it anyway)")
    if command is not None and not body.get("forge") and not _offered_in(command, dm):
        raise _bad(f"/{name} is not offered in {'DMs' if dm else 'guilds'} (its contexts)")
    perms = body.get("permissions")
    interaction, payload = _interaction_base(
        state, 2, user_id, channel_id, str(perms) if perms is not None else None
    )
    kinds = {o["name"]: o.get("type", 3) for o in (command or {}).get("options", [])}
    options: list[Json] = []
    resolved: Json = {}
    for key, value in (body.get("options") or {}).items():
        options.append({"name": key, "type": kinds.get(key, 3), "value": value})
    for key, spec in (body.get("files") or {}).items():
        try:
            data = base64.b64decode(spec["data"], validate=True)
        except (binascii.Error, KeyError) as exc:
            raise _bad(f"file {key}: base64 'data' needed") from exc
        att = attachment_object(
            state,
            base_url(request),
            channel_id,
            spec.get("filename", "file.bin"),
            spec.get("content_type", "application/octet-stream"),
            data,
        )
        att["ephemeral"] = True
        resolved.setdefault("attachments", {})[att["id"]] = att
        options.append({"name": key, "type": 11, "value": att["id"]})
    if command is not None:
        required = {o["name"] for o in command.get("options", []) if o.get("required")}
        missing = required - {o["name"] for o in options}
        if missing and not body.get("forge"):
            raise _bad(f"required options missing: {sorted(missing)}")
    data_out: Json = {
        "id": command["id"] if command else str(state.snowflake()),
        "name": name,
        "type": 1,
        "options": options,
    }
    if resolved:
        data_out["resolved"] = resolved
    if command is not None and command.get("guild_id"):
        data_out["guild_id"] = command["guild_id"]
    payload["data"] = data_out
    return await _deliver(state, interaction)


async def control_press(request: web.Request) -> web.StreamResponse:
    """A user presses a button (a MESSAGE_COMPONENT interaction) on a message they can see."""
    state = request.app[STATE_KEY]
    body = await _json(request)
    user_id = int(body["user_id"])
    mid = int(body["message_id"])
    custom_id = str(body["custom_id"])
    msg = state.messages.get(mid)
    if msg is None or state.meta[mid]["deleted"]:
        raise _bad(f"no message {mid}")
    visible_to = state.meta[mid]["visible_to"]
    if not body.get("forge"):
        if visible_to is not None and visible_to != user_id:
            raise _bad("an ephemeral message only its user can see")
        if custom_id not in limits.custom_ids(msg["components"]):
            raise _bad(f"message {mid} has no component {custom_id!r} (forge=true sends it)")
    interaction, payload = _interaction_base(state, 3, user_id, int(msg["channel_id"]))
    interaction.message_id = mid
    payload["message"] = msg
    payload["data"] = {"custom_id": custom_id, "component_type": 2}
    return await _deliver(state, interaction)


async def control_submit(request: web.Request) -> web.StreamResponse:
    """A user submits the modal a bot's response showed them (a MODAL_SUBMIT interaction,
    Interactions: Modal Submit Data): `values` maps the modal's text inputs to what was typed;
    each value is checked against the input's `required`, `min_length` and `max_length` as
    Discord's client does; `permissions` are the member's in that channel, as Discord sends
    them. `forge` sends any `custom_id` and inputs (a modified client)."""
    state = request.app[STATE_KEY]
    body = await _json(request)
    user_id = int(body["user_id"])
    opened = state.interactions.get(int(body["interaction_id"]))
    forge = bool(body.get("forge"))
    if opened is None or opened.modal is None:
        if not forge:
            raise _bad("that interaction showed no modal (forge=true submits anyway)")
    elif opened.user_id != user_id and not forge:
        raise _bad("a modal is shown only to the user whose interaction opened it")
    modal = (opened.modal if opened is not None else None) or {}
    values: dict[str, str] = {str(k): str(v) for k, v in (body.get("values") or {}).items()}
    inputs = limits.text_inputs(modal)
    if not forge:
        for item in inputs:
            value = values.get(item["custom_id"], "")
            short = len(value) < int(item.get("min_length") or 0)
            if (item.get("required", True) and not value) or short:
                raise _bad(f"input {item['custom_id']!r} is required or too short")
            if len(value) > int(item.get("max_length") or limits.TEXT_INPUT_VALUE_MAX):
                raise _bad(f"input {item['custom_id']!r} is too long")
    ids = [i["custom_id"] for i in inputs] or list(values)
    channel = opened.channel_id if opened is not None else state.channel_id
    perms = body.get("permissions")
    interaction, payload = _interaction_base(
        state, 5, user_id, channel, str(perms) if perms is not None else None
    )
    if opened is not None and opened.message_id is not None:
        interaction.message_id = opened.message_id
        payload["message"] = state.messages[opened.message_id]
    rows = [
        {"type": 1, "components": [{"type": 4, "custom_id": cid, "value": values.get(cid, "")}]}
        for cid in ids
    ]
    payload["data"] = {
        "custom_id": str(body.get("custom_id") or modal.get("custom_id") or ""),
        "components": rows,
    }
    return await _deliver(state, interaction)


async def control_redeliver(request: web.Request) -> web.StreamResponse:
    """Dispatch an interaction's INTERACTION_CREATE once more, the same id and token: what a
    bot sees when the gateway replays events after a RESUME from an older sequence."""
    state = request.app[STATE_KEY]
    found = state.interactions.get(int(request.match_info["interaction_id"]))
    if found is None:
        raise web.HTTPNotFound(text="no such interaction")
    return await _deliver(state, found)


async def control_interaction(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    found = state.interactions.get(int(request.match_info["interaction_id"]))
    if found is None:
        raise web.HTTPNotFound(text="no such interaction")
    return web.json_response(found.view())


async def control_channel_messages(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    cid = str(request.match_info["channel_id"])
    return web.json_response(
        [message_view(state, mid) for mid, m in state.messages.items() if m["channel_id"] == cid]
    )


async def control_message(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    mid = int(request.match_info["message_id"])
    if mid not in state.messages:
        raise web.HTTPNotFound(text="no such message")
    return web.json_response(message_view(state, mid))


async def control_dm(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    return web.json_response(
        {"channel_id": state.dm_channel(int(request.match_info["user_id"]))["id"]}
    )


async def control_attachment(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    found = state.attachments.get(int(request.match_info["attachment_id"]))
    if found is None:
        raise web.HTTPNotFound(text="no such attachment")
    return web.Response(body=found[2], content_type="application/octet-stream")


async def control_calls(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    route = request.query.get("route")
    return web.json_response([c for c in state.calls if route is None or c["route"] == route])


async def control_commands(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    raw = request.query.get("guild_id")
    return web.json_response(state.commands.get(int(raw) if raw else None, []))


async def control_rate_limits(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    body = await _json(request)
    state.forced.append(
        ForcedLimit(
            route=str(body.get("route", "*")),
            count=int(body.get("count", 1)),
            retry_after=float(body.get("retry_after", 0.5)),
            is_global=bool(body.get("global", False)),
            via=bool(body.get("via", True)),
            scope=str(body.get("scope", "user")),
        )
    )
    return web.json_response({"pending": len(state.forced)})


async def control_options(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    body = await _json(request)
    for key, value in body.items():
        if not hasattr(state.options, key):
            raise _bad(f"unknown option {key!r}")
        setattr(state.options, key, type(getattr(state.options, key))(value))
    state.buckets.clear()
    return web.json_response(state.options.view())


async def control_gateway(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    return web.json_response(
        {
            "current": state.current.id if state.current else None,
            "sessions": [
                {
                    "id": s.id,
                    "seq": s.seq,
                    "intents": s.intents,
                    "connected": s.conn is not None and not s.conn.dropped,
                    "resumes": s.resumes,
                    "events": [f["t"] for f in s.log],
                }
                for s in state.sessions.values()
            ],
            "connections": [
                {
                    "path": c.path,
                    "compress": c.compress,
                    "session_id": c.session_id,
                    "heartbeats": c.heartbeats,
                    "open": not c.ws.closed and not c.dropped,
                }
                for c in state.connections
            ],
        }
    )


async def control_drop(request: web.Request) -> web.StreamResponse:
    """Drop the current session's socket: a close frame with `code` (4000 by default, which a
    client may RESUME after) or, `abrupt`, the TCP connection cut with no close frame.
    `hold` keeps new connections waiting for HELLO until `/_control/gateway/release`, so a
    test can make events happen while the bot is away."""
    state = request.app[STATE_KEY]
    body = await _json(request)
    session = state.current
    if session is None or session.conn is None:
        raise _bad("no connected session")
    conn = session.conn
    session.conn = None
    conn.dropped = True
    if body.get("hold"):
        state.hold_hello.clear()
    if body.get("abrupt"):
        if conn.transport is not None:
            conn.transport.abort()
    else:
        await conn.ws.close(code=int(body.get("code", 4000)), message=b"dropped by test")
    return web.json_response({"session_id": session.id, "seq": session.seq})


async def control_release(request: web.Request) -> web.StreamResponse:
    request.app[STATE_KEY].hold_hello.set()
    return web.json_response({"released": True})


async def control_reconnect(request: web.Request) -> web.StreamResponse:
    """Send op 7 RECONNECT: the client should close and RESUME."""
    state = request.app[STATE_KEY]
    session = state.current
    if session is None or session.conn is None:
        raise _bad("no connected session")
    await send_frame(session.conn, {"op": 7, "d": None})
    return web.json_response({"session_id": session.id})


async def control_heartbeat(request: web.Request) -> web.StreamResponse:
    """Send op 1: Discord asks for a heartbeat now (Gateway, Heartbeat Requests)."""
    state = request.app[STATE_KEY]
    session = state.current
    if session is None or session.conn is None:
        raise _bad("no connected session")
    before = session.conn.heartbeats
    await send_frame(session.conn, {"op": 1, "d": None})
    return web.json_response({"session_id": session.id, "heartbeats_before": before})


async def control_reset(request: web.Request) -> web.StreamResponse:
    request.app[STATE_KEY].reset()
    return web.json_response({"reset": True})


async def control_health(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    return web.json_response(
        {
            "application_id": str(state.application_id),
            "bot_user_id": state.bot_user["id"],
            "guild_id": str(state.guild_id),
            "channel_id": str(state.channel_id),
        }
    )


async def _close_sockets(app: web.Application) -> None:
    state = app[STATE_KEY]
    state.hold_hello.set()
    for conn in state.connections:
        with contextlib.suppress(Exception):
            await conn.ws.close(code=1001, message=b"shutting down")


def create_app(token: str | None = None) -> web.Application:
    """The stand-in's aiohttp application (call inside a running loop)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[STATE_KEY] = DiscordState(token) if token else DiscordState()
    app.on_shutdown.append(_close_sockets)
    r = app.router
    r.add_get("/", gateway)
    r.add_get("/resume", gateway)
    routes: list[tuple[str, str, Handler, bool]] = [
        ("GET", "/users/@me", get_me, False),
        ("GET", "/oauth2/applications/@me", get_application, False),
        ("GET", "/applications/@me", get_application, False),
        ("GET", "/gateway", get_gateway, False),
        ("GET", "/gateway/bot", get_gateway, False),
        ("GET", "/applications/{application_id}/commands", get_commands, False),
        ("PUT", "/applications/{application_id}/commands", put_commands, False),
        ("GET", "/applications/{application_id}/guilds/{guild_id}/commands", get_commands, False),
        ("PUT", "/applications/{application_id}/guilds/{guild_id}/commands", put_commands, False),
        ("POST", "/interactions/{interaction_id}/{token}/callback", interaction_callback, True),
        ("POST", "/webhooks/{application_id}/{token}", followup, True),
        ("GET", "/webhooks/{application_id}/{token}/messages/{message_id}", webhook_message, True),
        (
            "PATCH",
            "/webhooks/{application_id}/{token}/messages/{message_id}",
            webhook_message,
            True,
        ),
        (
            "DELETE",
            "/webhooks/{application_id}/{token}/messages/{message_id}",
            webhook_message,
            True,
        ),
        ("GET", "/channels/{channel_id}", get_channel, False),
        ("POST", "/channels/{channel_id}/messages", create_message, False),
        ("GET", "/channels/{channel_id}/messages/{message_id}", channel_message, False),
        ("PATCH", "/channels/{channel_id}/messages/{message_id}", channel_message, False),
        ("DELETE", "/channels/{channel_id}/messages/{message_id}", channel_message, False),
        ("POST", "/users/@me/channels", create_dm, False),
    ]
    for method, template, handler, webhook in routes:
        r.add_route(method, API + template, rest(template, handler, webhook=webhook))
    r.add_route("*", API + "/{tail:.*}", api_not_found)
    r.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", attachment_download)
    r.add_get("/_control/health", control_health)
    r.add_post("/_control/commands/invoke", control_invoke)
    r.add_post("/_control/components/press", control_press)
    r.add_post("/_control/modals/submit", control_submit)
    r.add_get("/_control/interactions/{interaction_id}", control_interaction)
    r.add_post("/_control/interactions/{interaction_id}/redeliver", control_redeliver)
    r.add_get("/_control/channels/{channel_id}/messages", control_channel_messages)
    r.add_get("/_control/messages/{message_id}", control_message)
    r.add_get("/_control/dm/{user_id}", control_dm)
    r.add_get("/_control/attachments/{attachment_id}", control_attachment)
    r.add_get("/_control/calls", control_calls)
    r.add_get("/_control/commands", control_commands)
    r.add_post("/_control/rate_limits", control_rate_limits)
    r.add_post("/_control/options", control_options)
    r.add_get("/_control/gateway", control_gateway)
    r.add_post("/_control/gateway/drop", control_drop)
    r.add_post("/_control/gateway/release", control_release)
    r.add_post("/_control/gateway/reconnect", control_reconnect)
    r.add_post("/_control/gateway/heartbeat", control_heartbeat)
    r.add_post("/_control/reset", control_reset)
    return app
