"""GridFS blobs: outputs stored once per key, read back byte for byte."""

from __future__ import annotations

import os
import threading

import pytest

from store.blobs import BlobNotFound
from store.db import Stores


def test_an_image_is_stored_and_read_back(stores: Stores) -> None:
    data = os.urandom(700_000)  # several GridFS chunks
    blob_id = stores.blobs.put(data, "cat.png", "image/png", metadata={"job": "make-1"})
    assert stores.blobs.get(blob_id) == data
    info = stores.blobs.info(blob_id)
    assert (info.filename, info.content_type, info.length) == ("cat.png", "image/png", 700_000)
    assert info.metadata["job"] == "make-1"


def test_a_retried_activity_storing_the_same_output_gets_the_same_id(stores: Stores) -> None:
    first = stores.blobs.put(b"png-1", "a.png", "image/png", key="make-1:out-0")
    again = stores.blobs.put(b"png-1", "a.png", "image/png", metadata={"key": "make-1:out-0"})
    assert first == again
    assert stores.db["images.files"].count_documents({}) == 1
    assert stores.db["images.chunks"].count_documents({}) == 1


def test_concurrent_puts_with_one_key_store_one_blob(stores: Stores) -> None:
    ids: list[str] = []
    barrier = threading.Barrier(4)

    def put() -> None:
        barrier.wait()
        ids.append(stores.blobs.put(b"x" * 1000, "x.png", "image/png", key="race"))

    threads = [threading.Thread(target=put) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(ids) == 4 and len(set(ids)) == 1
    assert stores.db["images.files"].count_documents({}) == 1
    assert stores.db["images.chunks"].count_documents({}) == 1


def test_models_live_in_their_own_bucket_and_blobs_can_be_deleted(stores: Stores) -> None:
    model = stores.blobs.put(
        b"safetensors",
        "cat.safetensors",
        "application/octet-stream",
        bucket="models",
        key="train-1:model",
    )
    with pytest.raises(BlobNotFound):
        stores.blobs.get(model)  # not an image
    assert stores.blobs.get(model, bucket="models") == b"safetensors"
    assert stores.blobs.delete(model, bucket="models")
    assert not stores.blobs.delete(model, bucket="models")
    with pytest.raises(BlobNotFound):
        stores.blobs.get(model, bucket="models")
    with pytest.raises(BlobNotFound):
        stores.blobs.info("not-an-id")
    with pytest.raises(ValueError, match="unknown bucket"):
        stores.blobs.put(b"", "x", "x", bucket="videos")


def test_blobs_without_a_key_are_all_kept(stores: Stores) -> None:
    a = stores.blobs.put(b"same", "a.png", "image/png")
    b = stores.blobs.put(b"same", "a.png", "image/png")
    assert a != b


def test_an_owner_checked_read_finds_only_the_owners_blob(stores: Stores) -> None:
    """Another user's blob and a missing one: the same BlobNotFound, from the same query."""
    mine = stores.blobs.put(b"mine", "a.png", "image/png", metadata={"user_id": "u1"})
    legacy = stores.blobs.put(b"old", "b.png", "image/png", metadata={"user": "u1"})
    assert stores.blobs.get_owned(mine, "u1") == b"mine"
    assert stores.blobs.get_owned(legacy, "u1") == b"old", "the older owner field still reads"
    assert stores.blobs.info_owned(mine, "u1").length == 4
    gap = "0123456789abcdef01234567"
    for blob_id in (mine, legacy, gap):
        with pytest.raises(BlobNotFound) as caught:
            stores.blobs.get_owned(blob_id, "u2")
        assert caught.value.args == (blob_id,)
        with pytest.raises(BlobNotFound):
            stores.blobs.info_owned(blob_id, "u2")
    with pytest.raises(BlobNotFound):
        stores.blobs.get_owned(mine, "")
    unowned = stores.blobs.put(b"system", "c.png", "image/png")
    with pytest.raises(BlobNotFound):
        stores.blobs.get_owned(unowned, "")


def test_a_read_for_a_job_marks_the_blob_used_once_per_job(stores: Stores) -> None:
    blob = stores.blobs.put(b"src", "a.png", "image/png", metadata={"user_id": "u1"})
    for _ in range(2):  # a retried activity
        stores.blobs.get_owned(blob, "u1", used_by="upscale-u1-1")
    stores.blobs.get_owned(blob, "u1", used_by="resize-u1-2")
    assert stores.blobs.info(blob).metadata["used_by"] == ["upscale-u1-1", "resize-u1-2"]
    with pytest.raises(BlobNotFound):
        stores.blobs.get_owned(blob, "u2", used_by="make-u2-1")
    assert "make-u2-1" not in stores.blobs.info(blob).metadata["used_by"]
