"""The `media` queue's activity: one Pillow operation (resize, convert) on a stored image.

It is a plain (sync) function on purpose: the media worker runs it in a thread pool, so a
40-megapixel decode never blocks the worker's event loop (Pillow releases the GIL while it
decodes, resamples and encodes, so the pool's threads really run in parallel).

Idempotency: the result is stored under the key `<workflow id>:<index>:media`. A retry (worker
lost after storing, timeout on the way back) finds that blob and returns it without decoding
anything again, and two racing attempts still store one blob (BlobStore.put with a key).
"""

from __future__ import annotations

import logging
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from domain.errors import UserInputError
from domain.jobs import ActivityNames, ProcessImageInput, StoredOutput
from media.ops import run_operation
from media.safety import DEFAULT_LIMITS, ImageLimits, load_image
from store.blobs import BlobNotFound, BlobStore

log = logging.getLogger(__name__)


def result_key(workflow_id: str, index: int) -> str:
    """The idempotency key of one media result."""
    return f"{workflow_id}:{index}:media"


class MediaActivities:
    """Pillow work on the `media` queue; the blob store comes in through the constructor."""

    def __init__(self, blobs: BlobStore, limits: ImageLimits = DEFAULT_LIMITS) -> None:
        self.blobs = blobs
        self.limits = limits

    def all(self) -> list[Any]:
        return [self.process_image]

    @activity.defn(name=ActivityNames.PROCESS_IMAGE)
    def process_image(self, inp: ProcessImageInput) -> StoredOutput:
        """Read the source blob, check it, apply `inp.work.op`, store the result once.

        Raises:
            ApplicationError: type "bad_image" (the source is not an acceptable image) or
                "bad_input" (parameters, unknown operation, missing source), never retried.
        """
        key = result_key(inp.workflow_id, inp.index)
        done = self.blobs.find_by_key(key)
        if done is not None:
            log.info("media result %s already stored as %s", key, done)
            return self._stored(done)
        try:
            # Owner-checked again (the workflow input is what runs, whoever started it), and
            # marked used by this charged job so the storage sweeper keeps it.
            source = self.blobs.get_owned(inp.work.source_id, inp.user_id, used_by=inp.workflow_id)
        except BlobNotFound:
            raise ApplicationError(
                f"source image {inp.work.source_id!r} not found",
                type="bad_input",
                non_retryable=True,
            ) from None
        activity.heartbeat("decoding")
        try:
            loaded = load_image(source, self.limits)
            activity.heartbeat(inp.work.op)
            rendered = run_operation(loaded, inp.work.op, inp.work.params)
        except UserInputError as err:  # BadImage (code bad_image) or bad parameters
            log.info("media job %s refused: %s", inp.workflow_id, err.message)
            raise ApplicationError(err.message, type=err.code, non_retryable=True) from None
        activity.heartbeat("storing")
        blob_id = self.blobs.put(
            rendered.data,
            f"{inp.workflow_id}-{inp.index}.{rendered.extension}",
            rendered.content_type,
            key=key,
            metadata={
                "user_id": inp.user_id,
                "kind": "output",
                "workflow_id": inp.workflow_id,
                "index": inp.index,
                "op": inp.work.op,
                "source_id": inp.work.source_id,
                "width": rendered.width,
                "height": rendered.height,
            },
        )
        log.info(
            "media %s %s: %dx%d -> %dx%d %s (%d bytes)",
            inp.work.op,
            inp.workflow_id,
            loaded.width,
            loaded.height,
            rendered.width,
            rendered.height,
            rendered.content_type,
            len(rendered.data),
        )
        return StoredOutput(
            blob_id=blob_id,
            width=rendered.width,
            height=rendered.height,
            content_type=rendered.content_type,
        )

    def _stored(self, blob_id: str) -> StoredOutput:
        info = self.blobs.info(blob_id)
        return StoredOutput(
            blob_id=blob_id,
            width=int(info.metadata.get("width", 0)),
            height=int(info.metadata.get("height", 0)),
            content_type=info.content_type,
        )
