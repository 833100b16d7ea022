"""Random-weight models of REAL architectures for a CPU ComfyUI (docs/real-comfyui.md).

Run from the ComfyUI folder with ComfyUI's own venv (torch, spandrel), not the project's:

    cd /work/realcomfy/ComfyUI && ../venv/bin/python /path/to/bench/real_comfyui/make_models.py

- models/checkpoints/sd15-random.safetensors: SD1.5 built from ComfyUI's own classes (UNetModel
  with model_detection's SD15 config, SDClipModel = CLIP-L, AutoencoderKL with sd.VAE's
  ddconfig), random weights, fp16 (2 GiB). CheckpointLoaderSimple detects it as SD15.
- models/upscale_models/{2,4}x-compact-random.pth: spandrel's RealESRGAN Compact
  (SRVGGNetCompact, num_feat 16, num_conv 2), random weights, tens of KB.

ComfyUI's ops skip weight init (torch.empty), so every tensor gets a sane random value here:
fan-in scaled normals for matrices, ones for norm weights, zeros for biases. The renders are
noise, but every node runs the real code path at the real size.
"""

from __future__ import annotations

import math
import os
import sys

import torch

sys.path.insert(0, os.getcwd())  # ComfyUI's folder: its `comfy` package, not the project's
from comfy.cli_args import args

args.cpu = True  # no GPU here: model_management must not ask CUDA
import comfy.ops  # noqa: E402
import comfy.sd1_clip  # noqa: E402
import safetensors.torch  # noqa: E402
from comfy.ldm.models.autoencoder import AutoencoderKL  # noqa: E402
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel  # noqa: E402

SD15_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "adm_in_channels": None, "dtype": torch.float16, "in_channels": 4,
    "model_channels": 320, "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4],
    "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 768,
    "num_heads": 8, "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}  # fmt: skip
SD_VAE = {
    "double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3,
    "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [],
    "dropout": 0.0,
}  # fmt: skip


def randomize(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, raw in sd.items():
        v = raw.float()
        if k.endswith("position_ids"):
            t = torch.arange(v.shape[-1]).expand_as(v).float()
        elif v.ndim >= 2:
            scale = 0.02 if "embedding" in k else 1 / math.sqrt(v[0].numel())
            t = torch.randn_like(v) * scale
        elif k.endswith("bias"):
            t = torch.zeros_like(v)
        elif k.endswith(("weight", "scale")):
            t = torch.ones_like(v)
        else:
            t = torch.zeros_like(v)
        out[k] = t.half()
    return out


def checkpoint(path: str) -> None:
    sd: dict[str, torch.Tensor] = {}
    unet = UNetModel(**SD15_UNET, device="cpu", operations=comfy.ops.disable_weight_init)
    sd.update({"model.diffusion_model." + k: v for k, v in randomize(unet.state_dict()).items()})
    del unet
    clip = comfy.sd1_clip.SDClipModel(device="cpu", dtype=torch.float16)
    sd.update({"cond_stage_model." + k: v for k, v in randomize(clip.state_dict()).items()})
    del clip
    vae = AutoencoderKL(ddconfig=SD_VAE, embed_dim=4)
    sd.update({"first_stage_model." + k: v for k, v in randomize(vae.state_dict()).items()})
    safetensors.torch.save_file(sd, path)
    print(path, len(sd), "tensors", os.path.getsize(path) // 2**20, "MiB")


def upscaler(path: str, scale: int) -> None:
    from spandrel import ModelLoader
    from spandrel.architectures.Compact.__arch.SRVGG import SRVGGNetCompact

    net = SRVGGNetCompact(num_feat=16, num_conv=2, upscale=scale, act_type="prelu")
    sd = {
        k: torch.randn_like(v) * 0.1 if v.ndim > 1 else torch.full_like(v, 0.25)
        for k, v in net.state_dict().items()
    }
    torch.save(sd, path)
    loaded = ModelLoader().load_from_file(path)  # what UpscaleModelLoader does
    print(path, loaded.architecture.name, "scale", loaded.scale)


if __name__ == "__main__":
    torch.manual_seed(0)
    os.makedirs("models/checkpoints", exist_ok=True)
    os.makedirs("models/upscale_models", exist_ok=True)
    if "--upscale-only" not in sys.argv:
        checkpoint("models/checkpoints/sd15-random.safetensors")
    upscaler("models/upscale_models/2x-compact-random.pth", 2)
    upscaler("models/upscale_models/4x-compact-random.pth", 4)
