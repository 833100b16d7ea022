"""`stationthis up`: run the embedded dev stack in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType
from typing import Any

from workers.config import Config
from workers.devstack import DevStack, Endpoints, web_url
from workers.processes import ServiceError

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add the `up` command to the CLI tree."""
    parser = subparsers.add_parser(
        "up",
        help="start the dev stack (Temporal, MongoDB-compatible server, ComfyUI stand-in)",
        description=(
            "Start the embedded dev stack from temporal-dev.yaml, print its addresses once every "
            "service is healthy, restart services that crash, and stop everything on Ctrl-C. "
            "Services configured through TEMPORAL_ADDRESS, MONGODB_URI or COMFYUI_URLS are not "
            "started."
        ),
    )
    parser.add_argument(
        "--no-workers",
        action="store_true",
        help="start only the services, not the Temporal workers",
    )
    parser.add_argument(
        "--max-restarts",
        type=int,
        default=3,
        help="restarts allowed per crashed process before giving up (default 3)",
    )
    parser.set_defaults(handler=run_up)


def format_ready(stack: DevStack, endpoints: Endpoints) -> str:
    """The block printed once the stack is healthy: every address a developer needs."""
    started = set(stack.processes)

    def origin(name: str) -> str:
        return "" if name in started else "  (external)"

    lines = [
        f"stationthis dev stack ready in {stack.ready_seconds or 0:.1f}s",
        f"  Temporal gRPC:  {endpoints.temporal_address} "
        f"(namespace {endpoints.namespace}){origin('temporal')}",
        f"  Temporal UI:    {endpoints.temporal_ui_url or '-'}{origin('temporal')}",
        f"  MongoDB:        {endpoints.mongodb_uri}{origin('mongodb')}",
        f"  ComfyUI:        {', '.join(endpoints.comfyui_urls)}{origin('comfyui')}",
    ]
    if "web" in started:
        lines.append(f"  Web / API:      {web_url(stack.config)} (OpenAPI at /docs)")
    extras = [n for n in stack.processes if n not in {"temporal", "mongodb", "comfyui"}]
    if extras:
        lines.append(f"  workers:        {', '.join(extras)}")
    if stack.metrics_urls:
        lines.append("  metrics:        StationThis | Temporal SDK (Prometheus text)")
        for name, (ours, sdk) in stack.metrics_urls.items():
            lines.append(f"    {name + ':':<16}{ours} | {sdk}")
    lines += [
        f"  runtime file:   {stack.config.runtime_file}",
        f"  logs:           {stack.log_dir}",
        "Press Ctrl-C to stop.",
    ]
    return "\n".join(lines)


def run_up(args: argparse.Namespace) -> int:
    """Start, print "ready", supervise until a signal, stop everything; returns the exit code."""
    config = Config()
    stack = DevStack(config, workers=not args.no_workers, max_restarts=args.max_restarts)
    stop = threading.Event()
    starting = True

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal starting
        del frame
        log.info("received %s, stopping the dev stack", signal.Signals(signum).name)
        stop.set()
        if starting:
            # Abort a start in progress: DevStack.start stops what it started on any exception.
            # Only once: a second signal must not interrupt that cleanup.
            starting = False
            raise KeyboardInterrupt

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            endpoints = stack.start()
        except ServiceError as exc:
            print(f"stationthis up: error: {exc}", file=sys.stderr, flush=True)
            return 1
        except KeyboardInterrupt:
            print("stationthis up: interrupted during start; stopped", file=sys.stderr)
            return 130
        starting = False
        print(format_ready(stack, endpoints), flush=True)
        code = stack.run(stop)
        if code:
            print(
                f"stationthis up: error: {stack.failed} keeps crashing; stopping the stack "
                f"(see {stack.log_dir})",
                file=sys.stderr,
                flush=True,
            )
        return code
    finally:
        starting = False
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("stationthis up: stopped", flush=True)
