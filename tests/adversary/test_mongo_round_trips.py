"""MongoDB round trips of a make job's hot steps (issue 17: CPU per job, MongoDB the largest share).

`bench/mongo_ops.py` profiles every command a make job sends; these tests pin the steps cut to
one command each in the common case, and check that each still does what it did: the inventory
read that chooses a template's form, the history record, the GPU seconds on the charge, and the
running-job slot. The record and the GPU seconds use no `findAndModify`: the embedded server
scans the whole collection for one. Commands are counted with a pymongo CommandListener on a
client of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pymongo
import pytest
from pymongo import monitoring
from pymongo.database import Database
from temporalio.client import Client

from domain.errors import InsufficientPoints, NoServerCanRun, TooManyJobs
from domain.inventory import ServerInventory
from domain.jobs import MakeImageRequest, PrepareInput
from domain.rules import DomainRules
from domain.users import JobRecord
from services.job_plans import MakePlanner
from services.jobs import JobService
from store.db import Stores
from store.slots import JobSlots
from tests.fixtures.stack import MongoServer
from workers.config import Config

USER = "telegram:4004"


class Commands(monitoring.CommandListener):
    """The names of the commands a client sent (driver handshakes and heartbeats left out)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.finds: list[str] = []  # the collection of each `find`

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name not in ("hello", "isMaster", "ismaster", "ping", "endSessions"):
            self.names.append(event.command_name)
        if event.command_name == "find":
            self.finds.append(str(event.command["find"]))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
def counted(
    mongo_server: MongoServer, mongo_db: Database[Any]
) -> Iterator[tuple[Stores, Commands]]:
    """Stores over the test's database through a client whose commands are counted."""
    listener = Commands()
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        mongo_server.uri, event_listeners=[listener], serverSelectionTimeoutMS=10_000
    )
    try:
        stores = Stores(client[mongo_db.name], DomainRules(starter_grant=500))
        stores.ensure_indexes()
        stores.templates.load_bundled()
        listener.names.clear()
        yield stores, listener
    finally:
        client.close()


def server(url: str, *, nodes: frozenset[str] | None = None) -> ServerInventory:
    every = frozenset(
        {"CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode",
         "VAEEncode", "SaveImage", "PreviewImage", "LoadImage", "ImageScale", "LoraLoader"}
    )  # fmt: skip
    return ServerInventory(
        url=url,
        node_types=every if nodes is None else nodes,
        models={"checkpoints": frozenset({"sdxl-base-1.0.safetensors"})},
    )


# ---- the inventory read of prepare ------------------------------------------------------------


def test_choosing_a_templates_form_reads_the_inventory_once_when_a_server_reported(
    counted: tuple[Stores, Commands],
) -> None:
    stores, commands = counted
    stores.inventory.record_server(server("http://gpu-1:8188"))
    template = stores.templates.get("make")
    commands.names.clear()
    form = stores.inventory.choose_form(template)
    assert form.name == "make"
    assert commands.names == ["find"], "one read of the servers seen lately, not two"


def test_a_make_plan_reads_the_servers_seen_lately_once(
    counted: tuple[Stores, Commands],
) -> None:
    """The form (`choose_form`) and the GPU queue (`queue_for`) are chosen from one read of
    the servers seen lately: a plan runs twice per job (the jobs client, then prepare)."""
    stores, commands = counted
    stores.inventory.record_server(server("http://gpu-1:8188"))
    stores.users.get_or_create(USER)
    planner = MakePlanner(stores)
    commands.finds.clear()
    plan = planner.plan_make_image(
        PrepareInput(workflow_id="", request=MakeImageRequest(user=USER, prompt="a cat"))
    )
    assert plan.comfy and plan.route is not None and plan.route.comfy_queue.startswith("comfy")
    assert commands.finds.count("comfy_inventory") == 1, commands.finds


def test_with_no_inventory_ever_the_templates_own_graph_is_used(
    counted: tuple[Stores, Commands],
) -> None:
    stores, _ = counted
    template = stores.templates.get("make")
    assert stores.inventory.choose_form(template).graph == template.forms()[0].graph


def test_a_server_seen_only_long_ago_still_refuses_what_it_cannot_run(
    counted: tuple[Stores, Commands],
) -> None:
    """Known but stale: no server seen lately can run it (not "nothing known")."""
    stores, _ = counted
    old = datetime.now(UTC) - timedelta(days=2)
    stores.inventory.record_server(server("http://gpu-old:8188"), now=old)
    with pytest.raises(NoServerCanRun):
        stores.inventory.choose_form(stores.templates.get("make"))


def test_a_server_lacking_a_node_refuses_the_template(counted: tuple[Stores, Commands]) -> None:
    stores, _ = counted
    stores.inventory.record_server(server("http://gpu-1:8188", nodes=frozenset({"SaveImage"})))
    with pytest.raises(NoServerCanRun):
        stores.inventory.choose_form(stores.templates.get("make"))


# ---- record_job: the history record and the GPU seconds ----------------------------------------


def record(i: int, state: str = "running") -> JobRecord:
    return JobRecord.model_validate(
        {
            "workflow_id": "make-telegram-4004-1",
            "user_id": "u1",
            "identity": USER,
            "kind": "make",
            "prompt": f"a cat {i}",
            "template": "make",
            "settings": {"width": 1024},
            "seeds": [i],
            "price": 35,
            "state": state,
            "created_at": datetime(2026, 1, 1, 12, i, tzinfo=UTC),
        }
    )


def test_the_saga_records_a_job_in_one_indexed_update(
    counted: tuple[Stores, Commands],
) -> None:
    """One `update` by `_id`, no `findAndModify`: the embedded server (secantusdb 0.7) answers
    a findAndModify by scanning the whole collection (its write step filters on `_id` plus an
    `$and`, which no index serves), so a dev stack's record step slowed down with every job it
    had ever run (issue 17: 5 ms per job at a few hundred jobs, 50 ms at 3,000)."""
    stores, commands = counted
    stores.jobs.save(record(1))
    assert commands.names == ["update"]
    first = stores.jobs.get("make-telegram-4004-1")
    assert first is not None and first.prompt == "a cat 1"
    commands.names.clear()
    again = stores.jobs.record(record(2, state="done"))
    assert commands.names == ["update", "find"], "record() reads back by _id: no findAndModify"
    assert again.state == "done" and again.prompt == "a cat 2"
    assert again.created_at == first.created_at, "created_at is set on insert only"
    assert stores.jobs.get("make-telegram-4004-1") == again


def test_gpu_seconds_land_on_the_jobs_first_charge_without_find_and_modify(
    counted: tuple[Stores, Commands],
) -> None:
    stores, commands = counted
    user = stores.users.get_or_create(USER)[0]
    stores.ledger.charge(user.id, 10, "job-1:charge", job_id="job-1", reason="make")
    stores.ledger.charge(user.id, 5, "job-1:charge-2", job_id="job-1", reason="make")
    commands.names.clear()
    assert stores.ledger.record_gpu_seconds("job-1", 1.5)
    # An indexed find of the first charge, then an update by `_id`: the embedded server scans
    # the whole ledger for a findAndModify (see the test above), 13 ms per job in `make bench`.
    assert commands.names == ["find", "update"]
    entries = {e.key: e for e in stores.ledger.entries_for_job("job-1")}
    assert entries["job-1:charge"].gpu_seconds == 1.5, "the first charge carries the job's time"
    assert entries["job-1:charge-2"].gpu_seconds is None
    assert stores.ledger.record_gpu_seconds("job-1", 2.0, key="job-1:charge-2")
    assert stores.ledger.entries_for_job("job-1")[-1].gpu_seconds == 2.0
    assert not stores.ledger.record_gpu_seconds("job-none", 1.0), "no charge: nothing to set"


# ---- the running-job slot -----------------------------------------------------------------------


def test_taking_a_slot_is_one_command_once_the_user_has_a_slot_document(
    counted: tuple[Stores, Commands],
) -> None:
    stores, commands = counted
    slots = JobSlots(stores.db)
    slots.acquire("u1", "wf-1", 2)  # the user's first job creates the document
    assert slots.running("u1") == ["wf-1"]
    commands.names.clear()
    slots.acquire("u1", "wf-2", 2)
    assert commands.names == ["update"], "one conditional push, no upsert before it"
    assert slots.running("u1") == ["wf-1", "wf-2"]
    slots.acquire("u1", "wf-2", 2)  # a retried start takes no second slot
    assert slots.running("u1") == ["wf-1", "wf-2"]
    with pytest.raises(TooManyJobs):
        slots.acquire("u1", "wf-3", 2)
    slots.release("u1", "wf-1")
    slots.acquire("u1", "wf-3", 2)
    assert slots.running("u1") == ["wf-2", "wf-3"]


def test_a_first_slot_is_taken_even_with_no_slot_document_yet(
    counted: tuple[Stores, Commands],
) -> None:
    stores, _ = counted
    slots = JobSlots(stores.db)
    slots.acquire("u-new", "wf-1", 1)
    assert slots.running("u-new") == ["wf-1"]
    with pytest.raises(TooManyJobs):
        slots.acquire("u-new", "wf-2", 1)


# ---- the jobs client's start ---------------------------------------------------------------------


class FakeTemporal:
    """Only what `start_make` calls: the start, recorded (no server needed to count reads)."""

    def __init__(self) -> None:
        self.started: list[str] = []

    async def start_workflow(self, workflow: str, arg: Any, **kw: Any) -> None:
        self.started.append(str(kw["id"]))


async def test_starting_a_make_reads_the_user_once_and_takes_their_slot(
    counted: tuple[Stores, Commands],
) -> None:
    """The plan's user lookup is the start's: the slot is taken under that id, no second read."""
    stores, commands = counted
    user = stores.users.get_or_create(USER)[0]
    temporal = FakeTemporal()
    jobs = JobService(cast(Client, temporal), stores, Config())
    commands.finds.clear()
    request = MakeImageRequest(user=USER, platform="telegram", prompt="a lighthouse at dusk")
    started = await jobs.start_make(request)
    assert temporal.started == [started.workflow_id]
    assert commands.finds.count("users") == 1, commands.finds
    assert JobSlots(stores.db).running(user.id) == [started.workflow_id]


# ---- the job's charge --------------------------------------------------------------------------


def test_a_jobs_charge_reads_its_key_once_inside_its_transaction(
    counted: tuple[Stores, Commands],
) -> None:
    """charge_up_to checks its key, then books: the booking does not read the key again (the
    transaction's snapshot could not show it otherwise), and still charges exactly once."""
    stores, commands = counted
    user = stores.users.get_or_create(USER)[0]
    before = stores.ledger.balance(user.id)
    commands.finds.clear()
    first = stores.ledger.charge_up_to(user.id, 35, "job-3:r1:charge", job_id="job-3", reason="m")
    assert first is not None and not first.replayed and first.entry.amount == 35
    assert commands.finds == ["users", "ledger", "ledger", "users"], (
        "user, key, job's totals; the balance after the debit"
    )
    again = stores.ledger.charge_up_to(user.id, 35, "job-3:r1:charge", job_id="job-3", reason="m")
    assert again is not None and again.replayed and again.entry == first.entry
    assert stores.ledger.balance(user.id) == before - 35, "charged once"
    with pytest.raises(InsufficientPoints):
        stores.ledger.charge_up_to(user.id, 10**6, "job-4:r1:charge", job_id="job-4", reason="m")
    assert stores.ledger.entry("job-4:r1:charge") is None and stores.ledger.balance(user.id) == (
        before - 35
    )


def test_points_move_without_find_and_modify(counted: tuple[Stores, Commands]) -> None:
    """A charge, a refund and a grant move the balance with an `update` and read it back in
    their transaction: the embedded server answers any `findAndModify` by scanning the whole
    collection (`users` here: 5 ms at 100 users, 66 ms at 3,000, measured). The entries still
    carry the balance after each step, and too few points is still refused with the balance."""
    stores, commands = counted
    user = stores.users.get_or_create(USER)[0]
    before = stores.ledger.balance(user.id)
    commands.names.clear()
    charged = stores.ledger.charge(user.id, 30, "job-5:charge", job_id="job-5", reason="m")
    refunded = stores.ledger.refund(user.id, 10, "job-5:refund", job_id="job-5", reason="m")
    granted = stores.ledger.grant(user.id, 7, "gift-1", by="operator", reason="gift")
    assert "findAndModify" not in commands.names
    assert charged.entry.balance_after == before - 30
    assert refunded.entry.balance_after == before - 20
    assert granted.entry.balance_after == before - 13 == stores.ledger.balance(user.id)
    with pytest.raises(InsufficientPoints) as refused:
        stores.ledger.charge(user.id, 10**6, "job-6:charge", job_id="job-6", reason="m")
    assert refused.value.balance == before - 13
    assert stores.ledger.entry("job-6:charge") is None
    assert stores.ledger.balance(user.id) == before - 13, "a refused charge moved nothing"


# ---- storing an output -------------------------------------------------------------------


def test_storing_a_blob_does_not_ask_whether_the_bucket_is_empty_every_time(
    counted: tuple[Stores, Commands],
) -> None:
    """pymongo's GridFS asks `find_one({})` of `images.files` and `images.chunks` before every
    new file, to create its indexes on an empty bucket. The embedded server answers a find
    without an index by decoding the whole collection, every chunk of every image ever stored
    (37 ms at 1,000 images, measured): each make job's store step grew with the bucket. Asked
    once per bucket and process; `BlobStore.ensure_indexes` creates the same indexes at start."""
    stores, commands = counted
    first = stores.blobs.put(b"one", "a.png", "image/png", key="k-1")
    unfiltered = [c for c in commands.finds if c in ("images.files", "images.chunks")]
    commands.names.clear()
    commands.finds.clear()
    second = stores.blobs.put(b"two", "b.png", "image/png", key="k-2")
    assert commands.names == ["find", "insert", "insert"], "the key check, the chunk, the file"
    assert commands.finds == ["images.files"], "only the key's indexed find"
    assert len(unfiltered) == 3, "the first put of a process still lets GridFS check"
    assert stores.blobs.get(first) == b"one" and stores.blobs.get(second) == b"two"
    assert stores.blobs.put(b"two", "b.png", "image/png", key="k-2") == second, "still by key"


# ---- the settle ---------------------------------------------------------------------------------


def test_a_settle_of_an_applied_charge_is_one_read_and_no_transaction(
    counted: tuple[Stores, Commands],
) -> None:
    """The saga's settle replays the run's own charge key (a no-op in a plain run). Asked with
    `expect_applied`, the ledger reads the key first, outside a transaction: one `find`
    instead of the user's, the key's (in a transaction) and the commit. A key not applied (a
    reset run's settle) takes the transaction as before and tops the job up."""
    stores, commands = counted
    user = stores.users.get_or_create(USER)[0]
    stores.ledger.grant(user.id, 100, "grant-1", by="test", reason="test")
    first = stores.ledger.charge_up_to(
        user.id, 30, "job-1:run-1:charge", job_id="job-1", reason="m"
    )
    assert first is not None and not first.replayed
    commands.names.clear()
    again = stores.ledger.charge_up_to(
        user.id, 30, "job-1:run-1:charge", job_id="job-1", reason="m", expect_applied=True
    )
    assert commands.names == ["find"]
    assert again is not None and again.replayed and again.entry == first.entry
    # A reset run's settle: its key is new; the job is refunded, so it is charged again.
    stores.ledger.refund(user.id, 30, "job-1:run-1:refund", job_id="job-1", reason="r")
    topped = stores.ledger.charge_up_to(
        user.id, 30, "job-1:run-2:charge", job_id="job-1", reason="m", expect_applied=True
    )
    assert topped is not None and topped.entry.amount == 30 and not topped.replayed
    assert stores.users.get(user.id).points == user.points + 100 - 30 + 30 - 30
    # Another user's key is refused as before, not answered from the read.
    other = stores.users.get_or_create("telegram:4005")[0]
    with pytest.raises(Exception, match="already used"):
        stores.ledger.charge_up_to(
            other.id, 30, "job-1:run-2:charge", job_id="job-1", reason="m", expect_applied=True
        )
