"""Helpers for the stand-in tests."""

from __future__ import annotations

import io

from PIL import Image


def png(width: int, height: int, color: tuple[int, int, int] = (200, 40, 90)) -> bytes:
    """A real PNG of the given size."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()
