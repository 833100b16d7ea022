"""`stationthis worker`, `comfy-worker`, `media-worker` and `safety-worker`: the Temporal worker
processes."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from media.classifier import ClassifierUnavailable, make_classifier
from workers.config import Config
from workers.devstack import resolve_endpoints
from workers.metrics import audit_forever, start_metrics
from workers.runtime import connect_temporal, open_stores
from workers.sweeper import sweep_forever
from workers.temporal_workers import (
    ComfyServerWorkers,
    media_slots,
    media_worker,
    run_until_signalled,
    safety_worker,
    stop_on_signals,
    workflow_worker,
)

log = logging.getLogger(__name__)


def add_metrics_port(parser: argparse.ArgumentParser) -> None:
    """`--metrics-port N`: shared by every long-running process (workers and the bot)."""
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics on this port and the Temporal SDK's on the next one "
        "(default: METRICS_PORT, 0 = off)",
    )


def serve_metrics(args: argparse.Namespace, config: Config) -> bool:
    """Start the metrics endpoints if a port is given; True when they run. Before the first
    Temporal client connects, so that client uses the Runtime exporting SDK metrics."""
    port = args.metrics_port if getattr(args, "metrics_port", None) is not None else None
    urls = start_metrics(config.metrics_port if port is None else port, config.metrics_host)
    return urls is not None


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("worker", help="run the workflow worker (queue `stationthis`)")
    add_metrics_port(p)
    p.set_defaults(handler=lambda args: asyncio.run(_workflow_worker(args)))
    c = subparsers.add_parser(
        "comfy-worker", help="run the worker of one ComfyUI server (queues `comfy`, `comfy-io`)"
    )
    c.add_argument("--url", help="the ComfyUI server (default: the first of COMFYUI_URLS)")
    c.add_argument("--slots", type=int, default=1, help="prompts the server runs at once")
    c.add_argument(
        "--comfyui-dir",
        help="the server's folder on this host (default: COMFYUI_DIRS / COMFYUI_DIR); "
        "without one the server cannot train or use LoRAs",
    )
    add_metrics_port(c)
    c.set_defaults(handler=_comfy_worker_cmd)
    m = subparsers.add_parser(
        "media-worker", help="run the Pillow worker for resize and convert (queue `media`)"
    )
    m.add_argument(
        "--slots",
        type=int,
        default=None,
        help=f"images processed at once (default: two per CPU core, here {media_slots()})",
    )
    add_metrics_port(m)
    m.set_defaults(handler=_media_worker_cmd)
    s = subparsers.add_parser(
        "safety-worker", help="run the output classifier (queue `safety`, CPU; extra `safety`)"
    )
    s.add_argument("--slots", type=int, default=None, help="images at once (default: CPU cores)")
    s.add_argument(
        "--classifier",
        choices=["nudenet", "marker"],
        default="nudenet",
        help="nudenet (needs pip install '.[safety]') or marker (the stand-in's, for tests)",
    )
    add_metrics_port(s)
    s.set_defaults(handler=lambda args: asyncio.run(_safety_worker(args)))


async def _workflow_worker(args: argparse.Namespace) -> int:
    config = Config()
    endpoints = resolve_endpoints(config)
    metrics = serve_metrics(args, config)
    client = await connect_temporal(config, endpoints)
    stores = open_stores(config, endpoints)
    sweeper = asyncio.create_task(sweep_forever(stores, config))
    # The ledger audit as a gauge: one process runs it, the one every deployment has.
    auditor = asyncio.create_task(
        audit_forever(stores, config.ledger_audit_interval if metrics else 0)
    )
    try:
        with ThreadPoolExecutor(max_workers=config.workflow_worker_threads) as pool:
            worker = workflow_worker(client, config, stores, pool)
            log.info("workflow worker polling %s", config.task_queues.workflows)
            await run_until_signalled([worker])
    finally:
        sweeper.cancel()
        auditor.cancel()
    return 0


def _comfy_worker_cmd(args: argparse.Namespace) -> int:
    if args.slots < 1:
        raise SystemExit("--slots must be at least 1")
    return asyncio.run(_comfy_worker(args.url, args.slots, args.comfyui_dir, args))


async def _comfy_worker(
    url: str | None,
    slots: int,
    comfyui_dir: str | None = None,
    args: argparse.Namespace | None = None,
) -> int:
    config = Config()
    endpoints = resolve_endpoints(config)
    serve_metrics(args or argparse.Namespace(), config)
    url = url or (endpoints.comfyui_urls[0] if endpoints.comfyui_urls else None)
    if not url:
        raise SystemExit("no ComfyUI server: pass --url or set COMFYUI_URLS")
    client = await connect_temporal(config, endpoints)
    stores = open_stores(config, endpoints, indexes=False)
    folder = Path(comfyui_dir) if comfyui_dir else None
    server = ComfyServerWorkers(client, config, stores, url, slots, comfyui_dir=folder)
    log.info(
        "comfy worker for %s with %d slot(s), feed-ahead %d", url, slots, config.comfy_feed_ahead
    )
    await server.run(stop_on_signals())
    return 0


async def _safety_worker(args: argparse.Namespace) -> int:
    try:
        classifier = make_classifier(args.classifier)
    except ClassifierUnavailable as err:
        raise SystemExit(f"error: {err}") from None
    slots = args.slots or (os.cpu_count() or 1)
    config = Config()
    endpoints = resolve_endpoints(config)
    serve_metrics(args, config)
    client = await connect_temporal(config, endpoints)
    stores = open_stores(config, endpoints, indexes=False)
    with ThreadPoolExecutor(max_workers=slots, thread_name_prefix="safety") as pool:
        worker = safety_worker(client, config, stores, pool, classifier, slots)
        log.info(
            "safety worker (%s) polling %s with %d slot(s)",
            classifier.name,
            config.task_queues.safety,
            slots,
        )
        await run_until_signalled([worker])
    return 0


def _media_worker_cmd(args: argparse.Namespace) -> int:
    slots = args.slots or media_slots()
    if slots < 1:
        raise SystemExit("--slots must be at least 1")
    return asyncio.run(_media_worker(slots, args))


async def _media_worker(slots: int, args: argparse.Namespace | None = None) -> int:
    config = Config()
    endpoints = resolve_endpoints(config)
    serve_metrics(args or argparse.Namespace(), config)
    client = await connect_temporal(config, endpoints)
    stores = open_stores(config, endpoints, indexes=False)
    with ThreadPoolExecutor(max_workers=slots, thread_name_prefix="media") as pool:
        worker = media_worker(client, config, stores, pool, slots)
        log.info("media worker polling %s with %d slot(s)", config.task_queues.media, slots)
        await run_until_signalled([worker])
    return 0
