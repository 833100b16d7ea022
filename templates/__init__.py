"""ComfyUI graphs (API format) bundled with StationThis; `stationthis up` loads them."""

from __future__ import annotations

from pathlib import Path

TEMPLATES_DIR = Path(__file__).resolve().parent


def bundled_template_files() -> list[Path]:
    """The bundled template files, in a stable order."""
    return sorted(TEMPLATES_DIR.glob("*.json"))
