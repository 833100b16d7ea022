"""Trained LoRA files in a ComfyUI server's loras folder, copied from GridFS on demand.

A comfy worker runs beside its ComfyUI server and shares its file system, so before it submits
a graph that names a LoRA it makes sure the file is in `<comfyui dir>/models/loras/`: any GPU
of the pool can then serve any model. Files are checked by sha256 after the copy, written
atomically (temp file + rename, so ComfyUI never lists half a file), and the folder is a cache
with a size cap: the least recently used files this cache put there are removed first. Files
it did not put there (an operator's own LoRAs) are never touched.

The index (`.stationthis-lora-cache.json`) and an `fcntl` lock live in the loras folder, so
several workers sharing one server (or a restarted one) agree on what is cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from domain.jobs import LoraFile

log = logging.getLogger(__name__)

INDEX_NAME = ".stationthis-lora-cache.json"
LOCK_NAME = ".stationthis-lora-cache.lock"
DEFAULT_CAP = 20 * 1024**3


class LoraIntegrityError(RuntimeError):
    """The bytes from GridFS do not hash to the model record's sha256."""


Fetch = Callable[[str], bytes]


class LoraCache:
    def __init__(self, loras_dir: Path, fetch: Fetch, *, max_bytes: int = DEFAULT_CAP) -> None:
        """`fetch(blob_id)` returns a model file's bytes (GridFS bucket `models`)."""
        self.dir = loras_dir
        self.fetch = fetch
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._lock, (self.dir / LOCK_NAME).open("a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                index = self._read_index()
                yield index
                self._write_index(index)
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _read_index(self) -> dict[str, Any]:
        try:
            data = json.loads((self.dir / INDEX_NAME).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_index(self, index: dict[str, Any]) -> None:
        tmp = self.dir / (INDEX_NAME + ".tmp")
        tmp.write_text(json.dumps(index, sort_keys=True))
        tmp.replace(self.dir / INDEX_NAME)

    def ensure(self, lora: LoraFile) -> Path:
        """The path of `lora.filename` in the loras folder, copied there first if needed."""
        path = self.dir / lora.filename
        with self._locked() as index:
            entry = index.get(lora.filename)
            if entry and entry.get("sha256") == lora.sha256 and path.is_file():
                entry["used"] = time.time()
                return path
            data = self.fetch(lora.blob_id)
            digest = hashlib.sha256(data).hexdigest()
            if digest != lora.sha256:
                raise LoraIntegrityError(
                    f"{lora.filename}: GridFS copy has sha256 {digest[:12]}…, "
                    f"expected {lora.sha256[:12]}…"
                )
            self._write(path, data)
            index[lora.filename] = {"sha256": digest, "size": len(data), "used": time.time()}
            self._evict(index, keep=lora.filename)
            log.info("lora %s cached (%d bytes)", lora.filename, len(data))
        return path

    def put(self, filename: str, data: bytes) -> Path:
        """Cache bytes this worker already holds (a chunk it just trained)."""
        path = self.dir / filename
        with self._locked() as index:
            self._write(path, data)
            digest = hashlib.sha256(data).hexdigest()
            index[filename] = {"sha256": digest, "size": len(data), "used": time.time()}
            self._evict(index, keep=filename)
        return path

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    def _evict(self, index: dict[str, Any], *, keep: str) -> None:
        """Remove least recently used cached files until the cache fits its cap."""
        total = sum(int(e.get("size", 0)) for e in index.values())
        for name, entry in sorted(index.items(), key=lambda kv: float(kv[1].get("used", 0))):
            if total <= self.max_bytes:
                break
            if name == keep:
                continue
            with contextlib.suppress(FileNotFoundError):
                (self.dir / name).unlink()
            total -= int(entry.get("size", 0))
            del index[name]
            log.info("lora %s evicted from the cache", name)

    def cached(self) -> dict[str, int]:
        """filename -> size of what the cache holds now."""
        with self._locked() as index:
            return {k: int(v.get("size", 0)) for k, v in index.items()}

    async def ensure_all(self, loras: list[LoraFile]) -> None:
        for lora in loras:
            await asyncio.to_thread(self.ensure, lora)
