"""Activities of the `stationthis` queue: prepare a job, book points, record history, free slots.

They are sync (pymongo blocks), so the worker runs them in a thread pool. Each is idempotent:
ledger writes by key, history by workflow id, slots by (user, workflow id).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from temporalio import activity

from activities import metrics
from domain.errors import InsufficientPoints
from domain.jobs import (
    ActivityNames,
    ChargeInput,
    ChargeResult,
    JobPlan,
    JobRecordInput,
    PrepareInput,
    RefundInput,
    RefundResult,
    SlotInput,
)
from domain.queues import Routing
from domain.training import DEFAULT_MAX_LORAS
from services.job_plans import MakePlanner, plan_or_refusal
from store.db import Stores
from store.jobs import record_of
from store.slots import JobSlots

log = logging.getLogger(__name__)


class JobActivities:
    """Dependencies come in through the constructor; the bound methods are the activities."""

    def __init__(
        self,
        stores: Stores,
        *,
        routing: Routing | None = None,
        max_loras: int = DEFAULT_MAX_LORAS,
        checkpoints: Mapping[str, str] | None = None,
    ) -> None:
        self.stores = stores
        self.slots = JobSlots(stores.db)
        # Prepare's checks and decisions (services/job_plans.py): the jobs service runs the
        # same planner before it starts a workflow.
        self.planner = MakePlanner(
            stores, routing=routing, max_loras=max_loras, checkpoints=checkpoints
        )

    def all(self) -> list[Any]:
        return [
            self.prepare_make_image,
            self.charge_points,
            self.refund_points,
            self.record_job,
            self.release_job_slot,
        ]

    # ---- prepare ---------------------------------------------------------------------------

    @activity.defn(name=ActivityNames.PREPARE_MAKE_IMAGE)
    def prepare_make_image(self, inp: PrepareInput) -> JobPlan:
        """Turn a request into a priced plan, or a refusal that says what to fix."""
        return plan_or_refusal(
            self.stores,
            inp.request.user,
            "make",
            inp.workflow_id,
            lambda: self.planner.plan_make_image(inp),
        )

    # ---- points ----------------------------------------------------------------------------

    @activity.defn(name=ActivityNames.CHARGE_POINTS)
    def charge_points(self, inp: ChargeInput) -> ChargeResult:
        """Charge once by key; too few points is an answer (ok=False), not an error.

        With `top_up`, only what the job's standing charge lacks (a reset run): nothing when the
        job is already paid.
        """
        ledger = self.stores.ledger
        try:
            if inp.top_up:
                res = ledger.charge_up_to(
                    inp.user_id,
                    inp.amount,
                    inp.key,
                    job_id=inp.job_id,
                    reason=inp.reason,
                    expect_applied=inp.settle,
                )
            else:
                res = ledger.charge(
                    inp.user_id, inp.amount, inp.key, job_id=inp.job_id, reason=inp.reason
                )
        except InsufficientPoints as err:
            return ChargeResult(ok=False, balance=err.balance, reason=err.message)
        if res is None:
            return ChargeResult(ok=True, balance=ledger.balance(inp.user_id))
        if not res.replayed:  # a new charge, once per key whatever the retries
            metrics.job_charged(inp.reason)
        return ChargeResult(ok=True, balance=res.entry.balance_after, charged=res.entry.amount)

    @activity.defn(name=ActivityNames.REFUND_POINTS)
    def refund_points(self, inp: RefundInput) -> RefundResult:
        """Refund once by key, never more than the job was charged (0 if it never was)."""
        ledger = self.stores.ledger
        done = ledger.entry(inp.key)
        if done is not None:
            return RefundResult(refunded=done.amount, balance=ledger.balance(inp.user_id))
        amount = min(inp.amount, ledger.job_totals(inp.job_id).refundable)
        if amount <= 0:
            return RefundResult(refunded=0, balance=ledger.balance(inp.user_id))
        res = ledger.refund(inp.user_id, amount, inp.key, job_id=inp.job_id, reason=inp.reason)
        return RefundResult(refunded=res.entry.amount, balance=res.entry.balance_after)

    # ---- history and slots -----------------------------------------------------------------

    @activity.defn(name=ActivityNames.RECORD_JOB)
    def record_job(self, inp: JobRecordInput) -> None:
        s = inp.status
        self.stores.jobs.save(record_of(s, inp.user_id, datetime.now(UTC)))
        if s.gpu_seconds > 0 and s.price > 0:
            self.stores.ledger.record_gpu_seconds(s.workflow_id, s.gpu_seconds)
        metrics.job_recorded(s)

    @activity.defn(name=ActivityNames.RELEASE_JOB_SLOT)
    def release_job_slot(self, inp: SlotInput) -> None:
        self.slots.release(inp.user_id, inp.workflow_id)
