"""`python -m standins.comfyui --host 127.0.0.1 --port P --root DIR [--step-delay S]`.

Prints exactly one line `ready http://<host>:<port>` on stdout once listening (with `--port 0`
the port is the one the OS chose), then serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from standins.comfyui.nodes import TRAINING_NODE_SETS, drop_nodes, use_training_nodes
from standins.comfyui.server import create_app
from standins.serving import configure_logging, serve_until_signalled


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m standins.comfyui", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8188)
    p.add_argument("--root", type=Path, required=True, help="folder for input/output/temp/models")
    p.add_argument("--step-delay", type=float, default=0.05, help="seconds per sampler step")
    p.add_argument(
        "--train-step-delay", type=float, default=0.005, help="seconds per LoRA training step"
    )
    p.add_argument(
        "--training-nodes",
        choices=TRAINING_NODE_SETS,
        default="newer",
        help="the training nodes served: newer (dataset-folder nodes) or core-0.3.64",
    )
    p.add_argument(
        "--without-nodes",
        default="",
        help="comma-separated node types not served (a server without RemoveBackground)",
    )
    p.add_argument("--log-level", default="WARNING")
    return p.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    use_training_nodes(args.training_nodes)
    drop_nodes([n for n in args.without_nodes.split(",") if n.strip()])
    app = create_app(args.root, args.step_delay, args.train_step_delay)
    await serve_until_signalled(app, args.host, args.port)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    configure_logging(args.log_level)
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
