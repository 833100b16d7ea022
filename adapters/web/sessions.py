"""The web page's session cookie and CSRF checks.

The session cookie carries a random token (store/web_sessions.py keeps only its hash) and is
HttpOnly (no script reads it), Secure (never sent over plain http, except to loopback, which
browsers treat as secure) and SameSite=Lax (not sent on another site's POST). Every POST also
carries a CSRF token: the session's own once signed in; before sign-in, a random token in a
cookie of its own that the form repeats (double submit), so another site cannot sign a visitor
in to the attacker's account either.
"""

from __future__ import annotations

import asyncio
import secrets

from fastapi import HTTPException, Request, Response

from adapters.jobs import JobsClient
from store.web_sessions import SESSION_TTL, WebSession

SESSION_COOKIE = "st_session"
SIGNIN_CSRF_COOKIE = "st_signin_csrf"
CSRF_HEADER = "x-csrf-token"


def jobs_of(request: Request) -> JobsClient:
    jobs: JobsClient = request.app.state.jobs
    return jobs


def set_cookie(response: Response, name: str, value: str, max_age: int) -> None:
    """Every cookie of the page: HttpOnly, Secure, SameSite=Lax, whole site."""
    response.set_cookie(
        name, value, max_age=max_age, path="/", httponly=True, secure=True, samesite="lax"
    )


def start_session(response: Response, token: str) -> None:
    set_cookie(response, SESSION_COOKIE, token, int(SESSION_TTL.total_seconds()))
    response.delete_cookie(SIGNIN_CSRF_COOKIE, path="/", secure=True, httponly=True)


def end_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="lax")


async def current_session(request: Request) -> WebSession | None:
    """The signed-in session of this request, or None."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    store = jobs_of(request).stores.web_sessions
    return await asyncio.to_thread(store.lookup, token)


async def require_session(request: Request) -> WebSession:
    """The session, or 401 (the page's JS sends the browser back to the sign-in form)."""
    session = await current_session(request)
    if session is None:
        raise HTTPException(status_code=401, detail="sign in first")
    return session


def signin_csrf(request: Request) -> str:
    """The sign-in form's CSRF token: the one in its cookie, or a new one to set."""
    return request.cookies.get(SIGNIN_CSRF_COOKIE) or secrets.token_urlsafe(24)


async def sent_csrf(request: Request) -> str:
    """The CSRF token a POST carries: the `X-CSRF-Token` header (JS) or the `csrf` field."""
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    ctype = request.headers.get("content-type", "")
    if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get("csrf")
        return value if isinstance(value, str) else ""
    return ""


def csrf_matches(expected: str | None, sent: str) -> bool:
    return bool(expected) and bool(sent) and secrets.compare_digest(expected or "", sent)


async def require_csrf(request: Request, session: WebSession) -> None:
    """403 unless the POST carries this session's CSRF token."""
    if not csrf_matches(session.csrf, await sent_csrf(request)):
        raise HTTPException(status_code=403, detail="the form is stale: reload the page")
