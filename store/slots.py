"""Running-job slots: at most N jobs per user at once, race-free.

One document per user holds the ids of their running jobs. Taking a slot is a single conditional
update ("fewer than N ids, and not this one yet"), which MongoDB applies atomically, so ten
simultaneous starts by one user leave exactly N ids. Taking the same id twice is a no-op, so a
retried start does not use a second slot. A slot whose workflow has ended without releasing it
(terminated by an operator) is pruned by the caller, who can ask Temporal which ids still run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database

from domain.errors import TooManyJobs


class JobSlots:
    def __init__(self, db: Database[Any]) -> None:
        self.coll = db["job_slots"]

    def ensure_indexes(self) -> None:
        """`_id` is the user id: nothing else to index."""

    def running(self, user_id: str) -> list[str]:
        return list(self.taken_at(user_id))

    def taken_at(self, user_id: str) -> dict[str, datetime]:
        """Each held slot's workflow id and when it was taken (UTC)."""
        doc = self.coll.find_one({"_id": user_id}) or {}
        return {
            r["wf"]: (r["at"] if r["at"].tzinfo else r["at"].replace(tzinfo=UTC))
            for r in doc.get("running", [])
        }

    def acquire(
        self,
        user_id: str,
        workflow_id: str,
        limit: int,
        *,
        still_running: Callable[[Iterable[str]], set[str]] | None = None,
    ) -> None:
        """Take a slot for `workflow_id` or raise TooManyJobs; `still_running` prunes stale ids.

        One command when the user has a slot document and room (every job but their first): the
        conditional push. Only when it takes nothing is the document created and the push tried
        again, so a user's first job costs one upsert more and a full one a read.
        """
        if self._push(user_id, workflow_id, limit):
            return
        self.coll.update_one({"_id": user_id}, {"$setOnInsert": {"running": []}}, upsert=True)
        for _ in range(2):
            if self._push(user_id, workflow_id, limit):
                return
            current = self.running(user_id)
            if workflow_id in current:
                return
            if still_running is None:
                break
            stale = set(current) - still_running(current)
            if not stale:
                break
            self.coll.update_one(
                {"_id": user_id}, {"$pull": {"running": {"wf": {"$in": sorted(stale)}}}}
            )
        raise TooManyJobs(len(self.running(user_id)), limit)

    def _push(self, user_id: str, workflow_id: str, limit: int) -> bool:
        """The atomic step: add `workflow_id` if the user holds fewer than `limit` and not it."""
        taken = self.coll.update_one(
            {
                "_id": user_id,
                f"running.{limit - 1}": {"$exists": False},
                "running.wf": {"$ne": workflow_id},
            },
            {"$push": {"running": {"wf": workflow_id, "at": datetime.now(UTC)}}},
        )
        return bool(taken.modified_count)

    def release(self, user_id: str, workflow_id: str) -> None:
        self.coll.update_one({"_id": user_id}, {"$pull": {"running": {"wf": workflow_id}}})
