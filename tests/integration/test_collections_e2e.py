"""A collection from the command line on the real stack: design, cook 12 pieces, review, export."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import uuid
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from adapters.jobs import JobsClient
from tests.integration.conftest import Stack

pytestmark = pytest.mark.stack


def cli(stack: Stack, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli.main", "collection", *args],
        env=stack.env(),
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


async def test_the_cli_cooks_reviews_and_exports_a_12_piece_collection(
    dev_stack: Stack, jobs: JobsClient, tmp_path: Path
) -> None:
    user = f"cli:col-{uuid.uuid4().hex[:8]}"
    stranger = f"cli:other-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(jobs.stores.users.get_or_create, user, 500)
    await asyncio.to_thread(jobs.stores.users.get_or_create, stranger, 500)
    run = lambda *a, **kw: asyncio.to_thread(cli, dev_stack, *a, **kw)  # noqa: E731

    out = ok(
        await run(
            "create",
            "Foxes",
            "--user",
            user,
            "--supply",
            "12",
            "--description",
            "sly foxes",
            "--set",
            "width=256",
            "--set",
            "height=256",
            "--set",
            "steps=4",
        )
    )
    cid = out.split()[1]
    ok(
        await run(
            "traits", cid, "Hat", "--user", user, "--lines", "top|a top hat|1;cap|a cap|2;none|''|1"
        )
    )
    ok(await run("traits", cid, "Place", "--user", user, "--lines", "snow|deep snow;forest"))
    ok(await run("traits", cid, "Fur", "--user", user, "--lines", "red|red fur|3;grey|grey fur"))

    bad = await run("edit", cid, "--user", user, "--prompt", "a [[Fur]] fox [wearing [[Hta]]]")
    assert bad.returncode == 2 and "unknown trait 'Hta' at column" in bad.stderr
    ok(
        await run(
            "edit", cid, "--user", user, "--prompt", "a [[Fur]] fox [wearing [[Hat]]] in [[Place]]"
        )
    )
    hidden = await run("show", cid, "--user", stranger)
    assert hidden.returncode == 2 and "not found" in hidden.stderr

    before = await asyncio.to_thread(jobs.stores.ledger.balance, user)
    cooked = ok(await run("cook", cid, "--user", user, "--yes", timeout=300))
    assert "12 pieces at" in cooked and "done: 12 made, 0 failed" in cooked, cooked
    spent = before - await asyncio.to_thread(jobs.stores.ledger.balance, user)
    price = int(cooked.split(" pieces at ")[1].split()[0])
    assert spent == 12 * price

    pieces = await jobs.collection_pieces(cid, user)
    assert [p.number for p in pieces] == list(range(1, 13))
    # The cook is the job: its pieces stay out of the user's list and runs (issue 15).
    wid = (await jobs.collection(cid, user)).last_cook
    listed = {j.workflow_id: j.kind for j in await jobs.list_jobs(user=user, limit=100)}
    assert listed == {wid: "cook"}, listed
    everything = await jobs.list_jobs(user=user, limit=100, pieces=True)
    assert len(everything) == 13, "with --pieces, the cook and its 12 pieces"
    assert await jobs.recent_runs(user, 5) == [], "nothing to /regen: the pieces are the cook's"
    assert all(p.state == "pending_review" and p.blob_id for p in pieces)
    assert len({p.combo for p in pieces}) == 12, "12 pieces, 12 combinations: none repeats"

    listing = ok(await run("review", cid, "--user", user, "--out", str(tmp_path / "look")))
    assert "12 pieces" in listing and len(list((tmp_path / "look").glob("*.png"))) == 12
    ok(await run("review", cid, "--user", user, "--approve", "1-9", "--reject", "10,11,12"))
    old = {p.number: p for p in await jobs.collection_pieces(cid, user)}
    regen = ok(await run("review", cid, "--user", user, "--regenerate", "10", "--wait"))
    assert "regenerating 10" in regen
    new10 = (await jobs.collection_pieces(cid, user, states=["pending_review"]))[0]
    assert new10.number == 10 and new10.traits == old[10].traits
    assert new10.seed != old[10].seed and new10.blob_id != old[10].blob_id
    ok(await run("review", cid, "--user", user, "--approve", "10"))

    zpath = tmp_path / "foxes.zip"
    exported = ok(await run("export", cid, "--user", user, "--out", str(zpath)))
    assert "exported 10 pieces" in exported
    with zipfile.ZipFile(zpath) as zf:
        names = set(zf.namelist())
        metas = [json.loads(zf.read(f"metadata/{n}.json")) for n in range(1, 11)]
        assert "metadata/11.json" not in names
        for meta in metas:
            assert set(meta) >= {"name", "description", "image", "attributes"}
            assert meta["description"] == "sly foxes"
            assert meta["image"] in names
            with Image.open(io.BytesIO(zf.read(meta["image"]))) as im:
                assert im.size == (256, 256)
            assert all(set(a) == {"trait_type", "value"} for a in meta["attributes"])
        summary = json.loads(zf.read("summary.json"))
    fur = Counter(a["value"] for m in metas for a in m["attributes"] if a["trait_type"] == "Fur")
    assert summary["pieces"] == 10 and summary["trait_frequencies"]["Fur"] == dict(fur)
    assert await asyncio.to_thread(
        jobs.stores.blobs.find_by_key,
        f"export:{cid}:" + __import__("hashlib").sha256(zpath.read_bytes()).hexdigest(),
    )


async def test_cooking_without_points_for_one_piece_is_refused_with_nothing_charged(
    dev_stack: Stack, jobs: JobsClient
) -> None:
    user = f"cli:poor-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(jobs.stores.users.get_or_create, user, 3)
    col = await jobs.create_collection(user, "Poor", supply=2)
    await jobs.set_traits(col.id, user, "Hat", "a\nb")
    await jobs.edit_collection(col.id, user, {"master_prompt": "a fox [[Hat]]"})
    proc = await asyncio.to_thread(cli, dev_stack, "cook", col.id, "--user", user, "--yes")
    assert proc.returncode == 2 and "costs" in proc.stderr and "balance is 3" in proc.stderr
    assert await asyncio.to_thread(jobs.stores.ledger.balance, user) == 3
    assert not (await jobs.collection(col.id, user)).cook_started
