"""What each stand-in node does when it runs.

Values travel between nodes as small Python objects (model references, lists of Pillow images
for IMAGE, "L" images for MASK). Pillow work runs in a thread (`asyncio.to_thread`) so the event
loop keeps serving HTTP and WebSocket traffic while a prompt renders. Nodes that report progress
call `ctx.progress`, which is also where an interrupt lands, as in ComfyUI's sampler callback.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import random
import re
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from media.classifier import STANDIN_UNSAFE_WORD, mark_unsafe
from standins.comfyui import render
from standins.comfyui.modelfiles import read_safetensors_metadata, write_safetensors
from standins.comfyui.nodes import Folders, legacy_train_outputs


@dataclass(frozen=True)
class ModelRef:
    """MODEL / CLIP / VAE: which checkpoint, with which LoRAs applied.

    `loras` holds (sha256 of the LoRA's weights, strength): the rendered change is derived from
    the file's content and the weight, never from its name.
    """

    kind: str
    ckpt: str
    loras: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Conditioning:
    text: str
    clip: ModelRef


@dataclass
class Latent:
    """LATENT: a size and batch, plus decoded-ready pixels once a sampler has run."""

    width: int
    height: int
    batch: int
    source: list[Image.Image] | None = None
    images: list[Image.Image] | None = None


@dataclass(frozen=True)
class UpscaleModel:
    name: str
    scale: float


@dataclass(frozen=True)
class BackgroundRemovalModel:
    name: str


@dataclass
class NodeOutput:
    values: tuple[Any, ...] = ()
    ui: dict[str, Any] | None = None


class RunContext(Protocol):
    """What the executor gives a running node."""

    folders: Folders
    prompt_id: str
    node_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]

    async def progress(self, value: int, total: int) -> None:
        """Report a step; raises if the prompt was interrupted."""

    async def step_wait(self, index: int, total: int) -> None:
        """Sleep for one sampler step (step delay or the prompt's fixed render time)."""

    def preview_prefix(self) -> str:
        """`ComfyUI_temp_<5 letters>` of this PreviewImage node object."""

    async def train_step_wait(self) -> None:
        """Sleep for one LoRA training step (the configurable train step delay)."""


Handler = Callable[[RunContext, dict[str, Any]], Awaitable[NodeOutput]]


class NodeFailure(RuntimeError):
    """A node failed the way a real one would (missing file, bad model)."""


async def checkpoint_loader(ctx: RunContext, i: dict[str, Any]) -> NodeOutput:
    name = i["ckpt_name"]
    if ctx.folders.model_path("checkpoints", name) is None:
        raise FileNotFoundError(f"Model in folder 'checkpoints' with filename '{name}' not found.")
    return NodeOutput((ModelRef("MODEL", name), ModelRef("CLIP", name), ModelRef("VAE", name)))


async def clip_text_encode(ctx: RunContext, i: dict[str, Any]) -> NodeOutput:
    return NodeOutput((Conditioning(str(i["text"]), i["clip"]),))


async def empty_latent(ctx: RunContext, i: dict[str, Any]) -> NodeOutput:
    w, h = int(i["width"]) // 8 * 8, int(i["height"]) // 8 * 8
    return NodeOutput((Latent(w, h, int(i["batch_size"])),))


async def ksampler(ctx: RunContext, i: dict[str, Any]) -> NodeOutput:
    latent: Latent = i["latent_image"]
    model: ModelRef = i["model"]
    steps = int(i["steps"])
    params = {
        "ckpt": model.ckpt,
        "positive": i["positive"].text,
        "negative": i["negative"].text,
        "seed": int(i["seed"]),
        "steps": steps,
        "cfg": float(i["cfg"]),
        "sampler": i["sampler_name"],
        "scheduler": i["scheduler"],
    }
    for step in range(steps):
        await ctx.step_wait(step, steps)
        await ctx.progress(step + 1, steps)
    denoise = float(i.get("denoise", 1.0))

    def draw() -> list[Image.Image]:
        out = []
        for index in range(latent.batch):
            p = {**params, "seed": params["seed"] + index}
            if latent.source is not None:
                src = latent.source[index % len(latent.source)]
                out.append(render.img2img(src, {**p, "denoise": denoise}, denoise))
            else:
                out.append(render.generate(p, latent.width, latent.height))
        # Each LoRA leaves a deterministic mark derived from its weights' hash and strength.
        for digest, strength in model.loras:
            out = [render.apply_lora(img, digest, strength) for img in out]
        # A prompt naming the stand-in's "unsafe" word draws the mark its classifier flags
        # (media/classifier.py), so the content-safety paths run without a real model.
        if STANDIN_UNSAFE_WORD in params["positive"]:
            out = [mark_unsafe(img) for img in out]
        return out

    images = await asyncio.to_thread(draw)
    return NodeOutput((Latent(latent.width, latent.height, latent.batch, images=images),))


async def vae_decode(ctx: RunContext, i: dict[str, Any]) -> NodeOutput:
    latent: Latent = i["samples"]
    if latent.images is not None:
        return NodeOutput((list(latent.images),))
    if latent.source is not None:
        return NodeOutput((list(latent.source),))
    # An empty latent decodes to a flat grey image, as a real VAE gives roughly.
    return NodeOutput(
        ([Image.new("RGB", (latent.width, latent.height), (128, 128, 128))] * latent.batch,)
    )


async def vae_encode(ctx: RunContext, i: dict[str, Any]) -> NodeOutput:
    images: list[Image.Image] = i["pixels"]
    cropped = [render.crop_to_multiple_of_8(img.convert("RGB")) for img in images]
    w, h = cropped[0].size
    return NodeOutput((Latent(w, h, len(cropped), source=cropped),))


def _compute_vars(prefix: str, width: int, height: int) -> str:
    now = time.localtime()
    for key, value in (
        ("%width%", str(width)),
        ("%height%", str(height)),
        ("%year%", str(now.tm_year)),
        ("%month%", f"{now.tm_mon:02}"),
        ("%day%", f"{now.tm_mday:02}"),
        ("%hour%", f"{now.tm_hour:02}"),
        ("%minute%", f"{now.tm_min:02}"),
        ("%second%", f"{now.tm_sec:02}"),
    ):
        prefix = prefix.replace(key, value)
    return prefix


def _save_images(
    ctx: RunContext, images: list[Image.Image], prefix: str, base: Path, kind: str
) -> dict[str, Any]:
    """folder_paths.get_save_image_path + SaveImage: counter = highest existing + 1."""
    prefix = _compute_vars(prefix, images[0].width, images[0].height)
    norm = os.path.normpath(prefix)
    subfolder, filename = os.path.dirname(norm), os.path.basename(norm)
    folder = base / subfolder
    if os.path.commonpath((str(base), str(folder.resolve()))) != str(base):
        raise NodeFailure(
            "**** ERROR: Saving image outside the output folder is not allowed."
            f"\n full_output_folder: {folder.resolve()}\n         output_dir: {base}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    counter = 1
    for existing in os.listdir(folder):
        head = existing[: len(filename) + 1]
        if os.path.normcase(head[:-1]) == os.path.normcase(filename) and head[-1:] == "_":
            try:
                digits = int(existing[len(filename) + 1 :].split("_")[0])
            except ValueError:
                digits = 0
            counter = max(counter, digits + 1)
    text = {"prompt": json.dumps(ctx.prompt)}
    for key, value in (ctx.extra_data.get("extra_pnginfo") or {}).items():
        text[str(key)] = json.dumps(value)
    results = []
    for batch_number, img in enumerate(images):
        name = f"{filename.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
        render.save_png(img, folder / name, text)
        results.append({"filename": name, "subfolder": subfolder, "type": kind})
        counter += 1
    return {"images": results}


async def save_image(ctx: RunContext, i: dict[str, Any]) -> NodeOutput:
    prefix = str(i.get("filename_prefix", "ComfyUI"))
    base = ctx.folders.output
    ui = await asyncio.to_thread(_save_images, ctx, i["images"], prefix, base, "output")
    return NodeOutput((), ui)


async def preview_image(ctx: RunContext, i: dict[str, Any]) -> NodeOutput:
    prefix = ctx.preview_prefix()
    ui = await asyncio.to_thread(_save_images, ctx, i["images"], prefix, ctx.folders.temp, "temp")
    return NodeOutput((), ui)


async def load_image(ctx: RunContext, i: dict[str, Any]) -> NodeOutput:
    path = ctx.folders.annotated(str(i["image"]))
    img, mask = await asyncio.to_thread(render.load_image, path)
    return NodeOutput(([img], [mask]))


async def image_scale(ctx: RunContext, i: dict[str, Any]) -> NodeOutput:
    def work() -> list[Image.Image]:
        return [
            render.image_scale(
                img, i["upscale_method"], int(i["width"]), int(i["height"]), i["crop"]
            )
            for img in i["image"]
        ]

    return NodeOutput((await asyncio.to_thread(work),))


async def image_scale_by(ctx: RunContext, i: dict[str, Any]) -> NodeOutput:
    scale = float(i["scale_by"])

    def work() -> list[Image.Image]:
        return [
            render.resize(img, round(img.width * scale), round(img.height * scale),
                          i["upscale_method"])
            for img in i["image"]
        ]  # fmt: skip

    return NodeOutput((await asyncio.to_thread(work),))


async def image_scale_to_total_pixels(ctx: RunContext, i: dict[str, Any]) -> NodeOutput:
    """ComfyUI's rule: scale both sides by sqrt(megapixels * 1024² / (w * h)), rounded."""
    total = int(float(i["megapixels"]) * 1024 * 1024)

    def work() -> list[Image.Image]:
        out = []
        for img in i["image"]:
            scale = math.sqrt(total / (img.width * img.height))
            size = round(img.width * scale), round(img.height * scale)
            out.append(render.resize(img, *size, i["upscale_method"]))
        return out

    return NodeOutput((await asyncio.to_thread(work),))


async def lora_loader(ctx: RunContext, i: dict[str, Any]) -> NodeOutput:
    name = i["lora_name"]
    path = ctx.folders.model_path("loras", name)
    if path is None:
        raise FileNotFoundError(f"Model in folder 'loras' with filename '{name}' not found.")
    digest = await asyncio.to_thread(_file_sha256, path)
    model: ModelRef = i["model"]
    clip: ModelRef = i["clip"]
    return NodeOutput(
        (
            ModelRef(model.kind, model.ckpt, (*model.loras, (digest, float(i["strength_model"])))),
            ModelRef(clip.kind, clip.ckpt, (*clip.loras, (digest, float(i["strength_clip"])))),
        )
    )


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---- LoRA training (docs/comfyui-protocol.md §8.1, §8.5) -----------------------------------

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
LORA_MODULES = ("input_blocks.4.1.proj_in", "middle_block.1.proj_in", "output_blocks.3.1.proj_out")


@dataclass(frozen=True)
class TrainingData:
    """LATENT list / CONDITIONING list of MakeTrainingDataset: what decides the weights."""

    signature: str
    count: int


@dataclass(frozen=True)
class LoraWeights:
    """LORA_MODEL: small tensors `diffusion_model.<module>.lora_up/.lora_down/.alpha`."""

    tensors: dict[str, tuple[str, list[int], bytes]]
    steps: int
    digest: str


async def load_dataset_folder(ctx: RunContext, i: dict[str, Any]) -> NodeOutput:
    folder = ctx.folders.input / str(i["folder"])
    if not folder.is_dir():
        raise FileNotFoundError(f"Folder not found: {folder}")

    def read() -> tuple[list[Image.Image], list[str]]:
        images: list[Image.Image] = []
        texts: list[str] = []
        repeat = 1
        m = re.match(r"^(\d+)_", folder.name)
        if m:
            repeat = max(1, int(m.group(1)))
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            with Image.open(path) as im:
                img = im.convert("RGB")
            txt = path.with_suffix(".txt")
            caption = txt.read_text(encoding="utf-8").strip() if txt.is_file() else ""
            for _ in range(repeat):
                images.append(img)
                texts.append(caption)
        if not images:
            raise ValueError(f"No images found in {folder}")
        return images, texts

    images, texts = await asyncio.to_thread(read)
    return NodeOutput((images, texts))


async def make_training_dataset(ctx: RunContext, i: dict[str, Any]) -> NodeOutput:
    images: list[Image.Image] = i["images"]
    texts: list[str] = list(i.get("texts") or [""] * len(images))

    def sign() -> str:
        h = hashlib.sha256()
        for n, img in enumerate(images):
            h.update(img.tobytes())
            h.update(texts[n % len(texts)].encode() if texts else b"")
        return h.hexdigest()

    signature = await asyncio.to_thread(sign)
    data = TrainingData(signature, len(images))
    return NodeOutput((data, data))


async def image_batch(ctx: RunContext, i: dict[str, Any]) -> NodeOutput:
    """ImageBatch: image2 resized to image1's size (Lanczos, as ComfyUI's common_upscale)."""
    first: list[Image.Image] = i["image1"]
    second: list[Image.Image] = i["image2"]
    w, h = first[0].size

    def work() -> list[Image.Image]:
        return [*first, *(im if im.size == (w, h) else im.resize((w, h)) for im in second)]

    return NodeOutput((await asyncio.to_thread(work),))


def _latent_training_data(latent: Latent, positive: Any) -> TrainingData:
    """0.3.64's TrainLoraNode input: VAEEncode's LATENT and one CONDITIONING for every image."""
    h = hashlib.sha256()
    for img in latent.source or []:
        h.update(img.tobytes())
    h.update(str(getattr(positive, "text", positive)).encode())
    return TrainingData(h.hexdigest(), latent.batch)


async def train_lora(ctx: RunContext, i: dict[str, Any]) -> NodeOutput:
    latents: TrainingData = i["latents"]
    if isinstance(latents, Latent):
        latents = await asyncio.to_thread(_latent_training_data, latents, i.get("positive"))
    steps = int(i["steps"])
    rank = int(i["rank"])
    micro = steps * int(i.get("grad_accumulation_steps", 1))
    existing = str(i.get("existing_lora", "[None]"))
    base_steps = 0
    base_digest = ""
    if existing != "[None]":
        path = ctx.folders.model_path("loras", existing)
        if path is None:
            raise FileNotFoundError(f"LoRA file not found: {existing}")
        base_digest = await asyncio.to_thread(_file_sha256, path)
        m = re.search(r"_(\d+)_steps_", existing)
        base_steps = int(m.group(1)) if m else 0
    losses: list[float] = []
    rng = random.Random(f"{latents.signature}:{i.get('seed', 0)}:{base_steps}")
    for step in range(micro):
        await ctx.train_step_wait()
        losses.append(0.05 + 0.2 * math.exp(-(base_steps + step) / 400) + rng.random() * 0.01)
        await ctx.progress(step + 1, micro)
    total = base_steps + steps
    key = json.dumps(
        [base_digest, latents.signature, steps, rank, float(i["learning_rate"]), i.get("seed")]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()
    wrng = random.Random(digest)
    tensors: dict[str, tuple[str, list[int], bytes]] = {}
    for module in LORA_MODULES:
        base = f"diffusion_model.{module}"
        down = [wrng.uniform(-0.05, 0.05) for _ in range(rank * 8)]
        up = [wrng.uniform(-0.05, 0.05) for _ in range(8 * rank)]
        tensors[f"{base}.lora_down.weight"] = (
            "F32",
            [rank, 8],
            struct.pack(f"<{len(down)}f", *down),
        )
        tensors[f"{base}.lora_up.weight"] = ("F32", [8, rank], struct.pack(f"<{len(up)}f", *up))
        tensors[f"{base}.alpha"] = ("F32", [], struct.pack("<f", float(rank)))
    weights = LoraWeights(tensors, total, digest)
    if legacy_train_outputs():
        return NodeOutput((i["model"], weights, losses, total))
    return NodeOutput((weights, losses, total))


def _lora_counter(folder: Path, filename: str) -> int:
    """ComfyUI's counter for SaveLoRA: parsed from the first number after `<filename>_`.

    With the step count in the name that number is the step count (the quirk of §8.1), so
    `x_300_steps_00001_` makes the next save of prefix `x` use counter 301.
    """
    counter = 1
    if folder.is_dir():
        for existing in os.listdir(folder):
            head = existing[: len(filename) + 1]
            if os.path.normcase(head[:-1]) == os.path.normcase(filename) and head[-1:] == "_":
                try:
                    digits = int(existing[len(filename) + 1 :].split("_")[0])
                except ValueError:
                    digits = 0
                counter = max(counter, digits + 1)
    return counter


async def save_lora(ctx: RunContext, i: dict[str, Any]) -> NodeOutput:
    lora: LoraWeights = i["lora"]
    prefix = str(i.get("prefix", "loras/ComfyUI_trained_lora"))
    steps = i.get("steps")
    base = ctx.folders.output

    def write() -> None:
        norm = os.path.normpath(prefix)
        folder = base / os.path.dirname(norm)
        filename = os.path.basename(norm)
        if os.path.commonpath((str(base), str(folder.resolve()))) != str(base):
            raise NodeFailure("Saving LoRA outside the output folder is not allowed.")
        counter = _lora_counter(folder, filename)
        if steps is None:
            name = f"{filename}_{counter:05}_.safetensors"
        else:
            name = f"{filename}_{int(steps)}_steps_{counter:05}_.safetensors"
        meta = {"standin": "lora", "steps": str(lora.steps), "digest": lora.digest}
        write_safetensors(folder / name, lora.tensors, meta)

    await asyncio.to_thread(write)
    return NodeOutput(())


async def lora_model_loader(ctx: RunContext, i: dict[str, Any]) -> NodeOutput:
    model: ModelRef = i["model"]
    lora: LoraWeights = i["lora"]
    strength = float(i["strength_model"])
    return NodeOutput((ModelRef(model.kind, model.ckpt, (*model.loras, (lora.digest, strength))),))


async def loss_graph(ctx: RunContext, i: dict[str, Any]) -> NodeOutput:
    losses: list[float] = list(i["loss"] or [0.0])
    if max(losses) == min(losses):
        # ComfyUI scales each loss by (max - min): one step (or equal losses) fails the prompt
        # after SaveLoRANode ran, on 0.3.64 and later cores alike (docs/real-comfyui.md).
        raise ZeroDivisionError("float division by zero")
    prefix = str(i.get("filename_prefix", "loss_graph"))
    img = await asyncio.to_thread(render.loss_plot, losses)
    ui = await asyncio.to_thread(_save_images, ctx, [img], prefix, ctx.folders.temp, "temp")
    return NodeOutput((), ui)


async def upscale_model_loader(ctx: RunContext, i: dict[str, Any]) -> NodeOutput:
    name = i["model_name"]
    path = ctx.folders.model_path("upscale_models", name)
    if path is None:
        raise FileNotFoundError(
            f"Model in folder 'upscale_models' with filename '{name}' not found."
        )
    meta = await asyncio.to_thread(read_safetensors_metadata, path)
    try:
        scale = float(meta["scale"])
    except (KeyError, ValueError):
        raise NodeFailure(f"Unsupported model type: {name} has no scale in its metadata") from None
    return NodeOutput((UpscaleModel(name, scale),))


async def image_upscale_with_model(ctx: RunContext, i: dict[str, Any]) -> NodeOutput:
    model: UpscaleModel = i["upscale_model"]
    images: list[Image.Image] = i["image"]
    total = sum(render.upscale_tiles(img.width, img.height) for img in images)
    done = 0
    out = []
    for img in images:
        out.append(await asyncio.to_thread(render.upscale, img, model.scale))
        for _ in range(render.upscale_tiles(img.width, img.height)):
            done += 1
            await ctx.progress(done, total)
    return NodeOutput((out,))


async def load_bg_model(ctx: RunContext, i: dict[str, Any]) -> NodeOutput:
    name = i["bg_removal_name"]
    path = ctx.folders.model_path("background_removal", name)
    if path is None:
        raise FileNotFoundError(
            f"Model in folder 'background_removal' with filename '{name}' not found."
        )
    try:
        await asyncio.to_thread(read_safetensors_metadata, path)
    except ValueError:
        raise NodeFailure(
            "ERROR: background model file is invalid and does not contain a valid background "
            "removal model."
        ) from None
    return NodeOutput((BackgroundRemovalModel(name),))


async def remove_background(ctx: RunContext, i: dict[str, Any]) -> NodeOutput:
    masks = await asyncio.to_thread(lambda: [render.foreground_mask(img) for img in i["image"]])
    return NodeOutput((masks,))


async def invert_mask(ctx: RunContext, i: dict[str, Any]) -> NodeOutput:
    return NodeOutput(([render.invert_mask(m) for m in i["mask"]],))


async def join_image_with_alpha(ctx: RunContext, i: dict[str, Any]) -> NodeOutput:
    images: list[Image.Image] = i["image"]
    masks: list[Image.Image] = i["alpha"]

    def work() -> list[Image.Image]:
        return [render.join_alpha(img, masks[n % len(masks)]) for n, img in enumerate(images)]

    return NodeOutput((await asyncio.to_thread(work),))


async def preview_any(ctx: RunContext, i: dict[str, Any]) -> NodeOutput:
    source = i.get("source")
    value = "None"
    if isinstance(source, str):
        value = source
    elif isinstance(source, int | float | bool):
        value = str(source)
    elif source is not None:
        try:
            value = json.dumps(source)
        except (TypeError, ValueError):
            value = str(source)
    return NodeOutput((), {"text": [value]})


async def load_florence2(ctx: RunContext, i: dict[str, Any]) -> NodeOutput:
    return NodeOutput(({"model": i["model"], "dtype": i["precision"]},))


async def florence2_run(ctx: RunContext, i: dict[str, Any]) -> NodeOutput:
    images: list[Image.Image] = i["image"]
    captions = await asyncio.to_thread(lambda: [render.caption(img) for img in images])
    masks = [Image.new("L", img.size, 0) for img in images]
    text = captions[0] if len(captions) == 1 else "\n".join(captions)
    return NodeOutput((images, masks, text, [{"caption": c} for c in captions]))


HANDLERS: dict[str, Handler] = {
    "CheckpointLoaderSimple": checkpoint_loader,
    "CLIPTextEncode": clip_text_encode,
    "EmptyLatentImage": empty_latent,
    "KSampler": ksampler,
    "VAEDecode": vae_decode,
    "VAEEncode": vae_encode,
    "ImageBatch": image_batch,
    "SaveImage": save_image,
    "PreviewImage": preview_image,
    "LoadImage": load_image,
    "ImageScale": image_scale,
    "ImageScaleBy": image_scale_by,
    "ImageScaleToTotalPixels": image_scale_to_total_pixels,
    "LoraLoader": lora_loader,
    "UpscaleModelLoader": upscale_model_loader,
    "ImageUpscaleWithModel": image_upscale_with_model,
    "LoadBackgroundRemovalModel": load_bg_model,
    "RemoveBackground": remove_background,
    "InvertMask": invert_mask,
    "JoinImageWithAlpha": join_image_with_alpha,
    "PreviewAny": preview_any,
    "DownloadAndLoadFlorence2Model": load_florence2,
    "Florence2Run": florence2_run,
    "LoadImageTextDataSetFromFolder": load_dataset_folder,
    "MakeTrainingDataset": make_training_dataset,
    "TrainLoraNode": train_lora,
    "SaveLoRA": save_lora,
    "SaveLoRANode": save_lora,  # 0.3.64 core's id of the same node
    "LoraModelLoader": lora_model_loader,
    "LossGraphNode": loss_graph,
}


def preview_letters(rng: random.Random | None = None) -> str:
    """PreviewImage's 5 random letters (drawn once per node object)."""
    r = rng or random.Random()
    return "".join(r.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
