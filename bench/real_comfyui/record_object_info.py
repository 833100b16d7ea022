"""Record a real ComfyUI's `/object_info` for the stand-in's node types (plus the V3 node the
contract suite reads), as tests/standin/test_real_object_info.py compares them.

    .venv/bin/python -m bench.real_comfyui.record_object_info http://127.0.0.1:PORT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx

from standins.comfyui.nodes import NODES, TRAINING_NODE_SPECS_0_3_64

OUT = Path(__file__).resolve().parents[2] / "tests" / "standin" / "data" / "object_info_0.3.64.json"
EXTRA = {"ImageScaleToTotalPixels"}


def main(url: str) -> None:
    real = httpx.get(url.rstrip("/") + "/object_info", timeout=60.0).json()
    wanted = set(NODES) | {s.class_type for s in TRAINING_NODE_SPECS_0_3_64} | EXTRA
    kept = {name: real[name] for name in sorted(wanted) if name in real}
    OUT.write_text(json.dumps(kept, indent=1, sort_keys=True) + "\n")
    print(f"{len(kept)} node types -> {OUT}; not on the server: {sorted(wanted - set(real))}")


if __name__ == "__main__":
    main(sys.argv[1])
