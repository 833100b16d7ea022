"""The Temporal workers: one process per role, each polling the queues of its resource.

- `stationthis worker`: the `stationthis` queue — every workflow, plus the light MongoDB
  activities (prepare, points, history, slots), run in a thread pool since pymongo blocks.
- `stationthis comfy-worker --url URL --slots N`: one per ComfyUI server. Its `comfy` worker
  takes at most N prompts at once (a GPU runs one), so adding a GPU is starting one more of
  these; its `comfy-io` worker copies finished outputs into GridFS without holding a GPU slot.
- `stationthis media-worker`: the `media` queue — Pillow resize/convert as sync activities in a
  thread pool (Pillow releases the GIL), about two per CPU core.
- `stationthis safety-worker`: the `safety` queue — the output classifier (CPU, ONNX), one
  image per core; needs the `safety` extra unless `--classifier marker` (the stand-in's).

Shutdown is graceful: on SIGTERM/SIGINT the workers stop polling and give running activities
`graceful_shutdown_timeout` to finish; what does not finish is retried elsewhere by Temporal.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
from temporalio.client import Client
from temporalio.worker import Worker

from activities.collections import CollectionActivities
from activities.comfy import ComfyActivities
from activities.jobs import JobActivities
from activities.media import MediaActivities
from activities.media_jobs import MediaJobActivities
from activities.safety import SafetyActivities
from activities.training import DatasetMediaActivities, TrainingActivities, TrainingComfyActivities
from comfy.client import ComfyClient, ComfyError
from media.classifier import Classifier
from services.training_plans import TrainingPlanner
from store.db import Stores
from workers.config import Config
from workflows.registry import ALL_WORKFLOWS, sandbox_runner, warm_bytecode

log = logging.getLogger(__name__)

GRACE = timedelta(seconds=20)


def workflow_worker(
    client: Client, config: Config, stores: Stores, executor: ThreadPoolExecutor
) -> Worker:
    jobs = JobActivities(
        stores,
        routing=config.routing(),
        max_loras=config.max_loras_per_prompt,
        checkpoints=config.checkpoints,
    )
    media_jobs = MediaJobActivities(
        stores,
        routing=config.routing(),
        upscale_models={int(k): v for k, v in config.upscale_models.items()},
    )
    warm_bytecode()  # the sandbox re-imports workflow modules per run: from bytecode, not source
    return Worker(
        client,
        task_queue=config.task_queues.workflows,
        workflows=ALL_WORKFLOWS,
        workflow_runner=sandbox_runner(),
        activities=[
            *jobs.all(),
            *media_jobs.all(),
            *CollectionActivities(stores).all(),
            *training_activities(config, stores).all(),
        ],
        activity_executor=executor,
        max_concurrent_activities=config.workflow_worker_threads,
        graceful_shutdown_timeout=GRACE,
    )


def comfy_workers(
    client: Client,
    config: Config,
    stores: Stores,
    url: str,
    slots: int,
    *,
    comfyui_dir: Path | None = None,
) -> list[Worker]:
    """The `comfy` and `comfy-io` workers of one server. Its folder is `comfyui_dir`, else the
    configured one (COMFYUI_DIRS / COMFYUI_DIR); never what the server reports about itself."""
    folder = comfyui_dir or config.comfyui_dir_for(url)
    if folder is None:
        log.error(
            "no folder configured for the ComfyUI server %s (COMFYUI_DIRS or COMFYUI_DIR): "
            "it renders, but training and LoRA files are refused on it",
            url,
        )
    training = TrainingComfyActivities(
        url,
        client,
        stores,
        comfyui_dir=folder,
        cache_bytes=config.lora_cache_bytes,
    )
    acts = ComfyActivities(
        url,
        client,
        stores.blobs,
        ensure_loras=training.ensure_loras,
        max_output_bytes=config.comfy_max_output_bytes,
    )
    return [
        Worker(
            client,
            task_queue=config.task_queues.comfy,
            activities=[acts.run_comfy_prompt, training.train_lora_chunk],
            max_concurrent_activities=slots,
            # Progress must reach the server within about a second of ComfyUI reporting it.
            max_heartbeat_throttle_interval=timedelta(seconds=1),
            graceful_shutdown_timeout=GRACE,
        ),
        Worker(
            client,
            task_queue=config.task_queues.comfy_io,
            activities=[acts.store_comfy_outputs],
            max_concurrent_activities=max(4, 2 * slots),
            graceful_shutdown_timeout=GRACE,
        ),
    ]


INVENTORY_REFRESH = 600.0  # seconds between reads of a server's /object_info


async def record_inventory(stores: Stores, url: str) -> bool:
    """Record the node types and model files server `url` has (store/inventory.py), so a job
    no server can run is refused before its charge; False if the server did not answer (its
    last record stays and ages out)."""
    try:
        async with ComfyClient(url, timeout=10.0) as comfy:
            inv = (await comfy.inventory()).model_copy(update={"url": url})
    except (ComfyError, OSError, httpx.HTTPError) as err:
        log.warning("inventory of %s not read: %s", url, err)
        return False
    await asyncio.to_thread(stores.inventory.record_server, inv)
    log.info(
        "inventory of %s: %d node type(s), %d checkpoint(s)",
        url,
        len(inv.node_types),
        len(inv.models.get("checkpoints", ())),
    )
    return True


async def keep_inventory(stores: Stores, url: str, every: float = INVENTORY_REFRESH) -> None:
    """Record the server's inventory now and every `every` seconds (run as a task)."""
    while True:
        await record_inventory(stores, url)
        await asyncio.sleep(every)


def training_activities(config: Config, stores: Stores) -> TrainingActivities:
    return TrainingActivities(stores, training_planner(config, stores))


def training_planner(config: Config, stores: Stores) -> TrainingPlanner:
    """The configured training planner: the prepare activities and the jobs client share it."""
    return TrainingPlanner(
        stores,
        routing=config.routing(),
        chunk_steps=config.training_chunk_steps,
        training_checkpoints=config.training_checkpoints,
    )


def media_slots() -> int:
    """Default concurrency of the media worker: two per CPU core (decoding and encoding release
    the GIL; reading and storing blobs wait on MongoDB)."""
    return 2 * (os.cpu_count() or 1)


def media_worker(
    client: Client,
    config: Config,
    stores: Stores,
    executor: ThreadPoolExecutor,
    slots: int | None = None,
) -> Worker:
    """The `media` queue worker; `executor` needs at least `slots` threads (default
    `media_slots()`)."""
    acts = MediaActivities(stores.blobs)
    dataset_acts = DatasetMediaActivities(stores.blobs)
    return Worker(
        client,
        task_queue=config.task_queues.media,
        activities=[*acts.all(), *dataset_acts.all()],
        activity_executor=executor,
        max_concurrent_activities=slots or media_slots(),
        graceful_shutdown_timeout=GRACE,
    )


def safety_worker(
    client: Client,
    config: Config,
    stores: Stores,
    executor: ThreadPoolExecutor,
    classifier: Classifier,
    slots: int,
) -> Worker:
    """The `safety` queue worker: the output classifier, on the CPU, off the GPU slot. One
    image per core at a time (`slots`); `executor` needs at least `slots` threads."""
    return Worker(
        client,
        task_queue=config.task_queues.safety,
        activities=SafetyActivities(stores, classifier).all(),
        activity_executor=executor,
        max_concurrent_activities=slots,
        graceful_shutdown_timeout=GRACE,
    )


async def run_until_signalled(workers: list[Worker]) -> None:
    """Run workers until SIGINT/SIGTERM, then shut them down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(w.run()) for w in workers]
    waiter = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
    if waiter not in done:
        for t in done:
            t.result()  # a worker died: surface its error
    log.info("stopping workers (grace %ss)", GRACE.total_seconds())
    await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
    waiter.cancel()
