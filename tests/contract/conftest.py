"""Contract suite of the ComfyUI client: drives only `comfy.client.ComfyClient` against a live
server, the stand-in from `comfy_standin` (tests/fixtures/comfy.py) or, when COMFYUI_URL (or
COMFYUI_URLS) is set, a real ComfyUI. Tests that need fault injection (`faults`) skip against a
real server. Step counts and timeouts follow the server's measured `pace`, and every prompt a
test submits is stopped when it ends, so one failure cannot leave the server busy for the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from comfy.client import ComfyClient
from comfy.models import SubmitResult
from tests.fixtures.comfy import ComfyServer


@pytest.fixture
def comfy_url(comfy_standin: ComfyServer) -> str:
    return comfy_standin.url


@dataclass(frozen=True)
class Pace:
    """How fast the server met here renders, measured once per session (one small prompt of
    one step, then of `PROBE_STEPS`): step counts and timeouts follow it, so the suite means
    the same on the stand-in, a CPU ComfyUI and a fast GPU instead of failing on timing."""

    overhead: float  # seconds of a one-step prompt, loading and saving included
    step: float  # seconds per sampler step at 64x64

    def steps_for(self, seconds: float, *, at_least: int = 3) -> int:
        """Steps that keep the server busy about `seconds` (a prompt that must still be
        running when the test acts on it)."""
        return max(at_least, min(MAX_STEPS, math.ceil(seconds / self.step)))

    def timeout(self, steps: int = 3, *, at_least: float = 30.0) -> float:
        """A deadline for a prompt of `steps` steps that only a broken server misses."""
        return max(at_least, 4 * (self.overhead + steps * self.step) + 10)


PROBE_STEPS = 11
MEASURED: list[Pace] = []  # the session's pace, for the summary line


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line with the pace the suite measured, so a run against a real server says how
    fast it was (docs/real-comfyui.md quotes it)."""
    for p in MEASURED:
        terminalreporter.write_line(
            f"contract pace: {p.overhead:.2f} s per 1-step prompt, {p.step:.3f} s per step (64x64)"
        )


MAX_STEPS = 10_000  # KSampler's own maximum: more is refused by validation


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pace(comfy_standin: ComfyServer) -> Pace:
    """The server's pace, from one warm-up prompt, one of 1 step and one of PROBE_STEPS."""
    async with ComfyClient(comfy_standin.url, timeout=30.0, poll_interval=0.2) as client:
        names = await client.combo_options("CheckpointLoaderSimple", "ckpt_name")
        if not names:
            pytest.skip("the server has no checkpoint")
        await client.run(txt2img(names[0], steps=1), timeout=1800)  # loads the model once
        timings = []
        for steps in (1, PROBE_STEPS):
            started = time.monotonic()
            await client.run(txt2img(names[0], steps=steps), timeout=1800)
            timings.append(time.monotonic() - started)
    step = max((timings[1] - timings[0]) / (PROBE_STEPS - 1), 0.001)
    MEASURED.append(Pace(overhead=timings[0], step=step))
    return MEASURED[-1]


@pytest_asyncio.fixture(autouse=True)
async def _own_prompts_are_stopped(
    comfy_standin: ComfyServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[list[str]]:
    """Every prompt a test submits (through any client) is interrupted or dequeued when the
    test ends, passed or failed: a blocker left running on a real server would fail every
    later test on timing."""
    submitted: list[str] = []
    original = ComfyClient._submit  # what submit() and run() both post through

    async def _submit(
        self: ComfyClient, graph: dict[str, Any], prompt_id: str, *args: Any, **kwargs: Any
    ) -> SubmitResult:
        submitted.append(prompt_id)  # before the answer: a lost answer may still have queued it
        return await original(self, graph, prompt_id, *args, **kwargs)

    monkeypatch.setattr(ComfyClient, "_submit", _submit)
    yield submitted
    monkeypatch.undo()
    await stop_prompts(comfy_standin.url, submitted)


async def stop_prompts(url: str, prompt_ids: list[str]) -> None:
    """Dequeue the pending ones first (so none starts while the running one is stopped), then
    interrupt whichever still runs; finished and unknown ids are left alone. Never raises:
    it runs in teardown, after a failure that may have been the server's."""
    ids = list(dict.fromkeys(prompt_ids))
    if not ids:
        return
    async with ComfyClient(url, timeout=10.0) as client:
        with contextlib.suppress(Exception):
            await client.delete_queued(ids)
        for prompt_id in ids:
            with contextlib.suppress(Exception):
                await client.cancel(prompt_id)


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


async def start_blocker(
    comfy: ComfyClient, server: ComfyServer, ckpt: str, pace: Pace | None = None
) -> str:
    """Submit a prompt that keeps the server busy until cancelled; returns its id.

    On the stand-in it is a `hang` fault (runs until interrupted); on a real server, enough
    steps for ten minutes at its measured pace (the teardown stops it whatever happens).
    """
    if server.controllable:
        server.set_faults(hang={"next": 1})
        return (await comfy.submit(txt2img(ckpt, steps=1))).prompt_id
    steps = pace.steps_for(600) if pace is not None else 10000
    return (await comfy.submit(txt2img(ckpt, steps=steps))).prompt_id
