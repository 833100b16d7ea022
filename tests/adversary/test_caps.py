"""Caps and prices a user (or a hostile ComfyUI server) could walk around (issue 13, items 5
and 10): a cook holds one of its user's running-job slots, captioning is paid, and a comfy
worker writes only into the folder it was configured with, whatever the server says."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from PIL import Image
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.training import NO_FOLDER_TYPE, TrainingComfyActivities
from adapters.jobs import JobsClient
from domain.collections import Collection, CollectionConfig
from domain.errors import InsufficientPoints, TooManyJobs
from domain.jobs import LoraFile, MakeImageRequest
from domain.training import (
    CAPTION_PRICE_PER_IMAGE,
    ChunkInput,
    Dataset,
    TrainingParams,
    TrainSpec,
)
from tests.fixtures.comfy import start_standin, stop_process
from tests.fixtures.devstack import Stack
from workers.config import Config
from workers.devstack import worker_commands

# ---- item 10: the comfy worker's folder is configured, never the server's word ------------

LORA_BYTES = b"lora weights " * 64


class _Blobs:
    """GridFS as the worker sees it: one LoRA file, and no stored chunk."""

    def get(self, blob_id: str, bucket: str = "images") -> bytes:
        return LORA_BYTES

    def find_by_key(self, key: str, bucket: str = "images") -> str | None:
        return None


def _worker(url: str, folder: Path | None) -> TrainingComfyActivities:
    return TrainingComfyActivities(
        url, cast(Any, None), cast(Any, SimpleNamespace(blobs=_Blobs())), comfyui_dir=folder
    )


def _lora() -> LoraFile:
    return LoraFile(
        name="fox",
        filename="st/fox.safetensors",
        blob_id="b1",
        sha256=hashlib.sha256(LORA_BYTES).hexdigest(),
        size=len(LORA_BYTES),
    )


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def evil_server(tmp_path: Path) -> Any:
    """A ComfyUI (the stand-in) whose /system_stats argv reports `--root <evil>`."""
    server = start_standin(tmp_path / "evil")
    try:
        yield server
    finally:
        assert server.process is not None
        stop_process(server.process)


async def test_a_server_reporting_etc_as_its_root_is_not_believed() -> None:
    acts = _worker("http://127.0.0.1:9", None)

    async def stats() -> dict[str, Any]:
        return {"system": {"argv": ["main.py", "--root", "/etc", "--base-directory", "/etc"]}}

    acts.comfy.system_stats = stats  # type: ignore[method-assign]
    try:
        assert await acts.root() is None
        assert await acts.cache() is None
    finally:
        await acts.aclose()


async def test_without_a_configured_folder_no_lora_file_is_written_where_the_server_says(
    evil_server: Any,
) -> None:
    evil: Path = evil_server.root
    before = _files(evil)
    acts = _worker(evil_server.url, None)
    try:
        with pytest.raises(ApplicationError) as err:
            await acts.ensure_loras([_lora()])
    finally:
        await acts.aclose()
    assert err.value.type == NO_FOLDER_TYPE and err.value.non_retryable
    assert "COMFYUI_DIR" in err.value.message
    assert _files(evil) == before


async def test_a_configured_folder_wins_over_the_servers_reported_root(
    evil_server: Any, tmp_path: Path
) -> None:
    evil: Path = evil_server.root
    before = _files(evil)
    mine = tmp_path / "configured"
    acts = _worker(evil_server.url, mine)
    try:
        assert await acts.root() == mine
        await acts.ensure_loras([_lora()])
    finally:
        await acts.aclose()
    assert (mine / "models" / "loras" / "st" / "fox.safetensors").read_bytes() == LORA_BYTES
    assert _files(evil) == before


async def test_a_training_chunk_without_a_configured_folder_fails_at_once_and_writes_nothing(
    evil_server: Any,
) -> None:
    evil: Path = evil_server.root
    before = _files(evil)
    acts = _worker(evil_server.url, None)
    spec = TrainSpec(
        dataset_id="d1",
        dataset_name="me",
        dataset_hash="h",
        owner="u1",
        trigger_word="zxq_me",
        model_name="me",
        params=TrainingParams(),
        resolution=512,
        checkpoint="sd_xl_base_1.0.safetensors",
        images=[],
    )
    chunk = ChunkInput(
        workflow_id="train-x", chunk=0, start_step=0, steps=10, total_steps=10, spec=spec
    )
    try:
        with pytest.raises(ApplicationError) as err:
            await ActivityEnvironment().run(acts.train_lora_chunk, chunk)
    finally:
        await acts.aclose()
    assert err.value.type == NO_FOLDER_TYPE and err.value.non_retryable
    assert _files(evil) == before


def test_the_dev_stack_hands_its_stand_ins_folder_to_the_comfy_worker(tmp_path: Path) -> None:
    config = Config(devstack_dir=tmp_path, comfyui_urls="")
    [comfy] = [c for c in worker_commands(config) if c.name == "comfy-worker"]
    assert comfy.argv[comfy.argv.index("--comfyui-dir") + 1] == str(tmp_path / "comfy")


def test_comfyui_dirs_name_a_folder_per_server() -> None:
    config = Config(
        comfyui_dir="/srv/default",
        comfyui_dirs="http://gpu1:8188=/srv/gpu1, http://gpu2:8188/=/srv/gpu2",  # type: ignore[arg-type]
    )
    assert config.comfyui_dir_for("http://gpu1:8188/") == Path("/srv/gpu1")
    assert config.comfyui_dir_for("http://gpu2:8188") == Path("/srv/gpu2")
    assert config.comfyui_dir_for("http://gpu3:8188") == Path("/srv/default")
    assert Config(comfyui_dir="").comfyui_dir_for("http://gpu1:8188") is None


# ---- item 5a: a collection cook is one job: one running-job slot, bounded parallelism -------

SMALL: dict[str, int | float | str] = {"width": 256, "height": 256, "steps": 4}


async def _user(jobs: JobsClient, points: int = 20_000) -> tuple[str, str]:
    identity = f"cli:caps-{uuid.uuid4().hex[:8]}"
    user, _ = await asyncio.to_thread(jobs.stores.users.get_or_create, identity, points)
    return identity, user.id


async def _cookable(jobs: JobsClient, user: str, name: str) -> Collection:
    return await jobs.create_collection(
        user,
        name,
        supply=9,
        config=CollectionConfig(master_prompt="a fox", overrides=SMALL, allow_duplicates=True),
    )


def _make(user: str, n: int) -> MakeImageRequest:
    return MakeImageRequest(
        user=user, platform="cli", prompt=f"a red fox {n}", overrides=dict(SMALL), request_id=None
    )


async def _stop_everything(jobs: JobsClient, user: str, cooks: list[str], makes: list[str]) -> None:
    for cid in cooks:
        with contextlib.suppress(Exception):
            await jobs.control_cook(cid, user, "cancel")
    for wid in makes:
        with contextlib.suppress(Exception):
            await jobs.cancel(wid)


@pytest.mark.stack
async def test_a_cook_takes_one_slot_so_a_cook_and_makes_never_pass_the_cap(
    jobs: JobsClient, dev_stack: Stack
) -> None:
    assert jobs.config.max_running_jobs == 3
    user, uid = await _user(jobs)
    dev_stack.faults(render_time=0.5)  # every job stays running for the whole test
    first, second = [await _cookable(jobs, user, f"foxes {n}") for n in range(2)]
    makes: list[str] = []
    try:
        cook = await jobs.start_cook(first.id, user, in_flight=50)
        for n in range(2):
            makes.append((await jobs.start_make(_make(user, n))).workflow_id)
        held = await asyncio.to_thread(jobs.slots.running, uid)
        assert sorted(held) == sorted([cook.workflow_id, *makes])

        with pytest.raises(TooManyJobs):
            await jobs.start_make(_make(user, 9))
        with pytest.raises(TooManyJobs) as refused:
            await jobs.start_cook(second.id, user)
        assert "3 jobs are already running (limit 3)" in refused.value.message
        untouched = await jobs.collection(second.id, user)
        assert untouched.last_cook == "" and not untouched.cook_started, "a refused cook froze"

        # Its own parallelism is bounded: asked for 50 in flight, it runs at most the cap.
        seen = 0
        for _ in range(20):
            seen = max(seen, (await jobs.cook_progress(first.id, user)).in_flight)
            await asyncio.sleep(0.1)
        assert 1 <= seen <= jobs.config.cook_max_in_flight

        # Cancelled, the cook has given its slot back by the time the cancel answers.
        cancelled = await jobs.control_cook(first.id, user, "cancel")
        assert cancelled.state.value == "cancelled"
        assert cook.workflow_id not in await asyncio.to_thread(jobs.slots.running, uid)
        again = await jobs.start_cook(second.id, user)
        assert again.workflow_id in await asyncio.to_thread(jobs.slots.running, uid)
    finally:
        dev_stack.reset_faults()
        await _stop_everything(jobs, user, [first.id, second.id], makes)


@pytest.mark.stack
async def test_a_fourth_cook_is_refused_and_a_cancelled_cook_frees_its_slot(
    jobs: JobsClient, dev_stack: Stack
) -> None:
    user, uid = await _user(jobs)
    dev_stack.faults(render_time=0.5)
    cols = [await _cookable(jobs, user, f"herd {n}") for n in range(4)]
    try:
        cooks = [(await jobs.start_cook(c.id, user)).workflow_id for c in cols[:3]]
        with pytest.raises(TooManyJobs) as refused:
            await jobs.start_cook(cols[3].id, user)
        assert "limit 3" in refused.value.message and "cancel one" in refused.value.message
        with pytest.raises(TooManyJobs):
            await jobs.start_make(_make(user, 1))
        assert sorted(await asyncio.to_thread(jobs.slots.running, uid)) == sorted(cooks)

        await jobs.control_cook(cols[0].id, user, "cancel")
        fourth = await jobs.start_cook(cols[3].id, user)
        assert sorted(await asyncio.to_thread(jobs.slots.running, uid)) == sorted(
            [*cooks[1:], fourth.workflow_id]
        )
    finally:
        dev_stack.reset_faults()
        await _stop_everything(jobs, user, [c.id for c in cols], [])
    # Every cook ended: none of them holds a slot any more.
    assert await asyncio.to_thread(jobs.slots.running, uid) == []


# ---- item 5b: captioning is paid, quoted first, and charged again when repeated -------------


def _photos(n: int) -> list[tuple[bytes, str]]:
    out = []
    for k in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (160, 160), (40 * k, 200 - 30 * k, 90)).save(buf, "PNG")
        out.append((buf.getvalue(), f"photo{k}.png"))
    return out


async def _dataset(jobs: JobsClient, user: str) -> Dataset:
    tag = uuid.uuid4().hex[:6]
    ds = await jobs.create_dataset(user, f"caps-{tag}", trigger_word=f"zxq{tag}", family="sd15")
    await jobs.add_dataset_images(user, ds.id, _photos(4))
    return await jobs.dataset(user, ds.id)


async def _balance(jobs: JobsClient, uid: str) -> int:
    return await asyncio.to_thread(jobs.stores.ledger.balance, uid)


@pytest.mark.stack
async def test_clearing_captions_and_captioning_again_is_charged_each_time(
    jobs: JobsClient,
) -> None:
    user, uid = await _user(jobs, points=200)
    ds = await _dataset(jobs, user)
    price = 4 * CAPTION_PRICE_PER_IMAGE
    assert price > 0

    quote = await jobs.quote_captions(user, ds.id)
    assert (quote.images, quote.per_image, quote.total) == (4, CAPTION_PRICE_PER_IMAGE, price)
    before = await _balance(jobs, uid)
    assert quote.balance == before

    first = await jobs.caption_dataset(user, ds.id)
    assert (first.captioned, first.price, first.refunded) == (4, price, 0)
    assert await _balance(jobs, uid) == before - price == first.balance
    entries = await asyncio.to_thread(jobs.stores.ledger.entries_for_job, first.workflow_id)
    charges = [e for e in entries if e.key.endswith(":charge")]
    # One charge, keyed per run (`<id>:<run id>:charge`, the caption-per-run-keys patch).
    assert [c.amount for c in charges] == [price]
    assert charges[0].key.startswith(f"{first.workflow_id}:") and charges[0].key.count(":") == 2

    # Nothing left to caption: nothing started, nothing charged.
    none = await jobs.caption_dataset(user, ds.id)
    assert none.captioned == 0 and none.price == 0
    assert await _balance(jobs, uid) == before - price

    # Clear every caption and caption again: 4 more GPU prompts, paid again.
    for n in range(1, 5):
        await jobs.set_caption(user, ds.id, n, "")
    second = await jobs.caption_dataset(user, ds.id)
    assert second.captioned == 4 and second.workflow_id != first.workflow_id
    assert await _balance(jobs, uid) == before - 2 * price


@pytest.mark.stack
async def test_captioning_without_the_points_is_refused_before_anything_runs(
    jobs: JobsClient,
) -> None:
    user, uid = await _user(jobs, points=4 * CAPTION_PRICE_PER_IMAGE - 1)
    ds = await _dataset(jobs, user)
    with pytest.raises(InsufficientPoints):
        await jobs.caption_dataset(user, ds.id)
    assert await _balance(jobs, uid) == 4 * CAPTION_PRICE_PER_IMAGE - 1
    assert all(not im.caption for im in (await jobs.dataset(user, ds.id)).images)
