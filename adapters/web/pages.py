"""The web page: sign in with a code from the bot, make images, watch and cancel jobs, the
gallery, uploads for media jobs, balance and ledger (issue 18 items 1, 4 and 5).

Server-rendered with Jinja2 and one small script (static/page.js, no build step) that shows the
quote before starting and keeps the job list live from server-sent events (`/events/jobs`).
Everything goes through the jobs client (the same services the bot and the CLI use), acting as the
session's `web:` identity: the services check that a job belongs to that identity's account, so
another account's job id reads as a missing one (404) whatever the route. Every POST needs the CSRF
token (adapters/web/sessions.py).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, StreamingResponse
from fastapi.templating import Jinja2Templates
from starlette.datastructures import UploadFile

from adapters.jobs import JobNotFound, NotCancellable
from adapters.web.sessions import (
    SESSION_COOKIE,
    SIGNIN_CSRF_COOKIE,
    csrf_matches,
    current_session,
    end_session,
    jobs_of,
    require_csrf,
    require_session,
    sent_csrf,
    set_cookie,
    signin_csrf,
    start_session,
)
from domain.errors import StationError
from domain.jobs import JobState, JobStatus, MakeImageRequest, MediaRequest
from media.safety import DEFAULT_LIMITS
from store.api_keys import ApiKey
from store.users import LinkCodeError
from store.web_sessions import WebSession

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
FRAGMENT = templates.env.get_template("_jobs.html")
SSE_STREAM_SECONDS = 300
STATIC = {"page.js": "text/javascript", "page.css": "text/css"}

router = APIRouter(include_in_schema=False)

SHOWN_JOBS = 12  # newest jobs the list and the gallery show
MAKE_FIELDS = ("steps", "width", "height", "batch", "seed")
MEDIA_KINDS = ("upscale", "rmbg", "resize", "convert")
# A multipart body is the image plus a few short fields: anything larger than the image limit
# and this is refused from its Content-Length, before a byte of it is read or stored.
FORM_OVERHEAD = 64 * 1024
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _secure(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _not_found(wid: str) -> HTTPException:
    """Another account's job and a missing one read the same."""
    return HTTPException(status_code=404, detail=f"no job {wid!r}")


# -- sign in / out ------------------------------------------------------------------------


def _signin_page(request: Request, *, error: str = "", status: int = 200) -> Response:
    token = signin_csrf(request)
    response = templates.TemplateResponse(
        request, "signin.html", {"csrf": token, "error": error}, status_code=status
    )
    set_cookie(response, SIGNIN_CSRF_COOKIE, token, 3600)
    return _secure(response)


def _client_key(request: Request) -> str:
    return f"ip:{request.client.host if request.client else 'unknown'}"


@router.post("/signin")
async def signin(request: Request) -> Response:
    """Trade a one-time code from the bot's /login for a session; wrong codes are limited."""
    jobs = jobs_of(request)
    store = jobs.stores.web_sessions
    key = _client_key(request)
    wait = await asyncio.to_thread(store.signin_blocked, key)
    if wait > 0:
        response = _signin_page(
            request, error="Too many wrong codes: wait a few minutes.", status=429
        )
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    form = await request.form()
    sent = form.get("csrf")
    if not csrf_matches(
        request.cookies.get(SIGNIN_CSRF_COOKIE), sent if isinstance(sent, str) else ""
    ):
        return _signin_page(request, error="The form is stale: try again.", status=403)
    code = form.get("code")
    try:
        user, web = await jobs.sign_in_with_code(code if isinstance(code, str) else "")
    except LinkCodeError as err:
        await asyncio.to_thread(store.note_signin_failure, key)
        return _signin_page(request, error=err.message, status=400)
    token, _ = await asyncio.to_thread(store.create, user.id, web)
    response = RedirectResponse("/", status_code=303)
    start_session(response, token)
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    session = await require_session(request)
    await require_csrf(request, session)
    store = jobs_of(request).stores.web_sessions
    await asyncio.to_thread(store.delete, request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/", status_code=303)
    end_session(response)
    return response


# -- the page -----------------------------------------------------------------------------


async def _statuses(request: Request, session: WebSession) -> list[JobStatus]:
    """The account's newest jobs from every identity (a job started on Telegram shows here)."""
    jobs = jobs_of(request)
    user = await jobs.user(session.identity)
    listings = []
    for identity in user.identities:
        listings += await jobs.list_jobs(user=identity, limit=SHOWN_JOBS)
    listings.sort(key=lambda row: row.started, reverse=True)

    async def one(wid: str) -> JobStatus | None:
        try:
            return await jobs.status(wid, user=session.identity)
        except (JobNotFound, StationError):
            return None

    found = await asyncio.gather(*(one(row.workflow_id) for row in listings[:SHOWN_JOBS]))
    return [s for s in found if s is not None]


async def _page(
    request: Request,
    session: WebSession,
    *,
    error: str = "",
    notice: str = "",
    link_code: str = "",
    new_key: str = "",
    webhook_secret: str = "",
    status: int = 200,
) -> Response:
    jobs = jobs_of(request)
    user = await jobs.user(session.identity)
    settings = await jobs.settings(session.identity)
    limits = await jobs.limits(session.identity)
    points, entries = await jobs.balance_summary(session.identity, 10)
    statuses = await _statuses(request, session)
    keys = await _account_keys(request, user.identities)
    context: dict[str, Any] = {
        "csrf": session.csrf,
        "identity": session.identity,
        "identities": user.identities,
        "settings": settings,
        "limits": limits,
        "points": points,
        "entries": entries,
        "jobs": statuses,
        "error": error,
        "notice": notice,
        "link_code": link_code,
        "media_kinds": MEDIA_KINDS,
        "api_keys": keys,
        "new_key": new_key,
        "webhook_secret": webhook_secret,
    }
    return _secure(templates.TemplateResponse(request, "index.html", context, status_code=status))


@router.get("/")
async def index(request: Request) -> Response:
    session = await current_session(request)
    if session is None:
        return _signin_page(request)
    return await _page(request, session)


@router.get("/fragments/jobs")
async def jobs_fragment(request: Request) -> Response:
    """The job list and gallery alone: what page.js reloads every second."""
    session = await require_session(request)
    statuses = await _statuses(request, session)
    points = (await jobs_of(request).user(session.identity)).points
    context = {"jobs": statuses, "csrf": session.csrf, "points": points}
    return _secure(templates.TemplateResponse(request, "_jobs.html", context))


def _sse(event: str, data: str) -> str:
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {event}\n{lines}\n"


@router.get("/events/jobs")
async def job_events(request: Request) -> Response:
    """Server-sent events: the job list fragment each time it changes (checked every second),
    so the bars move without the page asking. A stream lasts `SSE_STREAM_SECONDS` and the
    browser's EventSource reconnects; a session that ends mid-stream gets `signedout`."""
    session = await require_session(request)
    jobs = jobs_of(request)
    store = jobs.stores.web_sessions
    token = request.cookies.get(SESSION_COOKIE)

    async def stream() -> AsyncIterator[str]:
        last = ""
        quiet = 0
        end = time.monotonic() + SSE_STREAM_SECONDS
        yield "retry: 1000\n\n"
        while time.monotonic() < end and not await request.is_disconnected():
            if await asyncio.to_thread(store.lookup, token) is None:
                yield _sse("signedout", "")
                return
            statuses = await _statuses(request, session)
            points = (await jobs.user(session.identity)).points
            html = FRAGMENT.render(jobs=statuses, csrf=session.csrf, points=points)
            if html != last:
                yield _sse("jobs", html)
                last, quiet = html, 0
            else:
                quiet += 1
                if quiet % 15 == 0:
                    yield ": keep-alive\n\n"
            await asyncio.sleep(1)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC:
        raise HTTPException(status_code=404)
    return FileResponse(HERE / "static" / name, media_type=STATIC[name])


# -- making, quoting, repeating -----------------------------------------------------------


def _overrides(fields: dict[str, str], saved: dict[str, Any]) -> dict[str, Any]:
    """The fields the user changed from their saved settings (the rest stays theirs, clamped
    to their balance's limits as the bot's are)."""
    changed: dict[str, Any] = {}
    for name in MAKE_FIELDS:
        raw = (fields.get(name) or "").strip()
        if not raw:
            continue
        try:
            value = int(raw)
        except ValueError:
            raise StationError(f"{name} must be a whole number, not {raw[:20]!r}") from None
        if value != saved.get(name):
            changed[name] = value
    return changed


async def _make_request(
    request: Request, session: WebSession, fields: dict[str, str]
) -> MakeImageRequest:
    settings = await jobs_of(request).settings(session.identity)
    return MakeImageRequest(
        user=session.identity,
        platform="web",
        prompt=(fields.get("prompt") or "").strip(),
        overrides=_overrides(fields, settings.model_dump()),
        request_id=fields.get("request_id") or secrets.token_hex(8),
    )


@router.get("/quote")
async def quote(request: Request) -> Response:
    """The price of the prompt box as it stands, before anything starts (nothing written)."""
    session = await require_session(request)
    fields = {k: v for k, v in request.query_params.items()}
    try:
        plan = await jobs_of(request).quote_make(await _make_request(request, session, fields))
    except StationError as err:
        return JSONResponse({"error": err.message}, status_code=400)
    return JSONResponse(
        {"price": plan.price, "balance": plan.balance, "clamps": plan.clamps, "units": plan.units}
    )


async def _form_fields(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


@router.post("/make")
async def make(request: Request) -> Response:
    session = await require_session(request)
    await require_csrf(request, session)
    fields = await _form_fields(request)
    try:
        await jobs_of(request).start_make(await _make_request(request, session, fields))
    except StationError as err:
        return await _page(request, session, error=err.message, status=400)
    return RedirectResponse("/", status_code=303)


async def _own_status(request: Request, session: WebSession, wid: str) -> JobStatus:
    try:
        return await jobs_of(request).status(wid, user=session.identity)
    except JobNotFound:
        raise _not_found(wid) from None


@router.post("/jobs/{wid}/cancel")
async def cancel(request: Request, wid: str) -> Response:
    session = await require_session(request)
    await require_csrf(request, session)
    try:
        result = await jobs_of(request).cancel(
            wid, reason=f"cancelled by {session.identity}", user=session.identity
        )
    except JobNotFound:
        raise _not_found(wid) from None
    except NotCancellable as err:
        return await _page(request, session, error=err.message, status=409)
    notice = f"Cancelled; {result.refund} points refunded." if result.refund else "Cancelled."
    return await _page(request, session, notice=notice)


@router.post("/jobs/{wid}/{action}")
async def repeat(request: Request, wid: str, action: str) -> Response:
    """Regen (same seed), Again (new seed) or Upscale (2x) of a finished image."""
    if action not in ("regen", "again", "upscale"):
        raise HTTPException(status_code=404)
    session = await require_session(request)
    await require_csrf(request, session)
    jobs = jobs_of(request)
    fields = await _form_fields(request)
    rid = fields.get("request_id") or secrets.token_hex(8)
    try:
        if action == "upscale":
            status = await _own_status(request, session, wid)
            index = _index(fields.get("index", "0"), status)
            await jobs.start_media(
                MediaRequest(
                    user=session.identity,
                    platform="web",
                    kind="upscale",
                    source_image_id=status.outputs[index].blob_id,
                    params={"scale": 2},
                    request_id=rid,
                )
            )
        else:
            await jobs.start_repeat_of(
                session.identity,
                wid,
                keep_seed=action == "regen",
                platform="web",
                reply=None,
                request_id=rid,
            )
    except JobNotFound:
        raise _not_found(wid) from None
    except StationError as err:
        return await _page(request, session, error=err.message, status=400)
    return RedirectResponse("/", status_code=303)


def _index(raw: str, status: JobStatus) -> int:
    try:
        index = int(raw)
    except ValueError:
        raise HTTPException(status_code=404) from None
    if not 0 <= index < len(status.outputs):
        raise HTTPException(status_code=404, detail="no such output")
    return index


@router.get("/jobs/{wid}/outputs/{index}")
async def output(request: Request, wid: str, index: str, download: int = 0) -> Response:
    """One output image of one of the account's jobs, from GridFS."""
    session = await require_session(request)
    status = await _own_status(request, session, wid)
    if status.state not in (JobState.DONE, JobState.DELIVERING):
        raise HTTPException(status_code=404, detail="no such output")
    out = status.outputs[_index(index, status)]
    data = await asyncio.to_thread(jobs_of(request).image, out)
    headers = {"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"}
    if download:
        ext = out.content_type.rpartition("/")[2] or "png"
        headers["Content-Disposition"] = f'attachment; filename="{wid}-{index}.{ext}"'
    return Response(data, media_type=out.content_type, headers=headers)


# -- uploads for media jobs ---------------------------------------------------------------


def _media_params(kind: str, fields: dict[str, str]) -> dict[str, Any]:
    def num(name: str, default: int) -> int:
        raw = (fields.get(name) or "").strip()
        try:
            return int(raw) if raw else default
        except ValueError:
            raise StationError(f"{name} must be a whole number") from None

    if kind == "upscale":
        return {"scale": num("scale", 2)}
    if kind == "resize":
        return {
            "width": num("width", 512),
            "height": num("height", 512),
            "mode": fields.get("mode") or "fit",
        }
    if kind == "convert":
        return {"format": fields.get("format") or "png"}
    return {}


@router.post("/upload")
async def upload(request: Request) -> Response:
    """An image for a media job: size-checked from its Content-Length before it is read, then
    checked by media/safety.py (content, pixels, bombs) before it is stored."""
    session = await require_session(request)
    limit = DEFAULT_LIMITS.max_bytes
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        raise HTTPException(status_code=411, detail="uploads need a Content-Length")
    if int(length) > limit + FORM_OVERHEAD:
        raise HTTPException(
            status_code=413, detail=f"the image is larger than {limit // (1024 * 1024)} MB"
        )
    # Parsed with the upload's own limits before the CSRF check reads it (Starlette keeps the
    # first parse of a request's form).
    form = await request.form(max_files=1, max_fields=20)
    await require_csrf(request, session)
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    file = form.get("file")
    kind = fields.get("kind", "")
    if not isinstance(file, UploadFile) or kind not in MEDIA_KINDS:
        return await _page(request, session, error="choose an image and a job", status=400)
    data = await file.read(limit + 1)
    jobs = jobs_of(request)
    try:
        if len(data) > limit:
            raise StationError(f"the image is larger than {limit // (1024 * 1024)} MB")
        params = _media_params(kind, fields)
        blob = await jobs.store_source(session.identity, data, file.filename or "upload")
        await jobs.start_media(
            MediaRequest(
                user=session.identity,
                platform="web",
                kind=kind,  # type: ignore[arg-type]
                source_image_id=blob,
                params=params,
                request_id=fields.get("request_id") or secrets.token_hex(8),
            )
        )
    except StationError as err:
        return await _page(request, session, error=err.message, status=400)
    return RedirectResponse("/", status_code=303)


# -- linking another platform ---------------------------------------------------------------


@router.post("/link-code")
async def link_code(request: Request) -> Response:
    """A code to send the bot with /link, adding that chat's identity to this account."""
    session = await require_session(request)
    await require_csrf(request, session)
    code = await jobs_of(request).link_code(session.identity)
    return await _page(request, session, link_code=code)


# -- API keys and the webhook secret ----------------------------------------------------------


async def _account_keys(request: Request, identities: list[str]) -> list[ApiKey]:
    """Every key of the account, whichever identity made it (the bot's /apikey, the CLI or
    this page): the same store the API checks them against."""
    store = jobs_of(request).stores.api_keys
    keys: list[ApiKey] = []
    for identity in identities:
        keys += await asyncio.to_thread(store.list, identity)
    keys.sort(key=lambda k: k.created_at)
    return keys


@router.post("/api-keys")
async def create_api_key(request: Request) -> Response:
    """A new key for this session's identity, shown on this one answer only (only its hash is
    kept, so it cannot be shown again)."""
    session = await require_session(request)
    await require_csrf(request, session)
    fields = await _form_fields(request)
    name = (fields.get("name") or "").strip()[:60]
    store = jobs_of(request).stores.api_keys
    token, _ = await asyncio.to_thread(store.create, session.identity, name)
    return await _page(request, session, new_key=token)


@router.post("/api-keys/{key_id}/revoke")
async def revoke_api_key(request: Request, key_id: str) -> Response:
    """Revoke one of the account's keys; another account's key id reads as a missing one."""
    session = await require_session(request)
    await require_csrf(request, session)
    jobs = jobs_of(request)
    user = await jobs.user(session.identity)
    for identity in user.identities:
        if await asyncio.to_thread(jobs.stores.api_keys.revoke, identity, key_id):
            return await _page(request, session, notice=f"Key {key_id} revoked.")
    raise HTTPException(status_code=404, detail=f"no active key {key_id!r}")


@router.post("/webhook-secret")
async def show_webhook_secret(request: Request) -> Response:
    """The account's webhook signing secret, shown on request (a POST, so it is never in a
    plain GET of the page, a cached copy or a history entry)."""
    session = await require_session(request)
    await require_csrf(request, session)
    jobs = jobs_of(request)
    owner = await jobs.user(session.identity)
    secret = await asyncio.to_thread(jobs.stores.webhook_secrets.secret, owner.id)
    return await _page(request, session, webhook_secret=secret)


@router.post("/webhook-secret/rotate")
async def rotate_webhook_secret(request: Request) -> Response:
    """A new signing secret: events sent from now on are signed with it."""
    session = await require_session(request)
    await require_csrf(request, session)
    jobs = jobs_of(request)
    owner = await jobs.user(session.identity)
    secret = await asyncio.to_thread(jobs.stores.webhook_secrets.rotate, owner.id)
    return await _page(request, session, webhook_secret=secret, notice="Webhook secret rotated.")


__all__ = ["router", "sent_csrf"]
