"""Contract suite of the ComfyUI client: drives only `comfy.client.ComfyClient` against a live
server, the stand-in from `comfy_standin` (tests/fixtures/comfy.py) or, when COMFYUI_URLS is set,
a real ComfyUI. Tests that need fault injection (`faults`) skip against a real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from comfy.client import ComfyClient
from tests.fixtures.comfy import ComfyServer


@pytest.fixture
def comfy_url(comfy_standin: ComfyServer) -> str:
    return comfy_standin.url


@pytest_asyncio.fixture
async def comfy(comfy_url: str) -> AsyncIterator[ComfyClient]:
    """A fresh client per test, with a short poll interval so fallbacks show up quickly."""
    async with ComfyClient(comfy_url, timeout=10.0, poll_interval=0.2) as client:
        yield client


@pytest.fixture
def faults(comfy_faults_reset: ComfyServer) -> ComfyServer:
    """The stand-in's fault switches, reset around the test; skips against a real ComfyUI."""
    comfy_faults_reset.require_faults()
    return comfy_faults_reset


class DelayingProxy:
    """A loopback reverse proxy in front of the server that holds back POST /prompt answers.

    Everything else (HTTP and the WebSocket) passes straight through, so the whole run's events
    reach the client before it learns that its prompt was accepted: the "early events" case of
    protocol §5, made deterministic without touching the server.
    """

    def __init__(self, upstream: str, delay: float) -> None:
        self.upstream = upstream.rstrip("/")
        self.delay = delay
        self.url = ""
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        headers = {}
        if "Content-Type" in request.headers:
            headers["Content-Type"] = request.headers["Content-Type"]
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            data=await request.read(),
            headers=headers,
        ) as upstream:
            body = await upstream.read()
            status = upstream.status
            content_type = upstream.headers.get("Content-Type", "application/octet-stream")
        if request.method == "POST" and request.path.rstrip("/").endswith("/prompt"):
            await asyncio.sleep(self.delay)
        return web.Response(body=body, status=status, headers={"Content-Type": content_type})

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        assert self._session is not None
        client_ws = web.WebSocketResponse()
        await client_ws.prepare(request)
        target = "ws" + self.upstream[len("http") :] + request.path_qs
        async with self._session.ws_connect(target) as server_ws:

            async def downstream() -> None:
                async for msg in server_ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        await client_ws.send_str(msg.data)
                    elif msg.type == aiohttp.WSMsgType.BINARY:
                        await client_ws.send_bytes(msg.data)
                await client_ws.close()

            pump = asyncio.create_task(downstream())
            try:
                async for msg in client_ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        await server_ws.send_str(msg.data)
            finally:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
        return client_ws


@pytest_asyncio.fixture
async def slow_accept_url(comfy_url: str) -> AsyncIterator[str]:
    """URL of a DelayingProxy that answers POST /prompt 1.5 s late."""
    proxy = DelayingProxy(comfy_url, delay=1.5)
    try:
        yield await proxy.start()
    finally:
        await proxy.close()


@pytest_asyncio.fixture
async def ckpt(comfy: ComfyClient) -> str:
    """A checkpoint the server really has (read from /object_info, never hard-coded)."""
    names = await comfy.combo_options("CheckpointLoaderSimple", "ckpt_name")
    if not names:
        pytest.skip("the server has no checkpoint")
    return names[0]


def txt2img(
    ckpt: str,
    *,
    width: int = 64,
    height: int = 64,
    batch: int = 1,
    steps: int = 3,
    seed: int | None = None,
    prefix: str = "contract/t2i",
) -> dict[str, Any]:
    """The default text-to-image graph (protocol §2), small; a random seed defeats caching."""
    return {
        "4": {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": ckpt},
            "_meta": {"title": "Load Checkpoint"},
        },
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cube", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": width, "height": height, "batch_size": batch},
        },
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["4", 0],
                "seed": random.randrange(2**32) if seed is None else seed,
                "steps": steps,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
                "denoise": 1.0,
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {
            "class_type": "SaveImage",
            "inputs": {"images": ["8", 0], "filename_prefix": prefix},
        },
    }


async def start_blocker(comfy: ComfyClient, server: ComfyServer, ckpt: str) -> str:
    """Submit a prompt that keeps the server busy until cancelled; returns its id.

    On the stand-in it is a `hang` fault (runs until interrupted); on a real server, many steps.
    """
    if server.controllable:
        server.set_faults(hang={"next": 1})
        return (await comfy.submit(txt2img(ckpt, steps=1))).prompt_id
    return (await comfy.submit(txt2img(ckpt, steps=10000))).prompt_id
