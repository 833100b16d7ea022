"""Web tests over the real dev stack.

`api`: the app served by uvicorn on a free loopback port, over the stack's jobs client: API
tests talk to it with httpx as any client would. `browser`: the web page's app driven with httpx
in process (through ASGI); each test gets clients of its own with a client address of its own,
so the wrong-code limit (per address) of one test never blocks another's sign-in. Its base URL is
https: the session cookie is Secure, as a browser on the real site sees it.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest_asyncio
import uvicorn

from adapters.jobs import JobsClient
from adapters.web.app import create_app
from tests.fixtures.devstack import Stack
from workers.processes import LOOPBACK, free_port


@dataclass
class Api:
    url: str
    jobs: JobsClient
    app: object

    async def new_key(self, points: int = 500) -> tuple[str, str]:
        """A new user with `points` and an API key: (identity, key)."""
        identity = f"web:api-{uuid.uuid4().hex[:8]}"
        stores = self.jobs.stores
        await asyncio.to_thread(stores.users.get_or_create, identity, points)
        token, _ = await asyncio.to_thread(stores.api_keys.create, identity, "test")
        return identity, token

    def client(self, token: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )


@pytest_asyncio.fixture(loop_scope="session")
async def api(dev_stack: Stack, jobs: JobsClient) -> AsyncIterator[Api]:
    # Webhook receivers of the tests listen on loopback (the stack allows it, README
    # "Webhooks"); the deliveries run in the stack's own `stationthis web` process.
    config = dev_stack.config
    jobs.config = config
    app = create_app(config, jobs)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host=LOOPBACK, port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield Api(f"http://{LOOPBACK}:{port}", jobs, app)
    finally:
        server.should_exit = True
        await task


_addresses = itertools.count(1)


def new_client(jobs: JobsClient) -> httpx.AsyncClient:
    n = next(_addresses)
    transport = httpx.ASGITransport(
        app=create_app(jobs.config, jobs),
        client=(f"10.{uuid.uuid4().int % 250}.{n // 250}.{n % 250}", 4000),
    )
    return httpx.AsyncClient(transport=transport, base_url="https://testserver", timeout=60)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:2000]
    return found.group(1)


@dataclass
class Browser:
    """One browser: an httpx client with its cookies, and the page's CSRF token once signed in."""

    client: httpx.AsyncClient
    csrf: str = ""

    async def sign_in(self, code: str) -> httpx.Response:
        page = await self.client.get("/")
        r = await self.client.post("/signin", data={"csrf": csrf_of(page.text), "code": code})
        if r.status_code == 303:
            self.csrf = csrf_of((await self.client.get("/")).text)
        return r

    async def post(self, path: str, **data: str) -> httpx.Response:
        return await self.client.post(path, data={"csrf": self.csrf, **data})


@pytest_asyncio.fixture(loop_scope="session")
async def browser(jobs: JobsClient) -> AsyncIterator[Callable[[], Browser]]:
    """A factory of browsers, closed after the test."""
    made: list[Browser] = []

    def make() -> Browser:
        b = Browser(new_client(jobs))
        made.append(b)
        return b

    yield make
    await asyncio.gather(*(b.client.aclose() for b in made))


async def telegram_user(jobs: JobsClient, points: int = 0) -> str:
    """A new Telegram user (starter grant, plus `points`), as the bot's /start makes one."""
    who = f"telegram:{uuid.uuid4().int % 10**9 + 10**9}"
    await jobs.register(who)
    if points:
        await jobs.grant(who, points, by="test", key=f"web-test-{who}")
    return who


async def signed_in(
    jobs: JobsClient, browser: Callable[[], Browser], points: int = 0
) -> tuple[Browser, str]:
    """A browser signed in with a /login code of a new Telegram user; returns it and the user."""
    who = await telegram_user(jobs, points)
    b = browser()
    r = await b.sign_in(await jobs.link_code(who))
    assert r.status_code == 303, r.text[:2000]
    return b, who
