"""Records that are only useful for a while expire by TTL index instead of growing forever.

- `button_tokens`: a button's job ref expires `BUTTON_TOKEN_TTL` (90 days) after its job
  started; a fresh one stays.
- `comfy_inventory`: a ComfyUI server not seen for `INVENTORY_TTL` (7 days) is forgotten; one
  that reported lately stays.
- `comfy_idle`: a comfy worker's "idle since" record (store/gpu_idle.py) not refreshed for
  `IDLE_TTL` (1 hour; it stopped counting after `IDLE_FRESH`) is deleted.

The server's TTL monitor runs every 60 s (as mongod's); the tests ask the test server for one
pass at once (`secantusAdmin.pruneTtl`, a SecantusDB extension) instead of waiting for it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.collection import Collection

from store.button_tokens import BUTTON_TOKEN_TTL
from store.db import Stores
from store.gpu_idle import IDLE_FRESH, IDLE_TTL
from store.inventory import INVENTORY_MAX_AGE, INVENTORY_TTL


def ttl_of(coll: Collection[Any], field: str) -> float | None:
    """The `expireAfterSeconds` of the TTL index on `field`, if there is one."""
    for index in coll.list_indexes():
        if list(index["key"]) == [field] and "expireAfterSeconds" in index:
            return float(index["expireAfterSeconds"])
    return None


def prune_now(stores: Stores) -> None:
    stores.db.client.admin.command("secantusAdmin.pruneTtl")


def test_a_buttons_job_ref_expires_after_its_ttl_and_a_fresh_one_stays(stores: Stores) -> None:
    tokens = stores.button_tokens
    assert ttl_of(tokens.coll, "created_at") == BUTTON_TOKEN_TTL.total_seconds()
    old = tokens.remember("make-telegram-1-old", "telegram:1")
    fresh = tokens.remember("make-telegram-1-fresh", "telegram:1")
    long_ago = datetime.now(UTC) - BUTTON_TOKEN_TTL - timedelta(days=1)
    tokens.coll.update_one({"_id": old}, {"$set": {"created_at": long_ago}})
    prune_now(stores)
    assert tokens.lookup(old) is None
    found = tokens.lookup(fresh)
    assert found is not None and found.workflow_id == "make-telegram-1-fresh"


def test_a_comfy_server_not_seen_for_its_ttl_is_forgotten(stores: Stores) -> None:
    inventory = stores.inventory
    assert INVENTORY_TTL > INVENTORY_MAX_AGE, "forgotten only long after it stops counting"
    assert ttl_of(inventory.coll, "seen_at") == INVENTORY_TTL.total_seconds()
    now = datetime.now(UTC)
    inventory.record("http://gone:8188", ["old.safetensors"], now - INVENTORY_TTL - timedelta(1))
    inventory.record("http://here:8188", ["sdxl.safetensors"], now)
    prune_now(stores)
    assert [d["_id"] for d in inventory.coll.find()] == ["http://here:8188"]
    assert inventory.checkpoints() == {"sdxl.safetensors"}


def test_a_comfy_workers_idle_record_is_deleted_long_after_it_stopped_counting(
    stores: Stores,
) -> None:
    idle = stores.gpu_idle
    assert IDLE_TTL > IDLE_FRESH, "deleted only long after it stops attracting hand-backs"
    assert ttl_of(idle.coll, "seen_at") == IDLE_TTL.total_seconds()
    now = datetime.now(UTC)
    gone = now - IDLE_TTL - timedelta(minutes=1)
    idle.record("died|http://gone:8188", ["comfy"], gone, now=gone)
    idle.record("alive|http://here:8188", ["comfy"], now, now=now)
    prune_now(stores)
    assert [d["_id"] for d in idle.coll.find()] == ["alive|http://here:8188"]
