"""Per-user command rate limit (sliding window), and the pacing of status-message edits.

Both are in-process state of the one bot process: a restart forgets them, which is harmless
(a limit that resets, an edit that may come a little sooner).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable


class RateLimiter:
    """At most `rate` events per `window` seconds per key (the sender's identity)."""

    def __init__(
        self, rate: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.window = window
        self.clock = clock
        self._events: dict[str, deque[float]] = {}
        self._warned: dict[str, float] = {}

    def check(self, key: str) -> float:
        """Record one event; 0 if allowed, else the seconds until the next one is."""
        now = self.clock()
        q = self._events.setdefault(key, deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        if len(q) >= self.rate:
            return q[0] + self.window - now
        q.append(now)
        return 0.0

    def should_warn(self, key: str) -> bool:
        """Say "slow down" once per window, not once per refused command."""
        now = self.clock()
        if now - self._warned.get(key, -1e18) < self.window:
            return False
        self._warned[key] = now
        return True


class EditPacer:
    """At most one edit per message every `interval` seconds, shared by the status watchers
    and the delivery worker (Telegram throttles frequent edits of one message)."""

    def __init__(self, interval: float = 2.0) -> None:
        self.interval = interval
        self._last: dict[tuple[str, int], float] = {}
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._closed: set[tuple[str, int]] = set()

    def ready_in(self, chat_id: str, message_id: int) -> float:
        last = self._last.get((chat_id, message_id))
        if last is None:
            return 0.0
        return max(0.0, last + self.interval - time.monotonic())

    def lock(self, chat_id: str, message_id: int) -> asyncio.Lock:
        return self._locks.setdefault((chat_id, message_id), asyncio.Lock())

    async def wait(self, chat_id: str, message_id: int) -> None:
        delay = self.ready_in(chat_id, message_id)
        if delay > 0:
            await asyncio.sleep(delay)

    def mark(self, chat_id: str, message_id: int) -> None:
        self._last[(chat_id, message_id)] = time.monotonic()

    def close(self, chat_id: str, message_id: int) -> None:
        """The delivery owns this message from now on: watchers must not edit it again."""
        self._closed.add((chat_id, message_id))

    def is_closed(self, chat_id: str, message_id: int) -> bool:
        return (chat_id, message_id) in self._closed
