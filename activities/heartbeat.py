"""Heartbeating while an activity waits on something that reports nothing (a queue, a send).

Cancellation and a dead worker reach the server only through heartbeats, so every long
activity runs one of these beside its work.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from temporalio import activity

HEARTBEAT_EVERY = 2.0  # seconds; every heartbeat timeout in workflows/policies.py is above it


async def heartbeat_forever(
    details: Callable[[], Any | None] = lambda: None, every: float = HEARTBEAT_EVERY
) -> None:
    """Heartbeat every `every` seconds with the current `details()` (if any) until cancelled."""
    while True:
        current = details()
        activity.heartbeat(*([current] if current is not None else []))
        await asyncio.sleep(every)


@contextlib.asynccontextmanager
async def heartbeating(
    details: Callable[[], Any | None] = lambda: None, every: float = HEARTBEAT_EVERY
) -> AsyncIterator[None]:
    """`async with heartbeating():` around work that sends no progress of its own."""
    ticker = asyncio.create_task(heartbeat_forever(details, every))
    try:
        yield
    finally:
        ticker.cancel()
