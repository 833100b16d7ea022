"""`python -m standins.comfyui --host 127.0.0.1 --port P --root DIR [--step-delay S]`.

Prints exactly one line `ready http://<host>:<port>` on stdout once listening (with `--port 0`
the port is the one the OS chose), then serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from aiohttp import web

from standins.comfyui.nodes import TRAINING_NODE_SETS, drop_nodes, use_training_nodes
from standins.comfyui.server import create_app


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
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    port = runner.addresses[0][1]
    print(f"ready http://{args.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
