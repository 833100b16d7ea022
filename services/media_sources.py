"""Media sources: images a user sends, checked and kept for a media job or a dataset."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime

from domain.identity import normalise_identity
from media.safety import load_image, normalised_png
from services.base import ServiceBase
from store.blobs import OWNER_FIELD
from store.storage import SOURCE, check_quota


class MediaSourceService(ServiceBase):
    """Checking and storing the images users send."""

    async def store_source(
        self, user: str, data: bytes, filename: str, *, kind: str = SOURCE
    ) -> str:
        """Check an image a user sent and keep it for a media job; returns its GridFS id.

        The bytes pass `media.safety.load_image` (real image content, size and pixel limits,
        bombs, frames, orientation, colour modes) here, before any job exists, so a bad file is
        refused with nothing charged or started. What is stored is the normalised PNG, so every
        later step reads one well-formed format; its size is checked too. The user's storage
        quota is checked before anything is written (store/storage.py). The same file sent
        twice is stored once (and its unused-source lifetime starts again). `kind` is `source`
        (a job's input) or `dataset` (a dataset original, kept while a dataset refers to it).
        """
        found = await asyncio.to_thread(self.stores.users.get, normalise_identity(user))
        loaded = await asyncio.to_thread(load_image, data)
        png = await asyncio.to_thread(normalised_png, loaded)
        digest = hashlib.sha256(png).hexdigest()
        key = f"{kind}:{found.id}:{digest}"
        now = datetime.now(UTC)
        existing = await asyncio.to_thread(self.stores.blobs.find_by_key, key)
        if existing is not None:
            await asyncio.to_thread(self.stores.blobs.touch, existing, now)
            return existing
        await asyncio.to_thread(check_quota, self.stores.db, found.id, len(png), self.storage)
        return await asyncio.to_thread(
            self.stores.blobs.put,
            png,
            filename,
            "image/png",
            bucket="images",
            key=key,
            metadata={
                OWNER_FIELD: found.id,
                "kind": kind,
                "fresh_at": now,
                "filename": filename,
                "width": loaded.width,
                "height": loaded.height,
                "format": loaded.format,
                "mode": loaded.original_mode,
                "frames": loaded.frames,
                "note": loaded.note,
            },
        )
