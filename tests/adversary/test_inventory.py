"""What each GPU server can run, and jobs no server can run (issue 16, items 1 and 2).

A comfy worker records its server's node types and model files; a template (or one of its
variants) that no server can run is refused at quote time with nothing charged; `stationthis
comfy check` names what each server lacks; the upscale model per factor and each training
family's base checkpoint are the operator's (templates or config), never code constants.
"""

from __future__ import annotations

import asyncio
import copy
import io
import re
import subprocess
import sys
import uuid
from collections.abc import Collection, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from PIL import Image
from pymongo.database import Database
from temporalio.testing import ActivityEnvironment

from activities.media_jobs import MediaJobActivities
from activities.training import TrainingComfyActivities
from adapters.cli.comfy_cmd import render_check
from adapters.jobs import JobsClient
from domain.errors import NoServerCanRun, TemplateGraphError
from domain.inventory import (
    Requirements,
    ServerInventory,
    check_template,
    requirements_of,
)
from domain.jobs import MakeImageRequest, MediaPrepareInput, MediaRequest, PrepareInput
from domain.templates import Template
from domain.training import (
    ChunkInput,
    TrainImage,
    TrainingParams,
    TrainSpec,
    expand_dataset_images,
)
from services.job_plans import MakePlanner, MediaPlanner
from services.training_plans import TrainingPlanner
from store.db import Stores
from store.inventory import pick_form
from tests.fixtures.comfy import ComfyServer, start_standin, stop_process
from tests.fixtures.devstack import Stack
from tests.fixtures.stores import stores_with
from workers.temporal_workers import record_inventory

USER = "telegram:3003"
SDXL = "sdxl-base-1.0.safetensors"
SMALL = {"width": 512, "height": 512, "steps": 20}


@pytest.fixture
def stores(mongo_db: Database[Any]) -> Iterator[Stores]:
    s = stores_with(mongo_db, USER)
    yield s


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def standin_like(url: str, *, without: Collection[str] = (), **models: set[str]) -> ServerInventory:
    """A server with the bundled templates' nodes and the stand-in's files, minus `without`."""
    nodes = {
        "CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode",
        "VAEEncode", "SaveImage", "PreviewImage", "LoadImage", "ImageScale", "LoraLoader",
        "UpscaleModelLoader", "ImageUpscaleWithModel", "LoadBackgroundRemovalModel",
        "RemoveBackground", "InvertMask", "JoinImageWithAlpha", "PreviewAny",
        "DownloadAndLoadFlorence2Model", "Florence2Run", "LoadImageTextDataSetFromFolder",
        "MakeTrainingDataset", "TrainLoraNode", "SaveLoRA", "LossGraphNode",
    }  # fmt: skip
    files = {
        "checkpoints": {SDXL, "flux1-dev.safetensors", "v1-5-pruned-emaonly.safetensors"},
        "upscale_models": {"2x-standin.safetensors", "4x-standin.safetensors"},
        "background_removal": {"rmbg-standin.safetensors"},
        **models,
    }
    return ServerInventory(
        url=url,
        node_types=frozenset(nodes - set(without)),
        models={k: frozenset(v) for k, v in files.items()},
    )


# ---- the inventory a worker records ----------------------------------------------------------


async def test_a_comfy_worker_records_its_servers_node_types_and_model_files(
    stores: Stores, comfy_standin: ComfyServer
) -> None:
    assert await record_inventory(stores, comfy_standin.url)
    [server] = await asyncio.to_thread(stores.inventory.servers)
    assert server.url == comfy_standin.url
    assert server.version.startswith("0.3."), "the server's own version, for the operator"
    assert {"KSampler", "TrainLoraNode", "UpscaleModelLoader"} <= server.node_types
    assert {"2x-standin.safetensors", "4x-standin.safetensors"} <= server.models["upscale_models"]
    assert SDXL in server.models["checkpoints"]
    assert "rmbg-standin.safetensors" in server.models["background_removal"]
    # The pool's query: which servers can take a job with these needs.
    upscale = stores.templates.get("upscale")
    assert stores.inventory.servers_able(requirements_of(upscale.graph)) == [comfy_standin.url]
    assert stores.inventory.servers_able(Requirements(node_types=frozenset({"NoSuch"}))) == []
    needs = Requirements(models={"checkpoints": frozenset({"not-here.safetensors"})})
    assert stores.inventory.servers_able(needs) == []
    # The newer TrainLoraNode requires inputs 0.3.64's has not: the core variant is not for it.
    assert {"bucket_mode", "offloading"} <= server.required_inputs["TrainLoraNode"]
    core = check_template(stores.templates.get("train-lora"), [server])
    [default, variant] = core.forms
    assert not default.missing
    assert "bucket_mode" in variant.missing.inputs["TrainLoraNode"]
    assert "TrainLoraNode of another version" in variant.missing.describe()
    # A server not seen within the hour is no longer offered.
    later = datetime.now(UTC) + timedelta(hours=2)
    assert stores.inventory.servers_able(requirements_of(upscale.graph), now=later) == []


def test_requirements_name_nodes_and_loader_files_but_not_links_or_fetched_loras() -> None:
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SDXL}},
        "2": {
            "class_type": "LoraLoader",
            "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora_name": "st/user.safetensors"},
        },
        "3": {"class_type": "TrainLoraNode", "inputs": {"existing_lora": "[None]"}},
        "4": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "4x.pth"}},
    }
    needs = requirements_of(graph, fetched={"st/user.safetensors"})
    loaders = {"CheckpointLoaderSimple", "LoraLoader", "TrainLoraNode", "UpscaleModelLoader"}
    assert needs.node_types == loaders
    assert needs.models == {"checkpoints": {SDXL}, "upscale_models": {"4x.pth"}}
    assert requirements_of(graph).models["loras"] == {"st/user.safetensors"}


# ---- refused at quote time, nothing charged ------------------------------------------------


def test_a_template_no_server_can_run_is_refused_at_quote_time_and_charges_nothing(
    stores: Stores,
) -> None:
    user = stores.users.get(USER)
    source = stores.blobs.put(png(), "a.png", "image/png", metadata={"user_id": user.id})
    request = MediaRequest(user=USER, kind="rmbg", source_image_id=source)
    planner = MediaPlanner(stores)
    inp = MediaPrepareInput(workflow_id="rmbg-x", request=request)
    assert planner.plan_media_job(inp).price == 10, "no server reported yet: nothing refused"

    stores.inventory.record_server(standin_like("http://gpu-1:8188", without={"RemoveBackground"}))
    before = stores.ledger.balance(user.id)
    entries = len(stores.ledger.entries(user.id))
    with pytest.raises(NoServerCanRun, match="RemoveBackground") as err:
        planner.plan_media_job(inp)
    assert "gpu-1" not in err.value.message, "a server's address is not the user's business"
    # The workflow's prepare activity turns it into a refused plan: the saga charges nothing.
    refused = MediaJobActivities(stores).prepare_media_job(inp)
    assert refused.refused and "no GPU server can run template 'rmbg'" in refused.refused
    assert refused.price == 0
    assert stores.ledger.balance(user.id) == before
    assert len(stores.ledger.entries(user.id)) == entries

    stores.inventory.record_server(standin_like("http://gpu-2:8188"))
    assert planner.plan_media_job(inp).price == 10, "a second server can run it"


def test_a_server_without_the_chosen_upscale_model_is_not_enough(stores: Stores) -> None:
    user = stores.users.get(USER)
    source = stores.blobs.put(png(), "a.png", "image/png", metadata={"user_id": user.id})
    planner = MediaPlanner(stores)
    only_4x = {"4x-standin.safetensors"}
    stores.inventory.record_server(standin_like("http://gpu-1:8188", upscale_models=only_4x))

    def plan(scale: int) -> Any:
        req = MediaRequest(
            user=USER, kind="upscale", source_image_id=source, params={"scale": scale}
        )
        return planner.plan_media_job(MediaPrepareInput(workflow_id="u", request=req))

    assert plan(4).comfy[0].graph["2"]["inputs"]["model_name"] == "4x-standin.safetensors"
    with pytest.raises(NoServerCanRun, match=re.escape("upscale_models/2x-standin.safetensors")):
        plan(2)


def test_the_job_uses_the_variant_a_server_can_run(stores: Stores) -> None:
    make = stores.templates.get("make").definition()
    variant_graph = copy.deepcopy(make["graph"])
    variant_graph["9"]["class_type"] = "PreviewImage"  # say an older server saves differently
    del variant_graph["9"]["inputs"]["filename_prefix"]
    make["variants"] = [{"name": "preview", "graph": variant_graph, "inputs": make["inputs"]}]
    stores.templates.load(make)
    planner = MakePlanner(stores)
    inp = PrepareInput(
        workflow_id="", request=MakeImageRequest(user=USER, prompt="a fox", overrides=SMALL)
    )
    stores.inventory.record_server(standin_like("http://old:8188", without={"SaveImage"}))
    planned = planner.plan_make_image(inp)
    assert planned.comfy[0].graph["9"]["class_type"] == "PreviewImage"
    assert planned.settings["variant"] == "preview"
    assert planned.comfy[0].graph["6"]["inputs"]["text"] == "a fox", "same inputs injected"

    stores.inventory.record_server(standin_like("http://new:8188"))
    planned = planner.plan_make_image(inp)
    assert planned.comfy[0].graph["9"]["class_type"] == "SaveImage", "the template's own first"
    assert "variant" not in planned.settings


def test_a_variant_must_take_the_templates_inputs(stores: Stores) -> None:
    make = stores.templates.get("make").definition()
    graph = copy.deepcopy(make["graph"])
    make["variants"] = [{"name": "bad", "graph": graph, "inputs": {"prompt": ["6", "text"]}}]
    with pytest.raises(TemplateGraphError, match=r"variant .bad. lacks the template.s input"):
        Template.parse(make)


CORE_0_3_64 = {  # what ComfyUI 0.3.64 core lacks of the training nodes (no dataset-folder nodes)
    "LoadImageTextDataSetFromFolder",
    "MakeTrainingDataset",
    "SaveLoRA",  # 0.3.64 calls it SaveLoRANode
}


def test_a_0_3_64_server_trains_with_the_core_variant_one_load_image_per_dataset_image(
    stores: Stores,
) -> None:
    template = stores.templates.get("train-lora")
    old = standin_like("http://old:8188", without=CORE_0_3_64)
    old = old.model_copy(update={"node_types": old.node_types | {"ImageBatch", "SaveLoRANode"}})
    form = pick_form(template, [old])
    assert form.variant == "core-0.3.64"
    assert pick_form(template, [standin_like("http://new:8188")]).variant == ""
    with pytest.raises(NoServerCanRun, match="LoadImageTextDataSetFromFolder"):
        pick_form(template, [standin_like("http://x:8188", without=CORE_0_3_64)])  # no batch

    graph = form.inject({"folder": "st_ds_1", "caption": "zxq_me", "steps": 250})
    load = form.inputs["folder"].node
    names = [f"st_ds_1/{n:02}.png" for n in range(4)]
    out = expand_dataset_images(graph, load, names)
    loads = sorted(n["inputs"]["image"] for n in out.values() if n["class_type"] == "LoadImage")
    assert loads == names
    batches = [k for k, n in out.items() if n["class_type"] == "ImageBatch"]
    assert len(batches) == 3
    encode = next(n for n in out.values() if n["class_type"] == "VAEEncode")
    assert encode["inputs"]["pixels"] == [batches[-1], 0], "the VAE encodes the whole batch"
    assert requirements_of(out).node_types <= old.node_types
    assert out[form.inputs["caption"].node]["inputs"]["text"] == "zxq_me"


# ---- operator-chosen models ------------------------------------------------------------------


def test_each_training_family_trains_on_the_operators_checkpoint(stores: Stores) -> None:
    planner = TrainingPlanner(stores)
    assert planner.base_checkpoint("sdxl") == SDXL
    assert planner.base_checkpoint("sd15") == "v1-5-pruned-emaonly.safetensors", (
        "sd15 trained on the SDXL file"
    )
    chosen = TrainingPlanner(stores, training_checkpoints={"sd15": "my-sd15.safetensors"})
    assert chosen.base_checkpoint("sd15") == "my-sd15.safetensors"
    stores.inventory.record_server(standin_like("http://gpu-1:8188"))
    with pytest.raises(NoServerCanRun, match=re.escape("checkpoints/my-sd15.safetensors")):
        chosen.base_checkpoint("sd15")  # configured, but no server has it: refused, unpaid


def test_the_upscale_model_per_factor_comes_from_the_template_or_the_config(
    stores: Stores,
) -> None:
    assert MediaPlanner(stores).upscale_models(stores.templates.get("upscale")) == {
        2: "2x-standin.safetensors",
        4: "4x-standin.safetensors",
    }
    real = MediaPlanner(stores, upscale_models={4: "RealESRGAN_x4plus.pth"})
    assert real.upscale_models(stores.templates.get("upscale"))[4] == "RealESRGAN_x4plus.pth"


# ---- stationthis comfy check -----------------------------------------------------------------


def test_check_names_what_each_server_lacks_per_template_and_fails_when_none_can(
    stores: Stores,
) -> None:
    templates = [stores.templates.get(n) for n in stores.templates.names()]
    old = standin_like("http://old:8188", without={"LoadImageTextDataSetFromFolder"})
    text, code = render_check(templates, [old], {})
    assert code == 1
    assert "train-lora  CANNOT" in text.replace("  ", "  ")
    assert "http://old:8188 (default) lacks node types LoadImageTextDataSetFromFolder" in text
    assert "verdict: 6 of 7 template(s) can run; no server can run: train-lora" in text
    # A configured checkpoint no server has makes train-lora fail the check too.
    overrides = {"train-lora": {"checkpoint": {"sd15": "gone.safetensors"}}}
    text, code = render_check(templates, [standin_like("http://new:8188")], overrides)
    assert code == 1 and "checkpoints/gone.safetensors" in text
    text, code = render_check(templates, [old, standin_like("http://new:8188")], {})
    assert code == 0 and "verdict: all 7 template(s) can run" in text
    assert render_check(templates, [], {})[1] == 2
    check = check_template(stores.templates.get("upscale"), [standin_like("http://a")])
    assert check.runnable


def cli(stack: Stack, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli.main", *argv],
        check=False,
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.stack
async def test_comfy_check_on_the_stack_and_a_template_no_server_can_run_charges_nothing(
    dev_stack: Stack, jobs: JobsClient
) -> None:
    out = await asyncio.to_thread(cli, dev_stack, "comfy", "check")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"server {dev_stack.comfy_url} (ComfyUI 0.3.64):" in out.stdout
    assert "verdict: all" in out.stdout
    out = await asyncio.to_thread(cli, dev_stack, "comfy", "check", dev_stack.comfy_url)
    assert out.returncode == 0, out.stdout + out.stderr

    name = f"nowhere-{uuid.uuid4().hex[:6]}"
    t = jobs.stores.templates.get("make").definition()
    t["name"] = name
    t["graph"]["3"]["class_type"] = "KSamplerFromTheFuture"
    jobs.stores.templates.load(t)
    try:
        out = await asyncio.to_thread(cli, dev_stack, "comfy", "check")
        assert out.returncode == 1
        assert f"{name}" in out.stdout and "KSamplerFromTheFuture" in out.stdout
        user = f"cli:inv-{uuid.uuid4().hex[:8]}"
        await asyncio.to_thread(jobs.stores.users.get_or_create, user, 500)
        before = await asyncio.to_thread(jobs.stores.ledger.balance, user)
        with pytest.raises(NoServerCanRun, match="KSamplerFromTheFuture"):
            await jobs.start_make(
                MakeImageRequest(user=user, prompt="a fox", template=name, overrides=SMALL)
            )
        assert await asyncio.to_thread(jobs.stores.ledger.balance, user) == before
        assert await jobs.active(user) == []
    finally:
        await asyncio.to_thread(jobs.stores.templates.coll.delete_many, {"name": name})


# ---- a training chunk on a ComfyUI 0.3.64 core server ------------------------------------------


@pytest.fixture(scope="module")
def core_0_3_64(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyServer]:
    """A stand-in serving 0.3.64 core's training nodes (no dataset-folder nodes)."""
    server = start_standin(
        tmp_path_factory.mktemp("comfy-0.3.64"), extra_args=["--training-nodes", "core-0.3.64"]
    )
    try:
        yield server
    finally:
        assert server.process is not None
        stop_process(server.process)


async def test_a_training_chunk_on_a_0_3_64_server_runs_the_core_variant_and_stores_its_lora(
    stores: Stores, core_0_3_64: ComfyServer
) -> None:
    root = core_0_3_64.root
    assert root is not None
    assert await record_inventory(stores, core_0_3_64.url)
    [server] = stores.inventory.servers()
    assert "LoadImageTextDataSetFromFolder" not in server.node_types
    assert "ImageBatch" in server.node_types
    user = stores.users.get(USER)
    images = [
        TrainImage(
            image_id=stores.blobs.put(
                png(), f"{n}.png", "image/png", metadata={"user_id": user.id}
            ),
            caption=f"zxq_me photo {n}",
        )
        for n in range(4)
    ]
    spec = TrainSpec(
        dataset_id="d1",
        dataset_name="me",
        dataset_hash="h",
        owner=user.id,
        trigger_word="zxq_me",
        model_name="me",
        params=TrainingParams(steps=100),
        resolution=512,
        checkpoint=TrainingPlanner(stores).base_checkpoint("sdxl"),
        images=images,
    )
    workflow_id = f"train-{uuid.uuid4().hex[:8]}"
    chunk = ChunkInput(
        workflow_id=workflow_id, chunk=0, start_step=0, steps=7, total_steps=7, spec=spec
    )
    acts = TrainingComfyActivities(core_0_3_64.url, cast(Any, None), stores, comfyui_dir=root)
    try:
        result = await ActivityEnvironment().run(acts.train_lora_chunk, chunk)
    finally:
        await acts.aclose()
    assert result.steps_done == 7
    assert stores.blobs.get(result.blob_id, "models")[:8] != b""  # stored in GridFS
    saved = sorted((root / "output" / "loras").glob("*_7_steps_*_.safetensors"))
    assert len(saved) == 1, "one LoRA file, named as the next chunk expects"
