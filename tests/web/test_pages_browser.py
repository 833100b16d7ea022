"""The web page in a real headless Chromium (Debian's package; nothing downloaded): sign in
with a code from the bot's /login (through the Bot API stand-in), make an image, watch its
progress bar reach done and see it in the gallery (issue 18 tests).

Chromium is driven over its DevTools protocol with the `websockets` the project already pins
(no Playwright or Selenium download): navigate, type, click and read the DOM the page's own
script keeps up to date. The page is served by uvicorn on a free loopback port, in this test's
event loop, over the session's dev stack.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn
import websockets

from adapters.jobs import JobsClient
from adapters.web.app import create_app
from tests.fixtures.devstack import Stack
from tests.fixtures.telegram import TelegramStandin, said
from tests.integration.test_temporal_ui_browser import CHROMIUM
from tests.telegram.conftest import BotProcess, bot, user_id  # noqa: F401 - fixtures
from workers.processes import free_port

pytestmark = [
    pytest.mark.stack,
    pytest.mark.skipif(
        CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
    ),
]

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
    "--remote-debugging-port=0",
)


class Tab:
    """One page over the DevTools protocol: just what this test needs."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        n = next(self.ids)
        await self.ws.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            msg = json.loads(await self.ws.recv())
            if msg.get("id") == n:
                assert "error" not in msg, msg
                result: dict[str, Any] = msg["result"]
                return result

    async def js(self, expression: str) -> Any:
        out = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        assert "exceptionDetails" not in out, out
        return out["result"].get("value")

    async def until(self, expression: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = await self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                text = await self.js("document.body ? document.body.innerText : ''")
                raise AssertionError(f"timed out waiting for {expression}\n{text[:3000]}")
            await asyncio.sleep(0.1)


@pytest_asyncio.fixture(loop_scope="session")
async def web_url(jobs: JobsClient) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(jobs.config, jobs), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), task
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest_asyncio.fixture(loop_scope="session")
async def tab(tmp_path: Path) -> AsyncIterator[Tab]:
    assert CHROMIUM is not None
    profile = tmp_path / "profile"
    proc = await asyncio.to_thread(
        subprocess.Popen,
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            assert proc.poll() is None and time.monotonic() < deadline, "chromium did not start"
            await asyncio.sleep(0.1)
        port = port_file.read_text().split()[0]
        async with httpx.AsyncClient() as http:
            targets = (await http.get(f"http://127.0.0.1:{port}/json/list")).json()
        page = next(t for t in targets if t["type"] == "page")
        async with websockets.connect(page["webSocketDebuggerUrl"], max_size=None) as ws:
            yield Tab(ws)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


async def test_sign_in_with_the_bots_code_make_an_image_and_see_it_in_the_gallery(
    bot: BotProcess,  # noqa: F811
    telegram: TelegramStandin,
    jobs: JobsClient,
    user_id: int,  # noqa: F811
    web_url: str,
    tab: Tab,
    tmp_path: Path,
    dev_stack: Stack,
) -> None:
    me = user_id
    telegram.send(me, "/start")
    said(telegram, me, "starter points")
    await jobs.grant(f"telegram:{me}", 500, by="test", key=f"browser-{me}")
    telegram.send(me, "/login")
    message = said(telegram, me, "sign-in code")
    found = re.search(r"sign-in code: ([A-Z0-9]{8})", message["text"] or "")
    assert found, message
    code = found.group(1)

    await tab.call("Page.navigate", url=web_url + "/")
    await tab.until("document.getElementById('code') !== null")
    await tab.js(f"document.getElementById('code').value = {json.dumps(code)}")
    await tab.js("document.getElementById('signin').submit()")
    await tab.until("document.getElementById('prompt') !== null")
    assert await tab.js("document.getElementById('balance').textContent") == "1000"
    assert f"telegram:{me}" in await tab.js("document.getElementById('identities').innerText")
    # The session cookie is HttpOnly: the page's scripts cannot read it.
    assert "st_session" not in await tab.js("document.cookie")

    # The quote shows before anything starts.
    await tab.js(
        "const f = document.getElementById('make');"
        "f.prompt.value = 'a red fox in snow'; f.width.value = 512; f.height.value = 512;"
        "f.steps.value = 20; f.dispatchEvent(new Event('input', {bubbles: true}))"
    )
    price = await tab.until("document.getElementById('quote').dataset.price")
    assert int(price) > 0

    # A render of 2 s, so the bar is seen filling however loaded the machine is (a render of a
    # few ms can end before the page's first reload).
    dev_stack.faults(render_time=2.0)
    try:
        await tab.js("document.getElementById('make').submit()")
        await tab.until("document.querySelector('li.job') !== null")
        wid = await tab.js("document.querySelector('li.job').dataset.job")
        assert wid.startswith("make-web-")
        # Watch the bar: its value as the page's script reloads the list, until done.
        seen: list[tuple[str, float]] = []
        deadline = time.monotonic() + 90
        while True:
            row = await tab.js(
                f"(() => {{ const li = document.querySelector('li.job[data-job=\"{wid}\"]');"
                "return li ? [li.dataset.state, li.querySelector('progress').value] : null })()"
            )
            if row and (not seen or tuple(row) != seen[-1]):
                seen.append((row[0], float(row[1])))
            if row and row[0] == "done":
                break
            assert time.monotonic() < deadline, seen
            await asyncio.sleep(0.05)
    finally:
        dev_stack.reset_faults()
    assert seen[-1] == ("done", 100.0), seen
    assert len(seen) >= 2, seen  # the bar was seen before it was full: a live list

    # In the gallery, and the image loaded.
    await tab.until(
        f"(() => {{ const img = document.querySelector('figure[data-job=\"{wid}\"] img');"
        "return img && img.complete && img.naturalWidth === 512 })()"
    )
    # The header's balance follows: the starter grant and the grant, less the quoted price.
    await tab.until(f"document.getElementById('balance').textContent === '{1000 - int(price)}'")
    shot = await tab.call("Page.captureScreenshot", format="png")
    path = tmp_path / "web-page.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.stat().st_size > 10_000
    print(f"screenshot of the page: {path}")


async def test_a_signed_in_user_links_another_chat_with_slash_link(
    bot: BotProcess,  # noqa: F811
    telegram: TelegramStandin,
    jobs: JobsClient,
    user_id: int,  # noqa: F811
) -> None:
    """The other way round: a code from the web page, redeemed with /link in the bot."""
    from tests.web.conftest import new_client

    first, second = f"telegram:{user_id}", user_id + 1
    await jobs.register(first)
    client = new_client(jobs)
    async with client:
        page = await client.get("/")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf
        code = await jobs.link_code(first)
        r = await client.post("/signin", data={"csrf": csrf.group(1), "code": code})
        assert r.status_code == 303
        page = await client.get("/")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert token
        shown = await client.post("/link-code", data={"csrf": token.group(1)})
        found = re.search(r"/link ([A-Z0-9]{8})", shown.text)
        assert found, shown.text[-2000:]

        telegram.send(second, f"/link {found.group(1)}")
        said(telegram, second, "Linked")
        account = await jobs.user(first)
        assert f"telegram:{second}" in account.identities
        assert (await jobs.user(f"telegram:{second}")).id == account.id
        # The code is spent; and a chat that already has its own account is refused.
        telegram.send(second + 1, "/start")
        said(telegram, second + 1, "starter points")
        telegram.send(second + 1, f"/link {found.group(1)}")
        said(telegram, second + 1, "already used")
        page = await client.get("/")
        assert f"telegram:{second}" in page.text


async def test_started_on_telegram_cancelled_on_the_web_refund_shown_in_both(
    bot: BotProcess,  # noqa: F811
    telegram: TelegramStandin,
    jobs: JobsClient,
    user_id: int,  # noqa: F811
    dev_stack: Stack,
) -> None:
    from tests.web.conftest import Browser, new_client

    me, who = user_id, f"telegram:{user_id}"
    telegram.send(me, "/start")
    said(telegram, me, "starter points")
    dev_stack.faults(render_time=10.0)
    try:
        telegram.send(me, "/make a fox that waits in the chat")
        deadline = time.monotonic() + 30
        while not (running := await jobs.list_jobs(user=who, running=True)):
            assert time.monotonic() < deadline, "the bot started no job"
            await asyncio.sleep(0.2)
        wid = running[0].workflow_id

        telegram.send(me, "/login")
        found = re.search(
            r"sign-in code: ([A-Z0-9]{8})", said(telegram, me, "sign-in code")["text"]
        )
        assert found
        b = Browser(new_client(jobs))
        async with b.client:
            assert (await b.sign_in(found.group(1))).status_code == 303
            assert f'action="/jobs/{wid}/cancel"' in (await b.client.get("/fragments/jobs")).text
            r = await b.post(f"/jobs/{wid}/cancel")
            assert r.status_code == 200
            refunded = re.search(r"Cancelled; (\d+) points refunded", r.text)
            assert refunded, r.text[-3000:]
            refund = int(refunded.group(1))
            assert refund > 0 and f"<td>{refund}</td><td>{wid}</td>" in r.text  # web ledger
        # Telegram: the job's status message says so, and /balance lists the refund.
        said(telegram, me, f"refunded {refund} points")
        telegram.send(me, "/balance")
        said(telegram, me, f"refund +{refund}")
    finally:
        dev_stack.reset_faults()


async def test_the_job_list_streams_as_server_sent_events(jobs: JobsClient, web_url: str) -> None:
    from domain.jobs import MakeImageRequest
    from tests.web.conftest import telegram_user

    who = await telegram_user(jobs, points=500)
    user, web = await jobs.sign_in_with_code(await jobs.link_code(who))
    token, _ = await asyncio.to_thread(jobs.stores.web_sessions.create, user.id, web)
    async with httpx.AsyncClient(base_url=web_url, timeout=60) as http:
        assert (await http.get("/events/jobs")).status_code == 401
        headers = {"Cookie": f"st_session={token}"}
        async with http.stream("GET", "/events/jobs", headers=headers) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            events = aiter_events(r)
            first = await anext(events)
            assert first[0] == "jobs" and "No jobs yet." in first[1]
            started = await jobs.start_make(
                MakeImageRequest(
                    user=who,
                    platform="cli",
                    prompt="a streamed fox",
                    overrides={"width": 256, "height": 256, "steps": 4},
                )
            )
            wid = started.workflow_id
            states = []
            async for event, data in events:
                assert event == "jobs"
                found = re.search(rf'data-job="{re.escape(wid)}" data-state="(\w+)"', data)
                if found:
                    states.append(found.group(1))
                if states and states[-1] == "done":
                    break
            assert states[-1] == "done" and f"/jobs/{wid}/outputs/0" in data
            # Signed out elsewhere: the stream says so and ends.
            await asyncio.to_thread(jobs.stores.web_sessions.delete, token)
            assert (await anext(events))[0] == "signedout"


async def aiter_events(r: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs of a text/event-stream response."""
    event, data = "", list[str]()
    async for line in r.aiter_lines():
        if line == "":
            if event:
                yield event, "\n".join(data)
            event, data = "", []
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])


async def test_login_in_a_group_writes_no_code_anywhere(
    bot: BotProcess,  # noqa: F811
    telegram: TelegramStandin,
    jobs: JobsClient,
    user_id: int,  # noqa: F811
) -> None:
    group = -(10**12) - user_id
    telegram.send(user_id, "/start")
    said(telegram, user_id, "starter points")
    telegram.send(user_id, "/login", chat_id=group, chat_type="supergroup")
    said(telegram, group, "only in a private chat")
    telegram.send(user_id, "/login", chat_id=group, chat_type="supergroup", anonymous=True)
    await asyncio.sleep(1)
    for chat in (group, user_id):
        texts = [m["text"] or "" for m in telegram.messages(chat)]
        assert not any("sign-in code" in t for t in texts), texts
    codes = jobs.stores.db["link_codes"]
    assert (
        await asyncio.to_thread(
            codes.count_documents, {"user_id": (await jobs.user(f"telegram:{user_id}")).id}
        )
        == 0
    )
