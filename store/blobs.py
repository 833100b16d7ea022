"""Images and model files in GridFS (buckets `images` and `models`).

Blobs never travel in Temporal payloads: activities store them here and pass the id (a string).
`put` with a `key` is idempotent: a retried activity storing the same output gets the id of the
first upload. The key lives in `metadata.key` with a unique (partial) index on each bucket's
files collection; GridFS writes the chunks before the file document, so a losing concurrent
upload deletes its own chunks and returns the winner's id.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import gridfs
from bson import ObjectId
from bson.errors import InvalidId
from pydantic import BaseModel, ConfigDict, Field
from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

log = logging.getLogger(__name__)

BUCKETS = ("images", "models")


class BlobNotFound(KeyError):
    """No blob with this id in this bucket."""


class BlobInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    bucket: str
    filename: str
    content_type: str
    length: int
    uploaded_at: datetime
    metadata: dict[str, Any] = Field(default_factory=dict)


def _oid(blob_id: str) -> ObjectId:
    try:
        return ObjectId(blob_id)
    except (InvalidId, TypeError):
        raise BlobNotFound(blob_id) from None


class BlobStore:
    def __init__(self, db: Database[Any]) -> None:
        self.db = db
        self._buckets = {name: gridfs.GridFSBucket(db, bucket_name=name) for name in BUCKETS}

    def _bucket(self, bucket: str) -> gridfs.GridFSBucket:
        try:
            return self._buckets[bucket]
        except KeyError:
            raise ValueError(f"unknown bucket {bucket!r} (one of {BUCKETS})") from None

    def ensure_indexes(self) -> None:
        for name in BUCKETS:
            files = self.db[f"{name}.files"]
            files.create_index(
                [("metadata.key", ASCENDING)],
                unique=True,
                partialFilterExpression={"metadata.key": {"$type": "string"}},
                name="key_unique",
            )
            files.create_index([("filename", ASCENDING), ("uploadDate", ASCENDING)])
            self.db[f"{name}.chunks"].create_index(
                [("files_id", ASCENDING), ("n", ASCENDING)], unique=True
            )

    def put(
        self,
        data: bytes,
        filename: str,
        content_type: str,
        *,
        bucket: str = "images",
        metadata: Mapping[str, Any] | None = None,
        key: str | None = None,
    ) -> str:
        """Store `data` and return its id; with a key (argument or `metadata["key"]`), at most
        once: the same key returns the existing id and stores nothing."""
        b = self._bucket(bucket)
        meta = dict(metadata or {})
        if key is not None:
            meta["key"] = key
        meta["content_type"] = content_type
        k = meta.get("key")
        if k is not None:
            existing = self.find_by_key(str(k), bucket=bucket)
            if existing is not None:
                return existing
        file_id = ObjectId()
        try:
            b.upload_from_stream_with_id(file_id, filename, data, metadata=meta)
        except (gridfs.errors.FileExists, DuplicateKeyError):
            self.db[f"{bucket}.chunks"].delete_many({"files_id": file_id})
            existing = self.find_by_key(str(k), bucket=bucket) if k is not None else None
            if existing is None:
                raise
            log.debug("blob key %s stored concurrently; using %s", k, existing)
            return existing
        return str(file_id)

    def find_by_key(self, key: str, *, bucket: str = "images") -> str | None:
        self._bucket(bucket)
        doc = self.db[f"{bucket}.files"].find_one({"metadata.key": key}, {"_id": 1})
        return str(doc["_id"]) if doc else None

    def get(self, blob_id: str, bucket: str = "images") -> bytes:
        try:
            with self._bucket(bucket).open_download_stream(_oid(blob_id)) as stream:
                return stream.read()
        except gridfs.errors.NoFile:
            raise BlobNotFound(blob_id) from None

    def info(self, blob_id: str, bucket: str = "images") -> BlobInfo:
        self._bucket(bucket)
        doc = self.db[f"{bucket}.files"].find_one({"_id": _oid(blob_id)})
        if doc is None:
            raise BlobNotFound(blob_id)
        meta = dict(doc.get("metadata") or {})
        return BlobInfo(
            id=blob_id,
            bucket=bucket,
            filename=str(doc.get("filename", "")),
            content_type=str(meta.get("content_type", "application/octet-stream")),
            length=int(doc["length"]),
            uploaded_at=doc["uploadDate"],
            metadata=meta,
        )

    def delete(self, blob_id: str, bucket: str = "images") -> bool:
        """Remove a blob; False if it was not there (deleting twice is fine)."""
        try:
            self._bucket(bucket).delete(_oid(blob_id))
        except gridfs.errors.NoFile:
            return False
        return True
