"""The web app served by uvicorn on a free loopback port, over the real dev stack's jobs client:
API tests talk to it with httpx as any client would."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
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
