"""An operator's Prometheus sees a job: the workers' metrics endpoints move after one make job."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from adapters.jobs import JobsClient
from domain.jobs import JobState, MakeImageRequest
from tests.integration.conftest import Stack
from workers.config import REPO_ROOT
from workers.processes import LOOPBACK, ManagedProcess, free_port, http_check

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


PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
ALERTS = REPO_ROOT / "docs" / "prometheus-alerts.yml"


@pytest.mark.skipif(PROMTOOL is None, reason="Debian's prometheus package is not installed")
def test_the_shipped_alert_rules_are_valid() -> None:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(ALERTS)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus package is not installed")
async def test_a_real_prometheus_scrapes_the_workers_and_loads_the_alerts(
    dev_stack: Stack, jobs: JobsClient, tmp_path: Path
) -> None:
    assert PROMETHEUS is not None
    urls = dev_stack.stack.metrics_urls

    def targets(which: int) -> list[str]:
        return [httpx.URL(pair[which]).netloc.decode() for pair in urls.values()]

    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(ALERTS)],
                "scrape_configs": [
                    {"job_name": "stationthis", "static_configs": [{"targets": targets(0)}]},
                    {
                        "job_name": "stationthis-temporal-sdk",
                        "static_configs": [{"targets": targets(1)}],
                    },
                ],
            }
        )
    )
    port = free_port()
    api = f"http://{LOOPBACK}:{port}/api/v1"
    prometheus = ManagedProcess(
        "prometheus",
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address={LOOPBACK}:{port}",
        ],
        port=port,
        health=http_check(f"http://{LOOPBACK}:{port}/-/ready"),
        log_path=tmp_path / "prometheus.log",
    )

    async def query(expr: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=5) as http:
            body = (await http.get(f"{api}/query", params={"query": expr})).json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def eventually(expr: str, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = asyncio.get_running_loop().time() + timeout
        while not (found := await query(expr)):
            assert asyncio.get_running_loop().time() < deadline, f"no result for {expr}"
            await asyncio.sleep(0.5)
        return found

    with prometheus:
        identity = f"cli:prom-{uuid.uuid4().hex[:8]}"
        await asyncio.to_thread(jobs.stores.users.get_or_create, identity, 500)
        started = await jobs.start_make(
            MakeImageRequest(
                user=identity,
                platform="cli",
                prompt="a scraped fox",
                overrides={"width": 256, "height": 256, "steps": 4},
            )
        )
        assert (await jobs.result(started.workflow_id)).state is JobState.DONE

        await eventually('stationthis_jobs_finished_total{kind="make",state="done"} >= 1')
        await eventually("stationthis_render_seconds_count >= 1")
        await eventually('temporal_workflow_completed{workflow_type="MakeImageWorkflow"} >= 1')
        # Every target scraped at least once (Prometheus reaches them one by one).
        deadline = asyncio.get_running_loop().time() + 30
        while len(up := await eventually('up{job=~"stationthis.*"}')) < 2 * len(urls):
            assert asyncio.get_running_loop().time() < deadline, up
            await asyncio.sleep(0.5)
        assert len(up) == 2 * len(urls)
        assert all(row["value"][1] == "1" for row in up), up
        assert await query("max(stationthis_ledger_audit_discrepancies)") != []

        async with httpx.AsyncClient(timeout=5) as http:
            groups = (await http.get(f"{api}/rules")).json()["data"]["groups"]
            alerts = (await http.get(f"{api}/alerts")).json()["data"]["alerts"]
        rules = [r for g in groups for r in g["rules"]]
        assert len(rules) == 9 and all(r["health"] == "ok" for r in rules), rules
        # Firing, not pending: a rule with `for: 2m` may be pending while pollers register.
        firing = {a["labels"]["alertname"] for a in alerts if a.get("state") == "firing"}
        assert "LedgerOutOfBalance" not in firing and "TaskQueueWithoutPoller" not in firing
