"""Storage quotas and lifetimes of what users upload (GridFS bucket `images`).

Uploads are stored before any job exists (that is what lets a bad file be refused before
anything is charged), so without limits storage is free: a user could keep uploading and never
start a job. Two rules bound it:

- **Quota** (`StoragePolicy.quota_bytes`, per user): what is kept for free — sources no job has
  used yet and dataset images (originals and prepared) — may not exceed the quota. An upload is
  checked *before* it is stored; a file already stored (same user, same bytes) adds nothing.
  A source a charged job has read is paid for, like the job's outputs, and no longer counts.
- **Lifetime**, enforced by `sweep`: a source no charged job used within `source_ttl` of its
  upload (or of its last re-upload) is removed — this includes every source of a refused job,
  which never reads it; so are dataset images no dataset refers to any more (a deleted dataset,
  a removed image, an add that was refused) after the same delay, and exports after
  `export_ttl`. The worker process runs `sweep` every `STORAGE_SWEEP_INTERVAL` seconds
  (workers/sweeper.py); it is idempotent, so several workers sweeping at once is harmless.

Why a sweeper and not a MongoDB TTL index: a TTL index on `images.files` would delete the file
documents but leave their chunks behind (GridFS keeps them in another collection), and it cannot
express "unless a job used it". Each removal is one conditional `find_one_and_delete` on the
file document (still unused, not refreshed since it was read), so a job claiming a source at
that moment either wins — the source is kept — or finds it gone and fails cleanly (refunded).

Blob kinds (`metadata.kind`): `source`, `dataset`, `output`, `export`. Blobs written before the
kinds existed are recognised by their older metadata (see `_LEGACY_*`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.database import Database

from domain.errors import UserInputError
from store.blobs import OWNER_FIELD, BlobStore

log = logging.getLogger(__name__)

SOURCE = "source"
DATASET = "dataset"
OUTPUT = "output"
EXPORT = "export"

MB = 1024 * 1024

# Before blob kinds: sources named their owner in `metadata.user`; prepared dataset images had
# `metadata.original_id`; exports `metadata.collection_id` and `metadata.pieces`.
_LEGACY_SOURCE_OWNER = "metadata.user"
_LEGACY_SOURCE: dict[str, Any] = {
    "metadata.kind": {"$exists": False},
    _LEGACY_SOURCE_OWNER: {"$exists": True},
}
_LEGACY_DATASET: dict[str, Any] = {
    "metadata.kind": {"$exists": False},
    "metadata.original_id": {"$exists": True},
}
_LEGACY_EXPORT: dict[str, Any] = {
    "metadata.kind": {"$exists": False},
    "metadata.collection_id": {"$exists": True},
    "metadata.pieces": {"$exists": True},
}
_UNUSED: dict[str, Any] = {"metadata.used_by": {"$exists": False}}
OWNER_FIELD_PATH = f"metadata.{OWNER_FIELD}"


class StorageQuotaExceeded(UserInputError):
    """An upload would take the user's free storage over the quota; nothing was stored."""

    code = "storage_quota"


@dataclass(frozen=True)
class StoragePolicy:
    """The limits of free storage (values from workers/config.py: STORAGE_QUOTA_BYTES, ...)."""

    quota_bytes: int = 1024 * MB
    source_ttl: timedelta = timedelta(hours=24)
    export_ttl: timedelta = timedelta(days=7)


@dataclass(frozen=True)
class SweepReport:
    sources: int = 0
    datasets: int = 0
    exports: int = 0
    bytes: int = 0

    @property
    def removed(self) -> int:
        return self.sources + self.datasets + self.exports


def _counted(owner_id: str) -> dict[str, Any]:
    """The blobs of `owner_id` that count against the quota: unused sources, dataset images."""
    return {
        "$or": [
            {OWNER_FIELD_PATH: owner_id, "metadata.kind": SOURCE, **_UNUSED},
            {OWNER_FIELD_PATH: owner_id, "metadata.kind": DATASET},
            {OWNER_FIELD_PATH: owner_id, **_LEGACY_DATASET},
            {_LEGACY_SOURCE_OWNER: owner_id, "metadata.kind": {"$exists": False}, **_UNUSED},
        ]
    }


def used_bytes(db: Database[Any], owner_id: str) -> int:
    """Bytes of free storage `owner_id` holds now (summed here: one small projection per file,
    bounded by the quota itself)."""
    docs = db["images.files"].find(_counted(owner_id), {"length": 1})
    return sum(int(d.get("length", 0)) for d in docs)


def check_quota(db: Database[Any], owner_id: str, adding: int, policy: StoragePolicy) -> None:
    """Refuse (StorageQuotaExceeded, nothing stored) an upload of `adding` bytes that would take
    the user's free storage over the quota.

    Two uploads racing may together pass it by at most one file each (the check and the write
    are not one step); the lifetime rules bound what that leaves behind.
    """
    used = used_bytes(db, owner_id)
    if used + adding > policy.quota_bytes:
        hours = policy.source_ttl.total_seconds() / 3600
        raise StorageQuotaExceeded(
            f"storage quota exceeded: this image needs {_size(adding)} and you keep "
            f"{_size(used)} of {_size(policy.quota_bytes)} in uploads and datasets. "
            f"Uploads no job used are removed after {hours:g} h; deleting a dataset frees its "
            "images too."
        )


def sweep(stores_db: Database[Any], now: datetime, policy: StoragePolicy) -> SweepReport:
    """Remove expired uploads and exports as of `now` (pass a fake `now` in tests).

    - sources no job used, last stored before `now - source_ttl`;
    - dataset images no dataset refers to, stored before `now - source_ttl`;
    - exports made before `now - export_ttl`.

    A source or image some dataset refers to is always kept.
    """
    blobs = BlobStore(stores_db)
    datasets = stores_db["datasets"]
    files = stores_db["images.files"]
    source_cutoff = now - policy.source_ttl
    export_cutoff = now - policy.export_ttl
    counts = {SOURCE: 0, DATASET: 0, EXPORT: 0}
    freed = 0

    def referenced(oid: Any) -> bool:
        sid = str(oid)
        found = datasets.find_one(
            {"$or": [{"images.image_id": sid}, {"images.original_id": sid}]}, {"_id": 1}
        )
        return found is not None

    def expired(kind: str, query: Mapping[str, Any], cutoff: datetime) -> Iterator[dict[str, Any]]:
        # The upload date is never later than `fresh_at`, so it pre-selects in the database.
        for doc in files.find({**query, "uploadDate": {"$lt": cutoff}}):
            fresh = (doc.get("metadata") or {}).get("fresh_at") or doc["uploadDate"]
            if _aware(fresh) < cutoff:
                yield doc

    plans: list[tuple[str, Mapping[str, Any], datetime, bool]] = [
        (SOURCE, {"metadata.kind": SOURCE, **_UNUSED}, source_cutoff, True),
        (SOURCE, {**_LEGACY_SOURCE, **_UNUSED}, source_cutoff, True),
        (DATASET, {"metadata.kind": DATASET}, source_cutoff, True),
        (DATASET, _LEGACY_DATASET, source_cutoff, True),
        (EXPORT, {"metadata.kind": EXPORT}, export_cutoff, False),
        (EXPORT, _LEGACY_EXPORT, export_cutoff, False),
    ]
    for kind, query, cutoff, keep_referenced in plans:
        for doc in list(expired(kind, query, cutoff)):
            if keep_referenced and referenced(doc["_id"]):
                continue
            fresh = (doc.get("metadata") or {}).get("fresh_at")
            still = {
                **query,
                "metadata.fresh_at": fresh if fresh is not None else {"$exists": False},
            }
            if blobs.delete_if(str(doc["_id"]), still):
                counts[kind] += 1
                freed += int(doc.get("length", 0))
    report = SweepReport(counts[SOURCE], counts[DATASET], counts[EXPORT], freed)
    if report.removed:
        log.info(
            "storage sweep: removed %d sources, %d dataset images, %d exports (%d bytes)",
            report.sources,
            report.datasets,
            report.exports,
            report.bytes,
        )
    return report


def _size(n: int) -> str:
    return f"{n / MB:.1f} MB" if n >= MB else f"{max(1, round(n / 1024))} KB"


def _aware(when: datetime) -> datetime:
    """Dates read back from MongoDB are aware only when the client asks for it."""
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
