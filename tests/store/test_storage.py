"""Storage quotas and lifetimes (store/storage.py): what counts, what a sweep removes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId

from store.blobs import BlobStore
from store.db import Stores
from store.storage import (
    DATASET,
    EXPORT,
    OUTPUT,
    SOURCE,
    StoragePolicy,
    StorageQuotaExceeded,
    check_quota,
    sweep,
    used_bytes,
)
from workers.config import Config
from workers.sweeper import sweep_forever

POLICY = StoragePolicy(
    quota_bytes=1000, source_ttl=timedelta(hours=24), export_ttl=timedelta(days=7)
)
NOW = datetime.now(UTC)


def later() -> datetime:
    """Just past the source lifetime of anything stored so far (uploads carry real times)."""
    return datetime.now(UTC) + timedelta(hours=24, minutes=1)


def put(stores: Stores, kind: str | None, size: int = 100, owner: str = "u1", **meta: Any) -> str:
    metadata: dict[str, Any] = {"user_id": owner, "fresh_at": NOW, **meta}
    if kind is not None:
        metadata["kind"] = kind
    return stores.blobs.put(b"x" * size, f"{kind}.png", "image/png", metadata=metadata)


def exists(stores: Stores, blob_id: str) -> bool:
    oid = ObjectId(blob_id)
    files = stores.db["images.files"].count_documents({"_id": oid})
    chunks = stores.db["images.chunks"].count_documents({"files_id": oid})
    assert files == (chunks > 0), "a file without chunks or chunks without a file"
    return files == 1


def test_the_quota_counts_unused_sources_and_dataset_images_only(stores: Stores) -> None:
    put(stores, SOURCE, 300)
    used = put(stores, SOURCE, 5000)
    stores.blobs.get_owned(used, "u1", used_by="upscale-u1-1")  # paid for by its job
    put(stores, DATASET, 200)
    put(stores, OUTPUT, 5000)  # outputs are paid for by their job
    put(stores, EXPORT, 5000)
    put(stores, SOURCE, 900, owner="u2")  # someone else's
    stores.blobs.put(b"y" * 50, "old.png", "image/png", metadata={"user": "u1"})  # legacy
    assert used_bytes(stores.db, "u1") == 300 + 200 + 50
    check_quota(stores.db, "u1", 450, POLICY)  # exactly up to the quota
    with pytest.raises(StorageQuotaExceeded) as caught:
        check_quota(stores.db, "u1", 451, POLICY)
    assert caught.value.code == "storage_quota"
    assert "storage quota exceeded" in caught.value.message


def test_a_sweep_removes_unused_sources_after_their_lifetime_and_keeps_used_ones(
    stores: Stores,
) -> None:
    unused = put(stores, SOURCE)
    used = put(stores, SOURCE)
    stores.blobs.get_owned(used, "u1", used_by="resize-u1-1")
    refreshed = put(stores, SOURCE)
    stores.blobs.touch(refreshed, NOW + timedelta(hours=2))  # sent again two hours later
    legacy = stores.blobs.put(b"old", "old.png", "image/png", metadata={"user": "u1"})
    output = put(stores, OUTPUT)

    # The legacy blob's clock is its upload time (now), not NOW from the module's import,
    # which may be minutes earlier in a long test session.
    later = datetime.now(UTC) + timedelta(hours=24, minutes=1)
    assert sweep(stores.db, NOW + timedelta(hours=23), POLICY).removed == 0, "not yet"
    report = sweep(stores.db, later, POLICY)
    assert report.sources == 2
    assert not exists(stores, unused) and not exists(stores, legacy)
    assert exists(stores, used), "a source a job used is kept"
    assert exists(stores, refreshed), "a re-sent source starts its lifetime again"
    assert exists(stores, output), "outputs are never swept"
    assert sweep(stores.db, later, POLICY).removed == 0, "a second sweep removes nothing"
    assert sweep(stores.db, later + timedelta(hours=2), POLICY).sources == 1


def test_a_sweep_keeps_dataset_images_a_dataset_refers_to(stores: Stores) -> None:
    ds = stores.datasets.create("u1", "mine")
    original = put(stores, DATASET)
    prepared = put(stores, DATASET, original_id=original)
    stores.datasets.add_images("u1", ds.id, [(original, prepared)])
    orphan = put(stores, DATASET)  # its dataset was deleted, or the add was refused
    legacy_original = stores.blobs.put(b"o", "o.png", "image/png", metadata={"user": "u1"})
    legacy_prepared = stores.blobs.put(
        b"p", "p.png", "image/png", metadata={"user_id": "u1", "original_id": legacy_original}
    )
    stores.datasets.add_images("u1", ds.id, [(legacy_original, legacy_prepared)])
    report = sweep(stores.db, later(), POLICY)
    assert (report.sources, report.datasets) == (0, 1)
    assert not exists(stores, orphan)
    for kept in (original, prepared, legacy_original, legacy_prepared):
        assert exists(stores, kept)
    stores.datasets.delete("u1", ds.id)
    assert sweep(stores.db, later(), POLICY).removed == 4, "a deleted dataset frees its images"


def test_exports_expire_after_their_own_lifetime(stores: Stores) -> None:
    export = put(stores, EXPORT, collection_id="col1", pieces=3)
    legacy = stores.blobs.put(
        b"zip", "c-export.zip", "application/zip", metadata={"collection_id": "c", "pieces": 1}
    )
    assert sweep(stores.db, later(), POLICY).exports == 0
    report = sweep(stores.db, datetime.now(UTC) + timedelta(days=7, minutes=1), POLICY)
    assert report.exports == 2
    assert not exists(stores, export) and not exists(stores, legacy)


def test_a_source_claimed_by_a_job_during_the_sweep_is_kept(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The removal is conditional on the file still being unused: a job that claims the source
    between the sweep's read and its delete wins."""
    src = put(stores, SOURCE)
    real_delete_if = BlobStore.delete_if

    def claim_first(self: BlobStore, blob_id: str, condition: Any, bucket: str = "images") -> bool:
        stores.blobs.get_owned(blob_id, "u1", used_by="upscale-u1-9")
        return real_delete_if(self, blob_id, condition, bucket)

    monkeypatch.setattr(BlobStore, "delete_if", claim_first)
    assert sweep(stores.db, later(), POLICY).removed == 0
    assert exists(stores, src)


async def test_the_worker_sweeps_on_its_own_every_interval(stores: Stores) -> None:
    """workers/sweeper.py: the loop the workflow worker runs, here with a 0 s lifetime."""
    config = Config(storage_sweep_interval=0.05, source_ttl=0.0)
    src = stores.blobs.put(b"x", "s.png", "image/png", metadata={"user_id": "u1", "kind": SOURCE})
    task = asyncio.create_task(sweep_forever(stores, config))
    try:
        for _ in range(100):
            if not exists(stores, src):
                break
            await asyncio.sleep(0.05)
        assert not exists(stores, src), "the sweeper removed the unused source"
    finally:
        task.cancel()
    # 0 turns the sweeper off: the loop returns at once instead of running for ever.
    await asyncio.wait_for(sweep_forever(stores, Config(storage_sweep_interval=0)), 1)
