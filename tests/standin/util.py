"""Small raw-protocol helpers for the stand-in tests (httpx + websockets, no project client)."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from PIL import Image
from websockets.asyncio.client import ClientConnection, connect

from tests.fixtures.comfy import ComfyServer

EVENT_TIMEOUT = 20.0


def txt2img(
    seed: int = 1,
    text: str = "a red fox",
    width: int = 64,
    height: int = 64,
    batch: int = 1,
    steps: int = 3,
    prefix: str = "standin_test",
) -> dict[str, Any]:
    """The default text-to-image graph (ids as in ComfyUI's default workflow)."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple",
              "inputs": {"ckpt_name": "sdxl-base-1.0.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage",
              "inputs": {"width": width, "height": height, "batch_size": batch}},
        "3": {"class_type": "KSampler",
              "inputs": {"model": ["4", 0], "seed": seed, "steps": steps, "cfg": 7.0,
                         "sampler_name": "euler", "scheduler": "normal", "positive": ["6", 0],
                         "negative": ["7", 0], "latent_image": ["5", 0], "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": prefix}},
    }  # fmt: skip


def unique(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@dataclass
class Run:
    """One submitted prompt: its id, the POST reply and the events seen for it."""

    prompt_id: str
    reply: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def types(self) -> list[str]:
        return [t for t, _ in self.events]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [d for t, d in self.events if t == kind]


class Session:
    """A WebSocket session (`/ws?clientId=`) plus an httpx client on one server."""

    def __init__(self, server: ComfyServer) -> None:
        self.server = server
        self.client_id = uuid.uuid4().hex
        self.http = httpx.AsyncClient(base_url=server.url, timeout=20)
        self.ws: ClientConnection | None = None

    async def __aenter__(self) -> Session:
        self.ws = await connect(f"{self.server.ws_url}?clientId={self.client_id}", max_size=None)
        first = json.loads(await asyncio.wait_for(self.ws.recv(), EVENT_TIMEOUT))
        assert first["type"] == "status" and first["data"]["sid"] == self.client_id
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.ws is not None:
            await self.ws.close()
        await self.http.aclose()

    async def submit(self, graph: dict[str, Any], **extra: Any) -> Run:
        prompt_id = extra.pop("prompt_id", str(uuid.uuid4()))
        body = {"prompt": copy.deepcopy(graph), "client_id": self.client_id,
                "prompt_id": prompt_id, **extra}  # fmt: skip
        r = await self.http.post("/prompt", json=body)
        assert r.status_code == 200, r.text
        return Run(prompt_id, r.json())

    async def follow(self, run: Run, timeout: float = EVENT_TIMEOUT) -> Run:
        """Collect events until `executing` with node None for this prompt (status included)."""
        assert self.ws is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.ws.recv()
                if isinstance(raw, bytes):
                    continue
                msg = json.loads(raw)
                data = msg["data"]
                if msg["type"] != "status" and data.get("prompt_id") not in (None, run.prompt_id):
                    continue
                run.events.append((msg["type"], data))
                if (
                    msg["type"] == "executing"
                    and data.get("node") is None
                    and data.get("prompt_id") == run.prompt_id
                ):
                    return run

    async def run(self, graph: dict[str, Any], **extra: Any) -> Run:
        return await self.follow(await self.submit(graph, **extra))

    async def history(self, prompt_id: str) -> dict[str, Any]:
        data: dict[str, Any] = (await self.http.get(f"/history/{prompt_id}")).json()
        return data.get(prompt_id, {})

    async def image(self, ref: dict[str, Any]) -> Image.Image:
        r = await self.http.get("/view", params=ref)
        assert r.status_code == 200, r.text
        img = Image.open(io.BytesIO(r.content))
        img.load()
        return img

    async def upload(self, img: Image.Image, name: str) -> str:
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        r = await self.http.post(
            "/upload/image", files={"image": (name, buf.getvalue(), "image/png")}
        )
        assert r.status_code == 200, r.text
        result: str = r.json()["name"]
        return result
