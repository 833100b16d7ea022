"""An operator's Prometheus sees a job: the workers' metrics endpoints move after one make job."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.jobs import JobsClient
from domain.jobs import JobState, MakeImageRequest
from tests.integration.conftest import Stack

pytestmark = pytest.mark.stack


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one endpoint: (name, sorted labels) -> value."""
    text = httpx.get(url, timeout=5).raise_for_status().text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    """Sum of the samples named `name` whose labels include `labels` (0 when there is none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


async def test_one_make_job_moves_the_workers_metrics(dev_stack: Stack, jobs: JobsClient) -> None:
    urls = dev_stack.stack.metrics_urls
    assert {"worker", "comfy-worker", "media-worker"} <= set(urls)
    worker, worker_sdk = urls["worker"]
    comfy, comfy_sdk = urls["comfy-worker"]
    before_w, before_c = (
        await asyncio.to_thread(scrape, worker),
        await asyncio.to_thread(scrape, comfy),
    )

    identity = f"cli:metrics-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(jobs.stores.users.get_or_create, identity, 500)
    started = await jobs.start_make(
        MakeImageRequest(
            user=identity,
            platform="cli",
            prompt="a metered fox",
            overrides={"width": 256, "height": 256, "steps": 4},
        )
    )
    status = await jobs.result(started.workflow_id)
    assert status.state is JobState.DONE

    after_w, after_c = (
        await asyncio.to_thread(scrape, worker),
        await asyncio.to_thread(scrape, comfy),
    )
    finished = "stationthis_jobs_finished_total"
    assert value(after_w, finished, kind="make", state="done") == (
        value(before_w, finished, kind="make", state="done") + 1
    )
    assert value(after_w, "stationthis_jobs_started_total", kind="make") == (
        value(before_w, "stationthis_jobs_started_total", kind="make") + 1
    )
    server = dev_stack.comfy_url
    for name in ("stationthis_render_seconds_count", "stationthis_queue_seconds_count"):
        assert value(after_c, name, server=server) == value(before_c, name, server=server) + 1
    assert value(after_c, "stationthis_gpu_busy_seconds_total", server=server) > value(
        before_c, "stationthis_gpu_busy_seconds_total", server=server
    )
    # The workflow worker audits the ledger at start: the books balance.
    assert value(after_w, "stationthis_ledger_audit_discrepancies") == 0
    assert "stationthis_ledger_audit_discrepancies" not in {n for n, _ in after_c}

    # The Temporal SDK's own metrics, from the same processes' Runtime.
    sdk_w = await asyncio.to_thread(scrape, worker_sdk)
    sdk_c = await asyncio.to_thread(scrape, comfy_sdk)
    assert value(sdk_w, "temporal_workflow_completed_total", workflow_type="MakeImageWorkflow") >= 1
    assert (
        value(sdk_c, "temporal_activity_execution_latency_count", activity_type="run_comfy_prompt")
        >= 1
    )
    assert value(sdk_c, "temporal_num_pollers", task_queue="comfy") >= 1
