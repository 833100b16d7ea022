"""Images and model files in GridFS (buckets `images` and `models`).

Blobs never travel in Temporal payloads: activities store them here and pass the id (a string).
`put` with a `key` is idempotent: a retried activity storing the same output gets the id of the
first upload. The key lives in `metadata.key` with a unique (partial) index on each bucket's
files collection; GridFS writes the chunks before the file document, so a losing concurrent
upload deletes its own chunks and returns the winner's id.

Ownership: every blob a user can name (a source, an output, a dataset image, an export) carries
its owner's user id in `metadata.user_id` (`OWNER_FIELD`; written before it was unified,
sources say `metadata.user` and model files `metadata.owner`: both still read). A user-named id
is read only through `get_owned` / `info_owned` / `open_owned`, which check the owner in one
place (`_owned`): another user's blob and a missing one take the same query (a read by `_id`)
and raise the same `BlobNotFound`. `get` / `info` stay for ids the system itself holds
(outputs it just stored, pieces of a collection the caller may see).
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

# The metadata field naming a blob's owner (a User.id), for every new write.
OWNER_FIELD = "user_id"
# Older writes named the owner under another field (before the fields were unified): sources
# said `user`, LoRA chunk files in bucket `models` said `owner`.
LEGACY_OWNER_FIELDS = ("user", "owner")
_OWNER_PROJECTION = {f"metadata.{f}": 1 for f in (OWNER_FIELD, *LEGACY_OWNER_FIELDS)}

# The unique index on `metadata.key` (`ensure_indexes` says why it replaced the earlier one).
KEY_INDEX = "key_string_unique"
EARLIER_KEY_INDEX = "key_unique"


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
        self._checked: set[str] = set()  # buckets whose GridFS index check ran (`_upload`)

    def _bucket(self, bucket: str) -> gridfs.GridFSBucket:
        try:
            return self._buckets[bucket]
        except KeyError:
            raise ValueError(f"unknown bucket {bucket!r} (one of {BUCKETS})") from None

    def ensure_indexes(self) -> None:
        """The key's unique index, GridFS's own, and the move off the earlier key index.

        The key index is partial on `{$gte: ""}` (every string, exactly what the earlier
        `key_unique`'s `{$type: "string"}` selected): a server proves that a lookup by a string
        key implies `$gte ""`, while the embedded MongoDB-compatible server (secantusdb 0.7)
        cannot reason about `$type` and answered every `find_by_key` by scanning the bucket
        (22 ms per job after 500 jobs, issue 17). The new index is built before the old one
        is dropped, so keys stay unique throughout (MongoDB ≥ 5.0 allows two indexes of one
        key pattern that differ in their partial filter).
        """
        for name in BUCKETS:
            files = self.db[f"{name}.files"]
            files.create_index(
                [("metadata.key", ASCENDING)],
                unique=True,
                partialFilterExpression={"metadata.key": {"$gte": ""}},
                name=KEY_INDEX,
            )
            if EARLIER_KEY_INDEX in files.index_information():
                files.drop_index(EARLIER_KEY_INDEX)
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
            self._upload(b, bucket, file_id, filename, data, meta)
        except (gridfs.errors.FileExists, DuplicateKeyError):
            self.db[f"{bucket}.chunks"].delete_many({"files_id": file_id})
            existing = self.find_by_key(str(k), bucket=bucket) if k is not None else None
            if existing is None:
                raise
            log.debug("blob key %s stored concurrently; using %s", k, existing)
            return existing
        return str(file_id)

    def _upload(
        self,
        b: gridfs.GridFSBucket,
        bucket: str,
        file_id: ObjectId,
        filename: str,
        data: bytes,
        meta: dict[str, Any],
    ) -> None:
        """`upload_from_stream_with_id`, with GridFS's index check once per bucket and process.

        Before every new file pymongo asks `find_one({})` of the bucket's files and chunks to
        create its indexes on an empty bucket. The embedded MongoDB-compatible server answers
        a find no index serves by decoding the whole collection, every chunk of every image
        ever stored (37 ms at 1,000 images), so each job's store step grew with the bucket
        (issue 17). The first upload of a process checks as before; later ones mark the
        `GridIn` as checked (pymongo's `_ensured_index`; if a pymongo release renames it, the
        check simply runs again). `ensure_indexes` creates the same indexes at start.
        """
        with b.open_upload_stream_with_id(file_id, filename, metadata=meta) as grid_in:
            if bucket in self._checked:
                object.__setattr__(grid_in, "_ensured_index", True)
            grid_in.write(data)
        self._checked.add(bucket)

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
        return _info(blob_id, bucket, doc)

    # ---- reads on behalf of a user ---------------------------------------------------------

    def _owned(
        self, bucket: str, blob_id: str, owner_id: str, projection: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The file document of `owner_id`'s blob `blob_id`, or `BlobNotFound`: the one place
        the owner is checked, after one read by `_id` whatever the answer.

        The owner is compared here, not in the query: a filter with a top-level `$or` over the
        owner fields rides no index on the embedded MongoDB-compatible server (secantusdb 0.7),
        which scanned the whole bucket for every media job's source (issue 17). A read by
        `_id` is a point lookup everywhere, and a blob's owner never changes once written.
        """
        if not owner_id:  # never a blob written without an owner
            raise BlobNotFound(blob_id)
        doc = self.db[f"{bucket}.files"].find_one({"_id": _oid(blob_id)}, projection)
        if doc is None or not _owned_by(doc, owner_id):
            raise BlobNotFound(blob_id)
        return doc

    def info_owned(self, blob_id: str, owner_id: str, bucket: str = "images") -> BlobInfo:
        """The blob's description if `owner_id` owns it; `BlobNotFound` otherwise — the same
        error, after the same one query, for another user's blob as for a missing one."""
        self._bucket(bucket)
        return _info(blob_id, bucket, self._owned(bucket, blob_id, owner_id))

    def get_owned(
        self,
        blob_id: str,
        owner_id: str,
        bucket: str = "images",
        *,
        used_by: str | None = None,
    ) -> bytes:
        """The bytes of `owner_id`'s blob; `BlobNotFound` for another user's blob exactly as for
        a missing one.

        With `used_by` (a workflow id), the blob is also marked as used by that job, once the
        owner is checked and by `_id`, so the storage sweeper (store/storage.py) keeps it: a
        source counts as used only once a charged job really reads it, never by a refused one.
        A blob the sweeper removed in between matches nothing and reads as missing.
        """
        b = self._bucket(bucket)
        doc = self._owned(bucket, blob_id, owner_id, _OWNER_PROJECTION)
        if used_by:
            marked = self.db[f"{bucket}.files"].update_one(
                {"_id": doc["_id"]}, {"$addToSet": {"metadata.used_by": used_by}}
            )
            if marked.matched_count == 0:
                raise BlobNotFound(blob_id)
        try:
            with b.open_download_stream(doc["_id"]) as stream:
                return stream.read()
        except gridfs.errors.NoFile:
            raise BlobNotFound(blob_id) from None

    def open_owned(
        self, blob_id: str, owner_id: str, bucket: str = "images"
    ) -> tuple[BlobInfo, gridfs.GridOut]:
        """`owner_id`'s blob as its description and an open stream, for a reader that sends
        it in chunks (the HTTP API) instead of holding it whole; `BlobNotFound` for another
        user's blob exactly as for a missing one. The caller closes the stream."""
        doc = self._owned(bucket, blob_id, owner_id)
        try:
            stream = self._bucket(bucket).open_download_stream(doc["_id"])
        except gridfs.errors.NoFile:
            raise BlobNotFound(blob_id) from None
        return _info(blob_id, bucket, doc), stream

    def touch(self, blob_id: str, when: datetime, bucket: str = "images") -> None:
        """Mark a blob fresh again (`metadata.fresh_at`): the same file stored a second time
        starts its unused-source lifetime anew instead of being swept under the new job."""
        self._bucket(bucket)
        self.db[f"{bucket}.files"].update_one(
            {"_id": _oid(blob_id)}, {"$set": {"metadata.fresh_at": when}}
        )

    def delete(self, blob_id: str, bucket: str = "images") -> bool:
        """Remove a blob; False if it was not there (deleting twice is fine)."""
        try:
            self._bucket(bucket).delete(_oid(blob_id))
        except gridfs.errors.NoFile:
            return False
        return True

    def delete_if(self, blob_id: str, condition: Mapping[str, Any], bucket: str = "images") -> bool:
        """Remove a blob only while its file document still matches `condition`, in one atomic
        step (a source a job claims meanwhile is not removed); then its chunks. True if removed.
        """
        self._bucket(bucket)
        doc = self.db[f"{bucket}.files"].find_one_and_delete(
            {**condition, "_id": _oid(blob_id)}, projection={"_id": 1}
        )
        if doc is None:
            return False
        self.db[f"{bucket}.chunks"].delete_many({"files_id": doc["_id"]})
        return True


def _owned_by(doc: Mapping[str, Any], owner_id: str) -> bool:
    """Whether a file document names `owner_id` under the owner field or a legacy one."""
    meta = doc.get("metadata") or {}
    return any(meta.get(f) == owner_id for f in (OWNER_FIELD, *LEGACY_OWNER_FIELDS))


def _info(blob_id: str, bucket: str, doc: Mapping[str, Any]) -> BlobInfo:
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
