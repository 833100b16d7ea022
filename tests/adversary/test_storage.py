"""Adversary suite, storage: uploads are bounded by a per-user quota checked before anything is
stored, and uploads no job used — including every source of a refused job — are swept after
their lifetime, while a source a job used is kept (issue 13, item 6)."""

from __future__ import annotations

import asyncio
import io
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId
from PIL import Image

from adapters.jobs import JobsClient
from domain.jobs import JobState, MediaRequest
from store.storage import StorageQuotaExceeded, sweep
from tests.integration.conftest import Stack
from workers.sweeper import storage_policy

pytestmark = pytest.mark.stack


def png(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """A distinct, hard-to-compress image per seed."""
    noise = random.Random(seed).randbytes(3 * size[0] * size[1])
    im = Image.frombytes("RGB", size, noise)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


async def new_user(jobs: JobsClient, points: int = 500) -> str:
    identity = f"cli:store-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(jobs.stores.users.get_or_create, identity, points)
    return identity


async def files_of(jobs: JobsClient, user: str) -> int:
    owner = await jobs.user(user)
    return await asyncio.to_thread(
        jobs.stores.db["images.files"].count_documents, {"metadata.user_id": owner.id}
    )


async def test_an_upload_over_the_quota_is_refused_and_stores_nothing(
    dev_stack: Stack, jobs: JobsClient
) -> None:
    first = png(1)
    one_file = len(first) + 2000  # room for one such source, not two
    tight = JobsClient(
        jobs.temporal,
        jobs.stores,
        jobs.config.model_copy(update={"storage_quota_bytes": one_file}),
    )
    user = await new_user(jobs)
    kept = await tight.store_source(user, first, "one.png")
    assert await files_of(jobs, user) == 1
    with pytest.raises(StorageQuotaExceeded) as caught:
        await tight.store_source(user, png(2), "two.png")
    assert "storage quota exceeded" in caught.value.message
    assert await files_of(jobs, user) == 1, "nothing was stored"
    # The same file again costs nothing more; dataset originals count too.
    assert await tight.store_source(user, first, "one-again.png") == kept
    ds = await tight.create_dataset(user, "full")
    with pytest.raises(StorageQuotaExceeded):
        await tight.add_dataset_images(user, ds.id, [(png(3), "face.png")])
    assert await files_of(jobs, user) == 1
    assert (await tight.dataset(user, ds.id)).images == []


async def test_a_refused_jobs_source_is_swept_and_a_used_one_is_kept(
    dev_stack: Stack, jobs: JobsClient
) -> None:
    rich, poor = await new_user(jobs), await new_user(jobs, points=0)
    used = await jobs.store_source(rich, png(10), "used.png")
    done = await jobs.start_media(
        MediaRequest(user=rich, kind="resize", source_image_id=used, params={"width": 16})
    )
    assert (await asyncio.wait_for(jobs.result(done.workflow_id), 60)).state is JobState.DONE
    refused_src = await jobs.store_source(poor, png(11), "refused.png")
    refused = await jobs.start_media(
        MediaRequest(user=poor, kind="resize", source_image_id=refused_src, params={"width": 16})
    )
    status = await asyncio.wait_for(jobs.result(refused.workflow_id), 60)
    assert status.state is JobState.REFUSED, "no points: refused at the charge"
    never_used = await jobs.store_source(rich, png(12), "forgotten.png")

    policy = storage_policy(jobs.config)
    files = jobs.stores.db["images.files"]

    def present(blob_id: str) -> bool:
        return files.count_documents({"_id": ObjectId(blob_id)}) == 1

    soon = datetime.now(UTC) + policy.source_ttl - timedelta(minutes=5)
    await asyncio.to_thread(sweep, jobs.stores.db, soon, policy)
    assert all(map(present, (used, refused_src, never_used))), "nothing before its time"
    later = datetime.now(UTC) + policy.source_ttl + timedelta(minutes=1)
    await asyncio.to_thread(sweep, jobs.stores.db, later, policy)
    assert present(used), "a source a job used is kept"
    assert not present(refused_src), "a refused job's source is removed"
    assert not present(never_used), "a source no job used is removed"
    chunks = jobs.stores.db["images.chunks"]
    assert chunks.count_documents({"files_id": ObjectId(refused_src)}) == 0
