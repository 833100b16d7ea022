"""`stationthis demo` (what `make demo` runs): one image through the whole durable path.

Uses the running dev stack if there is one; otherwise starts the embedded stack (Temporal dev
server, MongoDB-compatible server, ComfyUI stand-in, workers), makes the image, and stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from adapters.cli.context import jobs_client
from adapters.cli.jobs_cmd import OUT_DIR, follow
from domain.jobs import MakeImageRequest
from workers.config import Config
from workers.devstack import DevStack, StackNotRunningError, resolve_endpoints

DEMO_USER = "telegram:5472638766"
DEMO_PROMPT = "a red fox in snow, golden hour"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="start the stack if needed and make one image")
    p.add_argument("--user", default=DEMO_USER)
    p.add_argument("--prompt", default=DEMO_PROMPT)
    p.add_argument("--out", type=Path, default=OUT_DIR)
    p.set_defaults(handler=run_demo)


@contextlib.contextmanager
def _stack(config: Config) -> Iterator[None]:
    try:
        resolve_endpoints(config)
        print("using the running dev stack")
        yield
        return
    except StackNotRunningError:
        pass
    print("starting the embedded dev stack (Temporal, MongoDB-compatible server, ComfyUI)...")
    with DevStack(config, supervise=True) as stack:
        ready = stack.ready_seconds or 0
        print(f"stack ready in {ready:.1f}s; Web UI {stack.endpoints.temporal_ui_url}")
        yield


def run_demo(args: argparse.Namespace) -> int:
    config = Config()
    with _stack(config):
        return asyncio.run(_demo(config, args))


async def _demo(config: Config, args: argparse.Namespace) -> int:
    async with jobs_client(config) as jobs:
        user, created = await asyncio.to_thread(jobs.stores.users.get_or_create, args.user)
        if created:
            print(f"new user {args.user}: starter grant of {config.starter_grant} points")
        print(f"balance before: {user.points}")
        started = await jobs.start_make(
            MakeImageRequest(
                user=args.user,
                platform="cli",
                prompt=args.prompt,
                overrides={"steps": 20, "width": 512, "height": 512},
            )
        )
        return await follow(jobs, started, args.out, user.points)
