"""Which ComfyUI servers are idle on which GPU queues, now (the end-of-backlog hand-back).

A server with a prompt fed ahead in its own queue gives it back when another server could
start it at once (README "GPU pool", activities/comfy.py). "Could start it at once" was read
from Temporal (`describe task-queue`: no backlog, another poller), which lags: its approximate
backlog count read 6 for ~5 s after a long backlog drained, and its poller list names dead
pollers for minutes. Temporal offers nothing fresher (the poller list's `last_access_time` is
when a long poll began, up to a minute ago for a live idle worker), so each comfy worker says
it itself, here:

- one record per comfy worker (`_id` its poller identity, `<client identity>|<server URL>`):
  the GPU queues it polls, `idle_since` (when its server last had a GPU slot free, None while
  every slot renders) and `seen_at` (refreshed every `IDLE_REFRESH` while it runs, and on
  every change). A worker with a free slot polls every queue it serves (ServerSlots), so a
  server idle on Q for a moment means Q has no backlog: its poll would have been matched.
- A busy server `claim`s a record: idle for at least `IDLE_SETTLE`, refreshed within
  `IDLE_FRESH` (a dead worker's record is not), on the prompt's queue, not its own, and not
  claimed during this idle spell; for a render that has already started, also one whose
  server renders in at most the seconds given (`render_s`, the worker's own average: a render
  moves only to a server that ends it sooner). The claim is atomic, so an idle server attracts one
  hand-back per idle spell, not one from every busy server at once.
- A worker that stops deletes its record first; one that dies stops refreshing it, and the
  TTL index deletes it after `IDLE_TTL` (the freshness check ignores it long before).

Times are the workers' wall clocks (UTC): the servers of a pool need synchronised clocks
(NTP) to within a fraction of `IDLE_FRESH`; a skewed clock at worst delays or forgoes a
hand-back, it never loses or doubles a job (the hand-back is an ordinary retry).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import OperationFailure

log = logging.getLogger(__name__)

# A record not refreshed within this is a dead (or unreachable) worker's: never claimed.
IDLE_FRESH = timedelta(seconds=5)
# Seconds between refreshes of a record whose state did not change.
IDLE_REFRESH = 1.0
# How long a server must have been idle before it is claimed: its polls on every queue it
# serves have been waiting that long, so those queues' backlogs are empty.
IDLE_SETTLE = timedelta(milliseconds=100)
# Records of workers gone without a goodbye are deleted after this (TTL index on `seen_at`).
IDLE_TTL = timedelta(hours=1)


class GpuIdle:
    """The `comfy_idle` collection: which comfy worker is idle on which queues since when."""

    def __init__(self, db: Database[Any]) -> None:
        self.coll = db["comfy_idle"]
        # The idle spell this process last wrote per worker: a record whose spell did not
        # change is refreshed by one command, not two (each render records twice).
        self._spells: dict[str, datetime | None] = {}

    def ensure_indexes(self) -> None:
        try:
            self.coll.create_index(
                "seen_at", expireAfterSeconds=int(IDLE_TTL.total_seconds()), name="expiry_ttl"
            )
        except OperationFailure as e:  # pragma: no cover - depends on the server
            log.warning("TTL index on %s not created (%s); records stay", self.coll.name, e)

    def record(
        self,
        worker: str,
        queues: Sequence[str],
        idle_since: datetime | None,
        *,
        render_seconds: float | None = None,
        now: datetime | None = None,
    ) -> None:
        """Record that `worker` polls `queues` and has been idle since `idle_since` (None:
        every GPU slot of its server is taken), its renders taking `render_seconds` (None: not
        measured yet). A new idle spell (another `idle_since`) may be claimed again;
        refreshing the same spell keeps its claim."""
        now = now or datetime.now(UTC)
        if idle_since is not None:  # as stored (milliseconds), so the same spell compares equal
            idle_since = idle_since.replace(microsecond=idle_since.microsecond // 1000 * 1000)
        fields: dict[str, Any] = {
            "queues": sorted(queues),
            "seen_at": now,
            "render_s": render_seconds,
        }
        changed = worker not in self._spells or self._spells[worker] != idle_since
        if changed:  # a new spell (or none) drops the claim of the last one
            fields.update(idle_since=idle_since, claimed_by=None)
        done = self.coll.update_one({"_id": worker}, {"$set": fields}, upsert=True)
        if not changed and done.upserted_id is not None:  # the record was gone (a TTL)
            self.coll.update_one(
                {"_id": worker}, {"$set": {"idle_since": idle_since, "claimed_by": None}}
            )
        self._spells[worker] = idle_since

    def forget(self, worker: str) -> None:
        """The worker stops: it attracts no hand-back from now on."""
        self._spells.pop(worker, None)
        self.coll.delete_one({"_id": worker})

    def claim(
        self,
        queue: str,
        claimant: str,
        *,
        faster_than: float | None = None,
        now: datetime | None = None,
    ) -> str | None:
        """Claim another worker idle on `queue` (settled, fresh, not claimed this idle spell)
        for a prompt `claimant` hands back; with `faster_than`, only one whose renders take at
        most that many seconds (measured). Its id, or None if there is none."""
        now = now or datetime.now(UTC)
        wanted: dict[str, Any] = {
            "_id": {"$ne": claimant},
            "queues": queue,
            "idle_since": {"$ne": None, "$lte": now - IDLE_SETTLE},
            "seen_at": {"$gte": now - IDLE_FRESH},
            "claimed_by": None,
        }
        if faster_than is not None:
            wanted["render_s"] = {"$gt": 0, "$lte": faster_than}
        found = self.coll.find_one_and_update(
            wanted,
            {"$set": {"claimed_by": claimant, "claimed_at": now}},
            # The fastest server for a moved render, else the one idle longest.
            sort=[("render_s", 1), ("idle_since", 1)] if faster_than else [("idle_since", 1)],
            projection={"_id": 1},
            return_document=ReturnDocument.AFTER,
        )
        return None if found is None else str(found["_id"])
