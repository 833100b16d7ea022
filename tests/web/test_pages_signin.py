"""Signing the browser in with a one-time code from the bot's /login (issue 18 item 1)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import pytest

from adapters.jobs import JobsClient
from store.web_sessions import FAILED_SIGNIN_LIMIT, token_hash
from tests.web.conftest import Browser, csrf_of, signed_in, telegram_user

pytestmark = pytest.mark.stack


async def test_a_login_code_signs_the_browser_in_once_as_the_same_account(
    jobs: JobsClient, browser: Callable[[], Browser]
) -> None:
    who = await telegram_user(jobs, points=250)
    code = await jobs.link_code(who)
    first = browser()
    r = await first.sign_in(code)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert "st_session=" in cookie
    for flag in ("HttpOnly", "Secure", "SameSite=lax"):
        assert flag.lower() in cookie.lower(), cookie

    page = await first.client.get("/")
    account = await jobs.user(who)
    [web] = [i for i in account.identities if i.startswith("web:")]
    assert web in page.text and who in page.text  # one account, both identities
    assert f'<strong id="balance">{account.points}</strong>' in page.text
    assert account.points == 750  # starter grant + 250: the same balance, not a new user's

    # The session token is stored hashed only.
    token = first.client.cookies["st_session"]
    sessions = jobs.stores.db["web_sessions"]
    assert await asyncio.to_thread(sessions.find_one, {"_id": token}) is None
    assert await asyncio.to_thread(sessions.find_one, {"_id": token_hash(token)}) is not None

    # The code is spent: a second browser cannot use it.
    second = browser()
    again = await second.sign_in(code)
    assert again.status_code == 400
    assert "already used" in again.text
    assert "st_session" not in second.client.cookies

    # Signing in again later keeps the one web identity.
    third = browser()
    assert (await third.sign_in(await jobs.link_code(who))).status_code == 303
    assert [i for i in (await jobs.user(who)).identities if i.startswith("web:")] == [web]


async def test_an_expired_code_is_refused(jobs: JobsClient, browser: Callable[[], Browser]) -> None:
    who = await telegram_user(jobs)
    account = await jobs.user(who)
    code = await asyncio.to_thread(
        jobs.stores.users.create_link_code, account, ttl=timedelta(seconds=-1)
    )
    b = browser()
    r = await b.sign_in(code)
    assert r.status_code == 400 and "expired" in r.text
    assert (await b.client.get("/")).text.count('action="/signin"') == 1  # still signed out


async def test_asking_for_a_new_code_voids_the_last(
    jobs: JobsClient, browser: Callable[[], Browser]
) -> None:
    who = await telegram_user(jobs)
    old = await jobs.link_code(who)
    new = await jobs.link_code(who)
    assert (await browser().sign_in(old)).status_code == 400
    assert (await browser().sign_in(new)).status_code == 303


async def test_wrong_codes_are_rate_limited_per_address(
    jobs: JobsClient, browser: Callable[[], Browser]
) -> None:
    who = await telegram_user(jobs)
    b = browser()
    for _ in range(FAILED_SIGNIN_LIMIT):
        assert (await b.sign_in("WRONG234")).status_code == 400
    blocked = await b.sign_in(await jobs.link_code(who))  # even a right code now waits
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) > 0
    assert "st_session" not in b.client.cookies
    # Another address is not blocked by this one's mistakes.
    assert (await browser().sign_in(await jobs.link_code(who))).status_code == 303


async def test_sign_in_without_the_forms_token_is_refused(
    jobs: JobsClient, browser: Callable[[], Browser]
) -> None:
    """Login CSRF: another site cannot post its own code to sign a visitor in to its account."""
    who = await telegram_user(jobs)
    code = await jobs.link_code(who)
    b = browser()
    r = await b.client.post("/signin", data={"code": code})
    assert r.status_code == 403
    page = await b.client.get("/")
    r = await b.client.post("/signin", data={"code": code, "csrf": csrf_of(page.text) + "x"})
    assert r.status_code == 403
    assert "st_session" not in b.client.cookies
    assert (await b.sign_in(code)).status_code == 303  # the refused posts did not spend it


async def test_signing_out_ends_the_session(
    jobs: JobsClient, browser: Callable[[], Browser]
) -> None:
    b, _ = await signed_in(jobs, browser)
    token = b.client.cookies["st_session"]
    assert (await b.post("/signout")).status_code == 303
    other = browser()
    other.client.cookies.set("st_session", token, domain="testserver")
    assert (await other.client.get("/quote", params={"prompt": "x"})).status_code == 401


async def test_two_browsers_racing_with_one_code_sign_in_once(
    jobs: JobsClient, browser: Callable[[], Browser]
) -> None:
    who = await telegram_user(jobs)
    code = await jobs.link_code(who)
    racers = [browser() for _ in range(4)]
    results = await asyncio.gather(*(b.sign_in(code) for b in racers))
    assert sorted(r.status_code for r in results) == [303, 400, 400, 400]
    webs = [i for i in (await jobs.user(who)).identities if i.startswith("web:")]
    assert len(webs) == 1


async def test_an_expired_session_is_signed_out(
    jobs: JobsClient, browser: Callable[[], Browser]
) -> None:
    from store.web_sessions import WebSessions

    who = await telegram_user(jobs)
    user, web = await jobs.sign_in_with_code(await jobs.link_code(who))
    expired = WebSessions(jobs.stores.db, ttl=timedelta(seconds=-1))
    token, _ = await asyncio.to_thread(expired.create, user.id, web)
    b = browser()
    b.client.cookies.set("st_session", token, domain="testserver")
    page = await b.client.get("/")
    assert 'action="/signin"' in page.text and who not in page.text
    assert (await b.client.get("/fragments/jobs")).status_code == 401
