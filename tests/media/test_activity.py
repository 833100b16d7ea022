"""The `process_image` activity on a real GridFS: what the media worker does for a job."""

from __future__ import annotations

from typing import Any

import pytest
from PIL import Image
from pymongo.database import Database
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.media import MediaActivities, result_key
from domain.jobs import MediaWork, ProcessImageInput, StoredOutput
from media.safety import load_image, normalised_png
from store.blobs import BlobStore
from tests.media.corpus import decode, encode


@pytest.fixture
def blobs(mongo_db: Database[Any]) -> BlobStore:
    store = BlobStore(mongo_db)
    store.ensure_indexes()
    return store


def source(blobs: BlobStore, im: Image.Image) -> str:
    """Store a source the way an entry point does: through the safety module."""
    data = normalised_png(load_image(encode(im, "PNG")))
    return blobs.put(data, "source.png", "image/png", metadata={"user_id": "u1"})


def job(source_id: str, op: str, **params: Any) -> ProcessImageInput:
    return ProcessImageInput(
        workflow_id="resize-u1-abc",
        index=0,
        user_id="u1",
        work=MediaWork(op=op, source_id=source_id, params=params),
    )


def run(blobs: BlobStore, inp: ProcessImageInput) -> StoredOutput:
    result = ActivityEnvironment().run(MediaActivities(blobs).process_image, inp)
    assert isinstance(result, StoredOutput)
    return result


def test_a_resize_job_stores_the_resized_png_with_its_metadata(blobs: BlobStore) -> None:
    src = source(blobs, Image.new("RGBA", (800, 600), (255, 0, 0, 128)))
    out = run(blobs, job(src, "resize", width=400, mode="fit"))
    assert (out.width, out.height, out.content_type) == (400, 300, "image/png")
    im = decode(blobs.get(out.blob_id))
    assert (im.format, im.mode, im.size) == ("PNG", "RGBA", (400, 300))
    assert im.getpixel((200, 150)) == (255, 0, 0, 128)
    info = blobs.info(out.blob_id)
    assert info.metadata["key"] == result_key("resize-u1-abc", 0) == "resize-u1-abc:0:media"
    assert {k: info.metadata[k] for k in ("user_id", "workflow_id", "width", "height")} == {
        "user_id": "u1",
        "workflow_id": "resize-u1-abc",
        "width": 400,
        "height": 300,
    }


def test_a_convert_job_stores_a_jpeg(blobs: BlobStore) -> None:
    src = source(blobs, Image.new("RGBA", (20, 10), (0, 0, 0, 0)))
    out = run(blobs, job(src, "convert", format="jpeg", quality=90, background="#00ff00"))
    assert (out.width, out.height, out.content_type) == (20, 10, "image/jpeg")
    im = decode(blobs.get(out.blob_id))
    pixel = im.getpixel((10, 5))
    assert im.format == "JPEG" and isinstance(pixel, tuple) and pixel[1] > 240 and pixel[0] < 20
    assert blobs.info(out.blob_id).filename == "resize-u1-abc-0.jpg"


def test_a_retried_job_stores_nothing_twice(blobs: BlobStore) -> None:
    src = source(blobs, Image.new("RGB", (64, 64), (1, 2, 3)))
    first = run(blobs, job(src, "convert", format="webp", quality=80))
    # The retry must not even need the source again: it finds its stored result by key.
    blobs.delete(src)
    again = run(blobs, job(src, "convert", format="webp", quality=80))
    assert again == first
    assert blobs.db["images.files"].count_documents({}) == 1


def test_a_source_that_is_not_an_image_fails_without_retrying(blobs: BlobStore) -> None:
    src = blobs.put(b"not an image at all\n", "cat.png", "image/png", metadata={"user_id": "u1"})
    with pytest.raises(ApplicationError) as caught:
        run(blobs, job(src, "resize", width=10))
    assert caught.value.type == "bad_image"
    assert caught.value.non_retryable
    assert "not an image" in caught.value.message
    assert blobs.find_by_key(result_key("resize-u1-abc", 0)) is None


def test_bad_parameters_fail_without_retrying(blobs: BlobStore) -> None:
    src = source(blobs, Image.new("RGB", (10, 10)))
    with pytest.raises(ApplicationError) as caught:
        run(blobs, job(src, "convert", format="jpeg", quality=500))
    assert caught.value.type == "bad_input"
    assert caught.value.non_retryable
    assert "quality" in caught.value.message and "1 to 100" in caught.value.message


def test_a_missing_source_fails_without_retrying(blobs: BlobStore) -> None:
    with pytest.raises(ApplicationError) as caught:
        run(blobs, job("0123456789abcdef01234567", "resize", width=10))
    assert caught.value.non_retryable
    assert "not found" in caught.value.message


def test_another_users_source_fails_inside_the_workflow_like_a_missing_one(
    blobs: BlobStore,
) -> None:
    """Defence in depth: the workflow input is what runs, so the activity checks the owner
    again; the source is left unmarked (a sweep may remove it as unused)."""
    theirs = source(blobs, Image.new("RGB", (10, 10)))
    stolen = job(theirs, "resize", width=5).model_copy(update={"user_id": "u2"})
    with pytest.raises(ApplicationError) as caught:
        run(blobs, stolen)
    assert caught.value.non_retryable
    assert caught.value.message == f"source image {theirs!r} not found"
    assert "used_by" not in blobs.info(theirs).metadata


def test_a_source_read_by_its_job_is_marked_used(blobs: BlobStore) -> None:
    src = source(blobs, Image.new("RGB", (10, 10)))
    run(blobs, job(src, "resize", width=5))
    assert blobs.info(src).metadata["used_by"] == ["resize-u1-abc"]
