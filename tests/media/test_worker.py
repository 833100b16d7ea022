"""The media worker as `stationthis media-worker` builds it: a job's Pillow step really runs on
its queue, in its thread pool, through Temporal's pydantic payloads, into GridFS."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from PIL import Image
from pymongo.database import Database
from temporalio import workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from domain.jobs import ActivityNames, MediaWork, ProcessImageInput, StoredOutput
from media.safety import load_image, normalised_png
from store.db import Stores
from tests.media.corpus import decode, encode
from workers.config import Config, TaskQueues
from workers.devstack import worker_commands
from workers.temporal_workers import media_worker


@workflow.defn(sandboxed=False)
class ProcessOneImage:
    """Stands in for the saga's `_produce_media` step: one activity call on the media queue."""

    @workflow.run
    async def run(self, inp: ProcessImageInput) -> StoredOutput:
        return await workflow.execute_activity(
            ActivityNames.PROCESS_IMAGE,
            inp,
            result_type=StoredOutput,
            task_queue=f"{workflow.info().task_queue}-media",
            start_to_close_timeout=timedelta(minutes=1),
        )


async def test_the_media_worker_resizes_an_image_on_its_own_queue(
    temporal_ts_env: WorkflowEnvironment, mongo_db: Database[Any]
) -> None:
    stores = Stores(mongo_db)
    stores.blobs.ensure_indexes()
    data = normalised_png(load_image(encode(Image.new("RGB", (300, 200), (9, 99, 199)), "JPEG")))
    source_id = stores.blobs.put(data, "source.png", "image/png", metadata={"user_id": "u1"})
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    config = Config(task_queues=TaskQueues(media=f"{tq}-media"))
    client = temporal_ts_env.client
    inp = ProcessImageInput(
        workflow_id=f"resize-{tq}",
        user_id="u1",
        work=MediaWork(op="resize", source_id=source_id, params={"width": 150}),
    )
    with ThreadPoolExecutor(max_workers=2) as pool:
        async with (
            media_worker(client, config, stores, pool, slots=2),
            Worker(client, task_queue=tq, workflows=[ProcessOneImage]),
        ):
            out = await client.execute_workflow(
                ProcessOneImage.run, inp, id=inp.workflow_id, task_queue=tq
            )
    assert (out.width, out.height, out.content_type) == (150, 100, "image/png")
    assert decode(stores.blobs.get(out.blob_id)).size == (150, 100)


def test_stationthis_up_starts_the_media_worker() -> None:
    commands = {c.name: c for c in worker_commands(Config())}
    assert "media-worker" in commands
    assert commands["media-worker"].argv[-1] == "media-worker"
