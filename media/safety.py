"""Accepting an image from a user: the ONE gate every entry point (CLI, bot, web, prepare, the
`media` worker) passes bytes through before anything is charged or processed.

What it guarantees, in the order the checks run (each refusal is a `BadImage` naming the limit):

1. Size: at most `ImageLimits.max_bytes` (20 MB), refused before Pillow sees a byte.
2. Content, not names: the bytes are sniffed by Pillow with only the accepted decoders enabled
   (PNG, JPEG, WEBP, GIF, BMP, TIFF); a file name or declared content type is never consulted,
   so a text file called `cat.png` is refused as "not an image".
3. Dimensions from the header, before any pixel is decoded: at most `max_pixels` (40 MP).
4. Decompression bombs: `Image.MAX_IMAGE_PIXELS` is set deliberately to `DECODE_CEILING`
   (= the 40 MP product limit) instead of Pillow's default of ~89 MP, and both Pillow verdicts
   become `BadImage`: `DecompressionBombError` (over twice the ceiling, raised inside Pillow)
   and `DecompressionBombWarning` (over the ceiling, recorded while the header is parsed).
5. Full decode inside a `try`: truncated or corrupt files are refused
   (`ImageFile.LOAD_TRUNCATED_IMAGES` is left at False: nothing half-decoded is accepted).
6. Multi-frame images (animated GIF/PNG/WebP, multi-page TIFF, MPO): the FIRST frame is used and
   the rest dropped; `LoadedImage.note` says so ("used the first of 12 frames").
7. EXIF orientation is applied (`ImageOps.exif_transpose`), so a phone photo comes out upright.
8. Colour modes become RGB, or RGBA whenever the source has any alpha (an alpha channel, a
   transparent palette entry, a tRNS colour key): CMYK (Pillow undoes Adobe's inverted CMYK
   JPEGs itself), YCbCr, LAB (through an sRGB transform), 16-bit (`I;16*`: scaled by 1/257,
   not clipped), 32-bit `I` and float `F` (scaled by their range), 1-bit, grayscale and
   palette images.

The normalised PNG (`normalised_png`) is what a job stores as its source: upright, RGB(A),
8 bits per channel, with the ICC profile of RGB sources kept and every other metadata (EXIF,
GPS, comments) dropped.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import threading
import warnings
from dataclasses import dataclass
from typing import Final

from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from domain.errors import UserInputError

log = logging.getLogger(__name__)

# Pillow's own decoder names. The JPEG decoder hands a camera's multi-picture JPEG over as "MPO".
ACCEPTED_FORMATS: Final = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
_FORMAT_ALIASES: Final = {"MPO": "JPEG"}

DECODE_CEILING: Final = 40_000_000
"""The value `Image.MAX_IMAGE_PIXELS` is set to: Pillow warns above it and raises above twice
it. It equals the product limit, so no limit in `ImageLimits` may exceed it."""

Image.MAX_IMAGE_PIXELS = DECODE_CEILING

MB: Final = 1024 * 1024

# `warnings.catch_warnings` swaps process-wide state: two threads inside it at once can leave
# the other's filters installed for good. Header parsing is quick, so it is serialised.
_HEADER_LOCK = threading.Lock()

_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")

# Formats Pillow could be asked to read but this service refuses, named for a helpful message.
_KNOWN_SIGNATURES: Final = (
    (b"8BPS", "a Photoshop PSD file"),
    (b"\x00\x00\x01\x00", "an ICO icon"),
    (b"\x00\x00\x02\x00", "a CUR cursor"),
    (b"%PDF", "a PDF document"),
    (b"qoif", "a QOI image"),
    (b"\xff\x0a", "a JPEG XL image"),
    (b"\x00\x00\x00\x0cJXL ", "a JPEG XL image"),
    (b"icns", "an ICNS icon"),
    (b"DDS ", "a DDS texture"),
)


class BadImage(UserInputError):
    """Bytes that are not an image this service accepts; the message names the limit."""

    code = "bad_image"


@dataclass(frozen=True)
class ImageLimits:
    """What an accepted image may be. Limits can be lowered (tests, a stricter entry point)
    but not raised above `DECODE_CEILING`, Pillow's bomb limit set by this module."""

    max_bytes: int = 20 * MB
    max_pixels: int = 40_000_000

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_pixels < 1:
            raise ValueError("image limits must be positive")
        if self.max_pixels > DECODE_CEILING:
            raise ValueError(
                f"max_pixels {self.max_pixels} is above the decode ceiling {DECODE_CEILING}"
            )


DEFAULT_LIMITS: Final = ImageLimits()


@dataclass(frozen=True)
class LoadedImage:
    """An accepted image, decoded, upright and in mode RGB or RGBA.

    Attributes:
        image: The pixels (mode "RGB", or "RGBA" when the source had any alpha).
        format: The source's format as sniffed by Pillow ("PNG", "JPEG", ...).
        width: Width of `image` (after EXIF orientation).
        height: Height of `image` (after EXIF orientation).
        frames: Frames or pages in the source; only the first is in `image`.
        original_mode: The source's Pillow mode ("CMYK", "I;16", "P", ...).
        has_alpha: True when `image` is RGBA.
        note: What was done to the source, for the user ("used the first of 12 frames; ...").
    """

    image: Image.Image
    format: str
    width: int
    height: int
    frames: int = 1
    original_mode: str = "RGB"
    has_alpha: bool = False
    note: str = ""


def load_image(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> LoadedImage:
    """Accept untrusted bytes as an image, or raise `BadImage` saying which limit was hit.

    Multi-frame images are accepted and reduced to their first frame (see the module
    docstring for every check and conversion).
    """
    size = len(data)
    if size == 0:
        raise BadImage("the file is empty")
    if size > limits.max_bytes:
        raise BadImage(
            f"the image is {_mb(size)} MB; the limit is {_mb_limit(limits.max_bytes)} MB"
        )

    im = _open_header(data, limits)
    try:
        fmt = _FORMAT_ALIASES.get(str(im.format), str(im.format))
        frames = _count_frames(im)
        original_mode = im.mode
        try:
            im.load()
        except Image.DecompressionBombError as err:
            raise _bomb(err, limits) from None
        except Exception as err:  # Pillow raises OSError, ValueError, SyntaxError, ...
            raise BadImage(_corrupt(fmt, err)) from None
        # A GIF frame may extend past the declared screen; Pillow grows the image to fit.
        _check_pixels(*im.size, limits)
        notes: list[str] = []
        if frames > 1:
            notes.append(f"used the first of {frames} frames")
        upright = _apply_orientation(im, notes)
        icc = im.info.get("icc_profile") if original_mode in ("RGB", "RGBA") else None
        out = _to_rgb(upright, notes)
    except BaseException:
        im.close()
        raise
    if out is not im:  # free the decoded source; otherwise `out` is it (the bytes are in memory)
        im.close()
    out.info = {"icc_profile": icc} if isinstance(icc, bytes) and icc else {}
    return LoadedImage(
        image=out,
        format=fmt,
        width=out.width,
        height=out.height,
        frames=frames,
        original_mode=original_mode,
        has_alpha=out.mode == "RGBA",
        note="; ".join(notes),
    )


def normalised_png(loaded: LoadedImage, limits: ImageLimits = DEFAULT_LIMITS) -> bytes:
    """The PNG a job stores as its source: upright RGB(A), ICC profile kept for RGB sources,
    all other metadata (EXIF, GPS, text chunks) dropped.

    The size limit applies to this PNG too, not only to the file as sent: a 13 MB JPEG can
    become a 113 MB PNG, and every job reads the stored PNG through `load_image` again (so a
    PNG over the limit could never be used, only stored).
    """
    buf = io.BytesIO()
    icc = loaded.image.info.get("icc_profile")
    if icc:
        loaded.image.save(buf, "PNG", compress_level=6, icc_profile=icc)
    else:
        loaded.image.save(buf, "PNG", compress_level=6)
    size = buf.tell()
    if size > limits.max_bytes:
        raise BadImage(
            f"the image would be {_mb(size)} MB once converted to PNG; the limit is "
            f"{_mb_limit(limits.max_bytes)} MB: send a smaller image"
        )
    return buf.getvalue()


# ---- steps ---------------------------------------------------------------------------------


def _open_header(data: bytes, limits: ImageLimits) -> Image.Image:
    """Sniff the format and read the header only; refuse by size before any decoding."""
    with _HEADER_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data), formats=list(ACCEPTED_FORMATS))
        except Image.DecompressionBombError as err:
            raise _bomb(err, limits) from None
        except UnidentifiedImageError:
            raise BadImage(_not_an_image(data)) from None
        except Exception as err:  # a header that starts right and then breaks
            raise BadImage(_corrupt("", err)) from None
    bomb_warned = any(issubclass(w.category, Image.DecompressionBombWarning) for w in caught)
    try:
        _check_pixels(*im.size, limits)
        if bomb_warned:  # unreachable while max_pixels <= DECODE_CEILING; kept as a backstop
            raise BadImage(
                f"the image is {im.width}×{im.height} = {_mp(im.width * im.height)} megapixels; "
                f"the limit is {_mp_limit(DECODE_CEILING)}"
            )
    except BadImage:
        im.close()
        raise
    return im


def _check_pixels(width: int, height: int, limits: ImageLimits) -> None:
    if width < 1 or height < 1:
        raise BadImage(f"the image has no pixels ({width}×{height})")
    if width * height > limits.max_pixels:
        raise BadImage(
            f"the image is {width}×{height} = {_mp(width * height)} megapixels; "
            f"the limit is {_mp_limit(limits.max_pixels)}"
        )


def _count_frames(im: Image.Image) -> int:
    """Frames or pages, counted from headers only (GIF/TIFF walk their blocks, no decoding)."""
    try:
        n = int(getattr(im, "n_frames", 1))
        im.seek(0)
    except Exception as err:  # a broken later frame: the first one may still be fine
        log.debug("could not count frames: %s", err)
        with contextlib.suppress(Exception):  # if this fails too, load() refuses the file
            im.seek(0)
        return 1
    return max(1, n)


def _apply_orientation(im: Image.Image, notes: list[str]) -> Image.Image:
    """Turn the pixels upright according to EXIF (or TIFF) orientation; never fail on EXIF."""
    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:  # unreadable EXIF: the pixels are still fine
        notes.append("ignored unreadable EXIF data")
        return im
    if orientation in (None, 1):
        return im
    try:
        upright = ImageOps.exif_transpose(im)
    except Exception as err:
        log.debug("exif_transpose failed: %s", err)
        notes.append(f"ignored unreadable EXIF orientation {orientation}")
        return im
    notes.append(f"applied EXIF orientation {orientation}")
    return upright


_SIXTEEN_BIT: Final = ("I;16", "I;16L", "I;16B", "I;16N")


def _to_rgb(im: Image.Image, notes: list[str]) -> Image.Image:
    """RGB, or RGBA when the source has any alpha; values scaled, never clipped to white."""
    mode = im.mode
    if mode == "RGBA" or (mode == "RGB" and not im.has_transparency_data):
        return im
    try:
        if mode in _SIXTEEN_BIT or mode in ("I", "F") or mode.startswith("I;"):
            out = _deep_to_l(im).convert("RGB")
            if im.has_transparency_data:
                notes.append("ignored the transparency of a high-bit-depth image")
        elif mode == "LAB":
            out = _lab_to_rgb(im)
        elif im.has_transparency_data:
            out = im.convert("RGBA")
        else:
            out = im.convert("RGB")
    except BadImage:
        raise
    except Exception as err:
        raise BadImage(f"colour mode {mode} cannot be converted to RGB ({err})") from None
    notes.append(f"converted {mode} to {out.mode}")
    return out


def _deep_to_l(im: Image.Image) -> Image.Image:
    """16/32-bit integer or float grayscale to 8 bits by scaling, not clipping:
    unsigned 16-bit by 1/257; `I` values by their evident range (0..255 as is, 0..65535 like
    16-bit, otherwise stretched); floats in 0..1 by 255, otherwise stretched."""
    if im.mode in _SIXTEEN_BIT:
        scale, offset = 1 / 257, 0.0
        src = im.convert("I")
    else:
        src = im if im.mode in ("I", "F") else im.convert("I")
        lo, hi = src.getextrema()
        lo_f, hi_f = float(lo), float(hi)  # type: ignore[arg-type]
        if src.mode == "F" and lo_f >= 0 and hi_f <= 1:
            scale, offset = 255.0, 0.0
        elif lo_f >= 0 and hi_f <= 255:
            scale, offset = 1.0, 0.0
        elif lo_f >= 0 and hi_f <= 65535:
            scale, offset = 1 / 257, 0.0
        else:
            scale = 255 / (hi_f - lo_f) if hi_f > lo_f else 0.0
            offset = -lo_f * scale
    return src.point(lambda v: v * scale + offset).convert("L")


def _lab_to_rgb(im: Image.Image) -> Image.Image:
    """CIELAB (TIFF) through a real colour transform: a channel copy would be garbage."""
    transform = ImageCms.buildTransform(
        ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
    )
    out = ImageCms.applyTransform(im, transform)
    if out is None:  # only with inPlace=True
        raise BadImage("colour mode LAB cannot be converted to RGB")
    return out


# ---- messages ------------------------------------------------------------------------------


def _mb(n: int) -> str:
    """A measured size: one decimal ("25.3")."""
    return f"{n / MB:.1f}"


def _mb_limit(n: int) -> str:
    """A limit: as short as exact ("20")."""
    return f"{n / MB:g}"


def _mp(pixels: int) -> str:
    """A measured size: always one decimal ("96.0")."""
    return f"{pixels / 1_000_000:.1f}"


def _mp_limit(pixels: int) -> str:
    """A limit: as short as exact ("40", "0.5")."""
    return f"{pixels / 1_000_000:g}"


def _bomb(err: Exception, limits: ImageLimits) -> BadImage:
    found = _BOMB_PIXELS.search(str(err))
    declared = (
        f"declares {int(found.group(1)) / 1_000_000:.1f} megapixels"
        if found
        else f"declares more than {2 * DECODE_CEILING // 1_000_000} megapixels"
    )
    return BadImage(
        f"the image {declared}; the limit is {_mp_limit(limits.max_pixels)} megapixels "
        "(refused before decoding as a possible decompression bomb)"
    )


def _corrupt(fmt: str, err: Exception) -> str:
    what = f"the {fmt} image" if fmt else "the image"
    detail = str(err).strip() or type(err).__name__
    return f"{what} is truncated or corrupt ({detail[:120]})"


def _not_an_image(data: bytes) -> str:
    accepted = ", ".join(ACCEPTED_FORMATS)
    head = data[:32]
    kind = next((name for sig, name in _KNOWN_SIGNATURES if head.startswith(sig)), None)
    if kind is None and head[4:8] == b"ftyp":
        brand = head[8:12].decode("ascii", "replace").strip()
        kind = f"a HEIC/AVIF image ({brand})"
    if kind is None and head.lstrip().startswith((b"<svg", b"<?xml")):
        kind = "an SVG/XML file"
    if kind is None and _looks_like_text(data[:4096]):
        kind = "a text file"
    found = f" (it looks like {kind})" if kind else ""
    return f"the file is not an image in an accepted format{found}; accepted formats: {accepted}"


def _looks_like_text(sample: bytes) -> bool:
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(sample) - 3:  # not just a character cut by the sample's end
            return False
        text = sample[: err.start].decode("utf-8")
    return bool(text) and all(ch.isprintable() or ch in "\r\n\t" for ch in text)
