"""What a run against a real ComfyUI 0.3.64 (docs/real-comfyui.md) found outside the stand-in.

`stationthis comfy check` refused the upscale and train-lora templates on a real server that
had every operator-chosen file (UPSCALE_MODELS, TRAINING_CHECKPOINTS): it also asked for the
graph's placeholder file (`4x-standin.safetensors`, `sdxl-base-1.0.safetensors`), which no job
ever sends, since a job always injects one of the choices into that input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from domain.inventory import ServerInventory, check_template
from domain.templates import Template

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
