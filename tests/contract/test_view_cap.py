"""A /view answer is read with a byte cap (issue 13, item 10): a 300 MB output is not read
whole into memory, and what a comfy worker stores in GridFS is bounded by the same cap."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
import pytest_asyncio
from aiohttp import web
from pymongo.database import Database
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.comfy import ComfyActivities
from comfy.client import ComfyClient
from comfy.errors import ComfyOutputTooLarge
from comfy.models import OutputFile
from domain.jobs import OutputRef, StoreOutputsInput
from store.blobs import BlobStore
from tests.contract.conftest import txt2img

HUGE = 300 * 1024 * 1024
CHUNK = 64 * 1024


async def rendered(comfy: ComfyClient, ckpt: str) -> OutputFile:
    result = await comfy.run(txt2img(ckpt, width=64, height=48), timeout=60)
    return result.outputs[0]


async def test_an_output_over_the_cap_is_refused_and_one_at_the_cap_is_read(
    comfy_url: str, comfy: ComfyClient, ckpt: str
) -> None:
    file = await rendered(comfy, ckpt)
    size = len(await comfy.view(file))
    async with ComfyClient(comfy_url, max_view_bytes=size - 1) as capped:
        with pytest.raises(ComfyOutputTooLarge) as caught:
            await capped.view(file)
    assert not caught.value.retryable, "the same file is as big the next time"
    assert f"{size - 1:,} byte cap" in caught.value.message
    async with ComfyClient(comfy_url, max_view_bytes=size) as exact:
        assert len(await exact.view(file)) == size


class EndlessView:
    """A server whose /view streams 300 MB without a Content-Length (chunked), counting what
    it managed to send before the client hung up."""

    def __init__(self) -> None:
        self.sent = 0
        self.runner: web.AppRunner | None = None

    async def view(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        block = b"\0" * CHUNK
        try:
            while self.sent < HUGE:
                await resp.write(block)
                self.sent += CHUNK
        except (ConnectionResetError, RuntimeError):
            pass  # the client stopped reading
        return resp

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/view", self.view)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"


@pytest_asyncio.fixture
async def endless() -> AsyncIterator[tuple[EndlessView, str]]:
    server = EndlessView()
    url = await server.start()
    yield server, url
    assert server.runner is not None
    await server.runner.cleanup()


async def test_a_300_mb_view_without_a_length_is_cut_off_at_the_cap(
    endless: tuple[EndlessView, str],
) -> None:
    server, url = endless
    cap = 1024 * 1024
    async with ComfyClient(url, max_view_bytes=cap) as comfy:
        with pytest.raises(ComfyOutputTooLarge):
            await comfy.view(OutputFile(node_id="9", filename="huge.png"))
    assert server.sent < 64 * 1024 * 1024, f"the client read on: {server.sent:,} bytes sent"


async def test_the_comfy_worker_stores_no_output_over_the_cap(
    comfy_url: str, comfy: ComfyClient, ckpt: str, mongo_db: Database[Any]
) -> None:
    file = await rendered(comfy, ckpt)
    blobs = BlobStore(mongo_db)
    blobs.ensure_indexes()
    acts = ComfyActivities(comfy_url, cast(Client, None), blobs, max_output_bytes=100)
    inp = StoreOutputsInput(
        workflow_id="make-u1-cap",
        user_id="u1",
        files=[OutputRef(server_url=comfy_url, node_id=file.node_id, filename=file.filename,
                         subfolder=file.subfolder, type=file.type)],
    )  # fmt: skip
    try:
        with pytest.raises(ApplicationError) as caught:
            await ActivityEnvironment().run(acts.store_comfy_outputs, inp)
    finally:
        await acts.aclose()
    assert caught.value.type == "ComfyOutputTooLarge"
    assert caught.value.non_retryable
    assert mongo_db["images.files"].count_documents({}) == 0, "nothing was stored"
