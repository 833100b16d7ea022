"""No per-job query the embedded MongoDB answers by scanning a collection that grows with jobs.

Issue 17: a dev stack that slowed down with every job it had run. `bench/mongo_ops.py
--prefill 500` (10 profiled make jobs after 500 others) showed the blob key lookup growing from
0.1 to 22 ms per job: the unique index on `metadata.key` is partial on `{$type: "string"}`,
which the embedded server (secantusdb 0.7) cannot prove a string equality implies, so it
scanned `images.files`. The media jobs' ownership reads (`get_owned` with its `$or` over the
owner fields) scanned the same collection: a top-level `$or` rides no index there (21 ms at
1,000 images, measured). A real MongoDB plans both with an index; these tests hold the queries
to a form both servers serve from one.

Then the server's own growth: its registry of retryable writes, which it pruned by walking all
of it on every write (workers/secantusd.py); and the `findAndModify` calls a job makes per cook
piece or webhook delivery, which that server answers by scanning the whole collection.

Each blob test records the filters a `BlobStore` call sends (a pymongo CommandListener on a client
of its own) and asks the server to `explain` each: none may be a `COLLSCAN`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import pymongo
import pytest
from pymongo import monitoring
from pymongo.database import Database
from secantus import transactions

from domain.collections import CollectionError
from domain.rules import DomainRules
from store.blobs import BlobNotFound, BlobStore
from store.collections import Piece
from store.db import Stores
from tests.fixtures.stack import MongoServer
from workers.devstack import mongo_argv
from workers.secantusd import _prune_front

_FILTERED = {"find": "filter", "findAndModify": "query", "update": "", "delete": ""}


class Filters(monitoring.CommandListener):
    """(collection, filter) of every find, findAndModify, update and delete a client sent."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        if name not in _FILTERED:
            return
        cmd = event.command
        coll = str(cmd[name])
        if name in ("update", "delete"):
            for op in cmd.get("updates" if name == "update" else "deletes", []):
                self.seen.append((coll, dict(op["q"])))
        else:
            self.seen.append((coll, dict(cmd.get(_FILTERED[name]) or {})))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def scans(db: Database[Any], seen: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """The recorded filters the server would answer by a collection scan."""
    out = []
    for coll, flt in seen:
        plan = db.command("explain", {"find": coll, "filter": flt})["queryPlanner"]["winningPlan"]
        if plan.get("stage") == "COLLSCAN":
            out.append(f"{coll} {flt}")
    return out


@pytest.fixture
def watched(
    mongo_server: MongoServer, mongo_db: Database[Any]
) -> Iterator[tuple[BlobStore, Database[Any], Filters]]:
    listener = Filters()
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        mongo_server.uri, event_listeners=[listener], serverSelectionTimeoutMS=10_000
    )
    try:
        db = client[mongo_db.name]
        Stores(db, DomainRules(starter_grant=500)).ensure_indexes()
        blobs = BlobStore(db)
        # A few other blobs, so a scan and an index lookup are different plans.
        for i in range(5):
            blobs.put(b"x", f"{i}.png", "image/png", key=f"other-{i}", metadata={"user_id": "u9"})
        listener.seen.clear()
        yield blobs, db, listener
    finally:
        client.close()


def test_finding_a_blob_by_its_key_is_served_by_an_index(
    watched: tuple[BlobStore, Database[Any], Filters],
) -> None:
    """Every stored output is looked up by key first (`put`), and a retried activity finds it
    again by key: the lookup must not decode every file document ever stored."""
    blobs, db, listener = watched
    blob_id = blobs.put(b"png", "a.png", "image/png", key="job-1:0", metadata={"user_id": "u1"})
    assert blobs.find_by_key("job-1:0") == blob_id
    assert blobs.put(b"other", "a.png", "image/png", key="job-1:0") == blob_id, "still once"
    assert listener.seen, "the key lookups were recorded"
    assert scans(db, listener.seen) == []


def test_reading_a_users_own_blob_is_served_by_an_index(
    watched: tuple[BlobStore, Database[Any], Filters],
) -> None:
    """A media job reads its source through `get_owned` (and marks it used): the ownership
    check must not make that read scan the bucket."""
    blobs, db, listener = watched
    mine = blobs.put(b"mine", "m.png", "image/png", metadata={"user_id": "u1"})
    legacy = blobs.put(b"old", "o.png", "image/png", metadata={"user": "u1"})
    listener.seen.clear()
    assert blobs.get_owned(mine, "u1") == b"mine"
    assert blobs.get_owned(legacy, "u1", used_by="wf-1") == b"old"
    assert blobs.info_owned(mine, "u1").length == 4
    info, stream = blobs.open_owned(mine, "u1")
    stream.close()
    assert info.length == 4
    assert scans(db, listener.seen) == []
    assert blobs.info(legacy).metadata["used_by"] == ["wf-1"], "marked as used by the job"


def test_another_users_blob_still_reads_as_missing_and_is_not_marked(
    watched: tuple[BlobStore, Database[Any], Filters],
) -> None:
    blobs, _db, _listener = watched
    theirs = blobs.put(b"theirs", "t.png", "image/png", metadata={"user_id": "u2"})
    model = blobs.put(b"lora", "l.bin", "application/octet-stream", metadata={"owner": "u2"})
    for call in (
        lambda: blobs.get_owned(theirs, "u1", used_by="wf-x"),
        lambda: blobs.get_owned(theirs, ""),
        lambda: blobs.info_owned(model, "u1"),
        lambda: blobs.open_owned(theirs, "u1"),
        lambda: blobs.get_owned("0" * 24, "u1", used_by="wf-x"),
        lambda: blobs.get_owned("not-an-id", "u1"),
    ):
        with pytest.raises(BlobNotFound):
            call()
    assert "used_by" not in blobs.info(theirs).metadata, "a refused read marks nothing"
    assert blobs.get_owned(model, "u2") == b"lora", "the model files' owner field still reads"


def test_a_bucket_indexed_by_an_earlier_release_moves_to_the_served_key_index(
    mongo_server: MongoServer, mongo_db: Database[Any]
) -> None:
    """A database whose buckets carry the earlier `key_unique` index (partial on `$type`) gets
    the new one at start, and the old one only then goes: keys stay unique throughout."""
    files = mongo_db["images.files"]
    files.create_index(
        [("metadata.key", pymongo.ASCENDING)],
        unique=True,
        partialFilterExpression={"metadata.key": {"$type": "string"}},
        name="key_unique",
    )
    blobs = BlobStore(mongo_db)
    first = blobs.put(b"a", "a.png", "image/png", key="k-1")
    blobs.ensure_indexes()
    blobs.ensure_indexes()  # a second start changes nothing
    assert "key_unique" not in files.index_information()
    assert blobs.put(b"b", "a.png", "image/png", key="k-1") == first
    with pytest.raises(pymongo.errors.DuplicateKeyError):
        files.insert_one({"metadata": {"key": "k-1"}, "length": 0})
    files.insert_one({"metadata": {}, "length": 0})
    files.insert_one({"metadata": {}, "length": 0})  # files without a key are not unique-checked
    plan = mongo_db.command("explain", {"find": "images.files", "filter": {"metadata.key": "k-1"}})
    assert plan["queryPlanner"]["winningPlan"].get("stage") != "COLLSCAN"


# ---- the embedded server's retryable-write registry ----------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _registry(clock: _Clock) -> transactions.TransactionRegistry:
    return transactions.TransactionRegistry(time_func=clock)


def test_the_embedded_server_runs_with_the_constant_time_prune() -> None:
    """secantusdb 0.7.0b3 pruned its registry of retryable writes (every single write pymongo
    sends) by walking all of it twice per write, and sorting all of it once it held 10,000:
    measured 1.0 ms per `update_one` after 100 writes, 8–10 ms from 10,000 on (~800 make jobs
    in half an hour). The dev stack and the tests' server run it through `workers.secantusd`."""
    argv = mongo_argv(27017, Path("data"))
    assert argv[:3] == [sys.executable, "-m", "workers.secantusd"]
    assert "--sync-on-commit" in argv
    # The hooks the wrapper replaces still exist in the pinned server.
    assert callable(transactions.TransactionRegistry._prune_retryable_locked)
    assert transactions._RETRYABLE_RECORD_LIFETIME_SECONDS == 30 * 60.0
    assert transactions._RETRYABLE_RECORD_MAX == 10_000


def test_the_prune_drops_what_the_servers_own_prune_drops() -> None:
    """Stale records go, fresh ones stay, and above the cap the oldest go: the same keys as
    the server's own prune, from the same registry."""
    clock = _Clock()
    ours, theirs = _registry(clock), _registry(clock)
    original = transactions.TransactionRegistry._prune_retryable_locked
    for i in range(50):
        clock.now += 60.0  # one a minute: the first 20 are stale 30 minutes later
        for reg in (ours, theirs):
            reg._retryable[(b"s", i)] = ({"ok": 1}, clock.now, b"id")
    clock.now += 1.0
    _prune_front(ours)
    original(theirs)
    assert list(ours._retryable) == list(theirs._retryable)
    assert len(ours._retryable) == 30


def test_above_the_cap_the_oldest_records_go(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transactions, "_RETRYABLE_RECORD_MAX", 5)
    clock = _Clock()
    reg = _registry(clock)
    for i in range(8):
        clock.now += 1.0
        reg._retryable[(b"s", i)] = ({"ok": 1}, clock.now, b"id")
    _prune_front(reg)
    assert [k[1] for k in reg._retryable] == [3, 4, 5, 6, 7]


def test_a_retried_write_is_still_answered_from_its_record(mongo_db: Database[Any]) -> None:
    """The server still replays a retryable write's recorded reply (what the registry is
    for): the same lsid and txnNumber sent twice apply the `$inc` once."""
    coll = mongo_db["retry_probe"]
    coll.insert_one({"_id": 1, "n": 0})
    client = mongo_db.client
    with client.start_session() as session:
        cmd = {
            "update": "retry_probe",
            "updates": [{"q": {"_id": 1}, "u": {"$inc": {"n": 1}}}],
            "lsid": session.session_id,
            "txnNumber": bson.int64.Int64(7),
        }
        first = mongo_db.command(cmd)
        again = mongo_db.command(cmd)
        assert coll.find_one({"_id": 1}) == {"_id": 1, "n": 1}, "the retry did not apply"
        mongo_db.command({**cmd, "txnNumber": bson.int64.Int64(8)})
    assert first["n"] == again["n"] == 1
    assert coll.find_one({"_id": 1}) == {"_id": 1, "n": 2}, "a new write does"


# ---- other writes a job makes per piece or per delivery --------------------------------------


class _Names(monitoring.CommandListener):
    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_a_cook_piece_and_a_webhook_secret_are_written_without_find_and_modify(
    mongo_server: MongoServer, mongo_db: Database[Any]
) -> None:
    """Each piece of a cook is recorded as it moves on, and each webhook delivery reads its
    account's secret (made on first use). The embedded server answers any `findAndModify` by
    scanning the whole collection (every piece ever cooked; every account with webhooks):
    an `update` by `_id` and a read back instead, with the same results."""
    listener = _Names()
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        mongo_server.uri, event_listeners=[listener], serverSelectionTimeoutMS=10_000
    )
    try:
        stores = Stores(client[mongo_db.name], DomainRules(starter_grant=500), b"k" * 32)
        stores.ensure_indexes()
        repo = stores.collections
        repo.plan_piece(Piece(collection_id="c-1", number=1, seed=1, cook_id="k1"))
        listener.names.clear()
        recorded = repo.record_piece("c-1", 1, {"state": "pending_review", "blob_id": "b1"})
        first = stores.webhook_secrets.secret("u-1")
        again = stores.webhook_secrets.secret("u-1")
        assert "findAndModify" not in listener.names
        assert recorded.state == "pending_review" and recorded.blob_id == "b1"
        assert recorded.seed == 1, "the rest of the piece is kept"
        assert first == again and first.startswith("whsec_"), "made once, then the same"
        with pytest.raises(CollectionError):
            repo.record_piece("c-1", 9, {"state": "done"})
    finally:
        client.close()


def test_recording_a_jobs_gpu_seconds_is_served_by_an_index(
    mongo_server: MongoServer, mongo_db: Database[Any]
) -> None:
    """Every finished render records its GPU time on the job's charge. The embedded server
    rides an index only for a filter on that index's field alone: `job_id` and `kind`
    together scanned the whole ledger (every entry of every job) once per job."""
    listener = Filters()
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        mongo_server.uri, event_listeners=[listener], serverSelectionTimeoutMS=10_000
    )
    try:
        stores = Stores(client[mongo_db.name], DomainRules(starter_grant=500))
        stores.ensure_indexes()
        user = stores.users.get_or_create("telegram:4242")[0]
        for n in range(5):  # other jobs' entries: a scan and an index lookup differ
            stores.ledger.charge(user.id, 1, f"job-{n}:charge", job_id=f"job-{n}", reason="make")
        listener.seen.clear()
        assert stores.ledger.record_gpu_seconds("job-3", 1.5)
        assert scans(client[mongo_db.name], listener.seen) == []
        assert stores.ledger.entries_for_job("job-3")[0].gpu_seconds == 1.5
    finally:
        client.close()
