"""Small API-format ComfyUI graphs shared by the template tests."""

from __future__ import annotations

import copy
from typing import Any


def txt2img_graph() -> dict[str, Any]:
    """ComfyUI's default text-to-image graph, exported with "Export (API)", inputs retitled."""
    return copy.deepcopy(
        {
            "3": {
                "class_type": "KSampler",
                "inputs": {
                    "seed": 156680208700286,
                    "steps": 20,
                    "cfg": 8,
                    "sampler_name": "euler",
                    "scheduler": "normal",
                    "denoise": 1,
                    "model": ["4", 0],
                    "positive": ["6", 0],
                    "negative": ["7", 0],
                    "latent_image": ["5", 0],
                },
                "_meta": {"title": "KSampler"},
            },
            "4": {
                "class_type": "CheckpointLoaderSimple",
                "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"},
                "_meta": {"title": "input_checkpoint"},
            },
            "5": {
                "class_type": "EmptyLatentImage",
                "inputs": {"width": 1024, "height": 1024, "batch_size": 1},
                "_meta": {"title": "Empty Latent Image"},
            },
            "6": {
                "class_type": "CLIPTextEncode",
                "inputs": {"text": "a cat", "clip": ["4", 1]},
                "_meta": {"title": "input_prompt"},
            },
            "7": {
                "class_type": "CLIPTextEncode",
                "inputs": {"text": "", "clip": ["4", 1]},
                "_meta": {"title": "input_negative"},
            },
            "8": {
                "class_type": "VAEDecode",
                "inputs": {"samples": ["3", 0], "vae": ["4", 2]},
                "_meta": {"title": "VAE Decode"},
            },
            "9": {
                "class_type": "SaveImage",
                "inputs": {"filename_prefix": "stationthis", "images": ["8", 0]},
                "_meta": {"title": "Save Image"},
            },
        }
    )


EXPLICIT_INPUTS: dict[str, list[str]] = {
    "seed": ["3", "seed"],
    "steps": ["3", "steps"],
    "cfg": ["3", "cfg"],
    "sampler": ["3", "sampler_name"],
    "scheduler": ["3", "scheduler"],
    "width": ["5", "width"],
    "height": ["5", "height"],
    "batch": ["5", "batch_size"],
}


def template_file(name: str = "make", **overrides: Any) -> dict[str, Any]:
    """A template file's JSON in the bundled templates' shape."""
    data: dict[str, Any] = {
        "name": name,
        "kind": "txt2img",
        "family": "sdxl",
        "price_base": 10,
        "description": "SDXL text to image",
        "graph": txt2img_graph(),
        "inputs": dict(EXPLICIT_INPUTS),
    }
    data.update(overrides)
    return data
