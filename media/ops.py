"""The Pillow operations of the `media` queue: resize and convert, with validated parameters.

Parameters are validated twice on purpose: by prepare (`validate_*_params`, before anything is
charged; `resize_target` and `check_output_size` when the source's size is known) and again by
the operation itself, so a workflow started with bad parameters fails without retrying instead
of producing something the user did not ask for.

Every refusal is a `BadMediaParams` (a `UserInputError`) naming the field and the allowed range.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from PIL import Image

from domain.errors import FieldError, UserInputError
from media.safety import LoadedImage

MAX_SIDE: Final = 4096  # px: the largest side a resize may produce (docs/domain.md)
# An upscale runs on ComfyUI, whose ImageUpscaleWithModel works in 512 px tiles (32 px overlap,
# halving the tile on out-of-memory), so GPU memory does not bound the result; what does is the
# file: a phone photo (2560×1920, or 1280×960 at 4×) must fit, the PNG must stay under
# Telegram's 50 MB document limit and below the 40 MP the service decodes (media/safety.py), so
# the result can be the source of the next job.
UPSCALE_MAX_SIDE: Final = 8192
UPSCALE_MAX_PIXELS: Final = 20_000_000
RESIZE_MODES: Final = ("fit", "fill", "exact")
FORMATS: Final = ("png", "jpeg", "webp")
CONTENT_TYPES: Final = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
EXTENSIONS: Final = {"png": "png", "jpeg": "jpg", "webp": "webp"}
# What the encoders can write at all (libwebp: 16383; JPEG: 65535 a side).
ENCODER_MAX_SIDE: Final = {"webp": 16383, "jpeg": 65535}


def upscale_input_size(width: int, height: int, scale: int) -> tuple[int, int]:
    """The size the upscale model is fed so its result fits the caps: the source's own size
    when `scale` times it fits, else the source reduced (keeping its aspect) until it does —
    a 4032×3024 camera photo at 2× is first reduced to 2581×1936, giving 5162×3872."""
    factor = min(
        1.0,
        UPSCALE_MAX_SIDE / (max(width, height) * scale),
        (UPSCALE_MAX_PIXELS / (width * height * scale * scale)) ** 0.5,
    )
    if factor >= 1.0:
        return width, height
    w, h = max(1, int(width * factor)), max(1, int(height * factor))
    while w * h * scale * scale > UPSCALE_MAX_PIXELS or max(w, h) * scale > UPSCALE_MAX_SIDE:
        w, h = max(1, w - 1), max(1, h - 1)  # float rounding left it a pixel over: rarely
    return w, h


ResizeMode = Literal["fit", "fill", "exact"]
OutputFormat = Literal["png", "jpeg", "webp"]

_HEX = re.compile(r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")


class BadMediaParams(UserInputError):
    """Parameters of a media operation outside what it accepts; names each field at fault."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


@dataclass(frozen=True)
class Rendered:
    """The encoded result of one operation."""

    data: bytes
    content_type: str
    extension: str
    width: int
    height: int


# ---- validation ----------------------------------------------------------------------------


def validate_resize_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """`{"width", "height", "mode"}` checked and normalised (mode defaults to fit).

    fit needs at least one side (the other follows the aspect ratio); fill and exact need both.
    Each side is a whole number of pixels from 1 to 4096.
    """
    errors = _unknown(params, ("width", "height", "mode"))
    width = _side(params.get("width"), "width", errors)
    height = _side(params.get("height"), "height", errors)
    given_w, given_h = params.get("width") is not None, params.get("height") is not None
    mode = params.get("mode")
    if mode is None:
        mode = "fit"
    if not isinstance(mode, str) or mode.strip().lower() not in RESIZE_MODES:
        errors.append(FieldError("mode", f"must be one of {', '.join(RESIZE_MODES)}; got {mode!r}"))
    else:
        mode = mode.strip().lower()
        if not given_w and not given_h:
            errors.append(FieldError("width", f"give width and/or height (1 to {MAX_SIDE} px)"))
        elif mode in ("fill", "exact") and not (given_w and given_h):
            missing = "height" if given_w else "width"
            errors.append(FieldError(missing, f"mode {mode} needs both width and height"))
    if errors:
        raise BadMediaParams(errors)
    return {"width": width, "height": height, "mode": mode}


def validate_convert_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """`{"format", "quality", "lossless", "background"}` checked and normalised.

    format: png, jpeg (alias jpg) or webp; quality: 1 to 100 (default 90; used by jpeg and
    lossy webp); lossless: webp only; background: "#rrggbb" or "#rgb", the colour transparent
    pixels are flattened onto for jpeg (default white).
    """
    errors = _unknown(params, ("format", "quality", "lossless", "background"))
    fmt = params.get("format")
    if isinstance(fmt, str) and fmt.strip().lower() in ("jpg", *FORMATS):
        fmt = fmt.strip().lower().replace("jpg", "jpeg")
    else:
        errors.append(FieldError("format", f"must be one of {', '.join(FORMATS)}; got {fmt!r}"))
        fmt = None
    quality = params.get("quality", 90)
    if quality is None:
        quality = 90
    if isinstance(quality, str) and quality.strip().isdigit():
        quality = int(quality)
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        errors.append(
            FieldError("quality", f"must be a whole number from 1 to 100; got {quality!r}")
        )
    lossless = params.get("lossless", False)
    if lossless is None:
        lossless = False
    if not isinstance(lossless, bool):
        errors.append(FieldError("lossless", f"must be true or false; got {lossless!r}"))
    elif lossless and fmt is not None and fmt != "webp":
        errors.append(FieldError("lossless", f"only webp has a lossless mode, not {fmt}"))
    background = params.get("background", "#ffffff")
    if background is None:
        background = "#ffffff"
    if not isinstance(background, str) or not _HEX.match(background.strip()):
        errors.append(
            FieldError("background", f"must be a colour like #ffffff or #fff; got {background!r}")
        )
    else:
        background = _normalise_hex(background)
    if errors:
        raise BadMediaParams(errors)
    return {"format": fmt, "quality": quality, "lossless": lossless, "background": background}


def resize_target(
    src_width: int, src_height: int, *, width: int | None, height: int | None, mode: str
) -> tuple[int, int]:
    """The size `resize` will produce from a `src_width`×`src_height` image.

    Raises `BadMediaParams` when fit with one side given would make the other side larger than
    4096 px; prepare calls this with the source's size so that happens before charging.
    """
    p = validate_resize_params({"width": width, "height": height, "mode": mode})
    w, h, m = p["width"], p["height"], p["mode"]
    if m in ("fill", "exact"):
        return w, h
    if w is not None and h is not None:
        scale = min(w / src_width, h / src_height)
        return (
            min(w, max(1, round(src_width * scale))),
            min(h, max(1, round(src_height * scale))),
        )
    if w is not None:
        other = max(1, round(src_height * w / src_width))
        if other > MAX_SIDE:
            raise BadMediaParams(
                [
                    FieldError(
                        "width",
                        f"{src_width}×{src_height} resized to width {w} keeping its aspect "
                        f"would be {other} px high; the limit is {MAX_SIDE} px a side",
                    )
                ]
            )
        return w, other
    other = max(1, round(src_width * h / src_height))
    if other > MAX_SIDE:
        raise BadMediaParams(
            [
                FieldError(
                    "height",
                    f"{src_width}×{src_height} resized to height {h} keeping its aspect "
                    f"would be {other} px wide; the limit is {MAX_SIDE} px a side",
                )
            ]
        )
    return other, h


def check_output_size(width: int, height: int, params: Mapping[str, Any]) -> None:
    """Refuse a conversion the encoder cannot write (WebP: 16383 px a side)."""
    fmt = validate_convert_params(params)["format"]
    cap = ENCODER_MAX_SIDE.get(fmt)
    if cap is not None and max(width, height) > cap:
        raise BadMediaParams(
            [
                FieldError(
                    "format",
                    f"{fmt} images are at most {cap} px a side; this one is {width}×{height}",
                )
            ]
        )


# ---- operations ----------------------------------------------------------------------------


def resize(
    image: Image.Image, *, width: int | None, height: int | None, mode: str = "fit"
) -> Image.Image:
    """Resize with Lanczos: fit = inside the box keeping the aspect ratio (one side given: the
    other follows it); fill = cover the box and centre-crop to exactly it; exact = stretch.

    Images with alpha are resized premultiplied (RGBa), so transparent pixels' colours do not
    bleed dark fringes into the edges.
    """
    tw, th = resize_target(image.width, image.height, width=width, height=height, mode=mode)
    box: tuple[float, float, float, float] = (0.0, 0.0, float(image.width), float(image.height))
    if mode.lower() == "fill":
        target_aspect = tw / th
        if image.width / image.height > target_aspect:  # too wide: crop the sides
            crop_w = image.height * target_aspect
            left = (image.width - crop_w) / 2
            box = (left, 0.0, left + crop_w, float(image.height))
        else:  # too tall: crop top and bottom
            crop_h = image.width / target_aspect
            top = (image.height - crop_h) / 2
            box = (0.0, top, float(image.width), top + crop_h)
    premultiplied = {"RGBA": "RGBa", "LA": "La"}.get(image.mode)
    src = image.convert(premultiplied) if premultiplied else image
    out = src.resize((tw, th), Image.Resampling.LANCZOS, box=box)
    if premultiplied:
        out = out.convert(image.mode)
    out.info = dict(image.info)
    return out


def convert(
    image: Image.Image,
    *,
    format: str,
    quality: int = 90,
    lossless: bool = False,
    background: str = "#ffffff",
) -> tuple[bytes, str]:
    """Encode as png, jpeg or webp; returns (bytes, content type).

    JPEG has no alpha, so transparent pixels are composited onto `background`; PNG and WebP
    keep alpha. Lossless WebP keeps the colour of fully transparent pixels too (`exact`), so
    it round-trips bit for bit.
    """
    p = validate_convert_params(
        {"format": format, "quality": quality, "lossless": lossless, "background": background}
    )
    check_output_size(image.width, image.height, p)
    fmt: str = p["format"]
    im = image
    if im.mode not in ("RGB", "RGBA"):
        im = im.convert("RGBA" if im.has_transparency_data else "RGB")
    icc = image.info.get("icc_profile")
    extra: dict[str, Any] = {"icc_profile": icc} if icc else {}
    buf = io.BytesIO()
    if fmt == "jpeg":
        if im.mode == "RGBA":
            flat = Image.new("RGBA", im.size, (*_rgb(p["background"]), 255))
            flat.alpha_composite(im)
            im = flat.convert("RGB")
        im.save(buf, "JPEG", quality=p["quality"], **extra)
    elif fmt == "webp":
        if p["lossless"]:
            im.save(buf, "WEBP", lossless=True, exact=True, quality=p["quality"], **extra)
        else:
            im.save(buf, "WEBP", quality=p["quality"], **extra)
    else:
        im.save(buf, "PNG", compress_level=6, **extra)
    return buf.getvalue(), CONTENT_TYPES[fmt]


def run_operation(loaded: LoadedImage, op: str, params: Mapping[str, Any]) -> Rendered:
    """One `MediaWork`: "resize" (result as PNG, alpha kept) or "convert"."""
    if op == "resize":
        p = validate_resize_params(params)
        out = resize(loaded.image, width=p["width"], height=p["height"], mode=p["mode"])
        data, ctype = convert(out, format="png")
        return Rendered(data, ctype, "png", out.width, out.height)
    if op == "convert":
        p = validate_convert_params(params)
        data, ctype = convert(loaded.image, **p)
        return Rendered(data, ctype, EXTENSIONS[p["format"]], loaded.width, loaded.height)
    raise UserInputError(f"unknown media operation {op!r} (resize or convert)")


# ---- helpers -------------------------------------------------------------------------------


def _unknown(params: Mapping[str, Any], known: tuple[str, ...]) -> list[FieldError]:
    extra = sorted(set(params) - set(known))
    return [FieldError(k, f"unknown parameter (accepted: {', '.join(known)})") for k in extra]


def _side(value: Any, field: str, errors: list[FieldError]) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIDE:
        errors.append(
            FieldError(
                field, f"must be a whole number of pixels from 1 to {MAX_SIDE}; got {value!r}"
            )
        )
        return None
    return value


def _normalise_hex(colour: str) -> str:
    digits = colour.strip().lstrip("#").lower()
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    return f"#{digits}"


def _rgb(colour: str) -> tuple[int, int, int]:
    digits = _normalise_hex(colour)[1:]
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)
