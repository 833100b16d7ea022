"""One real dev stack per integration module: Temporal dev server, MongoDB-compatible server,
ComfyUI stand-in, and the workers as subprocesses, all on free loopback ports."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from adapters.jobs import JobsClient
from workers.config import ComfyDev, Config, TemporalDev
from workers.devstack import DevStack, Endpoints
from workers.processes import free_port
from workers.runtime import connect_temporal, open_stores

# A comfy worker that stops heartbeating is presumed dead after this long, so a kill -9 is
# noticed in seconds (production: 30 s).
HEARTBEAT_TIMEOUT = "4"


@dataclass
class Stack:
    stack: DevStack
    config: Config
    endpoints: Endpoints

    @property
    def comfy_url(self) -> str:
        return self.endpoints.comfyui_urls[0]

    def faults(self, **body: object) -> None:
        httpx.post(f"{self.comfy_url}/_standin/faults", json=body, timeout=5).raise_for_status()

    def reset_faults(self) -> None:
        httpx.post(f"{self.comfy_url}/_standin/reset", timeout=5).raise_for_status()

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            **self.endpoints.as_env(),
            "COMFY_HEARTBEAT_TIMEOUT": HEARTBEAT_TIMEOUT,
        }


@pytest.fixture(scope="session")
def dev_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root: Path = tmp_path_factory.mktemp("devstack")
    saved = {k: os.environ.get(k) for k in ("COMFY_HEARTBEAT_TIMEOUT",)}
    os.environ["COMFY_HEARTBEAT_TIMEOUT"] = HEARTBEAT_TIMEOUT
    for k in ("TEMPORAL_ADDRESS", "MONGODB_URI", "COMFYUI_URLS"):
        os.environ.pop(k, None)
    config = Config(
        devstack_dir=root,
        temporal=TemporalDev(port=free_port(), ui_port=free_port()),
        comfyui=ComfyDev(step_delay=0.01),
        comfy_heartbeat_timeout=float(HEARTBEAT_TIMEOUT),
    )
    stack = DevStack(config, supervise=False)
    try:
        stack.start()
        yield Stack(stack, config, stack.endpoints)
    finally:
        stack.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest_asyncio.fixture(loop_scope="session")
async def jobs(dev_stack: Stack) -> AsyncIterator[JobsClient]:
    temporal = await connect_temporal(dev_stack.config, dev_stack.endpoints)
    stores = open_stores(dev_stack.config, dev_stack.endpoints)
    dev_stack.reset_faults()
    try:
        yield JobsClient(
            temporal, stores, dev_stack.config, ui_url=dev_stack.endpoints.temporal_ui_url
        )
    finally:
        dev_stack.reset_faults()
        stores.close()
