"""StationThis's Prometheus counters and histograms, counted where each fact is known.

Counting happens only in activities and adapters, the code that already knows each fact
(`record_job`, `charge_points`, `run_comfy_prompt`, `deliver_result`) — never in workflow code,
which replays. Activities may run more than once (retries, a local activity re-run after a
worker crash), so counters are at-least-once: good for rates and alerts, not for accounting;
the ledger is the books. The metrics live in prometheus-client's default registry and are
served by `workers.metrics.start_metrics` (a process without it counts into the void).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Final

from prometheus_client import Counter, Gauge, Histogram
from temporalio import activity
from temporalio.exceptions import ApplicationError

from domain.jobs import JobStatus

# Buckets for waits and renders from a fraction of a second to the 15-minute render timeout.
_SECONDS_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900)

JOBS_STARTED = Counter(
    "stationthis_jobs_started",
    "Jobs whose charge was booked (a paid job began its work), by kind.",
    ["kind"],
)
JOBS_FINISHED = Counter(
    "stationthis_jobs_finished",
    "Jobs recorded in a final state (done, failed, cancelled, refused), by kind and state.",
    ["kind", "state"],
)
QUEUE_SECONDS = Histogram(
    "stationthis_queue_seconds",
    "Seconds a render waited on the GPU task queue for a free slot of a ComfyUI server.",
    ["server"],
    buckets=_SECONDS_BUCKETS,
)
RENDER_SECONDS = Histogram(
    "stationthis_render_seconds",
    "Seconds a ComfyUI prompt executed (its history's timing; wall time when it has none).",
    ["server"],
    buckets=_SECONDS_BUCKETS,
)
GPU_BUSY_SECONDS = Counter(
    "stationthis_gpu_busy_seconds",
    "Seconds each ComfyUI server spent executing StationThis prompts.",
    ["server"],
)
REFUNDS = Counter(
    "stationthis_refunds",
    "Final jobs that were refunded (in part or in full), by kind and state.",
    ["kind", "state"],
)
REFUNDED_POINTS = Counter(
    "stationthis_refunded_points",
    "Points given back by refunds of final jobs, by kind.",
    ["kind"],
)
DELIVERY_FAILURES = Counter(
    "stationthis_delivery_failures",
    "Delivery attempts that failed, by platform and reason (retried or for good).",
    ["platform", "reason"],
)
# The audit gauges exist only in the process that audits (the workflow worker): created on the
# first audit, so no other process exports a value an alert could misread.
_audit_gauges: tuple[Gauge, Gauge] | None = None


def job_charged(reason: str) -> None:
    """A new charge was booked: a job started. Its kind is the charge reason's prefix
    (`make: …`, `caption: …`), the one place every workflow names it."""
    kind, sep, _ = reason.partition(":")
    JOBS_STARTED.labels(kind.strip() if sep and kind.strip() else "unknown").inc()


def job_recorded(status: JobStatus) -> None:
    """`record_job` wrote a job's record; count it once it is final (a pushed job is recorded
    first as `delivering`, then again as done)."""
    if not status.final:
        return
    JOBS_FINISHED.labels(status.kind, status.state.value).inc()
    if status.refund > 0:
        REFUNDS.labels(status.kind, status.state.value).inc()
        REFUNDED_POINTS.labels(status.kind).inc(status.refund)


def render_finished(server: str, execution_seconds: float | None) -> None:
    """A ComfyUI prompt finished in `run_comfy_prompt` (call from that activity): queue wait
    is the attempt's schedule-to-start on the GPU queue, render time the prompt's own timing."""
    info = activity.info()
    queued = (info.started_time - info.current_attempt_scheduled_time).total_seconds()
    QUEUE_SECONDS.labels(server).observe(max(queued, 0.0))
    seconds = execution_seconds
    if seconds is None:
        seconds = (datetime.now(UTC) - info.started_time).total_seconds()
    RENDER_SECONDS.labels(server).observe(max(seconds, 0.0))
    GPU_BUSY_SECONDS.labels(server).inc(max(seconds, 0.0))


def delivery_failed(platform: str, reason: str) -> None:
    DELIVERY_FAILURES.labels(platform, reason).inc()


@contextlib.contextmanager
def counting_delivery_failures(platform: str) -> Iterator[None]:
    """Count every exception leaving a delivery (by ApplicationError type, else class name);
    a cancellation is not a failure."""
    try:
        yield
    except ApplicationError as err:
        delivery_failed(platform, err.type or "error")
        raise
    except Exception as err:
        delivery_failed(platform, type(err).__name__)
        raise


def ledger_audited(discrepancies: int) -> None:
    """Publish a ledger audit's result: users out of balance (0 is healthy) and when."""
    global _audit_gauges
    if _audit_gauges is None:
        _audit_gauges = (
            Gauge(
                "stationthis_ledger_audit_discrepancies",
                "Users whose balance differs from grants − charges + refunds at the last audit.",
            ),
            Gauge(
                "stationthis_ledger_audit_timestamp_seconds",
                "Unix time of the last completed ledger audit.",
            ),
        )
    count, when = _audit_gauges
    count.set(discrepancies)
    when.set_to_current_time()
