"""Deliveries: what a chat adapter's delivery worker reads and records for a finished job."""

from __future__ import annotations

import asyncio

from domain.jobs import StoredOutput
from services.base import ServiceBase


class DeliveryService(ServiceBase):
    """Outputs by id and the record of the parts already sent."""

    def image(self, output: StoredOutput) -> bytes:
        return self.stores.blobs.get(output.blob_id)

    async def delivered_parts(self, wid: str) -> dict[str, int]:
        """What a delivery already sent for this job: part name -> chat message id."""
        return await asyncio.to_thread(self.stores.deliveries.parts, wid)

    async def mark_delivered(self, wid: str, part: str, message_id: int) -> None:
        """Record one sent part (idempotent upsert), so a retried delivery skips it."""
        await asyncio.to_thread(self.stores.deliveries.mark, wid, part, message_id)
