"""Async client for one ComfyUI server (HTTP + WebSocket), per docs/comfyui-protocol.md.

Why it looks the way it does:

- **One WebSocket per prompt.** ComfyUI routes a run's events only to the socket whose id equals
  the prompt's `client_id`, and a second socket with the same id silently steals (and later
  kills) the first one's stream (§4). Each prompt therefore gets its own socket id,
  `"<client_id>.<prompt_id>"`, so concurrent runs on one client never interfere and `wait()`
  can find the id again in `/queue` after a worker crash.
- **Socket first, then POST** (§5): the socket is open and its first `status` received before
  the prompt is posted, and a background reader drains it into a queue, so events that arrive
  before the POST response are buffered rather than lost.
- **`/history` is the source of truth.** Events only drive progress and tell us when to look.
  The result is always read from `/history/{id}`; while following the socket the client still
  checks `/history` + `/queue` every few seconds, so a silent socket can never hang a run, and
  when the socket drops it polls every `poll_interval` (and tries to reconnect).
- **`{}` from /history is ambiguous**, so "vanished" means: not in `/history`, not in `/queue`,
  and still not in `/history` when asked again (in that order, so a prompt that finishes between
  the two calls is not mistaken for a lost one). That is `PromptLost`: the server restarted and
  forgot its in-memory queue, and the caller should resubmit.
- **Prompt ids are chosen by the client** and must be canonical lowercase uuids, which newer
  servers require and v0.3.64 accepts; checking it here makes both versions behave the same.
- Nothing is retried implicitly: POST /prompt is not idempotent on v0.3.64, so the caller
  decides (typically: `wait(id)` first, and `run(graph, prompt_id=id)` on `PromptLost`).

Recommended use in an activity that may be retried after a worker crash::

    try:
        result = await client.wait(prompt_id, on_progress=beat)
    except PromptLost:
        result = await client.run(graph, prompt_id=prompt_id, on_progress=beat)

`run()` leaves the prompt on the server when it times out or is cancelled; call `cancel()` if the
GPU should stop working on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from comfy.errors import (
    ComfyError,
    ComfyExecutionError,
    ComfyInterrupted,
    ComfyMissingNode,
    ComfyOutputTooLarge,
    ComfyTimeout,
    ComfyUnavailable,
    ComfyValidationError,
    PromptLost,
)
from comfy.models import NodeErrorDetail, OutputFile, Progress, RunResult, Stage, SubmitResult
from domain.inventory import ServerInventory, combo_choices, inventory_from_object_info

__all__ = ["ComfyClient", "ProgressCallback"]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[Progress], Awaitable[None] | None]

_STAGE_RANK: dict[str, int] = {"queued": 0, "running": 1, "done": 2}
_TEXT_OUTPUT_KEYS = ("text", "tags")
_WS_MAX_FRAME = 16 * 1024 * 1024
_RECONNECT_TIMEOUT = 2.0
_NODE_ID_IN_DETAILS = re.compile(r"#([^']+)'")
_CLASS_IN_MESSAGE = re.compile(r"node (.+?) does not exist")


class _StreamClosed(Exception):
    """The WebSocket of a run closed; the caller falls back to polling."""


class _EventStream:
    """One WebSocket session whose JSON frames a background task drains into a queue.

    Draining continuously keeps a slow progress callback from stalling the server's sender and
    buffers events that arrive before the POST /prompt answer. Binary frames (previews, TEXT)
    are dropped: texts are read from /history instead.
    """

    def __init__(self, conn: ClientConnection) -> None:
        self._conn = conn
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._closed = False
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        try:
            async for frame in self._conn:
                if isinstance(frame, bytes):
                    continue
                try:
                    msg = json.loads(frame)
                except ValueError:
                    log.debug("ignoring a non-JSON WebSocket frame")
                    continue
                if isinstance(msg, dict):
                    self._queue.put_nowait(msg)
        except (WebSocketException, OSError) as exc:
            log.debug("WebSocket reader stopped: %r", exc)
        finally:
            self._queue.put_nowait(None)

    async def get(self, timeout: float) -> dict[str, Any] | None:
        """Next message, or None if none arrived within `timeout`; raises _StreamClosed."""
        if self._closed:
            raise _StreamClosed
        try:
            msg = await asyncio.wait_for(self._queue.get(), max(timeout, 0.0))
        except TimeoutError:
            return None
        if msg is None:
            self._closed = True
            raise _StreamClosed
        return msg

    def get_nowait(self) -> dict[str, Any] | None:
        """A message already buffered, or None; raises _StreamClosed."""
        if self._closed:
            raise _StreamClosed
        try:
            msg = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None
        if msg is None:
            self._closed = True
            raise _StreamClosed
        return msg

    async def wait_status(self, timeout: float) -> None:
        """Wait for the server's greeting `status` frame: from then on the socket is routed."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.get(timeout)
                if msg is not None and msg.get("type") == "status":
                    return

    async def close(self) -> None:
        self._closed = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        with contextlib.suppress(Exception):
            await self._conn.close()


@dataclass
class _QueueSpot:
    """Where a prompt stands in /queue: running, or pending with `ahead` prompts before it."""

    running: bool
    ahead: int
    item: list[Any]

    @property
    def client_id(self) -> str | None:
        extra = self.item[3] if len(self.item) > 3 else None
        cid = extra.get("client_id") if isinstance(extra, dict) else None
        return cid if isinstance(cid, str) and cid else None


def _locate(queue: dict[str, Any], prompt_id: str) -> _QueueSpot | None:
    """Find a prompt in a GET /queue answer; pending order is (number, prompt_id) (§3)."""
    running = [i for i in queue.get("queue_running") or [] if isinstance(i, list) and len(i) > 1]
    pending = [i for i in queue.get("queue_pending") or [] if isinstance(i, list) and len(i) > 1]
    for item in running:
        if str(item[1]) == prompt_id:
            return _QueueSpot(running=True, ahead=0, item=item)

    def key(item: list[Any]) -> tuple[float, str]:
        try:
            number = float(item[0])
        except (TypeError, ValueError):
            number = float("inf")
        return (number, str(item[1]))

    for item in pending:
        if str(item[1]) == prompt_id:
            mine = key(item)
            ahead = len(running) + sum(1 for other in pending if key(other) < mine)
            return _QueueSpot(running=False, ahead=ahead, item=item)
    return None


def _node_sort_key(node_id: str) -> list[tuple[int, int, str]]:
    """Natural order of node ids ("2" < "10", subgraph ids like "12:5")."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[:.]", node_id)]


class _Deadline:
    """A run's overall time budget on the loop clock (None = unlimited)."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._end = None if timeout is None else loop.time() + timeout

    def remaining(self, cap: float) -> float:
        if self._end is None:
            return cap
        return max(0.0, min(cap, self._end - self._loop.time()))

    def expired(self) -> bool:
        return self._end is not None and self._loop.time() >= self._end


@dataclass
class _Tracker:
    """Progress state of one followed prompt; reports changes to the callback, in order."""

    prompt_id: str
    callback: ProgressCallback | None
    stage: Stage = "queued"
    queue_position: int | None = None
    node: str | None = None
    value: float | None = None
    max: float | None = None
    outage_since: float | None = None
    last_queue_refresh: float = 0.0
    _last: Progress | None = field(default=None, repr=False)

    async def advance(self, stage: Stage) -> None:
        """Move forward only: late or buffered frames never send the stage backwards."""
        if _STAGE_RANK[stage] < _STAGE_RANK[self.stage]:
            return
        self.stage = stage
        if stage != "queued":
            self.queue_position = None
        await self.emit()

    async def emit(self) -> None:
        percent: float | None = None
        if self.stage == "done":
            percent = 100.0
        elif self.value is not None and self.max:
            percent = round(100.0 * self.value / self.max, 1)
        progress = Progress(
            prompt_id=self.prompt_id,
            stage=self.stage,
            queue_position=self.queue_position if self.stage == "queued" else None,
            node=self.node if self.stage == "running" else None,
            value=self.value if self.stage == "running" else None,
            max=self.max if self.stage == "running" else None,
            percent=percent,
        )
        if progress == self._last or self.callback is None:
            self._last = progress
            return
        self._last = progress
        outcome = self.callback(progress)
        if inspect.isawaitable(outcome):
            await outcome

    async def at_spot(self, spot: _QueueSpot) -> None:
        if spot.running:
            await self.advance("running")
        elif self.stage == "queued":
            self.queue_position = spot.ahead
            await self.emit()

    async def on_message(self, msg: dict[str, Any]) -> str | None:
        """Apply one WebSocket message; returns "final", "status" or None."""
        kind = msg.get("type")
        data = msg.get("data")
        if kind == "status":
            return "status"
        # `executing` without prompt_id (sent on reconnect) and other prompts' events are noise.
        if not isinstance(data, dict) or data.get("prompt_id") != self.prompt_id:
            return None
        if kind == "executing":
            node = data.get("node")
            if node is None:
                return "final"
            self.node, self.value, self.max = str(node), None, None
            if self.stage == "running":
                await self.emit()
            else:
                await self.advance("running")
        elif kind == "execution_start":
            await self.advance("running")
        elif kind == "progress":
            node = data.get("node")
            if node is not None:
                self.node = str(node)
            self.value = _as_float(data.get("value"))
            self.max = _as_float(data.get("max"))
            if self.stage == "running":
                await self.emit()
            else:
                await self.advance("running")
        return None


def _as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class ComfyClient:
    """Client of one ComfyUI server; usable as `async with ComfyClient(url) as comfy:`.

    Args:
        base_url: `http://host:port` (an `/api` suffix is accepted too: the server serves both).
        timeout: seconds for each HTTP request and for opening the WebSocket.
        client_id: prefix of the WebSocket ids this client uses (one socket per prompt:
            `"<client_id>.<prompt_id>"`); a random hex id by default.
        poll_interval: seconds between /history polls when the WebSocket is unavailable.
        check_interval: seconds between safety checks of /history + /queue while the WebSocket
            is up (a socket can go silent without closing).
        outage_grace: while following a prompt, how long the server may stay unreachable before
            `ComfyUnavailable` is raised (a restart usually takes less).
        max_view_bytes: the largest file `view` reads; a bigger answer is cut off while it
            streams (`ComfyOutputTooLarge`) instead of being read whole into memory. None: no
            cap.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        client_id: str | None = None,
        poll_interval: float = 0.5,
        check_interval: float = 5.0,
        outage_grace: float = 60.0,
        max_view_bytes: int | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_view_bytes = max_view_bytes
        self.client_id = client_id or uuid.uuid4().hex
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.check_interval = check_interval
        self.outage_grace = outage_grace
        parts = urlsplit(self.base_url)
        root_path = parts.path[: -len("/api")] if parts.path.endswith("/api") else parts.path
        self._root_url = urlunsplit((parts.scheme, parts.netloc, root_path, "", ""))
        ws_scheme = "wss" if parts.scheme == "https" else "ws"
        self._ws_base = urlunsplit((ws_scheme, parts.netloc, parts.path, "", ""))
        self._http = httpx.AsyncClient(base_url=self.base_url + "/", timeout=timeout)
        self._open_sockets: set[str] = set()
        self._cancelled: set[str] = set()
        self._jobs_cancel: bool | None = None  # does the server have POST /api/jobs/{id}/cancel?

    async def __aenter__(self) -> ComfyClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._http.aclose()

    # ------------------------------------------------------------------ HTTP plumbing

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request; transport failures and 5xx become ComfyUnavailable."""
        try:
            resp = await self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ComfyUnavailable(
                f"{method} {self.base_url}/{path.lstrip('/')} timed out after {self.timeout:g} s"
            ) from exc
        except httpx.TransportError as exc:
            raise ComfyUnavailable(
                f"{method} {self.base_url}/{path.lstrip('/')} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if resp.status_code >= 500:
            raise ComfyUnavailable(
                f"{method} {resp.url} answered HTTP {resp.status_code}: {resp.text[:200]!r}",
                status_code=resp.status_code,
            )
        return resp

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = await self._request(method, path, **kwargs)
        if resp.status_code != 200:
            raise ComfyError(
                f"{method} {resp.url} answered HTTP {resp.status_code}: {resp.text[:200]!r}",
                status_code=resp.status_code,
            )
        try:
            return resp.json()
        except ValueError as exc:
            raise ComfyError(f"{method} {resp.url} answered non-JSON: {resp.text[:200]!r}") from exc

    # ------------------------------------------------------------------ submitting

    def _socket_id(self, prompt_id: str) -> str:
        return f"{self.client_id}.{prompt_id}"

    @staticmethod
    def _check_prompt_id(prompt_id: str) -> None:
        try:
            canonical = str(uuid.UUID(prompt_id))
        except (ValueError, TypeError, AttributeError):
            canonical = None
        if canonical != prompt_id:
            raise ComfyValidationError(
                error_type="invalid_prompt_id",
                error_message="prompt_id must be a canonical lowercase hyphenated UUID",
                details=repr(prompt_id),
                status_code=None,
            )

    async def submit(
        self,
        graph: dict[str, Any],
        *,
        prompt_id: str | None = None,
        front: bool = False,
        extra_data: dict[str, Any] | None = None,
    ) -> SubmitResult:
        """POST /prompt and return its answer, without following the run.

        Raises:
            ComfyValidationError / ComfyMissingNode: the server refused the graph (400).
            ComfyUnavailable: the server could not be reached or failed (5xx); the prompt may
                or may not have been queued, so re-attach with `wait(prompt_id)` first.
        """
        pid = prompt_id or str(uuid.uuid4())
        self._check_prompt_id(pid)
        return await self._submit(graph, pid, self._socket_id(pid), front, extra_data)

    async def _submit(
        self,
        graph: dict[str, Any],
        prompt_id: str,
        socket_id: str,
        front: bool,
        extra_data: dict[str, Any] | None,
    ) -> SubmitResult:
        body: dict[str, Any] = {
            "prompt": graph,
            "client_id": socket_id,
            "prompt_id": prompt_id,
            "extra_data": dict(extra_data or {}),
        }
        if front:
            body["front"] = True
        resp = await self._request("POST", "prompt", json=body)
        if resp.status_code == 400:
            try:
                payload = resp.json()
            except ValueError:
                payload = {}
            raise _validation_error(payload, graph)
        if resp.status_code != 200:
            raise ComfyError(
                f"POST /prompt answered HTTP {resp.status_code}: {resp.text[:200]!r}",
                status_code=resp.status_code,
            )
        try:
            payload = resp.json()
        except ValueError as exc:
            raise ComfyError(f"POST /prompt answered non-JSON: {resp.text[:200]!r}") from exc
        result = SubmitResult(
            prompt_id=str(payload.get("prompt_id", prompt_id)),
            number=payload.get("number", 0),
            node_errors=payload.get("node_errors") or {},
        )
        if result.node_errors:
            summary = "; ".join(
                d.describe() for d in _flatten_node_errors(result.node_errors, graph)
            )
            log.warning(
                "prompt %s accepted, but outputs with errors were dropped and will not run: %s",
                result.prompt_id,
                summary,
            )
        log.debug("submitted prompt %s as number %s", result.prompt_id, result.number)
        return result

    # ------------------------------------------------------------------ running and following

    async def run(
        self,
        graph: dict[str, Any],
        *,
        prompt_id: str | None = None,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
        front: bool = False,
        extra_data: dict[str, Any] | None = None,
    ) -> RunResult:
        """Submit a graph and follow it to the end (protocol §5's recommended loop).

        Progress reports go to `on_progress` in order (queued → running → done); an exception
        raised by the callback aborts the wait (the prompt keeps running on the server).

        Raises:
            ComfyValidationError, ComfyMissingNode: refused before anything ran.
            ComfyExecutionError, ComfyInterrupted: the run failed or was stopped.
            PromptLost: the server forgot the prompt (restart); resubmit.
            ComfyTimeout: `timeout` seconds passed; the prompt may still be on the server.
            ComfyUnavailable: the server was unreachable (longer than `outage_grace` while
                following).
        """
        pid = prompt_id or str(uuid.uuid4())
        self._check_prompt_id(pid)
        deadline = _Deadline(timeout)
        socket_id = self._socket_id(pid)
        stream = await self._open_stream(socket_id, deadline)
        try:
            await self._submit(graph, pid, socket_id, front, extra_data)
        except BaseException:
            await self._close_stream(stream, socket_id)
            raise
        return await self._follow(pid, stream, socket_id, on_progress, deadline)

    async def wait(
        self,
        prompt_id: str,
        *,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> RunResult:
        """Re-attach to a prompt submitted earlier (possibly by a process that has since died).

        Never resubmits. A finished prompt returns (or raises) at once from /history; a queued
        or running one is followed over its original WebSocket id when /queue names one, else
        by polling. Raises `PromptLost` if the server has no trace of it, plus the errors of
        `run`.
        """
        deadline = _Deadline(timeout)
        entry = await self.history(prompt_id)
        if entry is not None:
            return await self._finish(prompt_id, entry, _Tracker(prompt_id, on_progress))
        spot = _locate(await self._get_queue(), prompt_id)
        if spot is None:
            entry = await self.history(prompt_id)
            if entry is not None:
                return await self._finish(prompt_id, entry, _Tracker(prompt_id, on_progress))
            raise self._vanished(prompt_id)
        socket_id = spot.client_id
        stream = None
        if socket_id is not None and socket_id not in self._open_sockets:
            stream = await self._open_stream(socket_id, deadline)
        return await self._follow(prompt_id, stream, socket_id, on_progress, deadline)

    async def _open_stream(
        self, socket_id: str, deadline: _Deadline, *, reconnect: bool = False
    ) -> _EventStream | None:
        """Open the prompt's WebSocket and wait for its greeting; None if that fails.

        Reconnect attempts (made while polling) get a short budget, so a server that accepts
        connections but never answers cannot stall the polling, and log only at debug level.
        """
        url = f"{self._ws_base}/ws?clientId={quote(socket_id, safe='')}"
        cap = min(self.timeout, _RECONNECT_TIMEOUT) if reconnect else self.timeout
        budget = max(0.1, deadline.remaining(cap))
        stream: _EventStream | None = None
        try:
            conn = await connect(url, open_timeout=budget, max_size=_WS_MAX_FRAME)
            stream = _EventStream(conn)
            await stream.wait_status(budget)
        except (OSError, TimeoutError, WebSocketException, _StreamClosed) as exc:
            log.log(
                logging.DEBUG if reconnect else logging.WARNING,
                "WebSocket %s unavailable (%r); following by polling /history",
                url,
                exc,
            )
            if stream is not None:
                await stream.close()
            return None
        self._open_sockets.add(socket_id)
        return stream

    async def _close_stream(self, stream: _EventStream | None, socket_id: str | None) -> None:
        if stream is not None:
            await stream.close()
            if socket_id is not None:
                self._open_sockets.discard(socket_id)

    async def _follow(
        self,
        prompt_id: str,
        stream: _EventStream | None,
        socket_id: str | None,
        on_progress: ProgressCallback | None,
        deadline: _Deadline,
    ) -> RunResult:
        """Follow a queued prompt until /history holds it; see the module docstring.

        Owns `stream` (and any reconnected one) and closes it on the way out.
        """
        loop = asyncio.get_running_loop()
        tracker = _Tracker(prompt_id, on_progress)
        try:
            # Events that arrived before the POST answer come first, so their progress reports
            # are not lost; then one look at /history + /queue reports the queue position and
            # catches a run that finished before the socket was (re)opened.
            if stream is not None:
                with contextlib.suppress(_StreamClosed):
                    while (early := stream.get_nowait()) is not None:
                        if await tracker.on_message(early) == "final":
                            break
            entry = await self._check(prompt_id, tracker)
            if entry is not None:
                return await self._finish(prompt_id, entry, tracker)
            next_check = loop.time() + (self.check_interval if stream else self.poll_interval)
            next_reconnect = loop.time() + 1.0
            while True:
                if deadline.expired():
                    raise ComfyTimeout(prompt_id, deadline.timeout or 0.0)
                if stream is not None:
                    wait_for = deadline.remaining(max(0.05, next_check - loop.time()))
                    try:
                        msg = await stream.get(wait_for)
                    except _StreamClosed:
                        log.warning("WebSocket of prompt %s closed; polling /history", prompt_id)
                        await self._close_stream(stream, socket_id)
                        stream = None
                        next_check = loop.time()
                        next_reconnect = loop.time() + 1.0
                        continue
                    if msg is not None:
                        outcome = await tracker.on_message(msg)
                        if outcome == "final":
                            entry = await self._history_after_final(prompt_id)
                            if entry is not None:
                                return await self._finish(prompt_id, entry, tracker)
                            next_check = loop.time()
                        elif (
                            outcome == "status"
                            and tracker.stage == "queued"
                            and loop.time() - tracker.last_queue_refresh >= self.poll_interval
                        ):
                            next_check = loop.time()
                else:
                    await asyncio.sleep(deadline.remaining(self.poll_interval))
                    if socket_id is not None and loop.time() >= next_reconnect:
                        next_reconnect = loop.time() + 2.0
                        stream = await self._open_stream(socket_id, deadline, reconnect=True)
                        if stream is not None:
                            log.info("WebSocket of prompt %s reconnected", prompt_id)
                if loop.time() >= next_check:
                    entry = await self._check(prompt_id, tracker)
                    if entry is not None:
                        return await self._finish(prompt_id, entry, tracker)
                    interval = self.check_interval if stream else self.poll_interval
                    next_check = loop.time() + interval
        finally:
            await self._close_stream(stream, socket_id)

    async def _check(self, prompt_id: str, tracker: _Tracker) -> dict[str, Any] | None:
        """One look at /history then /queue: the entry if finished, None if still going.

        Raises PromptLost if the prompt vanished, ComfyUnavailable after `outage_grace`.
        """
        loop = asyncio.get_running_loop()
        try:
            entry = await self.history(prompt_id)
            if entry is not None:
                return entry
            spot = _locate(await self._get_queue(), prompt_id)
            tracker.last_queue_refresh = loop.time()
            if spot is None:
                entry = await self.history(prompt_id)
                if entry is not None:
                    return entry
                raise self._vanished(prompt_id)
        except ComfyUnavailable as exc:
            now = loop.time()
            if tracker.outage_since is None:
                tracker.outage_since = now
                log.warning("server unreachable while following %s: %s", prompt_id, exc)
            elif now - tracker.outage_since > self.outage_grace:
                raise
            return None
        if tracker.outage_since is not None:
            log.info("server reachable again while following %s", prompt_id)
            tracker.outage_since = None
        await tracker.at_spot(spot)
        return None

    def _vanished(self, prompt_id: str) -> ComfyError:
        if prompt_id in self._cancelled:
            return ComfyInterrupted(prompt_id=prompt_id, node_id=None, node_type=None)
        return PromptLost(prompt_id)

    async def _history_after_final(self, prompt_id: str) -> dict[str, Any] | None:
        """History is written before the final `executing null` (§5); retry briefly anyway."""
        delay = 0.05
        for _ in range(6):
            try:
                entry = await self.history(prompt_id)
            except ComfyUnavailable:
                entry = None
            if entry is not None:
                return entry
            await asyncio.sleep(delay)
            delay *= 2
        return None

    async def _finish(self, prompt_id: str, entry: dict[str, Any], tracker: _Tracker) -> RunResult:
        """Turn a history entry into a RunResult, or raise the run's failure."""
        status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
        assert isinstance(status, dict)
        messages = [m for m in status.get("messages") or [] if isinstance(m, list) and len(m) == 2]
        status_str = status.get("status_str")
        if status_str == "success" or (status_str is None and status.get("completed")):
            outputs = entry.get("outputs") if isinstance(entry.get("outputs"), dict) else {}
            assert isinstance(outputs, dict)
            result = RunResult(
                prompt_id=prompt_id,
                outputs=_output_files(outputs),
                texts=_output_texts(outputs),
                history=entry,
                execution_seconds=_execution_seconds(messages),
            )
            await tracker.advance("done")
            return result
        for name, data in reversed(messages):
            if not isinstance(data, dict):
                continue
            if name == "execution_error":
                raise ComfyExecutionError(
                    prompt_id=prompt_id,
                    node_id=_opt_str(data.get("node_id")),
                    node_type=_opt_str(data.get("node_type")),
                    exception_type=str(data.get("exception_type") or "Exception"),
                    exception_message=str(data.get("exception_message") or ""),
                    traceback=[str(t) for t in data.get("traceback") or []],
                )
            if name == "execution_interrupted":
                raise ComfyInterrupted(
                    prompt_id=prompt_id,
                    node_id=_opt_str(data.get("node_id")),
                    node_type=_opt_str(data.get("node_type")),
                )
        raise ComfyExecutionError(
            prompt_id=prompt_id,
            node_id=None,
            node_type=None,
            exception_type="UnknownFailure",
            exception_message=f"history status {status_str!r} without an error message",
        )

    # ------------------------------------------------------------------ queue and history

    async def _get_queue(self) -> dict[str, Any]:
        data = await self._json("GET", "queue")
        return data if isinstance(data, dict) else {}

    async def queue_position(self, prompt_id: str) -> int | None:
        """How many prompts run before this one (the running one counts); 0 if it is running
        or next; None if it is not in the queue (finished, unknown or lost)."""
        spot = _locate(await self._get_queue(), prompt_id)
        return None if spot is None else spot.ahead

    async def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The /history entry of a finished prompt, or None (pending, running or unknown)."""
        data = await self._json("GET", f"history/{quote(prompt_id, safe='')}")
        if not isinstance(data, dict):
            return None
        entry = data.get(prompt_id)
        return entry if isinstance(entry, dict) and entry else None

    async def interrupt(self, prompt_id: str | None = None) -> None:
        """Interrupt the running prompt (only if it is `prompt_id`, when given)."""
        body = {"prompt_id": prompt_id} if prompt_id else {}
        resp = await self._request("POST", "interrupt", json=body)
        if resp.status_code != 200:
            raise ComfyError(
                f"POST /interrupt answered HTTP {resp.status_code}", status_code=resp.status_code
            )

    async def delete_queued(self, prompt_ids: Iterable[str]) -> None:
        """Remove pending prompts; running ones are never touched; unknown ids are ignored."""
        ids = list(prompt_ids)
        if not ids:
            return
        resp = await self._request("POST", "queue", json={"delete": ids})
        if resp.status_code != 200:
            raise ComfyError(
                f"POST /queue answered HTTP {resp.status_code}", status_code=resp.status_code
            )

    async def cancel(self, prompt_id: str) -> bool:
        """Stop a prompt: dequeue it if pending, interrupt it if running.

        Uses the atomic POST /api/jobs/{id}/cancel of newer servers when present; otherwise
        checks /queue first and re-checks after a delete, because the prompt may start running
        between the two calls. Returns whether anything was cancelled (False for finished or
        unknown prompts). A `run`/`wait` of this client then raises ComfyInterrupted.
        """
        if self._jobs_cancel is not False:
            url = f"{self._root_url}/api/jobs/{quote(prompt_id, safe='')}/cancel"
            try:
                resp = await self._request("POST", url)
            except ComfyUnavailable as exc:
                if exc.status_code is None:
                    raise  # unreachable: the fallback would fail the same way
                resp = httpx.Response(exc.status_code)  # a server without the route may 5xx
            body: Any = None
            if resp.status_code == 200:
                with contextlib.suppress(ValueError):
                    body = resp.json()
            if isinstance(body, dict) and isinstance(body.get("cancelled"), bool):
                self._jobs_cancel = True
                if body["cancelled"]:
                    self._cancelled.add(prompt_id)
                return bool(body["cancelled"])
            self._jobs_cancel = False
        did = False
        for _ in range(3):
            spot = _locate(await self._get_queue(), prompt_id)
            if spot is None:
                break
            self._cancelled.add(prompt_id)
            did = True
            if spot.running:
                await self.interrupt(prompt_id)
                break
            await self.delete_queued([prompt_id])
        if did:
            log.info("cancelled prompt %s", prompt_id)
        return did

    # ------------------------------------------------------------------ files and metadata

    async def view(self, file: OutputFile) -> bytes:
        """Download one output file through GET /view, at most `max_view_bytes` of it.

        The answer is streamed: a declared Content-Length over the cap is refused before the
        body is read, and a body that grows past the cap (no or a false length) is cut off
        there, so memory holds at most the cap whatever the server sends.
        """
        params = {"filename": file.filename, "subfolder": file.subfolder, "type": file.type}
        what = f"{file.type}/{file.subfolder}/{file.filename}"
        limit = self.max_view_bytes
        try:
            async with self._http.stream("GET", "view", params=params) as resp:
                if resp.status_code >= 500:
                    raise ComfyUnavailable(
                        f"GET {resp.url} answered HTTP {resp.status_code}",
                        status_code=resp.status_code,
                    )
                if resp.status_code != 200:
                    raise ComfyError(
                        f"GET /view {what} answered HTTP {resp.status_code}",
                        status_code=resp.status_code,
                    )
                declared = resp.headers.get("content-length", "")
                if limit is not None and declared.isdigit() and int(declared) > limit:
                    raise ComfyOutputTooLarge(what, limit)
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if limit is not None and len(body) > limit:
                        raise ComfyOutputTooLarge(what, limit)
                return bytes(body)
        except httpx.TimeoutException as exc:
            raise ComfyUnavailable(
                f"GET {self.base_url}/view timed out after {self.timeout:g} s"
            ) from exc
        except httpx.TransportError as exc:
            raise ComfyUnavailable(
                f"GET {self.base_url}/view failed: {type(exc).__name__}: {exc}"
            ) from exc

    async def upload_image(
        self, data: bytes, filename: str, *, subfolder: str = "", overwrite: bool = False
    ) -> str:
        """Upload into the server's input folder; returns the value for LoadImage's `image`.

        The server may rename the file (`name (1).png`) when a different file has that name.
        """
        form = {
            "type": "input",
            "subfolder": subfolder,
            "overwrite": "true" if overwrite else "false",
        }
        resp = await self._request(
            "POST",
            "upload/image",
            data=form,
            files={"image": (filename, data, "application/octet-stream")},
        )
        if resp.status_code != 200:
            raise ComfyError(
                f"upload of {filename!r} answered HTTP {resp.status_code}: {resp.text[:200]!r}",
                status_code=resp.status_code,
            )
        body = resp.json()
        name = str(body.get("name") or filename)
        sub = str(body.get("subfolder") or "")
        return f"{sub}/{name}" if sub else name

    async def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        """GET /object_info[/class]: `{class_type: info}` (`{}` for an unknown class)."""
        path = "object_info" if node_class is None else f"object_info/{quote(node_class, safe='')}"
        data = await self._json("GET", path)
        return data if isinstance(data, dict) else {}

    async def inventory(self) -> ServerInventory:
        """The server's node types and model files per folder, from one full `/object_info`
        (domain/inventory.py names which loader input lists which folder)."""
        inv = inventory_from_object_info(
            self.base_url, await self.object_info(), seen_at=datetime.now(UTC)
        )
        system = (await self.system_stats()).get("system")
        version = system.get("comfyui_version") if isinstance(system, dict) else None
        return inv.model_copy(update={"version": str(version)}) if version else inv

    async def combo_options(self, node_class: str, input_name: str) -> list[str]:
        """Options of a combo input, from either encoding: legacy `[[...], {...}]` or V3
        `["COMBO", {"options": [...]}]` (§3).

        Raises:
            ComfyMissingNode: the server has no such node class.
            ComfyError: the node has no such input, or it is not a combo.
        """
        info = (await self.object_info(node_class)).get(node_class)
        if not isinstance(info, dict):
            raise ComfyMissingNode(
                node_id=None,
                class_type=node_class,
                error_type="missing_node_type",
                error_message=f"node class {node_class} is not installed on {self.base_url}",
            )
        inputs = info.get("input") or {}
        spec: Any = None
        for section in ("required", "optional"):
            group = inputs.get(section) or {}
            if isinstance(group, dict) and input_name in group:
                spec = group[input_name]
                break
        if spec is None:
            raise ComfyError(f"{node_class} has no input {input_name!r}")
        choices = combo_choices(spec)
        if choices is not None:
            return choices
        head = spec[0] if isinstance(spec, list) and spec else spec
        raise ComfyError(f"{node_class}.{input_name} is not a combo input (type {head!r})")

    async def system_stats(self) -> dict[str, Any]:
        """GET /system_stats (versions, RAM, devices); a cheap health check."""
        data = await self._json("GET", "system_stats")
        return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------------- history helpers


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _output_files(outputs: dict[str, Any]) -> list[OutputFile]:
    """Every file entry of every node's UI output (images, gifs, audio, video...), by node id."""
    files: list[OutputFile] = []
    for node_id in sorted(outputs, key=_node_sort_key):
        ui = outputs[node_id]
        if not isinstance(ui, dict):
            continue
        for value in ui.values():
            if not isinstance(value, list):
                continue
            for item in value:
                if isinstance(item, dict) and item.get("filename"):
                    files.append(
                        OutputFile(
                            node_id=str(node_id),
                            filename=str(item["filename"]),
                            subfolder=str(item.get("subfolder") or ""),
                            type=str(item.get("type") or "output"),
                        )
                    )
    return files


def _output_texts(outputs: dict[str, Any]) -> dict[str, list[str]]:
    """Strings from UI outputs `text` (PreviewAny, captioners) and `tags` (WD14 tagger)."""
    texts: dict[str, list[str]] = {}
    for node_id in sorted(outputs, key=_node_sort_key):
        ui = outputs[node_id]
        if not isinstance(ui, dict):
            continue
        found: list[str] = []
        for key in _TEXT_OUTPUT_KEYS:
            value = ui.get(key)
            items = value if isinstance(value, list) else [] if value is None else [value]
            for item in items:
                if isinstance(item, list):
                    found.extend(str(x) for x in item)
                elif item is not None:
                    found.append(str(item))
        if found:
            texts[str(node_id)] = found
    return texts


def _execution_seconds(messages: list[list[Any]]) -> float | None:
    """From `execution_start` to the terminal message, using the server's ms timestamps."""
    start = end = None
    for name, data in messages:
        if not isinstance(data, dict) or not isinstance(data.get("timestamp"), int | float):
            continue
        if name == "execution_start":
            start = float(data["timestamp"])
        elif name in ("execution_success", "execution_error", "execution_interrupted"):
            end = float(data["timestamp"])
    if start is None or end is None:
        return None
    return max(0.0, (end - start) / 1000.0)


# ---------------------------------------------------------------------- 400 decoding


def _graph_node(graph: dict[str, Any], node_id: str | None) -> dict[str, Any]:
    node = graph.get(node_id) if node_id is not None else None
    return node if isinstance(node, dict) else {}


def _flatten_node_errors(
    node_errors: dict[str, Any], graph: dict[str, Any]
) -> list[NodeErrorDetail]:
    details: list[NodeErrorDetail] = []
    for node_id in sorted(node_errors, key=_node_sort_key):
        entry = node_errors[node_id]
        if not isinstance(entry, dict):
            continue
        node = _graph_node(graph, node_id)
        meta = node.get("_meta")
        title = meta.get("title") if isinstance(meta, dict) else None
        class_type = entry.get("class_type") or node.get("class_type")
        for err in entry.get("errors") or []:
            if not isinstance(err, dict):
                continue
            extra = err.get("extra_info") if isinstance(err.get("extra_info"), dict) else {}
            assert isinstance(extra, dict)
            details.append(
                NodeErrorDetail(
                    node_id=str(node_id),
                    class_type=_opt_str(class_type),
                    title=_opt_str(title),
                    type=str(err.get("type") or ""),
                    message=str(err.get("message") or ""),
                    details=str(err.get("details") or ""),
                    input_name=_opt_str(extra.get("input_name")),
                    received_value=extra.get("received_value"),
                )
            )
    return details


def _validation_error(payload: Any, graph: dict[str, Any]) -> ComfyValidationError:
    """Map a 400 from POST /prompt to a typed exception (both protocol versions, §1)."""
    if not isinstance(payload, dict):
        payload = {}
    err = payload.get("error")
    if isinstance(err, str):
        err = {"type": "invalid_request", "message": err}
    if not isinstance(err, dict):
        err = {"type": "invalid_request", "message": "HTTP 400 without an error body"}
    error_type = str(err.get("type") or "invalid_request")
    message = str(err.get("message") or "")
    details = str(err.get("details") or "")
    extra = err.get("extra_info") if isinstance(err.get("extra_info"), dict) else {}
    assert isinstance(extra, dict)
    node_errors = payload.get("node_errors") if isinstance(payload.get("node_errors"), dict) else {}
    assert isinstance(node_errors, dict)

    if error_type == "missing_node_type" or (
        error_type == "invalid_prompt" and "does not exist" in message
    ):
        node_id = _opt_str(extra.get("node_id"))
        if node_id is None:
            match = _NODE_ID_IN_DETAILS.search(details)
            node_id = match.group(1) if match else None
        class_type = _opt_str(extra.get("class_type")) or _opt_str(
            _graph_node(graph, node_id).get("class_type")
        )
        if class_type is None:
            match = _CLASS_IN_MESSAGE.search(message)
            class_type = match.group(1) if match else None
        if class_type:
            return ComfyMissingNode(
                node_id=node_id,
                class_type=class_type,
                error_type=error_type,
                error_message=message,
                details=details,
                extra_info=extra,
            )
    errors = _flatten_node_errors(node_errors, graph)
    summary = None
    if not errors:
        summary = message + (f" ({details})" if details and details != message else "")
    return ComfyValidationError(
        error_type=error_type,
        error_message=message,
        details=details,
        extra_info=extra,
        node_errors=node_errors,
        errors=errors,
        summary=summary or None,
    )
