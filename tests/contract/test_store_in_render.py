"""A render that stores its own outputs (`ComfyRunInput.store_for`, patch `saga-top-down`):
the copy into GridFS happens in the same activity, and when the copy fails the retry follows
the finished prompt instead of rendering again, and stores once."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any, cast

import pytest
from pymongo.database import Database
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from activities.comfy import ComfyActivities
from domain.jobs import ComfyRunInput, ComfyRunResult, ComfyWork
from store.blobs import BlobStore
from tests.contract.conftest import txt2img


class FlakyBlobs(BlobStore):
    """GridFS that fails the first write, as a MongoDB primary stepping down would."""

    def __init__(self, db: Database[Any]) -> None:
        super().__init__(db)
        self.failures_left = 1

    def put(self, data: bytes, filename: str, content_type: str, **kw: Any) -> str:
        if self.failures_left:
            self.failures_left -= 1
            raise ConnectionError("primary stepped down")
        return super().put(data, filename, content_type, **kw)


async def test_a_render_stores_its_outputs_and_a_failed_copy_does_not_render_again(
    comfy_url: str, ckpt: str, mongo_db: Database[Any]
) -> None:
    blobs = FlakyBlobs(mongo_db)
    blobs.ensure_indexes()
    acts = ComfyActivities(comfy_url, cast(Client, None), blobs)
    seed = uuid.uuid4().int % 10_000_000
    inp = ComfyRunInput(
        workflow_id=f"make-u1-{uuid.uuid4().hex[:8]}",
        work=ComfyWork(graph=txt2img(ckpt, seed=seed), seed=seed),
        timeout_seconds=60,
        store_for="u1",
    )
    beats: list[Any] = []
    first = ActivityEnvironment()
    first.info = dataclasses.replace(first.info, attempt=1, workflow_run_id="run-1")
    first.on_heartbeat = lambda *details: beats.append(details)
    second = ActivityEnvironment()
    try:
        with pytest.raises(ConnectionError):
            await first.run(acts.run_comfy_prompt, inp)
        last = beats[-1][0]  # what the server keeps: the last heartbeat's details
        second.info = dataclasses.replace(
            second.info, attempt=2, workflow_run_id="run-1", heartbeat_details=[last]
        )
        beats.clear()
        second.on_heartbeat = lambda *details: beats.append(details)
        run: ComfyRunResult = await second.run(acts.run_comfy_prompt, inp)
    finally:
        await acts.aclose()
    # The copy heartbeats too; its beats keep the attempt's details (where its prompt is, the
    # image made), which a retry and `status()` read.
    assert beats and beats[-1] and beats[-1][0].prompt_id == last.prompt_id, beats[-1:]
    assert run.prompt_id == last.prompt_id, "the retry must follow the finished prompt"
    assert run.stored is not None and len(run.stored) == len(run.files) == 1
    stored = run.stored[0]
    assert stored.seed == seed and stored.width == 64 and stored.height == 64
    files = list(mongo_db["images.files"].find({"metadata.workflow_id": inp.workflow_id}))
    assert [str(f["_id"]) for f in files] == [stored.blob_id]
    assert files[0]["metadata"]["user_id"] == "u1"
