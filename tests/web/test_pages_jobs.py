"""The page's own story over httpx: the quote before starting, a make watched to done, the
gallery's download, regen and upscale, an upload for a media job, and a job started on
Telegram cancelled on the web with its refund in the ledger (issue 18 items 1 and 4)."""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections.abc import Callable

import pytest
from PIL import Image

from adapters.jobs import JobsClient
from domain.jobs import JobState, MakeImageRequest
from tests.fixtures.devstack import Stack
from tests.web.conftest import Browser, signed_in

pytestmark = pytest.mark.stack

SMALL = {"prompt": "a lighthouse at dusk", "width": "256", "height": "256", "steps": "4"}


async def wait_state(b: Browser, wid: str, state: str, timeout: float = 60) -> str:
    """The job list fragment once the job's row says `state` (what page.js shows)."""
    deadline = time.monotonic() + timeout
    while True:
        html = (await b.client.get("/fragments/jobs")).text
        if re.search(rf'data-job="{re.escape(wid)}" data-state="{state}"', html):
            return html
        assert time.monotonic() < deadline, html
        await asyncio.sleep(0.3)


async def newest_job(b: Browser) -> str:
    html = (await b.client.get("/fragments/jobs")).text
    found = re.search(r'<li class="job" data-job="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def test_quote_make_watch_download_and_repeat(
    jobs: JobsClient, browser: Callable[[], Browser]
) -> None:
    b, who = await signed_in(jobs, browser, points=500)
    quote = await b.client.get("/quote", params=SMALL)
    assert quote.status_code == 200
    price = quote.json()["price"]
    assert price > 0 and quote.json()["balance"] == 1000
    bad = await b.client.get("/quote", params={**SMALL, "steps": "9999"})
    assert bad.status_code == 400 and "steps" in bad.json()["error"]

    r = await b.post("/make", **SMALL)
    assert r.status_code == 303, r.text[-2000:]
    wid = await newest_job(b)
    assert wid.startswith("make-web-")
    html = await wait_state(b, wid, "done")
    assert f'href="/jobs/{wid}/outputs/0?download=1"' in html  # in the gallery

    image = await b.client.get(f"/jobs/{wid}/outputs/0", params={"download": 1})
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert "attachment" in image.headers["content-disposition"]
    assert Image.open(io.BytesIO(image.content)).size == (256, 256)
    assert (await b.client.get(f"/jobs/{wid}/outputs/1")).status_code == 404

    points, _ = await jobs.balance_summary(who, 5)
    assert points == 1000 - price
    page = (await b.client.get("/")).text
    assert f"<td>{-price}</td><td>{wid}</td>" in page  # the ledger's charge

    r = await b.post(f"/jobs/{wid}/regen")
    assert r.status_code == 303
    regen = await newest_job(b)
    assert regen != wid
    await wait_state(b, regen, "done")
    assert (await jobs.status(regen)).seeds == (await jobs.status(wid)).seeds  # same seed

    r = await b.post(f"/jobs/{wid}/upscale", index="0")
    assert r.status_code == 303
    up = await newest_job(b)
    assert up.startswith("upscale-web-")
    await wait_state(b, up, "done")


async def test_an_uploaded_photo_becomes_a_media_job(
    jobs: JobsClient, browser: Callable[[], Browser]
) -> None:
    b, _ = await signed_in(jobs, browser, points=500)
    png = io.BytesIO()
    Image.new("RGB", (300, 200), "navy").save(png, "PNG")
    r = await b.client.post(
        "/upload",
        data={"csrf": b.csrf, "kind": "resize", "width": "150", "height": "100"},
        files={"file": ("photo.png", png.getvalue(), "image/png")},
    )
    assert r.status_code == 303, r.text[-2000:]
    wid = await newest_job(b)
    assert wid.startswith("resize-web-")
    await wait_state(b, wid, "done")
    out = await b.client.get(f"/jobs/{wid}/outputs/0")
    assert Image.open(io.BytesIO(out.content)).size == (150, 100)


async def test_a_job_started_on_telegram_is_cancelled_on_the_web_with_its_refund(
    jobs: JobsClient, browser: Callable[[], Browser], dev_stack: Stack
) -> None:
    b, who = await signed_in(jobs, browser, points=500)
    dev_stack.faults(render_time=8.0)
    try:
        started = await jobs.start_make(
            MakeImageRequest(
                user=who,
                platform="cli",
                prompt="a fox started in a chat",
                overrides={"width": 256, "height": 256, "steps": 4},
            )
        )
        wid = started.workflow_id
        assert wid.startswith("make-telegram-")
        html = (await b.client.get("/fragments/jobs")).text
        assert f'data-job="{wid}"' in html and f'action="/jobs/{wid}/cancel"' in html
        r = await b.post(f"/jobs/{wid}/cancel")
        assert r.status_code == 200, r.text[-2000:]
        found = re.search(r"Cancelled; (\d+) points refunded", r.text)
        assert found, r.text[-3000:]
        refund = int(found.group(1))
        status = await jobs.result(wid)
        assert status.state is JobState.CANCELLED and status.refund == refund > 0
        # The refund is on the one account: the web page's ledger and the bot's /balance
        # read the same entries.
        _, entries = await jobs.balance_summary(who, 5)
        assert any(e.job_id == wid and e.amount == refund for e in entries)
        assert f"<td>{refund}</td><td>{wid}</td>" in r.text
    finally:
        dev_stack.reset_faults()
