"""The stand-in's pictures: deterministic, sized like the graph says, real alpha and scale."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops, ImageDraw

from standins.comfyui.modelfiles import write_safetensors
from tests.fixtures.comfy import ComfyServer
from tests.standin.util import Session, txt2img, unique


async def _render(s: Session, **kw: object) -> list[Image.Image]:
    run = await s.run(txt2img(**kw))  # type: ignore[arg-type]
    entry = await s.history(run.prompt_id)
    assert entry["status"]["status_str"] == "success"
    return [await s.image(ref) for ref in entry["outputs"]["9"]["images"]]


async def test_the_same_seed_and_prompt_give_the_same_pixels(
    comfy_faults_reset: ComfyServer,
) -> None:
    text = unique("a lighthouse")
    async with Session(comfy_faults_reset) as s:
        (first,) = await _render(s, seed=7, text=text, prefix=unique())
        (other,) = await _render(s, seed=8, text=text, prefix=unique())
        (again,) = await _render(s, seed=7, text=text, prefix=unique())
        (reworded,) = await _render(s, seed=7, text=text + "!", prefix=unique())
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != other.tobytes()
    assert first.tobytes() != reworded.tobytes()


async def test_size_and_batch_follow_the_empty_latent(comfy_faults_reset: ComfyServer) -> None:
    async with Session(comfy_faults_reset) as s:
        images = await _render(s, width=100, height=72, batch=3, prefix=unique(), text=unique())
    # EmptyLatentImage floors to a multiple of 8 (100 -> 96), one image per batch entry.
    assert [img.size for img in images] == [(96, 72)] * 3
    assert len({img.tobytes() for img in images}) == 3


def _upscale_graph(image: str, model: str, prefix: str) -> dict[str, object]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": model}},
        "3": {"class_type": "ImageUpscaleWithModel",
              "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": prefix}},
    }  # fmt: skip


async def test_upscale_multiplies_the_size_by_the_models_own_scale(
    comfy_faults_reset: ComfyServer,
) -> None:
    server = comfy_faults_reset
    server.require_faults()  # needs the stand-in's model folder
    assert server.root is not None
    # A misleading name: the scale (3) comes from the file's metadata, not from "4x".
    odd = server.root / "models" / "upscale_models" / "4x-but-really-3.safetensors"
    write_safetensors(odd, {"w": ("F32", [1], struct.pack("<f", 1.0))}, {"scale": "3"})
    async with Session(server) as s:
        name = await s.upload(Image.new("RGB", (37, 21), (10, 200, 30)), unique("up") + ".png")
        sizes = {}
        for model in ("4x-standin.safetensors", "2x-standin.safetensors", odd.name):
            run = await s.run(_upscale_graph(name, model, unique()))
            assert run.of("progress"), "the upscaler reports progress per tile"
            entry = await s.history(run.prompt_id)
            sizes[model] = (await s.image(entry["outputs"]["4"]["images"][0])).size
    assert sizes == {
        "4x-standin.safetensors": (148, 84),
        "2x-standin.safetensors": (74, 42),
        odd.name: (111, 63),
    }


async def test_background_removal_gives_a_transparent_background(
    comfy_faults_reset: ComfyServer,
) -> None:
    src = Image.new("RGB", (64, 48), (20, 40, 200))
    ImageDraw.Draw(src).ellipse((16, 12, 48, 36), fill=(250, 220, 10))
    graph: dict[str, Any] = {
        "1": {"class_type": "LoadImage", "inputs": {"image": ""}},
        "2": {"class_type": "LoadBackgroundRemovalModel",
              "inputs": {"bg_removal_name": "rmbg-standin.safetensors"}},
        "3": {"class_type": "RemoveBackground",
              "inputs": {"image": ["1", 0], "bg_removal_model": ["2", 0]}},
        "4": {"class_type": "InvertMask", "inputs": {"mask": ["3", 0]}},
        "5": {"class_type": "JoinImageWithAlpha", "inputs": {"image": ["1", 0], "alpha": ["4", 0]}},
        "6": {"class_type": "SaveImage",
              "inputs": {"images": ["5", 0], "filename_prefix": unique()}},
    }  # fmt: skip
    async with Session(comfy_faults_reset) as s:
        graph["1"]["inputs"]["image"] = await s.upload(src, unique("cut") + ".png")
        run = await s.run(graph)
        entry = await s.history(run.prompt_id)
        out = await s.image(entry["outputs"]["6"]["images"][0])
    assert out.mode == "RGBA" and out.size == src.size
    alpha = out.getchannel("A")
    assert alpha.getpixel((0, 0)) == 0 and alpha.getpixel((63, 47)) == 0
    assert alpha.getpixel((32, 24)) == 255
    assert ImageChops.difference(out.convert("RGB"), src).getbbox() is None


async def test_a_caption_describes_the_image_it_was_given(comfy_faults_reset: ComfyServer) -> None:
    graph: dict[str, Any] = {
        "1": {"class_type": "LoadImage", "inputs": {"image": ""}},
        "2": {"class_type": "DownloadAndLoadFlorence2Model",
              "inputs": {"model": "microsoft/Florence-2-base", "precision": "fp16",
                         "attention": "sdpa"}},
        "3": {"class_type": "Florence2Run",
              "inputs": {"image": ["1", 0], "florence2_model": ["2", 0], "text_input": "",
                         "task": "more_detailed_caption", "fill_mask": True}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 2]}},
    }  # fmt: skip
    captions = []
    async with Session(comfy_faults_reset) as s:
        for colour in ((200, 10, 10), (10, 10, 200)):
            graph["1"]["inputs"]["image"] = await s.upload(
                Image.new("RGB", (40, 30), colour), unique("cap") + ".png"
            )
            run = await s.run(graph)
            (executed,) = run.of("executed")
            assert executed["node"] == "4"
            captions.append(executed["output"]["text"][0])
    assert "red" in captions[0] and "40x30" in captions[0]
    assert "blue" in captions[1]


def test_default_model_files_are_real_safetensors(comfy_standin: ComfyServer) -> None:
    comfy_standin.require_faults()
    assert comfy_standin.root is not None
    path: Path = comfy_standin.root / "models" / "upscale_models" / "4x-standin.safetensors"
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    assert b'"scale":"4"' in raw[8 : 8 + size]
