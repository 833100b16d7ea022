"""Runs one queued prompt and emits v0.3.64's WebSocket events (docs/comfyui-protocol.md §4).

The executor keeps ComfyUI's "classic" cache: node outputs and UI outputs keyed by an input
signature (class_type, literal inputs and the signatures of linked nodes, recursively), kept for
the nodes of the latest prompt only. An identical resubmission therefore runs nothing, writes no
file and reports the earlier outputs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from standins.comfyui.faults import Faults
from standins.comfyui.handlers import HANDLERS, NodeOutput, preview_letters
from standins.comfyui.nodes import NODES, Folders
from standins.comfyui.validation import full_type_name

log = logging.getLogger(__name__)

Send = Callable[[str, dict[str, Any], str | None], Awaitable[None]]
DropSockets = Callable[[str | None], None]


class Interrupted(Exception):
    """The interrupt flag was seen at a node start or progress callback."""

    def __init__(self, node_id: str) -> None:
        super().__init__(node_id)
        self.node_id = node_id


class SimulatedRestart(Exception):
    """Fault `restart`: the server must behave as if it had just been restarted."""


class InjectedFault(RuntimeError):
    """Fault `execution_error`: raised inside a node like any real node failure."""


class InterruptFlag:
    """ComfyUI's global processing-interrupted flag."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set


@dataclass
class QueueItem:
    """A queue entry: `as_list()` is the 5-element form of /queue and history `prompt`."""

    number: int | float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]
    fault: str | None = None

    def as_list(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


@dataclass
class RunResult:
    """What history records for a finished run."""

    status_str: str
    completed: bool
    messages: list[list[Any]]
    outputs: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2


def _format(value: Any) -> Any:
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)


class _Ctx:
    """The RunContext handed to node handlers for one node of one run."""

    def __init__(self, run: _Run, node_id: str) -> None:
        self._run = run
        self.folders = run.executor.folders
        self.prompt_id = run.item.prompt_id
        self.node_id = node_id
        self.prompt = run.item.prompt
        self.extra_data = run.item.extra_data

    async def progress(self, value: int, total: int) -> None:
        await self._run.progress(self.node_id, value, total)

    async def step_wait(self, index: int, total: int) -> None:
        await self._run.step_wait(index, total)

    async def train_step_wait(self) -> None:
        faults = self._run.executor.faults
        faults.train_steps_run += 1
        if faults.train_step_delay > 0:
            await asyncio.sleep(faults.train_step_delay)

    def preview_prefix(self) -> str:
        key = (self.node_id, self.prompt[self.node_id]["class_type"])
        letters = self._run.executor.preview_objects.get(key)
        if letters is None:
            letters = preview_letters()
            self._run.executor.preview_objects[key] = letters
        return f"ComfyUI_temp_{letters}"


class Executor:
    """Holds the caches between prompts and runs one prompt at a time."""

    def __init__(
        self,
        folders: Folders,
        send: Send,
        drop_sockets: DropSockets,
        interrupt: InterruptFlag,
        faults: Faults,
    ) -> None:
        self.folders = folders
        self.send = send
        self.drop_sockets = drop_sockets
        self.interrupt = interrupt
        self.faults = faults
        self.outputs_cache: dict[str, tuple[Any, ...]] = {}
        self.ui_cache: dict[str, dict[str, Any]] = {}
        self.preview_objects: dict[tuple[str, str], str] = {}
        self.client_id: str | None = None
        self.last_node_id: str | None = None

    def reset(self) -> None:
        """Forget every cached output (POST /free, simulated restart)."""
        self.outputs_cache.clear()
        self.ui_cache.clear()
        self.preview_objects.clear()

    async def execute(self, item: QueueItem) -> RunResult:
        run = _Run(self, item)
        try:
            return await run.execute()
        finally:
            self.last_node_id = None


class _Run:
    def __init__(self, executor: Executor, item: QueueItem) -> None:
        self.executor = executor
        self.item = item
        self.prompt = item.prompt
        self.client_id: str | None = item.extra_data.get("client_id")
        self.messages: list[list[Any]] = []
        self.nodes_state: dict[str, dict[str, Any]] = {}
        self.signatures: dict[str, str | None] = {}
        self.results: dict[str, tuple[Any, ...]] = {}
        self.executed: list[str] = []
        self.fault = item.fault
        self.fault_pending = item.fault in ("ws_drop", "execution_error", "hang")
        # A run chosen for a node-level fault ignores the cache, so the fault has a node to hit.
        self.bypass_cache = self.fault_pending
        self.started = time.monotonic()
        self.render_time = executor.faults.render_time

    # -- messages ---------------------------------------------------------------------------
    async def add_message(self, event: str, data: dict[str, Any], broadcast: bool) -> None:
        data = {**data, "timestamp": _now_ms()}
        self.messages.append([event, data])
        if self.client_id is not None or broadcast:
            await self.executor.send(event, data, self.client_id)

    async def send_client(self, event: str, data: dict[str, Any]) -> None:
        """Events that only exist for prompts with a client_id (executing, executed)."""
        if self.client_id is not None:
            await self.executor.send(event, data, self.client_id)

    async def send_progress_state(self) -> None:
        nodes = {k: dict(v) for k, v in self.nodes_state.items()}
        payload = {"prompt_id": self.item.prompt_id, "nodes": nodes}
        await self.executor.send("progress_state", payload, self.client_id)

    def _state(self, node_id: str, value: Any, max_: Any, state: str) -> None:
        self.nodes_state[node_id] = {
            "value": value,
            "max": max_,
            "state": state,
            "node_id": node_id,
            "prompt_id": self.item.prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }

    async def finish_progress(self, node_id: str) -> None:
        entry = self.nodes_state.get(node_id)
        max_ = entry["max"] if entry else 1
        self._state(node_id, max_, max_, "finished")
        await self.send_progress_state()

    async def progress(self, node_id: str, value: int, total: int) -> None:
        """The sampler-callback hook: interrupt check, then progress_state and progress."""
        if self.executor.interrupt.is_set():
            raise Interrupted(node_id)
        self._state(node_id, value, total, "running")
        await self.send_progress_state()
        await self.executor.send(
            "progress",
            {"value": value, "max": total, "prompt_id": self.item.prompt_id, "node": node_id},
            self.client_id,
        )

    async def step_wait(self, index: int, total: int) -> None:
        if self.render_time is not None:
            target = self.started + self.render_time * (index + 1) / max(1, total)
            await asyncio.sleep(max(0.0, target - time.monotonic()))
        elif self.executor.faults.step_delay > 0:
            await asyncio.sleep(self.executor.faults.step_delay)

    # -- caching ----------------------------------------------------------------------------
    def signature(self, node_id: str, stack: frozenset[str] = frozenset()) -> str | None:
        """The node's input signature, None when it cannot have one (bad link, cycle)."""
        if node_id in self.signatures:
            return self.signatures[node_id]
        sig: str | None = None
        try:
            node = self.prompt[node_id]
            spec = NODES[node["class_type"]]
            parts: list[Any] = [spec.class_type]
            if spec.class_type == "LoadImage":
                path = self.executor.folders.annotated(str(node["inputs"].get("image")))
                parts.append(hashlib.sha256(path.read_bytes()).hexdigest())
            for _category, ispec in spec.inputs():
                if ispec.name not in node["inputs"]:
                    continue
                value = node["inputs"][ispec.name]
                if _is_link(value):
                    if value[0] in stack:
                        raise ValueError("cycle")
                    up = self.signature(value[0], stack | {node_id})
                    if up is None:
                        raise ValueError("bad link")
                    parts.append([ispec.name, "link", up, value[1]])
                else:
                    parts.append([ispec.name, value])
            raw = json.dumps(parts, sort_keys=True, default=str).encode()
            sig = hashlib.sha256(raw).hexdigest()
        except (KeyError, TypeError, ValueError, OSError):
            sig = None
        self.signatures[node_id] = sig
        return sig

    def is_cached(self, node_id: str) -> bool:
        if self.bypass_cache:
            return False
        sig = self.signature(node_id)
        return sig is not None and sig in self.executor.outputs_cache

    def cached_outputs(self, node_id: str) -> tuple[Any, ...]:
        sig = self.signature(node_id)
        assert sig is not None
        return self.executor.outputs_cache[sig]

    def order(self) -> list[str]:
        """Execution order: depth-first from each output, upstream nodes first, cached skipped."""
        seen: set[str] = set()
        order: list[str] = []

        def visit(node_id: str) -> None:
            if node_id in seen:
                return
            seen.add(node_id)
            node = self.prompt[node_id]
            for _category, ispec in NODES[node["class_type"]].inputs():
                value = node["inputs"].get(ispec.name)
                if _is_link(value) and not self.is_cached(value[0]):
                    visit(value[0])
            order.append(node_id)

        for output in self.item.outputs:
            visit(output)
        return order

    # -- running ----------------------------------------------------------------------------
    async def execute(self) -> RunResult:
        ex = self.executor
        ex.interrupt.clear()
        ex.client_id = self.client_id
        pid = self.item.prompt_id
        if self.fault == "restart":
            raise SimulatedRestart()
        await self.add_message("execution_start", {"prompt_id": pid}, broadcast=False)
        cached = [nid for nid in self.prompt if self.is_cached(nid)]
        await self.add_message(
            "execution_cached", {"nodes": cached, "prompt_id": pid}, broadcast=False
        )
        status = "success"
        try:
            for node_id in self.order():
                await self.run_node(node_id)
            if self.render_time is not None:
                remaining = self.started + self.render_time - time.monotonic()
                if remaining > 0:
                    await asyncio.sleep(remaining)
            await self.add_message("execution_success", {"prompt_id": pid}, broadcast=False)
        except Interrupted as stop:
            status = "error"
            await self.add_message(
                "execution_interrupted",
                {
                    "prompt_id": pid,
                    "node_id": stop.node_id,
                    "node_type": self.prompt[stop.node_id]["class_type"],
                    "executed": list(self.executed),
                },
                broadcast=True,
            )
        except _NodeError as err:
            status = "error"
            await self.add_message("execution_error", err.message, broadcast=False)
        self.keep_current_cache()
        outputs: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        for node_id in self.prompt:
            sig = self.signatures.get(node_id) or self.signature(node_id)
            ui = ex.ui_cache.get(sig) if sig else None
            if ui is not None:
                outputs[node_id] = ui["output"]
                meta[node_id] = ui["meta"]
        return RunResult(status, status == "success", self.messages, outputs, meta)

    def keep_current_cache(self) -> None:
        """Classic cache: keep only the entries of this prompt's nodes."""
        ex = self.executor
        keep = {s for s in (self.signature(n) for n in self.prompt) if s is not None}
        ex.outputs_cache = {k: v for k, v in ex.outputs_cache.items() if k in keep}
        ex.ui_cache = {k: v for k, v in ex.ui_cache.items() if k in keep}
        ids = {(n, self.prompt[n].get("class_type")) for n in self.prompt}
        ex.preview_objects = {k: v for k, v in ex.preview_objects.items() if k in ids}

    async def run_node(self, node_id: str) -> None:
        ex = self.executor
        pid = self.item.prompt_id
        node = self.prompt[node_id]
        class_type = node["class_type"]
        if self.is_cached(node_id):
            ui = ex.ui_cache.get(self.signature(node_id) or "")
            await self.send_client(
                "executed",
                {
                    "node": node_id,
                    "display_node": node_id,
                    "output": ui["output"] if ui else None,
                    "prompt_id": pid,
                },
            )
            await self.finish_progress(node_id)
            self.results[node_id] = self.cached_outputs(node_id)
            return
        self._state(node_id, 0.0, 1.0, "running")
        await self.send_progress_state()
        ex.last_node_id = node_id
        await self.send_client(
            "executing", {"node": node_id, "display_node": node_id, "prompt_id": pid}
        )
        inputs: dict[str, Any] = {}
        for _category, ispec in NODES[class_type].inputs():
            if ispec.name not in node["inputs"]:
                continue
            value = node["inputs"][ispec.name]
            if _is_link(value):
                src, slot = value
                upstream = self.results.get(src)
                if upstream is None:
                    upstream = self.cached_outputs(src)
                    self.results[src] = upstream
                inputs[ispec.name] = upstream[slot]
            else:
                inputs[ispec.name] = value
        try:
            if ex.interrupt.is_set():
                raise Interrupted(node_id)
            await self.apply_fault(node_id)
            out = await HANDLERS[class_type](_Ctx(self, node_id), inputs)
        except Interrupted:
            raise
        except Exception as exc:
            log.info("stand-in node %s (%s) failed: %s", node_id, class_type, exc)
            raise _NodeError(self.error_message(node_id, class_type, inputs, exc)) from exc
        self.store(node_id, out)
        if out.ui is not None:
            await self.send_client(
                "executed",
                {"node": node_id, "display_node": node_id, "output": out.ui, "prompt_id": pid},
            )
        await self.finish_progress(node_id)
        self.executed.append(node_id)

    def store(self, node_id: str, out: NodeOutput) -> None:
        self.results[node_id] = out.values
        sig = self.signature(node_id)
        if sig is None:
            return
        self.executor.outputs_cache[sig] = out.values
        if out.ui is not None:
            meta = {
                "node_id": node_id,
                "display_node": node_id,
                "parent_node": None,
                "real_node_id": node_id,
            }
            self.executor.ui_cache[sig] = {"output": out.ui, "meta": meta}

    async def apply_fault(self, node_id: str) -> None:
        """Node-level faults land on the first node that really runs."""
        if not self.fault_pending:
            return
        self.fault_pending = False
        if self.fault == "ws_drop":
            self.executor.drop_sockets(self.client_id)
        elif self.fault == "execution_error":
            raise InjectedFault("Stand-in fault injection: simulated node failure")
        elif self.fault == "hang":
            while not self.executor.interrupt.is_set():
                await asyncio.sleep(0.02)
            raise Interrupted(node_id)

    def error_message(
        self, node_id: str, class_type: str, inputs: dict[str, Any], exc: Exception
    ) -> dict[str, Any]:
        exc_type = "RuntimeError" if isinstance(exc, InjectedFault) else full_type_name(type(exc))
        current_inputs = {
            k: [_format(v)] if not isinstance(v, list) else [_format(x) for x in v]
            for k, v in inputs.items()
        }
        return {
            "prompt_id": self.item.prompt_id,
            "node_id": node_id,
            "node_type": class_type,
            "executed": list(self.executed),
            "exception_message": f"{exc}\n",
            "exception_type": exc_type,
            "traceback": traceback.format_tb(exc.__traceback__),
            "current_inputs": current_inputs,
            "current_outputs": list(self.prompt),
        }


class _NodeError(Exception):
    def __init__(self, message: dict[str, Any]) -> None:
        super().__init__(message.get("exception_message", ""))
        self.message = message
