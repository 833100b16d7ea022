"""What a run against a real ComfyUI 0.3.64 (docs/real-comfyui.md) found outside the stand-in.

`stationthis comfy check` refused the upscale and train-lora templates on a real server that
had every operator-chosen file (UPSCALE_MODELS, TRAINING_CHECKPOINTS): it also asked for the
graph's placeholder file (`4x-standin.safetensors`, `sdxl-base-1.0.safetensors`), which no job
ever sends, since a job always injects one of the choices into that input.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from domain.inventory import ServerInventory, check_template
from domain.templates import Template
from domain.training import (
    DEFAULT_CHUNK_STEPS,
    STEPS_MAX,
    STEPS_MIN,
    TrainingParams,
    TrainPrepareInput,
    TrainRequest,
    TrainSpec,
    chunk_size,
    chunks,
)
from services.training_plans import TrainingPlanner
from store.db import Stores
from tests.adversary.test_inventory import png
from tests.fixtures.stores import stores_with

USER = "telegram:3016"


@pytest.fixture
def stores(mongo_db: Database[Any]) -> Iterator[Stores]:
    s = stores_with(mongo_db, USER)
    yield s


TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def bundled(name: str) -> Template:
    return Template.parse(json.loads((TEMPLATES / f"{name}.json").read_text()))


def real_0_3_64(**models: set[str]) -> ServerInventory:
    """The node types the bundled templates use that core 0.3.64 has, and `models`."""
    nodes = {
        "CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode",
        "VAEEncode", "SaveImage", "PreviewImage", "LoadImage", "ImageBatch", "UpscaleModelLoader",
        "ImageUpscaleWithModel", "TrainLoraNode", "SaveLoRANode", "LossGraphNode",
    }  # fmt: skip
    return ServerInventory(
        url="http://real:8188",
        node_types=frozenset(nodes),
        models={k: frozenset(v) for k, v in models.items()},
    )


UPSCALERS = {"2": "2x-compact-random.pth", "4": "4x-compact-random.pth"}
CHECKPOINTS = {family: "sd15-random.safetensors" for family in ("sdxl", "flux", "sd15")}


def overrides(template: str) -> dict[str, Any]:
    return {"upscale": {"model": UPSCALERS}, "train-lora": {"checkpoint": CHECKPOINTS}}[template]


def test_upscale_runs_on_a_server_with_the_configured_models_only() -> None:
    server = real_0_3_64(upscale_models=set(UPSCALERS.values()))
    check = check_template(bundled("upscale"), [server], overrides("upscale"))
    assert check.runnable, [f.missing.describe() for f in check.forms if f.missing]


def test_upscale_still_needs_every_configured_model() -> None:
    server = real_0_3_64(upscale_models={"2x-compact-random.pth"})
    check = check_template(bundled("upscale"), [server], overrides("upscale"))
    assert not check.runnable
    assert "4x-compact-random.pth" in check.forms[0].missing.describe()


def test_training_runs_its_core_variant_on_a_server_with_the_configured_checkpoint() -> None:
    server = real_0_3_64(checkpoints={"sd15-random.safetensors"})
    check = check_template(bundled("train-lora"), [server], overrides("train-lora"))
    assert check.runnable, [f.missing.describe() for f in check.forms if f.missing]
    assert [f.variant for f in check.able()] == ["core-0.3.64"]


def test_no_training_chunk_is_a_single_step() -> None:
    """ComfyUI's LossGraphNode divides by (max - min) of the chunk's losses: a 1-step chunk
    fails its prompt on every real server (docs/real-comfyui.md). 251 steps in chunks of 250
    made one; the planner now splits a job's steps into equal chunks of at most the configured
    size, so no chunk is a single step for any valid step count."""
    for total in range(STEPS_MIN, STEPS_MAX + 1):
        size = chunk_size(total, DEFAULT_CHUNK_STEPS)
        parts = [steps for _start, steps in chunks(total, size)]
        assert sum(parts) == total and max(parts) <= DEFAULT_CHUNK_STEPS
        assert min(parts) >= 2, (total, parts)
        assert len(parts) == -(-total // DEFAULT_CHUNK_STEPS), "no more prompts than before"


def test_the_planner_plans_balanced_chunks(stores: Stores) -> None:
    user = stores.users.get(USER)
    ds = stores.datasets.create(user.id, "cats", trigger_word="zxqcat")
    blobs = [
        stores.blobs.put(png(), f"{n}.png", "image/png", metadata={"user_id": user.id})
        for n in range(4)
    ]
    stores.datasets.add_images(user.id, ds.id, [(b, b) for b in blobs])
    for b in blobs:
        stores.datasets.set_caption(user.id, ds.id, b, "a cat")
    request = TrainRequest(user=USER, dataset="cats", params=TrainingParams(steps=251))
    plan = TrainingPlanner(stores).plan_train_lora(
        TrainPrepareInput(workflow_id="t", request=request)
    )
    spec = TrainSpec.model_validate(plan.settings["training"])
    assert [steps for _s, steps in chunks(251, spec.chunk_steps)] == [126, 125]
