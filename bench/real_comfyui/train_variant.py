"""Run train-lora.json's `core-0.3.64` variant straight on a real server (few steps): the graph a
training chunk sends to a 0.3.64 core, without the stack. With a FOLDER of input/ (`st_ds/`), one
LoadImage per file chained by ImageBatch, as the comfy worker expands it; else `example.png`.

    .venv/bin/python -m bench.real_comfyui.train_variant URL CKPT STEPS [FOLDER FILE...]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

from comfy.client import ComfyClient
from domain.templates import Template
from domain.training import expand_dataset_images

TEMPLATE = Path(__file__).resolve().parents[2] / "templates" / "train-lora.json"


async def main(url: str, checkpoint: str, steps: int, images: list[str]) -> None:
    template = Template.parse(json.loads(TEMPLATE.read_text()))
    [form] = [f for f in template.forms() if f.variant == "core-0.3.64"]
    prefix = f"loras/real_{uuid.uuid4().hex[:6]}"
    graph = form.inject(
        {"checkpoint": checkpoint, "folder": "example.png", "caption": "zxq", "steps": steps,
         "prefix": prefix}
    )  # fmt: skip
    if images:
        graph = expand_dataset_images(graph, form.inputs["folder"].node, images)
    async with ComfyClient(url, timeout=30.0, poll_interval=0.5) as comfy:
        started = time.monotonic()
        await comfy.run(graph, timeout=3600)
    took = time.monotonic() - started
    print(f"trained {steps} steps in {took:.1f} s; the LoRA is output/{prefix}_{steps}_steps_*")


if __name__ == "__main__":
    folder, files = (sys.argv[4], sys.argv[5:]) if len(sys.argv) > 4 else ("", [])
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), [f"{folder}/{f}" for f in files]))
