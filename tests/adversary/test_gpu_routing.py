"""Capability-aware GPU routing (issue 16 leftovers): a job that needs a node type or a model
file only some servers have (RemoveBackground, an upscale model, the caption nodes, the
training nodes) goes to a queue only the servers able to run it poll.

The planner stories record server inventories by hand (as a comfy worker would) and read the
plan's route; the end-to-end story runs the real saga against two stand-in ComfyUI servers,
one started without RemoveBackground, and asserts where each prompt ran (the stand-ins' own
/history).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio
from PIL import Image
from pymongo.database import Database
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.comfy import ComfyActivities
from domain.inventory import requirements_of
from domain.jobs import (
    COMFY_MAX_FAILED_ATTEMPTS,
    COMFY_MAX_HAND_BACKS,
    ComfyRunInput,
    ComfyWork,
    JobState,
    MakeImageRequest,
    MediaPrepareInput,
    MediaRequest,
    PrepareInput,
    RenderBeat,
)
from domain.routing import (
    CAPABILITY_QUEUE_MARK,
    able_to_run,
    capability_queue,
    checkpoint_queue,
    queue_for_needs,
)
from domain.training import TrainingParams, TrainPrepareInput, TrainRequest
from services.job_plans import MakePlanner, MediaPlanner
from services.training_plans import TrainingPlanner
from store.db import Stores
from tests.adversary.test_gpu_pool import (
    Pool,
    prompts_run,
    queue_of,
    run_attempts,
    running_pool,
    wait_until,
)
from tests.adversary.test_inventory import CORE_0_3_64, standin_like
from tests.fixtures.comfy import ComfyServer, standins_running, start_standin, stop_process
from tests.fixtures.stores import stores_with
from workflows.policies import COMFY_RETRY

USER = "telegram:4004"
SDXL = "sdxl-base-1.0.safetensors"
BASE = "comfy"


@pytest.fixture
def stores(mongo_db: Database[Any]) -> Iterator[Stores]:
    s = stores_with(mongo_db, USER, grant=5000)
    yield s


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def is_capability_queue(queue: str) -> bool:
    return queue.startswith(BASE + CAPABILITY_QUEUE_MARK)


# ---- what the planners decide ------------------------------------------------------------------


def test_an_rmbg_job_goes_to_a_queue_only_servers_with_remove_background_poll(
    stores: Stores,
) -> None:
    able = standin_like("http://gpu-a:8188")
    lacking = standin_like("http://gpu-b:8188", without={"RemoveBackground"})
    stores.inventory.record_server(able)
    stores.inventory.record_server(lacking)
    user = stores.users.get(USER)
    source = stores.blobs.put(png(), "a.png", "image/png", metadata={"user_id": user.id})
    request = MediaRequest(user=USER, kind="rmbg", source_image_id=source)
    plan = MediaPlanner(stores).plan_media_job(MediaPrepareInput(workflow_id="r", request=request))

    assert plan.route is not None
    queue = plan.route.comfy_queue
    assert is_capability_queue(queue), f"rmbg went to {queue}, which every server polls"
    wanted = stores.inventory.capabilities(BASE)
    assert queue in wanted, "recorded, so the able servers' workers start polling it"
    assert able_to_run(able, wanted[queue]) and not able_to_run(lacking, wanted[queue])


def test_an_upscale_needing_a_model_one_server_lacks_is_routed_by_it(stores: Stores) -> None:
    stores.inventory.record_server(standin_like("http://gpu-a:8188"))
    stores.inventory.record_server(
        standin_like("http://gpu-b:8188", upscale_models={"4x-standin.safetensors"})
    )
    user = stores.users.get(USER)
    source = stores.blobs.put(png(), "a.png", "image/png", metadata={"user_id": user.id})

    def queue(scale: int) -> str:
        req = MediaRequest(
            user=USER, kind="upscale", source_image_id=source, params={"scale": scale}
        )
        plan = MediaPlanner(stores).plan_media_job(MediaPrepareInput(workflow_id="u", request=req))
        assert plan.route is not None
        return plan.route.comfy_queue

    assert queue(4) == BASE, "every server has the 4x model: the base queue, as before"
    assert is_capability_queue(queue(2)), "only gpu-a has the 2x model"


def test_a_make_every_server_can_run_keeps_its_checkpoint_queue(stores: Stores) -> None:
    stores.inventory.record_server(standin_like("http://gpu-a:8188"))
    stores.inventory.record_server(standin_like("http://gpu-b:8188", without={"RemoveBackground"}))
    inp = PrepareInput(
        workflow_id="m",
        request=MakeImageRequest(
            user=USER, prompt="a fox", overrides={"width": 512, "height": 512, "steps": 20}
        ),
    )
    plan = MakePlanner(stores).plan_make_image(inp)
    assert plan.route is not None
    assert plan.route.comfy_queue == checkpoint_queue(BASE, SDXL)
    assert stores.inventory.capabilities(BASE) == {}, "nothing recorded for an ordinary job"


def train(stores: Stores) -> Any:
    user = stores.users.get(USER)
    ds = stores.datasets.create(user.id, "cats", trigger_word="zxqcat")
    blobs = [
        stores.blobs.put(png(), f"{n}.png", "image/png", metadata={"user_id": user.id})
        for n in range(4)
    ]
    stores.datasets.add_images(user.id, ds.id, [(b, b) for b in blobs])
    for b in blobs[1:]:  # the first has no caption: it is captioned on the GPU first
        stores.datasets.set_caption(user.id, ds.id, b, "a cat")
    request = TrainRequest(
        user=USER, dataset="cats", params=TrainingParams(family="sdxl", steps=250)
    )
    return TrainingPlanner(stores).plan_train_lora(
        TrainPrepareInput(workflow_id="t", request=request)
    )


def test_training_chunks_and_captions_go_to_the_servers_that_have_their_nodes(
    stores: Stores,
) -> None:
    no_training = standin_like("http://gpu-a:8188", without={"TrainLoraNode"})
    no_caption = standin_like("http://gpu-b:8188", without={"Florence2Run"})
    stores.inventory.record_server(no_training)
    stores.inventory.record_server(no_caption)
    plan = train(stores)

    wanted = stores.inventory.capabilities(BASE)
    assert plan.route is not None
    chunks = plan.route.comfy_queue
    captions = plan.settings["training"]["caption_queue"]
    assert is_capability_queue(chunks) and is_capability_queue(captions)
    assert chunks != captions
    assert able_to_run(no_caption, wanted[chunks]) and not able_to_run(no_training, wanted[chunks])
    assert able_to_run(no_training, wanted[captions])
    assert not able_to_run(no_caption, wanted[captions])


def test_a_0_3_64_server_and_a_newer_one_both_take_training(stores: Stores) -> None:
    old = standin_like("http://old:8188", without=CORE_0_3_64)
    old = old.model_copy(update={"node_types": old.node_types | {"ImageBatch", "SaveLoRANode"}})
    stores.inventory.record_server(old)
    stores.inventory.record_server(standin_like("http://new:8188"))
    plan = train(stores)
    assert plan.route is not None
    assert plan.route.comfy_queue == BASE, "each can run a form of train-lora: every server"
    assert plan.settings["training"]["caption_queue"] == BASE


def test_a_capability_queue_is_named_by_its_needs_not_their_order() -> None:
    rmbg = requirements_of({"1": {"class_type": "RemoveBackground", "inputs": {}}})
    up = requirements_of(
        {"1": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "2x.pth"}}}
    )
    assert capability_queue(BASE, [rmbg, up]) == capability_queue(BASE, [up, rmbg])
    assert capability_queue(BASE, [rmbg]) != capability_queue(BASE, [up])
    lacking = standin_like("http://b", without={"RemoveBackground"})
    assert queue_for_needs(BASE, [rmbg], [standin_like("http://a")]) == BASE
    assert queue_for_needs(BASE, [rmbg], []) == BASE, "nothing known: nothing decided"
    assert is_capability_queue(queue_for_needs(BASE, [rmbg], [standin_like("http://a"), lacking]))


# ---- end to end: two stand-ins, one without RemoveBackground -----------------------------------


@pytest.fixture
def unequal_servers(tmp_path: Path) -> Iterator[list[ComfyServer]]:
    lacking = ["--without-nodes", "RemoveBackground"]
    with standins_running({tmp_path / "full": (), tmp_path / "lacking": lacking}) as servers:
        yield servers


@pytest_asyncio.fixture
async def pool(
    temporal_dev_env: WorkflowEnvironment,
    mongo_db: Database[Any],
    unequal_servers: list[ComfyServer],
) -> AsyncIterator[Pool]:
    async with running_pool(temporal_dev_env, mongo_db, unequal_servers) as p:
        yield p


async def test_rmbg_jobs_never_land_on_the_server_without_remove_background(pool: Pool) -> None:
    full, lacking = pool.servers
    a = await pool.serve(full)
    b = await pool.serve(lacking)
    users = [await pool.user() for _ in range(2)]
    wids = []
    for user in users:
        for n in range(2):
            source = await pool.jobs.store_source(user, png(), f"{n}.png")
            started = await pool.jobs.start_media(
                MediaRequest(user=user, kind="rmbg", source_image_id=source)
            )
            wids.append(started.workflow_id)
    results = await asyncio.gather(*(asyncio.wait_for(pool.jobs.result(w), 60) for w in wids))

    assert [r.state for r in results] == [JobState.DONE] * len(wids), [r.reason for r in results]
    assert prompts_run(lacking) == 0, "an rmbg prompt was sent to the server without the node"
    assert prompts_run(full) == len(wids)
    for wid in wids:
        assert max(await run_attempts(pool, wid)) == 1, f"{wid} was retried"
    caps = [q for q in a.polled if CAPABILITY_QUEUE_MARK in q]
    assert caps, "the able server polls the rmbg capability queue"
    await wait_until(lambda: not any(CAPABILITY_QUEUE_MARK in q for q in b.polled))


# ---- the end of a backlog: a fast GPU never waits for a slow one's fed-ahead prompt ------------


async def test_an_idle_server_takes_the_prompt_a_busy_one_holds_fed_ahead(pool: Pool) -> None:
    slow, fast = pool.servers
    slow.set_faults(render_time=4.0)
    await pool.serve(slow)
    users = [await pool.user(), await pool.user()]
    wids = [await pool.make(u) for u in users]
    await wait_until(lambda: queue_of(slow) == (1, 1), timeout=10)  # one runs, one fed ahead

    started = time.monotonic()
    await pool.serve(fast)  # the backlog is empty; this server is idle
    second = await asyncio.wait_for(pool.jobs.result(wids[1]), 30)
    took = time.monotonic() - started
    first = await asyncio.wait_for(pool.jobs.result(wids[0]), 30)

    assert (first.state, second.state) == (JobState.DONE, JobState.DONE)
    assert prompts_run(fast) == 1, "the fed-ahead prompt was handed to the idle server"
    assert prompts_run(slow) == 1, "the running one finished where it ran"
    assert took < 3.5, f"the idle server waited for the busy one's render ({took:.1f} s)"
    for wid, r in zip(wids, (first, second), strict=True):
        assert pool.charges(wid) == (1, r.price)


async def test_a_lone_busy_server_keeps_its_fed_ahead_prompt(pool: Pool) -> None:
    gpu = pool.servers[0]
    gpu.set_faults(render_time=5.0)
    await pool.serve(gpu)
    wids = [await pool.make(await pool.user()) for _ in range(2)]
    await wait_until(lambda: queue_of(gpu) == (1, 1), timeout=10)
    await asyncio.sleep(1.5)  # several checks: nobody else polls, so it stays fed ahead
    assert queue_of(gpu) == (1, 1)
    results = await asyncio.gather(*(pool.jobs.result(w) for w in wids))
    assert [r.state for r in results] == [JobState.DONE] * 2
    for wid in wids:
        assert max(await run_attempts(pool, wid)) == 1, "never handed back"


# ---- hand-backs are not failures -------------------------------------------------------------


def make_graph(stores: Stores) -> dict[str, Any]:
    template = stores.templates.get("make")
    return template.inject({"prompt": "a fox", "seed": 1, "width": 256, "height": 256, "steps": 2})


async def test_hand_backs_do_not_use_up_the_renders_attempts(
    stores: Stores, tmp_path: Path
) -> None:
    assert COMFY_RETRY.maximum_attempts == COMFY_MAX_FAILED_ATTEMPTS + COMFY_MAX_HAND_BACKS
    server = start_standin(tmp_path / "gpu", step_delay=0.001)
    beats: list[Any] = []

    async def lost(needed: list[str], fresh: bool) -> list[str]:
        return needed  # the server lost the checkpoint: hand back

    def env(attempt: int, details: list[Any]) -> ActivityEnvironment:
        e = ActivityEnvironment()
        e.info = dataclasses.replace(e.info, attempt=attempt, heartbeat_details=details)
        e.on_heartbeat = lambda *d: beats.append(d[0] if d else None)
        return e

    inp = ComfyRunInput(workflow_id="wf-hand-back", work=ComfyWork(graph=make_graph(stores)))
    try:
        losing = ComfyActivities(server.url, cast(Any, None), stores.blobs, missing_models=lost)
        with pytest.raises(ApplicationError) as back:
            await env(4, [RenderBeat(server_url="", prompt_id="", handed_back=3).model_dump()]).run(
                losing.run_comfy_prompt, inp
            )
        assert back.value.type == "ComfyModelMissing" and not back.value.non_retryable
        assert RenderBeat.model_validate(beats[-1]).handed_back == 4, "the count goes on"
        await losing.aclose()

        # The 6th attempt after 5 hand-backs has failed 0 times: it renders.
        acts = ComfyActivities(server.url, cast(Any, None), stores.blobs)
        details = [RenderBeat(server_url="", prompt_id="", handed_back=5).model_dump()]
        result = await env(6, details).run(acts.run_comfy_prompt, inp)
        assert result.files, "rendered"
        # Four real failures (no hand-back among them): the 5th attempt gives up.
        with pytest.raises(ApplicationError) as gave_up:
            await env(5, []).run(acts.run_comfy_prompt, inp)
        assert gave_up.value.type == "ComfyGaveUp" and gave_up.value.non_retryable
        await acts.aclose()
    finally:
        assert server.process is not None
        stop_process(server.process)
