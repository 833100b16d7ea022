"""The stand-in's HTTP + WebSocket server: routes, the prompt queue and its single worker.

Reproduces ComfyUI v0.3.64's `server.py` / `main.py` behaviour for the routes StationThis uses
(docs/comfyui-protocol.md §0-§7): every route is served as `/X` and `/api/X`; unhandled errors (bad
JSON, bad query values) surface as aiohttp's plain-text 500 exactly as in ComfyUI. The
`/_standin/...` routes are not ComfyUI's: they steer fault injection for reliability tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import logging
import mimetypes
import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import psutil
from aiohttp import WSMsgType, web
from PIL import Image
from pydantic import ValidationError

from standins.comfyui import render
from standins.comfyui.execution import (
    Executor,
    InterruptFlag,
    QueueItem,
    RunResult,
    SimulatedRestart,
)
from standins.comfyui.faults import Faults, FaultUpdate
from standins.comfyui.modelfiles import MODEL_FOLDERS, ensure_default_models
from standins.comfyui.nodes import NODES, Folders, object_info
from standins.comfyui.validation import validate_prompt

log = logging.getLogger(__name__)

COMFYUI_VERSION = "0.3.64"
MAX_UPLOAD_SIZE = 100 * 1024 * 1024
MAXIMUM_HISTORY_SIZE = 10000
FEATURES: dict[str, Any] = {"supports_preview_metadata": True, "max_upload_size": MAX_UPLOAD_SIZE}
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error_500() -> web.Response:
    """The body aiohttp gives an unhandled exception, which is what ComfyUI clients see."""
    return web.Response(
        status=500,
        text="500 Internal Server Error\n\nServer got itself in trouble",
        content_type="text/plain",
    )


class StandinServer:
    """State of one stand-in ComfyUI: queue, history, sockets, caches and faults."""

    def __init__(
        self, root: Path, step_delay: float = 0.0, train_step_delay: float = 0.005
    ) -> None:
        self.folders = Folders(root)
        self.faults = Faults(step_delay, train_step_delay)
        self.interrupt = InterruptFlag()
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self._transports: dict[int, asyncio.BaseTransport] = {}
        self.number = 0
        self._seq = itertools.count()
        self.heap: list[tuple[float, str, int, QueueItem]] = []
        self.running: QueueItem | None = None
        self.history: dict[str, dict[str, Any]] = {}
        self.free_requested = False
        self.executor = Executor(
            self.folders, self.send, self.drop_sockets, self.interrupt, self.faults
        )
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._current: asyncio.Task[RunResult] | None = None

    # -- set-up -----------------------------------------------------------------------------
    def prepare_dirs(self) -> None:
        """Create the folder layout and default model files; empty temp/ as a start does."""
        f = self.folders
        for d in (f.input, f.output, f.models):
            d.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(f.temp, ignore_errors=True)
        f.temp.mkdir(parents=True, exist_ok=True)
        ensure_default_models(f.models)
        example = f.input / "example.png"
        if not example.exists():
            render.save_png(render.default_input_image(), example)
        # The default `folder` of the train-lora template: two captioned images.
        dataset = f.input / "example_dataset"
        if not dataset.exists():
            dataset.mkdir(parents=True)
            for n in range(2):
                img = render.generate({"standin": "example_dataset", "n": n}, 64, 64)
                render.save_png(img, dataset / f"{n}.png")
                (dataset / f"{n}.txt").write_text(f"example, image {n}")

    def app(self) -> web.Application:
        """The aiohttp application; its worker starts and stops with the app."""
        app = web.Application(client_max_size=MAX_UPLOAD_SIZE)
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/ws", self.ws_handler),
            ("GET", "/prompt", self.get_prompt),
            ("POST", "/prompt", self.post_prompt),
            ("GET", "/queue", self.get_queue),
            ("POST", "/queue", self.post_queue),
            ("GET", "/history", self.get_history),
            ("GET", "/history/{prompt_id}", self.get_history_item),
            ("POST", "/history", self.post_history),
            ("POST", "/interrupt", self.post_interrupt),
            ("POST", "/free", self.post_free),
            ("GET", "/view", self.get_view),
            ("POST", "/upload/image", self.upload_image),
            ("GET", "/object_info", self.get_object_info),
            ("GET", "/object_info/{node_class}", self.get_object_info_node),
            ("GET", "/system_stats", self.get_system_stats),
            ("GET", "/features", self.get_features),
            ("GET", "/embeddings", self.get_embeddings),
            ("GET", "/models", self.get_models),
            ("GET", "/models/{folder}", self.get_models_folder),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
            app.router.add_route(method, "/api" + path, handler)
        app.router.add_get("/_standin/faults", self.get_faults)
        app.router.add_post("/_standin/faults", self.post_faults)
        app.router.add_post("/_standin/reset", self.post_reset)
        app.router.add_post("/_standin/restart", self.post_restart)
        app.cleanup_ctx.append(self._lifecycle)
        return app

    async def _lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        self.prepare_dirs()
        self._wakeup = asyncio.Event()
        self._worker = asyncio.create_task(self._work(), name="standin-worker")
        yield
        self._worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker
        for ws in list(self.sockets.values()):
            with contextlib.suppress(Exception):
                await ws.close()

    # -- messaging --------------------------------------------------------------------------
    def queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": len(self.heap) + (1 if self.running else 0)}}

    async def send(self, event: str, data: dict[str, Any], sid: str | None) -> None:
        """To socket `sid`, or to every socket when `sid` is None (ComfyUI send_sync)."""
        if sid is None:
            targets = list(self.sockets.values())
        else:
            ws = self.sockets.get(sid)
            targets = [ws] if ws is not None else []
        text = json.dumps({"type": event, "data": data})
        for ws in targets:
            try:
                await ws.send_str(text)
            except Exception as exc:  # a client that went away must not stop the run
                log.debug("stand-in: dropping %s for a closed socket: %s", event, exc)

    async def broadcast_status(self) -> None:
        await self.send("status", {"status": self.queue_info()}, None)

    def drop_sockets(self, sid: str | None) -> None:
        """Cut the connection(s) without a close frame, as a network failure would."""
        targets = list(self.sockets.values()) if sid is None else [self.sockets.get(sid)]
        for ws in targets:
            transport = self._transports.get(id(ws)) if ws is not None else None
            if transport is not None:
                log.info("stand-in: dropping a WebSocket (fault injection)")
                transport.abort()  # type: ignore[attr-defined]

    async def ws_handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId") or uuid.uuid4().hex
        self.sockets[sid] = ws
        if request.transport is not None:
            self._transports[id(ws)] = request.transport
        try:
            await self.send("status", {"status": self.queue_info(), "sid": sid}, sid)
            if self.executor.client_id == sid and self.executor.last_node_id is not None:
                await self.send("executing", {"node": self.executor.last_node_id}, sid)
            first = True
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    try:
                        data = json.loads(msg.data)
                    except ValueError:
                        continue
                    if first and isinstance(data, dict) and data.get("type") == "feature_flags":
                        await self.send("feature_flags", dict(FEATURES), sid)
                    first = False
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            # v0.3.64 removes the id's mapping even if a newer socket took it over.
            self.sockets.pop(sid, None)
            self._transports.pop(id(ws), None)
        return ws

    # -- queue and worker -------------------------------------------------------------------
    async def _enqueue(self, item: QueueItem) -> None:
        heapq.heappush(self.heap, (item.number, item.prompt_id, next(self._seq), item))
        if self._wakeup is not None:
            self._wakeup.set()
        await self.broadcast_status()

    async def _work(self) -> None:
        assert self._wakeup is not None
        while True:
            while not self.heap:
                self._wakeup.clear()
                await self._wakeup.wait()
            *_, item = heapq.heappop(self.heap)
            self.running = item
            await self.broadcast_status()
            if self.free_requested:
                self.executor.reset()
                self.free_requested = False
            self._current = asyncio.create_task(self.executor.execute(item))
            try:
                result = await self._current
            except SimulatedRestart:
                await self.simulate_restart()
                continue
            except asyncio.CancelledError:
                # Either the app is stopping (re-raise) or a restart cancelled the run.
                if self._worker is not None and self._worker.cancelling():
                    raise
                continue
            except Exception:
                log.exception("stand-in: prompt %s crashed the executor", item.prompt_id)
                result = RunResult("error", False, [])
            finally:
                self._current = None
            self._write_history(item, result)
            self.running = None
            await self.broadcast_status()
            client_id = item.extra_data.get("client_id")
            if client_id is not None:
                await self.send("executing", {"node": None, "prompt_id": item.prompt_id}, client_id)

    def _write_history(self, item: QueueItem, result: RunResult) -> None:
        extra = {k: v for k, v in item.extra_data.items() if k not in SENSITIVE_EXTRA_DATA_KEYS}
        self.history[item.prompt_id] = {
            "prompt": [item.number, item.prompt_id, item.prompt, extra, item.outputs],
            "outputs": result.outputs,
            "status": {
                "status_str": result.status_str,
                "completed": result.completed,
                "messages": result.messages,
            },
            "meta": result.meta,
        }
        while len(self.history) > MAXIMUM_HISTORY_SIZE:
            self.history.pop(next(iter(self.history)))

    async def simulate_restart(self) -> None:
        """What a restart loses: queue, history, caches, counter, temp files and sockets."""
        log.info("stand-in: simulating a restart (queue and history lost)")
        current = self._current
        if current is not None and not current.done():
            current.cancel()
        self.heap.clear()
        self.history.clear()
        self.running = None
        self.number = 0
        self.executor.reset()
        self.executor.client_id = None
        self.executor.last_node_id = None
        shutil.rmtree(self.folders.temp, ignore_errors=True)
        self.folders.temp.mkdir(parents=True, exist_ok=True)
        self.drop_sockets(None)

    # -- /prompt ----------------------------------------------------------------------------
    async def get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self.queue_info())

    async def post_prompt(self, request: web.Request) -> web.Response:
        body: Any = await request.json()  # invalid JSON: unhandled -> plain-text 500
        if not isinstance(body, dict | list | str):
            raise TypeError(f"argument of type {type(body).__name__} is not iterable")
        json_data: dict[str, Any] = body if isinstance(body, dict) else {}
        took_number = "number" not in body
        if not took_number:
            number: int | float = float(json_data["number"])
        else:
            number = self.number
            if json_data.get("front"):
                number = -number
            self.number += 1
        if "prompt" not in json_data:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        prompt = json_data["prompt"]
        prompt_id = str(json_data.get("prompt_id", uuid.uuid4()))
        targets = json_data.get("partial_execution_targets")
        valid = validate_prompt(prompt, targets, self.folders)
        extra_data = json_data.get("extra_data", {})
        if "client_id" in json_data:
            extra_data["client_id"] = json_data["client_id"]
        if not valid.ok:
            log.info("stand-in: invalid prompt %s: %s", prompt_id, valid.error)
            return web.json_response(
                {"error": valid.error, "node_errors": valid.node_errors}, status=400
            )
        fault = self.faults.choose()
        if fault == "http_500":
            if took_number:
                self.number -= 1
            log.info("stand-in: failing POST /prompt with 500 (fault injection)")
            return _error_500()
        item = QueueItem(number, prompt_id, prompt, extra_data, valid.outputs, fault)
        await self._enqueue(item)
        return web.json_response(
            {"prompt_id": prompt_id, "number": number, "node_errors": valid.node_errors}
        )

    # -- /queue, /history, /interrupt, /free ------------------------------------------------
    async def get_queue(self, request: web.Request) -> web.Response:
        running = [self.running.as_list()] if self.running else []
        pending = [entry[3].as_list() for entry in self.heap]
        return web.json_response({"queue_running": running, "queue_pending": pending})

    async def post_queue(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        if json_data.get("clear"):
            self.heap.clear()
            await self.broadcast_status()
        if "delete" in json_data:
            for id_to_delete in json_data["delete"]:
                for index, entry in enumerate(self.heap):
                    if entry[1] == id_to_delete:
                        if len(self.heap) == 1:
                            self.heap.clear()
                            await self.broadcast_status()  # wipe_queue's own update
                        else:
                            self.heap.pop(index)
                            heapq.heapify(self.heap)
                        await self.broadcast_status()
                        break
        return web.Response(status=200)

    async def get_history(self, request: web.Request) -> web.Response:
        query = request.rel_url.query
        max_items = int(query["max_items"]) if "max_items" in query else None
        offset = int(query.get("offset", -1))
        if offset < 0 and max_items is not None:
            offset = len(self.history) - max_items
        out: dict[str, Any] = {}
        for i, key in enumerate(list(self.history)):
            if i >= offset:
                out[key] = self.history[key]
                if max_items is not None and len(out) >= max_items:
                    break
        return web.json_response(out)

    async def get_history_item(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        entry = self.history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry is not None else {})

    async def post_history(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        if json_data.get("clear"):
            self.history.clear()
        if "delete" in json_data:
            for prompt_id in json_data["delete"]:
                self.history.pop(prompt_id, None)
        return web.Response(status=200)

    async def post_interrupt(self, request: web.Request) -> web.Response:
        try:
            json_data = await request.json()
        except ValueError:
            json_data = {}
        prompt_id = json_data.get("prompt_id")
        if prompt_id:
            if self.running is not None and self.running.prompt_id == prompt_id:
                self.interrupt.set()
        else:
            self.interrupt.set()
        return web.Response(status=200)

    async def post_free(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        if json_data.get("unload_models") or json_data.get("free_memory"):
            self.free_requested = True
        return web.Response(status=200)

    # -- files ------------------------------------------------------------------------------
    async def get_view(self, request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        if "filename" not in query:
            return web.Response(status=404)
        filename = query["filename"]
        kind: str | None = None
        for suffix in ("output", "input", "temp"):
            if filename.endswith(f" [{suffix}]"):
                filename, kind = filename[: -len(suffix) - 3], suffix
                break
        if not filename or filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        base = self.folders.by_type(kind or query.get("type", "output"))
        if base is None:
            return web.Response(status=400)
        found = await asyncio.to_thread(_view_path, base, query.get("subfolder"), filename)
        if isinstance(found, int):
            return web.Response(status=found)
        path = found
        name = path.name
        if "preview" in query:
            parts = query["preview"].split(";")
            fmt = parts[0] if parts[0] in ("webp", "jpeg") else "webp"
            quality = int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 90
            data = await asyncio.to_thread(_reencode, path, fmt, quality)
            return web.Response(
                body=data,
                content_type=f"image/{fmt}",
                headers={"Content-Disposition": f'filename="{name}"'},
            )
        channel = query.get("channel", "rgba")
        if channel in ("rgb", "a"):
            data = await asyncio.to_thread(_channel_png, path, channel)
            return web.Response(
                body=data,
                content_type="image/png",
                headers={"Content-Disposition": f'filename="{name}"'},
            )
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if content_type in ("text/html", "text/javascript", "text/css"):
            content_type = "application/octet-stream"
        return web.FileResponse(
            path,
            headers={"Content-Disposition": f'filename="{name}"', "Content-Type": content_type},
        )

    async def upload_image(self, request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        kind = post.get("type") or "input"
        base = self.folders.by_type(str(kind))
        if base is None:
            raise ValueError(f"unknown upload type {kind!r}")  # ComfyUI: unhandled -> 500
        if not isinstance(image, web.FileField):
            return web.Response(status=400)
        filename = image.filename
        if not filename:
            return web.Response(status=400)
        subfolder = str(post.get("subfolder", ""))
        overwrite = post.get("overwrite") in ("true", "1")
        data = image.file.read()
        stored = await asyncio.to_thread(_store_upload, base, subfolder, filename, data, overwrite)
        if stored is None:
            return web.Response(status=400)
        filename = stored
        return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})

    # -- descriptions -----------------------------------------------------------------------
    async def get_object_info(self, request: web.Request) -> web.Response:
        info = await asyncio.to_thread(
            lambda: {name: object_info(spec, self.folders) for name, spec in NODES.items()}
        )
        return web.json_response(info)

    async def get_object_info_node(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        spec = NODES.get(name)
        if spec is None:
            return web.json_response({})
        return web.json_response({name: object_info(spec, self.folders)})

    async def get_system_stats(self, request: web.Request) -> web.Response:
        mem = psutil.virtual_memory()
        return web.json_response(
            {
                "system": {
                    "os": os.name,
                    "ram_total": mem.total,
                    "ram_free": mem.available,
                    "comfyui_version": COMFYUI_VERSION,
                    "required_frontend_version": "1.27.10",
                    "installed_templates_version": "0.1.94",
                    "required_templates_version": "0.1.94",
                    "python_version": sys.version,
                    "pytorch_version": "2.8.0+cpu",
                    "embedded_python": False,
                    "argv": sys.argv,
                },
                "devices": [
                    {
                        "name": "cpu",
                        "type": "cpu",
                        "index": None,
                        "vram_total": mem.total,
                        "vram_free": mem.available,
                        "torch_vram_total": mem.total,
                        "torch_vram_free": mem.available,
                    }
                ],
            }
        )

    async def get_features(self, request: web.Request) -> web.Response:
        return web.json_response(dict(FEATURES))

    async def get_embeddings(self, request: web.Request) -> web.Response:
        return web.json_response(self.folders.embeddings())

    async def get_models(self, request: web.Request) -> web.Response:
        return web.json_response(list(MODEL_FOLDERS))

    async def get_models_folder(self, request: web.Request) -> web.Response:
        folder = request.match_info["folder"]
        if folder not in MODEL_FOLDERS:
            return web.Response(status=404)
        return web.json_response(self.folders.model_files(folder))

    # -- /_standin --------------------------------------------------------------------------
    async def get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.snapshot())

    async def post_faults(self, request: web.Request) -> web.Response:
        try:
            change = FaultUpdate.model_validate(await request.json())
        except (ValueError, ValidationError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.faults.update(change)
        return web.json_response(self.faults.snapshot())

    async def post_reset(self, request: web.Request) -> web.Response:
        """Between tests: no faults, nothing pending, the running prompt interrupted."""
        self.faults.reset()
        if self.heap:
            self.heap.clear()
            await self.broadcast_status()
        if self.running is not None:
            self.interrupt.set()
        return web.json_response(self.faults.snapshot())

    async def post_restart(self, request: web.Request) -> web.Response:
        await self.simulate_restart()
        return web.json_response({})


def _view_path(base: Path, subfolder: str | None, filename: str) -> Path | int:
    """/view's path rules: a subfolder escaping the base is 403, a missing file 404."""
    output_dir = str(base)
    if subfolder is not None:
        full = os.path.join(output_dir, subfolder)
        if os.path.commonpath((os.path.abspath(full), output_dir)) != output_dir:
            return 403
        output_dir = full
    path = Path(output_dir) / os.path.basename(filename)
    return path if path.is_file() else 404


def _store_upload(
    base: Path, subfolder: str, filename: str, data: bytes, overwrite: bool
) -> str | None:
    """Write an upload; on a clash identical bytes reuse the name, others get `name (n).ext`."""
    upload_dir = str(base)
    folder = os.path.join(upload_dir, os.path.normpath(subfolder))
    filepath = os.path.abspath(os.path.join(folder, filename))
    if os.path.commonpath((upload_dir, filepath)) != upload_dir:
        return None
    os.makedirs(folder, exist_ok=True)
    if not overwrite:
        stem, ext = os.path.splitext(filename)
        i = 1
        while os.path.exists(filepath):
            if Path(filepath).read_bytes() == data:
                return filename
            filename = f"{stem} ({i}){ext}"
            filepath = os.path.join(folder, filename)
            i += 1
    Path(filepath).write_bytes(data)
    return filename


def _reencode(path: Path, fmt: str, quality: int) -> bytes:
    with Image.open(path) as img:
        buf = BytesIO()
        img.convert("RGB").save(buf, format=fmt.upper(), quality=quality)
    return buf.getvalue()


def _channel_png(path: Path, channel: str) -> bytes:
    with Image.open(path) as img:
        buf = BytesIO()
        if channel == "rgb":
            img.convert("RGB").save(buf, format="PNG")
        else:
            rgba = img.convert("RGBA")
            out = Image.new("RGBA", rgba.size)
            out.putalpha(rgba.getchannel("A"))
            out.save(buf, format="PNG")
    return buf.getvalue()


STANDIN_KEY: web.AppKey[StandinServer] = web.AppKey("standin", StandinServer)


def create_app(
    root: Path | str, step_delay: float = 0.0, train_step_delay: float = 0.005
) -> web.Application:
    """Build the stand-in's aiohttp app for in-process use (`app[STANDIN_KEY]` is the state)."""
    server = StandinServer(Path(root), step_delay, train_step_delay)
    app = server.app()
    app[STANDIN_KEY] = server
    return app
