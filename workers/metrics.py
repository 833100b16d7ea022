"""Serving a StationThis process's Prometheus metrics: the Temporal SDK's own and StationThis's.

Each long-running process (workflow worker, comfy worker, media worker, bot) started with
`--metrics-port N` (or METRICS_PORT=N) serves two endpoints:

* `http://HOST:N/metrics` — StationThis counters and histograms (activities/metrics.py,
  prometheus-client's default registry): jobs started/finished, queue and render time, GPU
  busy seconds, refunds, delivery failures, the ledger audit gauge.
* `http://HOST:N+1/metrics` — the Temporal SDK's runtime metrics (`temporal_*`: workflow
  completions and failures, activity latencies, task-queue polls, slots), served by the SDK's
  Rust core through `Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(...)))`.

Two ports rather than one: the SDK's exporter is its own HTTP server in Rust and
prometheus-client cannot add to it; proxying one into the other would mean parsing and
re-rendering the SDK's text on every scrape. Two scrape targets per process cost Prometheus
nothing (README "Metrics").
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import start_http_server
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from activities.metrics import ledger_audited
from store.db import Stores

log = logging.getLogger(__name__)

_runtime: Runtime | None = None
_urls: tuple[str, str] | None = None


def sdk_port(port: int) -> int:
    """Port of the Temporal SDK's metrics next to StationThis's metrics port."""
    return port + 1


def start_metrics(port: int, host: str = "127.0.0.1") -> tuple[str, str] | None:
    """Serve StationThis metrics on `port` and the SDK's on `port + 1` (0: metrics off).

    Call once per process before the first Temporal client connects: the SDK's Runtime owns
    its exporter and one Runtime per process is the SDK's model (`temporal_runtime()` hands
    it to `connect_temporal`). A second call returns the URLs already served.
    """
    global _runtime, _urls
    if port <= 0:
        return None
    if _urls is not None:
        return _urls
    start_http_server(port, addr=host)
    sdk_address = f"{host}:{sdk_port(port)}"
    _runtime = Runtime(
        telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=sdk_address))
    )
    _urls = (f"http://{host}:{port}/metrics", f"http://{sdk_address}/metrics")
    log.info("metrics on %s (Temporal SDK: %s)", *_urls)
    return _urls


def temporal_runtime() -> Runtime | None:
    """The Runtime exporting SDK metrics, or None (the SDK's default Runtime, no exporter)."""
    return _runtime


async def audit_forever(stores: Stores, interval: float) -> None:
    """Run the ledger audit every `interval` seconds and publish its result as a gauge
    (`stationthis_ledger_audit_discrepancies`); a failed audit is logged and retried at the
    next interval. `stationthis points audit` is the same check, with the details."""
    if interval <= 0:
        return
    while True:
        try:
            problems = await asyncio.to_thread(stores.ledger.audit)
        except Exception:
            log.warning("ledger audit failed; trying again in %g s", interval, exc_info=True)
        else:
            ledger_audited(len(problems))
            if problems:
                log.warning("ledger audit: %d user(s) out of balance", len(problems))
        await asyncio.sleep(interval)
