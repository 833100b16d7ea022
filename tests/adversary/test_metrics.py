"""The facts StationThis counts: what an operator's alerts on refunds and deliveries rely on."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from prometheus_client import REGISTRY
from telegram.error import Forbidden
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import metrics
from adapters.telegram.delivery import TelegramDelivery
from domain.jobs import DeliverInput, JobState, JobStatus, ReplyTarget
from workers.config import REPO_ROOT


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_refunded_failed_job_counts_once_finished_and_its_points() -> None:
    kind = "metrics-test-fail"
    status = JobStatus(workflow_id="w", kind=kind, state=JobState.FAILED, refund=15)
    metrics.job_recorded(status)
    assert sample("stationthis_jobs_finished_total", kind=kind, state="failed") == 1
    assert sample("stationthis_refunds_total", kind=kind, state="failed") == 1
    assert sample("stationthis_refunded_points_total", kind=kind) == 15


def test_a_job_recorded_while_delivering_is_not_finished_yet() -> None:
    kind = "metrics-test-delivering"
    metrics.job_recorded(JobStatus(workflow_id="w", kind=kind, state=JobState.DELIVERING))
    assert sample("stationthis_jobs_finished_total", kind=kind, state="delivering") == 0
    metrics.job_recorded(JobStatus(workflow_id="w", kind=kind, state=JobState.DONE))
    assert sample("stationthis_jobs_finished_total", kind=kind, state="done") == 1


def test_a_charge_names_its_jobs_kind() -> None:
    metrics.job_charged("metrics-caption: 3 image(s) of cats")
    metrics.job_charged("no kind here")
    assert sample("stationthis_jobs_started_total", kind="metrics-caption") == 1
    assert sample("stationthis_jobs_started_total", kind="unknown") >= 1


def test_delivery_failures_count_by_type_but_a_cancel_is_not_one() -> None:
    platform = "metrics-test"
    with (
        pytest.raises(ApplicationError),
        metrics.counting_delivery_failures(platform),
    ):
        raise ApplicationError("refused", type="not_delivered", non_retryable=True)
    with pytest.raises(ConnectionError), metrics.counting_delivery_failures(platform):
        raise ConnectionError("network")
    with pytest.raises(asyncio.CancelledError), metrics.counting_delivery_failures(platform):
        raise asyncio.CancelledError
    assert sample("stationthis_delivery_failures_total", platform=platform, reason="not_delivered")
    assert sample(
        "stationthis_delivery_failures_total", platform=platform, reason="ConnectionError"
    )
    total = sum(
        s.value
        for family in REGISTRY.collect()
        if family.name == "stationthis_delivery_failures"
        for s in family.samples
        if s.name.endswith("_total") and s.labels.get("platform") == platform
    )
    assert total == 2


def test_the_grafana_dashboard_queries_only_metrics_stationthis_exports() -> None:
    dashboard = json.loads((REPO_ROOT / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for e in exprs for name in re.findall(r"\bstationthis_[a-z_]+", e)}
    metrics.ledger_audited(0)  # the audit gauges exist once an audit ran
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    exported = {
        family.name + suffix
        for family in REGISTRY.collect()
        for suffix in suffixes.get(family.type, ("",))
    }
    assert used, exprs
    assert used <= exported, used - exported


class _BlockedBot:
    """A Bot whose every call says the user blocked it."""

    def __getattr__(self, name: str) -> Any:
        async def refuse(*args: object, **kwargs: object) -> None:
            raise Forbidden("Forbidden: bot was blocked by the user")

        return refuse


class _Jobs:
    async def delivered_parts(self, wid: str) -> dict[str, int]:
        return {}


async def test_a_delivery_to_a_chat_that_blocked_the_bot_counts_as_a_failure() -> None:
    delivery = TelegramDelivery(_BlockedBot(), _Jobs())  # type: ignore[arg-type]
    status = JobStatus(workflow_id="w", kind="make", state=JobState.FAILED, reason="x")
    before = sample("stationthis_delivery_failures_total", platform="telegram", reason="Forbidden")
    await ActivityEnvironment().run(
        delivery.deliver_result,
        DeliverInput(platform="telegram", reply=ReplyTarget(chat_id="1"), status=status),
    )  # delivery ends (nothing to retry) but the failure is counted
    after = sample("stationthis_delivery_failures_total", platform="telegram", reason="Forbidden")
    assert after == before + 1
