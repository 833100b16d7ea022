"""The stand-in's `/object_info` against a real ComfyUI 0.3.64's (docs/real-comfyui.md).

`data/object_info_0.3.64.json` is what a stock ComfyUI 0.3.64 (CPU, no custom nodes) answered,
trimmed to the node types the stand-in serves. Every node type both have must read the same to
a client: input names and order, types, the combo encoding (legacy `[[...], {...}]` or V3
`["COMBO", {...}]`), defaults and ranges, outputs and their names, the node flags (V3 key set,
`experimental`). Only prose (tooltips, descriptions) and the lists of model and input files
(an install's own) are left out. A stand-in that drifts from the real server makes the
contract suite pass where a real server would fail it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from standins.comfyui.modelfiles import write_safetensors
from tests.fixtures.comfy import ComfyServer, start_standin, stop_process
from tests.standin.util import Session, txt2img

REAL: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "object_info_0.3.64.json").read_text()
)
# Combo inputs whose options are files of the install (models, input/ images).
FILE_LISTS = {"ckpt_name", "lora_name", "model_name", "image", "existing_lora"}
PROSE = {"description", "output_tooltips"}
# Node types the stand-in serves that stock 0.3.64 core lacks (custom or newer nodes).
NOT_IN_CORE = {
    "DownloadAndLoadFlorence2Model", "Florence2Run", "LoadBackgroundRemovalModel",
    "RemoveBackground", "LoadImageTextDataSetFromFolder", "MakeTrainingDataset", "SaveLoRA",
}  # fmt: skip
# The default ("newer") stand-in serves a later core's schema-V3 training nodes.
NEWER_TRAINING = {"TrainLoraNode", "LoraModelLoader", "LossGraphNode"}


def _input(name: str, config: list[Any]) -> list[Any]:
    config = json.loads(json.dumps(config))
    extra = config[1] if len(config) > 1 and isinstance(config[1], dict) else None
    if extra is not None:
        extra.pop("tooltip", None)
    if name in FILE_LISTS:
        if isinstance(config[0], list):
            config[0] = "<files>"
        elif extra is not None and "options" in extra:
            extra["options"] = "<files>"
    return config


def comparable(info: dict[str, Any]) -> dict[str, Any]:
    """What a client reads from one `/object_info` entry, without prose and file lists."""
    out = {k: v for k, v in info.items() if k not in PROSE and k != "input"}
    out["input"] = {
        section: (
            {name: _input(name, config) for name, config in inputs.items()}
            if section != "hidden"
            else inputs
        )
        for section, inputs in info["input"].items()
    }
    return out


def served(server: ComfyServer) -> dict[str, Any]:
    answer = httpx.get(f"{server.url}/object_info", timeout=10.0)
    answer.raise_for_status()
    info: dict[str, Any] = answer.json()
    return info


@pytest.fixture(scope="module")
def core_0_3_64(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyServer]:
    server = start_standin(
        tmp_path_factory.mktemp("comfy-0.3.64-info"),
        extra_args=["--training-nodes", "core-0.3.64"],
    )
    try:
        yield server
    finally:
        assert server.process is not None
        stop_process(server.process)


def differences(stand_in: dict[str, Any], skip: set[str]) -> list[str]:
    found = []
    for node in sorted(stand_in):
        if node in skip:
            continue
        if node not in REAL:
            found.append(f"{node}: not a node type of ComfyUI 0.3.64 core")
            continue
        want, got = comparable(REAL[node]), comparable(stand_in[node])
        for key in sorted(set(want) | set(got)):
            if want.get(key, "<absent>") != got.get(key, "<absent>"):
                found.append(f"{node}.{key}: real {want.get(key, '<absent>')!r:.400}, "
                             f"stand-in {got.get(key, '<absent>')!r:.400}")  # fmt: skip
    return found


def test_the_0_3_64_stand_in_describes_every_node_as_the_real_server_does(
    core_0_3_64: ComfyServer,
) -> None:
    assert differences(served(core_0_3_64), NOT_IN_CORE) == []


def test_the_default_stand_in_describes_its_core_nodes_as_the_real_server_does(
    comfy_standin: ComfyServer,
) -> None:
    assert differences(served(comfy_standin), NOT_IN_CORE | NEWER_TRAINING) == []


def test_a_0_3_64_server_saves_loras_with_save_lora_node(core_0_3_64: ComfyServer) -> None:
    """0.3.64 core's save node is `SaveLoRANode` (a later core renamed it `SaveLoRA`)."""
    info = served(core_0_3_64)
    assert "SaveLoRANode" in info and "SaveLoRA" not in info


async def test_a_lora_saved_to_output_loras_is_listed_and_loadable_as_on_a_real_server(
    core_0_3_64: ComfyServer,
) -> None:
    """ComfyUI's main.py adds output/{checkpoints,clip,vae,diffusion_models,loras} to the model
    folders: a real 0.3.64 listed a LoRA that SaveLoRANode had just written under LoraLoader's
    `lora_name` and TrainLoraNode's `existing_lora`, without any copy to models/loras."""
    assert core_0_3_64.root is not None
    name = f"trained_{uuid.uuid4().hex[:6]}_4_steps_00001_.safetensors"
    out = core_0_3_64.root / "output" / "loras"
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / name, {"x.weight": ("F32", [1], b"\0\0\0\0")}, {})
    info = served(core_0_3_64)
    assert name in info["LoraLoader"]["input"]["required"]["lora_name"][0]
    assert name in info["TrainLoraNode"]["input"]["required"]["existing_lora"][0]
    graph = txt2img(steps=1)
    graph["20"] = {
        "class_type": "LoraLoader",
        "inputs": {"model": ["4", 0], "clip": ["4", 1], "lora_name": name,
                   "strength_model": 0.8, "strength_clip": 0.8},
    }  # fmt: skip
    graph["3"]["inputs"]["model"] = ["20", 0]
    async with Session(core_0_3_64) as s:
        run = await s.run(graph)
    assert run.reply["node_errors"] == {}
    assert "execution_success" in run.types()


# GET /models of the real 0.3.64 (folder_paths.folder_names_and_paths, in its order).
REAL_MODEL_FOLDERS = [
    "checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision",
    "style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "gligen",
    "upscale_models", "custom_nodes", "hypernetworks", "photomaker", "classifiers",
    "model_patches", "audio_encoders",
]  # fmt: skip
# Folders the stand-in's custom nodes register (background removal, Florence-2), as those
# custom nodes do on a real server: after core's.
CUSTOM_NODE_FOLDERS = ["background_removal", "LLM"]


def test_the_model_folders_are_the_real_servers_then_the_custom_nodes(
    comfy_standin: ComfyServer,
) -> None:
    folders = httpx.get(f"{comfy_standin.url}/models", timeout=10.0).json()
    assert folders == REAL_MODEL_FOLDERS + CUSTOM_NODE_FOLDERS


TRAIN_TEMPLATE = json.loads(
    (Path(__file__).resolve().parents[2] / "templates" / "train-lora.json").read_text()
)


async def test_a_one_step_training_fails_in_the_loss_graph_as_on_a_real_server(
    core_0_3_64: ComfyServer,
) -> None:
    """A real 0.3.64 (and a later core: the same code) fails a 1-step training prompt in
    LossGraphNode with `ZeroDivisionError: float division by zero` (it scales the losses by
    max - min), after SaveLoRANode wrote its file; so must the stand-in, or a 1-step chunk
    passes here and fails on every real server."""
    from domain.templates import Template

    template = Template.parse(TRAIN_TEMPLATE)
    [form] = [f for f in template.forms() if f.variant == "core-0.3.64"]
    graph = form.inject({"steps": 1, "prefix": f"loras/one_{uuid.uuid4().hex[:6]}"})
    async with Session(core_0_3_64) as s:
        run = await s.run(graph)
    [error] = run.of("execution_error")
    assert error["node_type"] == "LossGraphNode"
    assert error["exception_type"] == "ZeroDivisionError"
    assert error["exception_message"] == "float division by zero\n"  # as the real one sends it
