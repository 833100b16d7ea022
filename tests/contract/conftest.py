"""Contract suite of the ComfyUI client: drives only `comfy.client.ComfyClient` against a live
server, the stand-in from `comfy_standin` (tests/fixtures/comfy.py) or, when COMFYUI_URLS is set,
a real ComfyUI. Tests that need fault injection skip against a real server.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from comfy.client import ComfyClient

pytest_plugins = ["tests.contract._devstandin"]


class Faults:
    """Fault switches of the stand-in (POST /_standin/faults, POST /_standin/reset)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    async def set(self, **faults: Any) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            resp = await http.post(f"{self.url}/_standin/faults", json=faults)
            resp.raise_for_status()

    async def reset(self) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            resp = await http.post(f"{self.url}/_standin/reset", json={})
            resp.raise_for_status()


@pytest.fixture
def comfy_url(comfy_standin: Any) -> str:
    return str(comfy_standin.url)


@pytest_asyncio.fixture
async def comfy(comfy_url: str) -> AsyncIterator[ComfyClient]:
    """A fresh client per test, with short intervals so fallbacks show up quickly."""
    async with ComfyClient(comfy_url, timeout=10.0, poll_interval=0.2) as client:
        yield client


@pytest_asyncio.fixture
async def faults(comfy_standin: Any) -> AsyncIterator[Faults]:
    """Fault injection; skips when the suite runs against a real ComfyUI (COMFYUI_URLS)."""
    if os.environ.get("COMFYUI_URLS"):
        pytest.skip("fault injection needs the ComfyUI stand-in")
    switches = Faults(str(comfy_standin.url))
    await switches.reset()
    yield switches
    await switches.reset()


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
