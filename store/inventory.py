"""What each ComfyUI server has installed, as its comfy worker last read it (`/object_info`).

Each comfy worker records its server's node types and model files (per ComfyUI model folder:
checkpoints, loras, upscale_models, ...) at start and every `INVENTORY_REFRESH` after. The
planners refuse, before anything is charged, a checkpoint no server has and a template no
server can run; `stationthis comfy check` prints what each server lacks; the pool asks
`servers_able(requirements)` which servers may take a job. A server is keyed by its URL, so a
restarted worker replaces its own record, and a server not seen within `INVENTORY_MAX_AGE`
ages out (it died or its worker stopped).

A record not refreshed for `INVENTORY_TTL` (7 days) is deleted (TTL index on `seen_at`): server
URLs come and go (a GPU box renamed, a rented server returned), and their records were kept
forever. Well past `INVENTORY_MAX_AGE` on purpose: for a week after every worker stopped, the
planner still knows the stack had servers and refuses checkpoints none of them has; once
every record is gone it knows nothing, as on a fresh install, and refuses nothing for it (jobs
then wait on the comfy queue, which `stationthis jobs stuck` reports).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.database import Database
from pymongo.errors import OperationFailure

from domain.errors import NoServerCanRun
from domain.inventory import Missing, Requirements, ServerInventory
from domain.inventory import servers_able as _able
from domain.routing import CAPABILITY_QUEUE_MARK, queue_for_needs
from domain.templates import Template

log = logging.getLogger(__name__)

INVENTORY_MAX_AGE = timedelta(hours=1)
INVENTORY_TTL = timedelta(days=7)
# A capability queue a planner routed to is recorded again at most this often (one write per
# capability per planner process, not per job); unused ones age out after INVENTORY_TTL.
CAPABILITY_REWRITE = 600.0


class ComfyInventory:
    def __init__(self, db: Database[Any]) -> None:
        self.coll = db["comfy_inventory"]
        # Capability queues (domain/routing.py): queue -> the alternatives a job there needs.
        self.capability_coll = db["comfy_capabilities"]
        self._wanted_at: dict[str, float] = {}  # queue -> when this process last recorded it

    def ensure_indexes(self) -> None:
        for coll in (self.coll, self.capability_coll):
            try:
                coll.create_index(
                    "seen_at",
                    expireAfterSeconds=int(INVENTORY_TTL.total_seconds()),
                    name="expiry_ttl",
                )
            except OperationFailure as e:  # pragma: no cover - depends on the server
                log.warning("TTL index on %s not created (%s); records stay", coll.name, e)

    def queue_for(
        self,
        base: str,
        alternatives: Sequence[Requirements],
        graphs: Iterable[Mapping[str, Any]] = (),
        servers: list[ServerInventory] | None = None,
    ) -> str:
        """The GPU queue of a job needing one of `alternatives` (domain/routing.py
        `queue_for_needs` over the servers seen lately); a capability queue is recorded, so
        the comfy workers of the servers able to run it start polling it. `servers`: the
        caller's read of `servers()` (a planner reads them once per plan, issue 17)."""
        seen = self.servers() if servers is None else servers
        queue = queue_for_needs(base, alternatives, seen, graphs)
        if queue.startswith(base + CAPABILITY_QUEUE_MARK):
            self.want(base, queue, alternatives)
        return queue

    def want(self, base: str, queue: str, alternatives: Sequence[Requirements]) -> None:
        """Record that jobs wait on capability `queue` (of base queue `base`) for a server that
        can run one of `alternatives`; written at most every CAPABILITY_REWRITE per process."""
        now = time.monotonic()
        if now - self._wanted_at.get(queue, -CAPABILITY_REWRITE) < CAPABILITY_REWRITE:
            return
        self.capability_coll.replace_one(
            {"_id": queue},
            {
                "_id": queue,
                "base": base,
                "alternatives": [_needs_doc(a) for a in alternatives],
                "seen_at": datetime.now(UTC),
            },
            upsert=True,
        )
        self._wanted_at[queue] = now

    def capabilities(self, base: str) -> dict[str, list[Requirements]]:
        """Every capability queue of base queue `base` that planners recorded, with the
        alternatives a server must be able to run one of to poll it."""
        return {
            str(doc["_id"]): [_needs_from(a) for a in doc.get("alternatives") or []]
            for doc in self.capability_coll.find({"base": base})
        }

    def record(
        self, server_url: str, checkpoints: Iterable[str], now: datetime | None = None
    ) -> None:
        """Record only a server's checkpoint files (what workers before the full inventory
        wrote); its node types stay unknown, so it is not offered for templates."""
        self.coll.update_one(
            {"_id": server_url},
            {
                "$set": {
                    "checkpoints": sorted(set(checkpoints)),
                    "seen_at": now or datetime.now(UTC),
                }
            },
            upsert=True,
        )

    def record_server(self, inv: ServerInventory, now: datetime | None = None) -> None:
        """Record everything `inv` says about its server (replacing the previous record)."""
        models = {folder: sorted(files) for folder, files in sorted(inv.models.items())}
        self.coll.replace_one(
            {"_id": inv.url},
            {
                "_id": inv.url,
                "node_types": sorted(inv.node_types),
                "models": models,
                "checkpoints": models.get("checkpoints", []),
                "version": inv.version,
                # A list, not an object: node class names are not safe as MongoDB keys.
                "required_inputs": [
                    [cls, sorted(names)] for cls, names in sorted(inv.required_inputs.items())
                ],
                "seen_at": now or inv.seen_at or datetime.now(UTC),
            },
            upsert=True,
        )

    def servers(
        self, now: datetime | None = None, max_age: timedelta = INVENTORY_MAX_AGE
    ) -> list[ServerInventory]:
        """Every server seen within `max_age`, by URL. A record holding only checkpoints (an
        older worker) is left out: what it can run is unknown."""
        since = (now or datetime.now(UTC)) - max_age
        out: list[ServerInventory] = []
        for doc in self.coll.find({"seen_at": {"$gte": since}}).sort("_id", 1):
            if "node_types" not in doc:
                continue
            out.append(
                ServerInventory(
                    url=str(doc["_id"]),
                    node_types=frozenset(doc.get("node_types") or []),
                    models={str(f): frozenset(v) for f, v in (doc.get("models") or {}).items()},
                    seen_at=doc.get("seen_at"),
                    version=str(doc.get("version") or ""),
                    required_inputs={
                        str(cls): frozenset(names)
                        for cls, names in doc.get("required_inputs") or []
                    },
                )
            )
        return out

    def server(self, url: str) -> ServerInventory | None:
        """One server's last record, however old; None if it never reported."""
        for inv in self.servers(max_age=timedelta(days=36500)):
            if inv.url == url:
                return inv
        return None

    def known(self) -> bool:
        """Whether any worker ever reported a full inventory. Until one has, nothing is
        known, so nothing is refused for it (a fresh deployment starts its workers after)."""
        return self.coll.count_documents({"node_types": {"$exists": True}}, limit=1) > 0

    def servers_able(
        self,
        needs: Requirements,
        now: datetime | None = None,
        max_age: timedelta = INVENTORY_MAX_AGE,
    ) -> list[str]:
        """URLs of the servers seen lately that have every node type and model file `needs`
        names (the query the pool routes by)."""
        return _able(self.servers(now, max_age), needs)

    def choose_form(
        self,
        template: Template,
        needs: Callable[[Template], Requirements] | None = None,
        now: datetime | None = None,
        servers: list[ServerInventory] | None = None,
    ) -> Template:
        """The first form of `template` (its own graph, then its variants) that a server seen
        lately can run — what the planners build the job from, before any charge.

        `needs` gives a form's requirements with the job's values injected (a chosen
        checkpoint or upscale model); by default its graph as stored. With no inventory known
        yet the template's own graph is used; when no server can run any form, NoServerCanRun
        names what the closest server lacks for the template's own graph.
        """
        # One read in the common case (issue 17: prepare runs this for every job, in the jobs
        # client and again in the workflow): a server seen lately with a full record means the
        # inventory is known, so `known()` is asked only when none was.
        if servers is None:  # else the caller's read of `servers()` (one per plan)
            servers = self.servers(now)
        if not servers and not self.known():
            return template.forms()[0]
        return pick_form(template, servers, needs)

    def checkpoints(
        self, now: datetime | None = None, max_age: timedelta = INVENTORY_MAX_AGE
    ) -> set[str] | None:
        """Checkpoint files of every server seen lately; None when no server ever reported
        (no worker has started yet: nothing is known, so nothing is refused for it)."""
        if self.coll.estimated_document_count() == 0:
            return None
        since = (now or datetime.now(UTC)) - max_age
        found: set[str] = set()
        for doc in self.coll.find({"seen_at": {"$gte": since}}, {"checkpoints": 1}):
            found.update(str(c) for c in doc.get("checkpoints") or [])
        return found


def pick_form(
    template: Template,
    servers: list[ServerInventory],
    needs: Callable[[Template], Requirements] | None = None,
) -> Template:
    """The first form of `template` one of `servers` can run; NoServerCanRun otherwise."""
    need = needs or (lambda form: form.requirements())
    forms = template.forms()
    first_missing: Missing | None = None
    for form in forms:
        req = need(form)
        if any(s.can_run(req) for s in servers):
            return form
        if form is forms[0] and servers:
            first_missing = min((s.missing(req) for s in servers), key=_size)
    raise NoServerCanRun(
        template.name, first_missing.describe() if first_missing else "no GPU server is up"
    )


def _needs_doc(needs: Requirements) -> dict[str, Any]:
    return {
        "node_types": sorted(needs.node_types),
        "models": {f: sorted(v) for f, v in sorted(needs.models.items())},
        # A list, not an object: node class names are not safe as MongoDB keys.
        "given": [[cls, sorted(names)] for cls, names in sorted(needs.given.items())],
    }


def _needs_from(doc: Mapping[str, Any]) -> Requirements:
    return Requirements(
        node_types=frozenset(doc.get("node_types") or []),
        models={str(f): frozenset(v) for f, v in (doc.get("models") or {}).items()},
        given={str(c): frozenset(n) for c, n in doc.get("given") or []},
    )


def _size(m: Missing) -> int:
    return len(m.node_types) + sum(len(v) for v in m.models.values())
