"""Real, tiny model files for the stand-in's models/ folders.

The stand-in never loads weights, but clients (and its own nodes) see real files: each is a valid
safetensors file (8-byte little-endian header length, JSON header, tensor bytes) whose
`__metadata__` carries what a real loader would learn from the weights, such as an upscaler's
scale. Nodes read that metadata instead of trusting the file name.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

# Folder key -> default files created at start (file name -> metadata), when missing.
DEFAULT_MODELS: dict[str, dict[str, dict[str, str]]] = {
    "checkpoints": {
        "sdxl-base-1.0.safetensors": {"family": "sdxl", "standin": "checkpoint"},
        "flux1-dev.safetensors": {"family": "flux", "standin": "checkpoint"},
        "v1-5-pruned-emaonly.safetensors": {"family": "sd15", "standin": "checkpoint"},
    },
    "upscale_models": {
        "4x-standin.safetensors": {"scale": "4", "standin": "upscale_model"},
        "2x-standin.safetensors": {"scale": "2", "standin": "upscale_model"},
    },
    "background_removal": {
        "rmbg-standin.safetensors": {"standin": "background_removal"},
    },
}

# Every model folder the stand-in knows (GET /models), like folder_paths.folder_names_and_paths.
MODEL_FOLDERS: tuple[str, ...] = (
    "checkpoints",
    "configs",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "gligen",
    "upscale_models",
    "custom_nodes",  # as 0.3.64 lists it (latent_upscale_models is a later core's folder)
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
    "background_removal",
    "LLM",
)

MODEL_EXTENSIONS: frozenset[str] = frozenset(
    {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
)


def write_safetensors(
    path: Path, tensors: dict[str, tuple[str, list[int], bytes]], metadata: dict[str, str]
) -> None:
    """Write a safetensors file; `tensors` maps name -> (dtype, shape, raw bytes)."""
    header: dict[str, object] = {"__metadata__": dict(metadata)}
    offset = 0
    blobs: list[bytes] = []
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {
            "dtype": dtype,
            "shape": shape,
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
        blobs.append(data)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))
    tmp.replace(path)


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors file; ValueError if the file is not one."""
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path.name}: not a safetensors file (too short)")
        (size,) = struct.unpack("<Q", head)
        if size > 100_000_000:
            raise ValueError(f"{path.name}: not a safetensors file (header length {size})")
        header = json.loads(f.read(size).decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError(f"{path.name}: not a safetensors file (header is not an object)")
    meta = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()}


def ensure_default_models(models_dir: Path) -> None:
    """Create every model folder and the default stand-in model files that are missing."""
    for folder in MODEL_FOLDERS:
        (models_dir / folder).mkdir(parents=True, exist_ok=True)
    for folder, files in DEFAULT_MODELS.items():
        for name, meta in files.items():
            path = models_dir / folder / name
            if not path.exists():
                weight = struct.pack("<4f", 0.25, -0.5, 0.75, 1.0)
                write_safetensors(path, {"standin.weight": ("F32", [2, 2], weight)}, meta)
