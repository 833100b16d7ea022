"""Deterministic Pillow "rendering" for the stand-in's nodes (run in a worker thread).

Nothing here is a model: images are drawn from a hash of the inputs, so the same seed, prompt,
size and settings always give the same pixels, and any change gives different ones. Background
removal, alpha joining, scaling and captioning are real pixel operations on their inputs, so
tests can check sizes, alpha channels and captions against the images they submitted.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any, cast

from PIL import Image, ImageChops, ImageDraw, ImageFilter, PngImagePlugin

_RESAMPLE = {
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def _digest(params: dict[str, Any]) -> bytes:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).digest()


def generate(params: dict[str, Any], width: int, height: int) -> Image.Image:
    """An RGB image determined entirely by `params` and the size.

    A flat border colour (so background removal has something to find), a soft noise field
    and a few shapes in the middle.
    """
    rng = random.Random(_digest({**params, "w": width, "h": height}))
    bg = tuple(rng.randrange(30, 226) for _ in range(3))
    img = Image.new("RGB", (width, height), bg)
    # Low-resolution deterministic noise, blown up: texture without per-pixel Python loops.
    nw, nh = max(2, width // 32), max(2, height // 32)
    noise = Image.frombytes("RGB", (nw, nh), rng.randbytes(nw * nh * 3))
    noise = noise.resize((width, height), Image.Resampling.BILINEAR)
    inner = Image.blend(img, noise, 0.18)
    margin_x, margin_y = max(1, width // 8), max(1, height // 8)
    box = (margin_x, margin_y, width - margin_x, height - margin_y)
    if box[2] > box[0] and box[3] > box[1]:
        img.paste(inner.crop(box), box[:2])
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(3, 7)):
        x0 = rng.randint(margin_x, max(margin_x, width - margin_x - 1))
        y0 = rng.randint(margin_y, max(margin_y, height - margin_y - 1))
        x1 = min(width - margin_x, x0 + rng.randint(width // 10 + 1, width // 3 + 2))
        y1 = min(height - margin_y, y0 + rng.randint(height // 10 + 1, height // 3 + 2))
        fill = tuple(rng.randrange(256) for _ in range(3))
        if x1 <= x0 or y1 <= y0:
            continue
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=fill)
    return img


def img2img(source: Image.Image, params: dict[str, Any], denoise: float) -> Image.Image:
    """Blend the source towards a generated image by `denoise` (0 keeps the source)."""
    base = source.convert("RGB")
    fresh = generate(params, base.width, base.height)
    return Image.blend(base, fresh, max(0.0, min(1.0, denoise)))


def crop_to_multiple_of_8(img: Image.Image) -> Image.Image:
    """What VAE encoding keeps of an image: width and height floored to multiples of 8."""
    w, h = max(8, img.width // 8 * 8), max(8, img.height // 8 * 8)
    return img if (w, h) == img.size else img.crop((0, 0, w, h))


def resize(img: Image.Image, width: int, height: int, method: str) -> Image.Image:
    return img.resize(
        (max(1, width), max(1, height)), _RESAMPLE.get(method, Image.Resampling.BICUBIC)
    )


def image_scale(img: Image.Image, method: str, width: int, height: int, crop: str) -> Image.Image:
    """ImageScale: 0 for one side keeps the aspect ratio; `center` crops before resizing."""
    if width == 0 and height == 0:
        return img
    if width == 0:
        width = max(1, round(img.width * height / img.height))
    elif height == 0:
        height = max(1, round(img.height * width / img.width))
    if crop == "center":
        old_aspect = img.width / img.height
        new_aspect = width / height
        x = y = 0
        if old_aspect > new_aspect:
            x = round((img.width - img.width * (new_aspect / old_aspect)) / 2)
        elif old_aspect < new_aspect:
            y = round((img.height - img.height * (old_aspect / new_aspect)) / 2)
        img = img.crop((x, y, img.width - x, img.height - y))
    return resize(img, width, height, method)


def upscale(img: Image.Image, scale: float) -> Image.Image:
    """ImageUpscaleWithModel: exactly round(W*s) x round(H*s); an alpha channel is kept."""
    return img.resize(
        (max(1, round(img.width * scale)), max(1, round(img.height * scale))),
        Image.Resampling.LANCZOS,
    )


def upscale_tiles(width: int, height: int, tile: int = 512, overlap: int = 32) -> int:
    """How many tiles the real node computes (its progress max per image)."""
    step = tile - overlap

    def count(n: int) -> int:
        return max(1, -(-(n - overlap) // step)) if n > tile else 1

    return count(width) * count(height)


def foreground_mask(img: Image.Image) -> Image.Image:
    """An "L" mask, 255 = foreground: colour distance to the median border colour."""
    rgb = img.convert("RGB")
    w, h = rgb.size
    border = [rgb.getpixel((x, 0)) for x in range(0, w, max(1, w // 16))]
    border += [rgb.getpixel((x, h - 1)) for x in range(0, w, max(1, w // 16))]
    border += [rgb.getpixel((0, y)) for y in range(0, h, max(1, h // 16))]
    border += [rgb.getpixel((w - 1, y)) for y in range(0, h, max(1, h // 16))]
    channels = list(zip(*border, strict=True))
    colour = tuple(sorted(c)[len(c) // 2] for c in channels)
    diff = ImageChops.difference(rgb, Image.new("RGB", rgb.size, colour))
    r, g, b = diff.split()
    dist = ImageChops.lighter(ImageChops.lighter(r, g), b)
    mask = dist.point(lambda v: 255 if v > 24 else 0)
    return mask.filter(ImageFilter.MedianFilter(3)) if min(w, h) >= 3 else mask


def invert_mask(mask: Image.Image) -> Image.Image:
    return ImageChops.invert(mask.convert("L"))


def join_alpha(img: Image.Image, mask: Image.Image) -> Image.Image:
    """JoinImageWithAlpha: alpha = 1 - mask (a mask of 0 is opaque)."""
    alpha = ImageChops.invert(mask.convert("L"))
    if alpha.size != img.size:
        alpha = alpha.resize(img.size, Image.Resampling.BILINEAR)
    out = img.convert("RGB").convert("RGBA")
    out.putalpha(alpha)
    return out


def caption(img: Image.Image) -> str:
    """A deterministic caption: the dominant colours and a short hash of the pixels."""
    rgb = img.convert("RGB")
    small = rgb.resize((64, 64), Image.Resampling.BOX)
    quant = small.quantize(colors=3, method=Image.Quantize.MEDIANCUT)
    palette = quant.getpalette() or []
    counts = sorted(quant.getcolors() or [], reverse=True)
    names = []
    for _count, index in counts[:3]:
        start = cast(int, index) * 3
        r, g, b = palette[start : start + 3]
        names.append(_colour_name(r, g, b))
    unique = list(dict.fromkeys(names))
    digest = hashlib.sha256(rgb.tobytes()).hexdigest()[:8]
    return (
        f"A {rgb.width}x{rgb.height} image dominated by {', '.join(unique)} tones, "
        f"with soft shapes on a plain background (standin-{digest})"
    )


def _colour_name(r: int, g: int, b: int) -> str:
    hi, lo = max(r, g, b), min(r, g, b)
    if hi - lo < 24:
        return "white" if hi > 200 else "black" if hi < 55 else "grey"
    if r == hi:
        return "yellow" if g > 0.75 * r else "magenta" if b > 0.75 * r else "red"
    if g == hi:
        return "cyan" if b > 0.75 * g else "yellow" if r > 0.75 * g else "green"
    return "magenta" if r > 0.75 * b else "cyan" if g > 0.75 * b else "blue"


def save_png(img: Image.Image, path: Path, text: dict[str, str] | None = None) -> None:
    """Save as PNG (RGBA when the image has alpha) with optional text chunks."""
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG", pnginfo=info, compress_level=4)


def load_image(path: Path) -> tuple[Image.Image, Image.Image]:
    """LoadImage: the RGB image and its MASK (1 - alpha, all zero without alpha)."""
    with Image.open(path) as raw:
        raw.load()
        img = (
            raw.convert("RGBA") if "A" in raw.getbands() or raw.mode == "P" else raw.convert("RGB")
        )
    if img.mode == "RGBA":
        mask = ImageChops.invert(img.getchannel("A"))
        return img.convert("RGB"), mask
    return img, Image.new("L", img.size, 0)


def default_input_image() -> Image.Image:
    """`input/example.png`, the default image of the bundled templates."""
    return generate({"standin": "example.png"}, 512, 512)


def apply_lora(img: Image.Image, digest: str, strength: float) -> Image.Image:
    """The visible, deterministic mark of a LoRA: diagonal bands in a colour taken from the
    LoRA file's hash, blended with an opacity that grows with the strength (0 = no change)."""
    alpha = max(0.0, min(0.85, abs(strength) * 0.5))
    if alpha == 0.0:
        return img
    raw = bytes.fromhex(digest[:16].ljust(16, "0"))
    colour = (
        (raw[0], raw[1], raw[2]) if strength > 0 else (255 - raw[0], 255 - raw[1], 255 - raw[2])
    )
    period = 8 + raw[3] % 24
    offset = raw[4] % period
    overlay = img.convert("RGB").copy()
    draw = ImageDraw.Draw(overlay)
    w, h = overlay.size
    for x in range(-h + offset, w, period):
        draw.line((x, 0, x + h, h), fill=colour, width=max(1, period // 2))
    return Image.blend(img.convert("RGB"), overlay, alpha)


def loss_plot(losses: list[float]) -> Image.Image:
    """A small line plot of the loss per step (LossGraphNode's preview)."""
    w, h = 256, 128
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    hi, lo = max(losses), min(losses)
    span = (hi - lo) or 1.0
    n = max(1, len(losses) - 1)
    points = [
        (int(k * (w - 1) / n), int((h - 1) * (1 - (v - lo) / span))) for k, v in enumerate(losses)
    ]
    if len(points) > 1:
        draw.line(points, fill=(200, 30, 30), width=1)
    return img
