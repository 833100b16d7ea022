"""Job history: one document per workflow, for `status`, /regen, /again and galleries.

`record` is an upsert keyed by the workflow id, so a retried activity (or the same job recorded
at start and again at the end) leaves exactly one document; `created_at` keeps its first value.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from domain.jobs import JobStatus
from domain.users import JobRecord

log = logging.getLogger(__name__)


class JobRepo:
    def __init__(self, db: Database[Any]) -> None:
        self.coll = db["jobs"]

    def ensure_indexes(self) -> None:
        # workflow_id is `_id`, which is unique by construction.
        self.coll.create_index(
            [("user_id", ASCENDING), ("created_at", DESCENDING)], name="user_recent"
        )

    def save(self, job: JobRecord) -> None:
        """Insert or update the job by workflow id (the saga's record step): one `update`.

        Not a `find_one_and_update`: the embedded MongoDB-compatible server (secantusdb 0.7)
        runs a findAndModify's write with a filter no index serves, so it scans the whole
        collection, and the dev stack's record step slowed down with every job it had ever
        run (docs/performance.md, issue 17). An upsert by `_id` is a point lookup everywhere.
        """
        doc = job.model_dump()
        created_at = doc.pop("created_at")
        update = {"$set": doc, "$setOnInsert": {"created_at": created_at}}
        for attempt in range(3):
            try:
                self.coll.update_one({"_id": job.workflow_id}, update, upsert=True)
                return
            except DuplicateKeyError:
                # Two upserts of a new id raced; the loser's retry is a plain update.
                if attempt == 2:
                    raise

    def record(self, job: JobRecord) -> JobRecord:
        """Insert or update the job by workflow id; returns what is stored now (`save`, then a
        read by `_id`)."""
        self.save(job)
        stored = self.get(job.workflow_id)
        assert stored is not None, "a document just upserted by _id is there"
        return stored

    def get(self, workflow_id: str) -> JobRecord | None:
        doc = self.coll.find_one({"_id": workflow_id})
        return _job(doc) if doc else None

    def last_runs(
        self,
        user_id: str,
        n: int = 5,
        *,
        kinds: list[str] | None = None,
        states: list[str] | None = None,
    ) -> list[JobRecord]:
        """The user's `n` most recent jobs, newest first (optionally only some kinds/states)."""
        # A cook's pieces (`cook-…-piece-N`) are the collection's, not runs to repeat or list.
        query: dict[str, Any] = {"user_id": user_id, "workflow_id": {"$not": {"$regex": "^cook-"}}}
        if kinds:
            query["kind"] = {"$in": kinds}
        if states:
            query["state"] = {"$in": states}
        cursor = self.coll.find(query).sort([("created_at", DESCENDING), ("_id", DESCENDING)])
        return [_job(d) for d in cursor.limit(max(0, n))]

    def done_with_outputs(self) -> Iterator[JobRecord]:
        """Every job that ended done having produced outputs (for `points audit`)."""
        for doc in self.coll.find({"state": "done", "outputs.0": {"$exists": True}}):
            yield _job(doc)


def _job(doc: dict[str, Any]) -> JobRecord:
    return JobRecord.model_validate({k: v for k, v in doc.items() if k != "_id"})


def record_of(status: JobStatus, user_id: str, now: datetime) -> JobRecord:
    """The history record of a job's status (the saga's record step and an operator's
    terminate write the same shape); `finished_at` only once the status is final."""
    return JobRecord(
        workflow_id=status.workflow_id,
        user_id=user_id,
        identity=status.user,
        kind=status.kind,
        prompt=status.prompt or "",
        template=status.template or "",
        settings=status.settings,
        seeds=status.seeds,
        outputs=[o.blob_id for o in status.outputs],
        price=status.price,
        refund=status.refund,
        state=status.state.value,
        error=status.reason or "",
        not_delivered=status.not_delivered or "",
        created_at=now,
        finished_at=now if status.final else None,
    )
