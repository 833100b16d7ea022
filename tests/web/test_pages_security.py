"""The page's security (issue 18 item 5): CSRF on every POST, no other account's job
reachable (404 exactly like a missing one), upload limits before anything is stored."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Callable

import httpx
import pytest
from PIL import Image

from adapters.jobs import JobsClient
from adapters.web.pages import FORM_OVERHEAD
from domain.jobs import JobState, MakeImageRequest
from media.safety import DEFAULT_LIMITS
from tests.fixtures.devstack import Stack
from tests.web.conftest import Browser, signed_in, telegram_user

pytestmark = pytest.mark.stack

SMALL = {"width": 256, "height": 256, "steps": 4}


async def jobs_of_user(jobs: JobsClient, who: str) -> int:
    return len(await jobs.list_jobs(user=who))


async def test_a_post_without_the_sessions_csrf_token_changes_nothing(
    jobs: JobsClient, browser: Callable[[], Browser]
) -> None:
    b, who = await signed_in(jobs, browser, points=500)
    web = b.csrf and next(i for i in (await jobs.user(who)).identities if i.startswith("web:"))
    for data in ({}, {"csrf": "forged"}, {"csrf": b.csrf[:-1]}):
        r = await b.client.post("/make", data={"prompt": "a forged fox", **data})
        assert r.status_code == 403, r.text
        assert (await b.client.post("/link-code", data=data)).status_code == 403
        assert (await b.client.post("/signout", data=data)).status_code == 403
    await asyncio.sleep(1)
    assert await jobs_of_user(jobs, web) == 0
    # Another session's token is no good either.
    other, _ = await signed_in(jobs, browser)
    r = await b.client.post("/make", data={"prompt": "a fox", "csrf": other.csrf})
    assert r.status_code == 403
    # The header form (the page's script) is checked the same way.
    r = await b.client.post("/link-code", headers={"X-CSRF-Token": "forged"})
    assert r.status_code == 403
    assert (await b.client.post("/link-code", headers={"X-CSRF-Token": b.csrf})).status_code == 200


def not_found(r: httpx.Response) -> str:
    """The detail of a not-found problem document (adapters/web/problems.py): the same words,
    whether the job is another account's or does not exist."""
    body = r.json()
    assert (body["status"], body["code"]) == (404, "not_found"), body
    return str(body["detail"])


async def test_another_accounts_job_reads_as_missing_on_every_route(
    jobs: JobsClient, browser: Callable[[], Browser], dev_stack: Stack
) -> None:
    victim = await telegram_user(jobs, points=500)
    done = await jobs.start_make(
        MakeImageRequest(user=victim, platform="cli", prompt="a private fox", overrides=SMALL)
    )
    assert (await asyncio.wait_for(jobs.result(done.workflow_id), 60)).state is JobState.DONE
    dev_stack.faults(render_time=8.0)
    slow = await jobs.start_make(
        MakeImageRequest(user=victim, platform="cli", prompt="a slow private fox", overrides=SMALL)
    )
    b, _ = await signed_in(jobs, browser, points=500)
    missing = done.workflow_id.replace(victim.replace(":", "-"), "telegram-1")
    for wid in (done.workflow_id, slow.workflow_id, missing, f"make-nobody-{uuid.uuid4().hex}"):
        for action in ("cancel", "regen", "again", "upscale"):
            r = await b.post(f"/jobs/{wid}/{action}", index="0")
            assert r.status_code == 404, (wid, action, r.status_code, r.text[:300])
            assert not_found(r) == f"no job {wid!r}"
        r = await b.client.get(f"/jobs/{wid}/outputs/0")
        assert r.status_code == 404 and not_found(r) == f"no job {wid!r}"
        r = await b.client.get(f"/jobs/{wid}/outputs/0", params={"download": 1})
        assert r.status_code == 404
    # Nothing was touched: the slow job still runs (and is not in the attacker's list).
    status = await jobs.status(slow.workflow_id)
    assert status.state in (JobState.STARTING, JobState.QUEUED, JobState.RUNNING), status
    page = await b.client.get("/fragments/jobs")
    assert slow.workflow_id not in page.text and done.workflow_id not in page.text
    await jobs.cancel(slow.workflow_id)
    dev_stack.reset_faults()


async def test_an_upload_over_the_limit_is_refused_before_it_is_read(
    jobs: JobsClient, browser: Callable[[], Browser]
) -> None:
    b, who = await signed_in(jobs, browser, points=500)
    files = jobs.stores.db["images.files"]
    before = await asyncio.to_thread(files.count_documents, {})
    # Far over: refused from the Content-Length, before the body is parsed.
    big = b"\x89PNG" + b"\0" * (DEFAULT_LIMITS.max_bytes + FORM_OVERHEAD)
    r = await b.client.post(
        "/upload",
        data={"csrf": b.csrf, "kind": "rmbg"},
        files={"file": ("big.png", big, "image/png")},
    )
    assert r.status_code == 413, r.text[:300]
    # Just over: the file is read up to the limit plus one byte and refused.
    r = await b.client.post(
        "/upload",
        data={"csrf": b.csrf, "kind": "rmbg"},
        files={"file": ("big.png", big[: DEFAULT_LIMITS.max_bytes + 1], "image/png")},
    )
    assert r.status_code == 400 and "larger than 20 MB" in r.text
    # Not an image: refused by media/safety.py with its message, nothing stored or started.
    r = await b.client.post(
        "/upload",
        data={"csrf": b.csrf, "kind": "rmbg"},
        files={"file": ("note.png", b"hello, this is text", "image/png")},
    )
    assert r.status_code == 400 and "not an image" in r.text.lower(), r.text[-3000:]
    # Without the token, not even a good image is stored.
    png = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(png, "PNG")
    r = await b.client.post(
        "/upload", data={"kind": "rmbg"}, files={"file": ("ok.png", png.getvalue(), "image/png")}
    )
    assert r.status_code == 403
    # One file per upload: a second is refused by the form parser, nothing stored.
    r = await b.client.post(
        "/upload",
        data={"csrf": b.csrf, "kind": "rmbg"},
        files=[
            ("file", ("a.png", png.getvalue(), "image/png")),
            ("more", ("b.png", png.getvalue(), "image/png")),
        ],
    )
    assert r.status_code == 400, r.text[:300]
    assert await asyncio.to_thread(files.count_documents, {}) == before
    account = await jobs.user(who)
    for identity in account.identities:
        assert await jobs_of_user(jobs, identity) == 0
    assert account.points == 1000  # nothing charged


async def test_the_pages_cookies_and_headers(
    jobs: JobsClient, browser: Callable[[], Browser]
) -> None:
    b = browser()
    r = await b.client.get("/")
    assert r.status_code == 200 and 'action="/signin"' in r.text
    assert "httponly" in r.headers["set-cookie"].lower()
    assert "secure" in r.headers["set-cookie"].lower()
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert "script-src 'self'" in r.headers["content-security-policy"]
    # Signed out, every action is refused.
    assert (await b.client.get("/fragments/jobs")).status_code == 401
    assert (await b.client.post("/make", data={"prompt": "x"})).status_code == 401
