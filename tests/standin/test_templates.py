"""Every bundled template runs on the stand-in with its default values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domain.templates import Template
from tests.fixtures.comfy import ComfyServer
from tests.standin.util import Session

TEMPLATES = sorted((Path(__file__).resolve().parents[2] / "templates").glob("*.json"))


def test_the_required_templates_are_bundled() -> None:
    names = {p.stem for p in TEMPLATES}
    assert {"make", "make-flux", "img2img", "upscale", "rmbg", "caption"} <= names


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
async def test_a_bundled_template_runs_with_its_defaults(
    path: Path, comfy_faults_reset: ComfyServer
) -> None:
    template = Template.parse(json.loads(path.read_text()), source=path.name)
    assert template.name == path.stem
    async with Session(comfy_faults_reset) as s:
        run = await s.run(template.graph)
        assert run.reply["node_errors"] == {}
        entry = await s.history(run.prompt_id)
    assert entry["status"]["status_str"] == "success", entry["status"]
    outputs = entry["outputs"]
    assert outputs, "a template must produce UI output"
    if template.kind == "caption":
        (text,) = next(iter(outputs.values()))["text"]
        assert "image" in text
    elif template.kind == "train_lora":
        # SaveLoRA has no UI output (its file is in output/loras/); the loss graph is a preview.
        images = [img for out in outputs.values() for img in out.get("images", [])]
        assert images and all(img["type"] == "temp" for img in images)
    else:
        images = [img for out in outputs.values() for img in out.get("images", [])]
        assert images and all(img["type"] == "output" for img in images)
