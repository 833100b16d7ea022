"""Generated test images: every mode, format and kind of bad file the safety module must handle.

Everything is built in memory with Pillow (or by hand, for files Pillow would refuse to write),
so the corpus needs no fixtures on disk and no downloads.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from typing import Any

from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def encode(im: Image.Image, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def noise(mode: str, size: tuple[int, int], seed: int = 1) -> Image.Image:
    """Deterministic incompressible pixels (a file that is mostly data, good for truncating)."""
    bands = len(Image.new(mode, (1, 1)).getbands())
    return Image.frombytes(mode, size, random.Random(seed).randbytes(size[0] * size[1] * bands))


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def crafted_png(width: int, height: int, payload: int = 1 << 20) -> bytes:
    """A tiny 1-bit PNG whose header declares `width`×`height`: `payload` zero bytes of image
    data deflate to about a thousandth of that. With a huge size it is a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * payload, 9)
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def halves(
    size: tuple[int, int], left: tuple[int, ...], right: tuple[int, ...], mode: str = "RGB"
) -> Image.Image:
    """Left half one colour, right half another: orientation and crops become visible."""
    im = Image.new(mode, size, left)
    im.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return im


def animated_gif(colours: list[tuple[int, int, int]], size: tuple[int, int] = (16, 16)) -> bytes:
    frames = [Image.new("RGB", size, c) for c in colours]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def jpeg_with_orientation(im: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(im, "JPEG", quality=95, exif=exif.tobytes())
