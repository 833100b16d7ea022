"""The stand-in's training and LoRA nodes at the protocol level (docs/comfyui-protocol.md
§8.1/§8.5): progress per step, a real safetensors file with the real naming and counter rules,
resuming from `existing_lora`, and LoraLoader refusing files it does not list."""

from __future__ import annotations

import json
import shutil
import struct
import uuid
from pathlib import Path

import httpx

from domain.templates import Template
from tests.fixtures.comfy import ComfyServer
from tests.standin.util import Session, txt2img

TEMPLATE = Template.parse(
    json.loads((Path(__file__).resolve().parents[2] / "templates" / "train-lora.json").read_text())
)


def header(path: Path) -> dict[str, object]:
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    parsed: dict[str, object] = json.loads(raw[8 : 8 + size])
    return parsed


async def test_training_reports_each_step_and_saves_a_lora_that_a_next_chunk_continues(
    comfy_faults_reset: ComfyServer,
) -> None:
    server = comfy_faults_reset
    assert server.root is not None
    prefix = f"loras/t_{uuid.uuid4().hex[:8]}"
    graph = TEMPLATE.inject({"steps": 5, "prefix": prefix})
    async with Session(server) as s:
        run = await s.run(graph)
        assert run.reply["node_errors"] == {}
        steps = [(p["value"], p["max"]) for p in run.of("progress") if p["node"] == "4"]
        assert steps == [(n, 5) for n in range(1, 6)]
        executed = {e["node"] for e in run.of("executed")}
        assert "5" not in executed, "SaveLoRA has no UI output"
        out = server.root / "output" / "loras"
        stem = prefix.split("/")[1]
        [first] = sorted(out.glob(f"{stem}_*"))
        assert first.name == f"{stem}_5_steps_00001_.safetensors"
        head = header(first)
        assert "diffusion_model.middle_block.1.proj_in.lora_up.weight" in head
        # A next chunk continues from it once it is in models/loras: steps = 5 + 3.
        loras = server.root / "models" / "loras" / "st-test"
        loras.mkdir(parents=True, exist_ok=True)
        shutil.copy(first, loras / first.name)
        chunk2 = TEMPLATE.inject(
            {"steps": 3, "prefix": prefix, "existing_lora": f"st-test/{first.name}"}
        )
        run2 = await s.run(chunk2)
        assert run2.reply["node_errors"] == {}
        # Counter quirk: parsed from the first number after the name (the step count, 5).
        assert (out / f"{stem}_8_steps_00006_.safetensors").is_file()


async def test_a_lora_the_server_does_not_list_is_refused_as_value_not_in_list(
    comfy_faults_reset: ComfyServer,
) -> None:
    graph = txt2img(steps=2)
    graph["20"] = {
        "class_type": "LoraLoader",
        "inputs": {
            "model": ["4", 0],
            "clip": ["4", 1],
            "lora_name": "nobody.safetensors",
            "strength_model": 0.8,
            "strength_clip": 0.8,
        },
    }
    sampler = next(k for k, v in graph.items() if v["class_type"] == "KSampler")
    graph[sampler]["inputs"]["model"] = ["20", 0]
    async with httpx.AsyncClient(base_url=comfy_faults_reset.url, timeout=10) as http:
        r = await http.post("/prompt", json={"prompt": graph})
    assert r.status_code == 400
    errors = r.json()["node_errors"]["20"]["errors"]
    assert errors[0]["type"] == "value_not_in_list"
