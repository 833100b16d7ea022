# ruff: noqa: E402
"""MongoDB commands per make job, by command and query shape: what each job asks the database.

Run with `.venv/bin/python bench/mongo_ops.py` (about a minute). On a fresh embedded dev stack
(free loopback ports, a temporary directory, every process stopped at the end) it turns on the
MongoDB profiler (level 2: every operation) for the application's database, runs `--jobs`
sequential 1-image make jobs through `JobsClient` (the client's checks and slot included), and
prints one markdown table: each command per job with its collection, the fields it filters on
(values dropped: the query's shape), the plan MongoDB chose (`COLLSCAN` = no index) and the
server's time for it.

Why the profiler and not a pymongo CommandListener: the jobs run across three processes (the
client here, the workflow worker, the comfy worker); the profiler sees all of them.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python bench/mongo_ops.py` puts only bench/ on the path
    sys.path.insert(0, str(REPO_ROOT))

import argparse
import asyncio
import tempfile
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from adapters.jobs import JobsClient
from bench.make_image import cpu_seconds, embedded_stack, set_render_time
from domain.jobs import JobState, MakeImageRequest
from workers.devstack import DevStack
from workers.runtime import connect_temporal, open_stores

POINTS = 100_000
# Commands of the driver and the profiler itself, not of a job.
_IGNORED = {"hello", "isMaster", "ismaster", "ping", "buildInfo", "endSessions", "profile"}


def shape(doc: Any) -> Any:
    """The keys of a filter or update, values dropped, so queries group by their shape."""
    if isinstance(doc, Mapping):
        return {k: shape(v) if k.startswith("$") else "?" for k, v in doc.items()}
    if isinstance(doc, list):
        return [shape(d) for d in doc[:1]]
    return "?"


def key_of(entry: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """(command, collection, query shape, plan) of one profiler entry."""
    cmd: Mapping[str, Any] = entry.get("command") or {}
    name = next(iter(cmd), entry.get("op", "?"))
    coll = str(entry.get("ns", "")).split(".", 1)[-1]
    query = cmd.get("filter") or cmd.get("query") or cmd.get("q")
    if query is None and isinstance(cmd.get("pipeline"), list) and cmd["pipeline"]:
        query = cmd["pipeline"][0]
    if query is None and cmd.get("updates"):
        query = cmd["updates"][0].get("q")
    plan = str(entry.get("planSummary", ""))
    return str(name), coll, str(shape(query)) if query is not None else "", plan


def plan_of(db: Any, entry: Mapping[str, Any]) -> str:
    """The plan the server picks for the entry's filter (a find, or a write's filter as a find),
    e.g. `IXSCAN key_string_unique` or `COLLSCAN`; "" for a command without a filter."""
    cmd: Mapping[str, Any] = entry.get("command") or {}
    coll = str(entry.get("ns", "")).split(".", 1)[-1]
    query = cmd.get("filter") or cmd.get("query") or cmd.get("q")
    if query is None and cmd.get("updates"):
        query = cmd["updates"][0].get("q")
    if query is None and cmd.get("deletes"):
        query = cmd["deletes"][0].get("q")
    if not isinstance(query, Mapping) or not coll:
        return ""
    try:
        plan = db.command("explain", {"find": coll, "filter": dict(query)})
    except Exception:  # a measurement: a plan it cannot name is left blank
        return ""
    stages = []
    node: Any = plan.get("queryPlanner", {}).get("winningPlan", {})
    while isinstance(node, Mapping) and node:
        name = str(node.get("stage", ""))
        stages.append(f"{name} {node['indexName']}" if node.get("indexName") else name)
        node = node.get("inputStage")
    return " ← ".join(stages)


async def run_jobs(
    stack: DevStack, jobs_n: int, prefill: int = 0
) -> tuple[list[dict[str, Any]], int, float]:
    config, endpoints = stack.config, stack.endpoints
    temporal = await connect_temporal(config, endpoints)
    stores = open_stores(config, endpoints)
    db = stores.db
    set_render_time(endpoints.comfyui_urls[0], 0.0)
    try:
        jobs = JobsClient(temporal, stores, config)
        user = f"cli:bench-mongo-{uuid.uuid4().hex[:6]}"
        await asyncio.to_thread(stores.users.get_or_create, user, POINTS)

        async def one(seed: int) -> None:
            request = MakeImageRequest(
                user=user,
                platform="cli",
                prompt="a lighthouse on a cliff at dusk",
                overrides={"width": 256, "height": 256, "steps": 4, "seed": seed},
            )
            started = await jobs.start_make(request)
            status = await jobs.result(started.workflow_id)
            if status.state is not JobState.DONE:
                raise RuntimeError(f"{started.workflow_id} ended {status.state}")

        await one(1)  # warm up: caches, indexes, connections; not counted
        # A stack that has run `prefill` jobs before (3 at a time: the cap): a command whose
        # time grows with it scans a collection that grows with every job.
        for start in range(0, prefill, 3):
            await asyncio.gather(*(one(10_000 + i) for i in range(start, min(prefill, start + 3))))
        await asyncio.sleep(0.5)
        db.command("profile", 0)
        db.drop_collection("system.profile")
        pids = {"mongodb": stack.processes["mongodb"].pid or 0}
        cpu_before = cpu_seconds(pids)["mongodb"]
        db.command("profile", 2)
        for i in range(jobs_n):
            await one(100 + i)
        await asyncio.sleep(0.5)  # the last job's record and release land
        db.command("profile", 0)
        # mongod's CPU per job, the profiler's own writes included (the same in every run)
        cpu_ms = (cpu_seconds(pids)["mongodb"] - cpu_before) * 1000 / jobs_n
        entries = list(db["system.profile"].find({}))
        for e in entries:  # this server's profiler names no plan: ask `explain` for it
            e.setdefault("planSummary", plan_of(db, e))
    finally:
        stores.close()
    return entries, jobs_n, cpu_ms


def render_table(entries: list[dict[str, Any]], n: int, cpu_ms: float) -> str:
    counts: Counter[tuple[str, str, str, str]] = Counter()
    millis: dict[tuple[str, str, str, str], float] = defaultdict(float)
    for e in entries:
        k = key_of(e)
        if k[0] in _IGNORED or k[1].startswith("system."):
            continue
        counts[k] += 1
        millis[k] += float(e.get("millis", 0))
    total = sum(counts.values())
    lines = [
        f"{total / n:.1f} MongoDB commands per make job ({total} over {n} sequential jobs);"
        f" mongod CPU {cpu_ms:.1f} ms per job (with the profiler on).",
        "",
        "| per job | command | collection | filter shape | plan | server ms per job |",
        "|---:|---|---|---|---|---:|",
    ]
    for k, c in counts.most_common():
        name, coll, q, plan = k
        q = q.replace("|", "\\|")
        lines.append(f"| {c / n:.1f} | {name} | {coll} | `{q}` | {plan} | {millis[k] / n:.1f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10, help="sequential make jobs to profile")
    parser.add_argument(
        "--prefill",
        type=int,
        default=0,
        help="make jobs run first, 3 at a time, not profiled (growth)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="st-mongo-") as tmp, embedded_stack(Path(tmp)) as s:
        entries, n, cpu_ms = asyncio.run(run_jobs(s, args.jobs, args.prefill))
    print(render_table(entries, n, cpu_ms))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
