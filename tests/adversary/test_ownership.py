"""Adversary suite, ownership: user B names user A's ids — sources, outputs, dataset images,
datasets, models, collections, pieces, exports, jobs — through the jobs client and the CLI.

Every one reads exactly as a missing id does ("not found", the same message), costs B nothing
(balance and ledger unchanged), takes no running-job slot and starts no workflow. Ids are
ObjectIds made by one process in sequence, so A's id is a few counter steps away from B's: the
enumeration test probes that neighbourhood and finds nothing.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from PIL import Image
from temporalio.service import RPCError, RPCStatusCode

from adapters.jobs import JobNotFound, JobsClient
from domain.collections import CollectionConfig
from domain.errors import StationError
from domain.jobs import JobState, MakeImageRequest, MediaKind, MediaRequest, new_job_id
from domain.training import LoraModel, TrainRequest
from tests.integration.conftest import Stack

pytestmark = pytest.mark.stack

MEDIA_PARAMS: dict[MediaKind, dict[str, Any]] = {
    "upscale": {"scale": 2},
    "rmbg": {},
    "resize": {"width": 16, "mode": "fit"},
    "convert": {"format": "webp"},
}


def png(size: tuple[int, int] = (48, 32), colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


async def new_user(jobs: JobsClient, name: str, points: int = 500) -> str:
    identity = f"cli:adv-{name}-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(jobs.stores.users.get_or_create, identity, points)
    return identity


def missing_id() -> str:
    """A well-formed id nobody has."""
    return str(ObjectId())


async def refusal(action: Awaitable[Any]) -> StationError:
    with pytest.raises(StationError) as caught:
        await action
    return caught.value


def same_message(err: StationError, named: str, other: StationError, other_named: str) -> None:
    """Both errors say the same words, the id they name aside (each names what it was given)."""
    assert type(err) is type(other)
    assert err.code == other.code
    assert err.message.replace(named, "<id>") == other.message.replace(other_named, "<id>")


class Books:
    """What B owns before the attack, to compare after: points, ledger, slots."""

    def __init__(self, jobs: JobsClient, user: str) -> None:
        self.jobs = jobs
        self.user = user

    async def snapshot(self) -> tuple[int, int, dict[str, Any]]:
        stores = self.jobs.stores
        found = await asyncio.to_thread(stores.users.get, self.user)
        balance = await asyncio.to_thread(stores.ledger.balance, self.user)
        entries = await asyncio.to_thread(stores.ledger.entries, self.user, 100)
        slots = await asyncio.to_thread(self.jobs.slots.taken_at, found.id)
        return balance, len(entries), dict(slots)


async def not_started(jobs: JobsClient, wid: str) -> None:
    with pytest.raises(RPCError) as caught:
        await jobs.temporal.get_workflow_handle(wid).describe()
    assert caught.value.status == RPCStatusCode.NOT_FOUND, f"{wid} was started"


async def a_done_resize(jobs: JobsClient, user: str) -> tuple[str, str, str]:
    """A's finished job: (workflow id, source id, output id)."""
    source = await jobs.store_source(user, png(), "a.png")
    started = await jobs.start_media(
        MediaRequest(user=user, kind="resize", source_image_id=source, params={"width": 24})
    )
    result = await asyncio.wait_for(jobs.result(started.workflow_id), 60)
    assert result.state is JobState.DONE, result.reason
    return started.workflow_id, source, result.outputs[0].blob_id


# ---- images: sources, outputs, dataset images ------------------------------------------------


async def test_another_users_source_reads_as_missing_for_every_media_kind(
    dev_stack: Stack, jobs: JobsClient
) -> None:
    a, b = await new_user(jobs, "a"), await new_user(jobs, "b")
    a_source = await jobs.store_source(a, png(), "private.png")
    books = Books(jobs, b)
    before = await books.snapshot()
    for kind, params in MEDIA_PARAMS.items():
        rid = f"forged-{kind}-{uuid.uuid4().hex[:6]}"

        def request(
            source: str, rid: str = rid, kind: MediaKind = kind, params: dict[str, Any] = params
        ) -> MediaRequest:
            return MediaRequest(
                user=b, kind=kind, source_image_id=source, params=params, request_id=rid
            )

        stolen = await refusal(jobs.start_media(request(a_source)))
        gap = missing_id()
        missing = await refusal(jobs.start_media(request(gap)))
        same_message(stolen, a_source, missing, gap)
        assert "not found" in stolen.message
        await not_started(jobs, new_job_id(kind, b, rid))
    assert await books.snapshot() == before, "B paid nothing and holds no slot"


async def test_another_users_output_cannot_be_upscaled_or_converted(
    dev_stack: Stack, jobs: JobsClient
) -> None:
    """The forged `res:up:<A's output id>` button and `convert` of A's output."""
    a, b = await new_user(jobs, "a"), await new_user(jobs, "b")
    _wid, _source, output = await a_done_resize(jobs, a)
    books = Books(jobs, b)
    before = await books.snapshot()
    for kind in ("upscale", "convert"):
        rid = f"res-up-{uuid.uuid4().hex[:6]}"
        err = await refusal(
            jobs.start_media(
                MediaRequest(
                    user=b,
                    platform="telegram",
                    kind=kind,
                    source_image_id=output,
                    params=MEDIA_PARAMS[kind],
                    request_id=rid,
                )
            )
        )
        assert "not found" in err.message
        await not_started(jobs, new_job_id(kind, b, rid))
    assert await books.snapshot() == before
    # A may still upscale their own output: the check is ownership, not a ban on outputs.
    started = await jobs.start_media(
        MediaRequest(user=a, kind="upscale", source_image_id=output, params={"scale": 2})
    )
    mine = await asyncio.wait_for(jobs.result(started.workflow_id), 60)
    assert mine.state is JobState.DONE, mine.reason


async def test_another_users_image_is_no_img2img_source(dev_stack: Stack, jobs: JobsClient):
    a, b = await new_user(jobs, "a"), await new_user(jobs, "b")
    a_source = await jobs.store_source(a, png(), "private.png")
    books = Books(jobs, b)
    before = await books.snapshot()

    def request(source: str) -> MakeImageRequest:
        return MakeImageRequest(
            user=b, prompt="a copy", template="img2img", source_image_id=source, request_id="i2i"
        )

    stolen = await refusal(jobs.start_make(request(a_source)))
    gap = missing_id()
    same_message(stolen, a_source, await refusal(jobs.start_make(request(gap))), gap)
    await not_started(jobs, new_job_id("make", b, "i2i"))
    assert await books.snapshot() == before


async def test_another_users_dataset_images_are_no_sources(dev_stack: Stack, jobs: JobsClient):
    a, b = await new_user(jobs, "a"), await new_user(jobs, "b")
    ds = await jobs.create_dataset(a, "mine", trigger_word="zqxa_me")
    await jobs.add_dataset_images(a, ds.id, [(png((64, 64)), "face.png")])
    [image] = (await jobs.dataset(a, ds.id)).images
    books = Books(jobs, b)
    before = await books.snapshot()
    for blob in (image.image_id, image.original_id):
        err = await refusal(
            jobs.start_media(MediaRequest(user=b, kind="resize", source_image_id=blob,
                                          params={"width": 8}))
        )  # fmt: skip
        assert "not found" in err.message
    assert await books.snapshot() == before


async def test_ids_next_to_your_own_find_nothing(dev_stack: Stack, jobs: JobsClient) -> None:
    """A's source is stored just before B's: its id is one counter step below. Probing the
    neighbourhood of B's own id (counter ± 40) finds nothing but B's own image."""
    a, b = await new_user(jobs, "a"), await new_user(jobs, "b")
    a_source = await jobs.store_source(a, png(colour=(1, 2, 3)), "a.png")
    b_source = await jobs.store_source(b, png(colour=(4, 5, 6)), "b.png")
    raw = ObjectId(b_source).binary
    counter = int.from_bytes(raw[9:], "big")
    probes = [
        str(ObjectId(raw[:9] + ((counter + d) % 2**24).to_bytes(3, "big")))
        for d in range(-40, 41)
        if d
    ]
    assert a_source in probes, "the probe covers A's id, so the test could find it"
    books = Books(jobs, b)
    before = await books.snapshot()
    found = []
    for probe in probes:
        try:
            await jobs.start_media(
                MediaRequest(
                    user=b, kind="resize", source_image_id=probe, params={"width": 8},
                    request_id=f"probe-{probe}",
                )
            )  # fmt: skip
            found.append(probe)
        except StationError as err:
            assert err.message == f"source image {probe!r} not found"
    assert found == []
    assert await books.snapshot() == before


# ---- jobs: status, watch, cancel, reply target ------------------------------------------------


async def test_another_users_job_reads_as_missing(dev_stack: Stack, jobs: JobsClient) -> None:
    a, b = await new_user(jobs, "a"), await new_user(jobs, "b")
    wid, _source, _output = await a_done_resize(jobs, a)
    # A missing job of the same shape: A's kind and user, another request id.
    gap = new_job_id("resize", a, uuid.uuid4().hex[:10])
    calls: list[Callable[[str], Awaitable[Any]]] = [
        lambda w: jobs.status(w, user=b),
        lambda w: jobs.cancel(w, user=b),
        lambda w: jobs.reply_target(w, user=b),
        lambda w: anext(aiter(jobs.watch(w, user=b))),
    ]
    for call in calls:
        stolen = await refusal(call(wid))
        assert isinstance(stolen, JobNotFound)
        same_message(stolen, wid, await refusal(call(gap)), gap)
    assert (await jobs.status(wid, user=a)).state is JobState.DONE, "the owner still sees it"


async def test_another_user_cannot_cancel_a_running_job(dev_stack: Stack, jobs: JobsClient):
    a, b = await new_user(jobs, "a"), await new_user(jobs, "b")
    dev_stack.faults(faults={"hang": {"next": 1}})  # A's render waits until interrupted
    started = await jobs.start_make(MakeImageRequest(user=a, prompt="a slow fox"))
    wid = started.workflow_id
    err = await refusal(jobs.cancel(wid, user=b))
    assert isinstance(err, JobNotFound)
    assert not (await jobs.status(wid, user=a)).final, "B's cancel did nothing"
    result = await jobs.cancel(wid, user=a)  # the owner can
    assert result.state is JobState.CANCELLED


# ---- datasets, models, collections, pieces, exports -------------------------------------------


async def test_another_users_datasets_and_models_read_as_missing(
    dev_stack: Stack, jobs: JobsClient
) -> None:
    a, b = await new_user(jobs, "a"), await new_user(jobs, "b")
    ds = await jobs.create_dataset(a, "secret", trigger_word="zqxa_sc")
    owner = await jobs.user(a)
    model = await asyncio.to_thread(
        jobs.stores.models.create,
        LoraModel(
            name="a-private", owner=owner.id, trigger_word="zqxa_pv", blob_id=missing_id(),
            filename="a-private.safetensors",
        ),
    )  # fmt: skip
    books = Books(jobs, b)
    before = await books.snapshot()
    gap = missing_id()
    dataset_calls: list[Callable[[str], Awaitable[Any]]] = [
        lambda r: jobs.dataset(b, r),
        lambda r: jobs.rename_dataset(b, r, "mine-now"),
        lambda r: jobs.set_caption(b, r, 1, "x"),
        lambda r: jobs.delete_dataset(b, r),
        lambda r: jobs.caption_dataset(b, r),
        lambda r: jobs.add_dataset_images(b, r, [(png((64, 64)), "x.png")]),
        lambda r: jobs.quote_training(TrainRequest(user=b, dataset=r)),
        lambda r: jobs.start_train(TrainRequest(user=b, dataset=r, request_id="steal")),
    ]
    for call in dataset_calls:
        same_message(await refusal(call(ds.id)), ds.id, await refusal(call(gap)), gap)
    model_calls: list[Callable[[str], Awaitable[Any]]] = [
        lambda r: jobs.rename_model(b, r, "mine-now"),
        lambda r: jobs.publish_model(b, r, True),
        lambda r: jobs.delete_model(b, r),
    ]
    for call in model_calls:
        same_message(await refusal(call(model.id)), model.id, await refusal(call(gap)), gap)
    await not_started(jobs, new_job_id("train", b, "steal"))
    assert await books.snapshot() == before
    assert (await jobs.dataset(a, ds.id)).name == "secret"
    assert [m.name for m in await jobs.models(a, include_public=False)] == ["a-private"]


async def test_another_users_collection_pieces_and_export_read_as_missing(
    dev_stack: Stack, jobs: JobsClient
) -> None:
    a, b = await new_user(jobs, "a"), await new_user(jobs, "b")
    col = await jobs.create_collection(
        a, "Secret", supply=2, config=CollectionConfig(master_prompt="a fox")
    )
    books = Books(jobs, b)
    before = await books.snapshot()
    gap = "col" + uuid.uuid4().hex[:8]
    calls: list[Callable[[str], Awaitable[Any]]] = [
        lambda c: jobs.collection(c, b),
        lambda c: jobs.collection_pieces(c, b),
        lambda c: jobs.review_pieces(c, b, [1], "approved"),
        lambda c: jobs.export_collection(c, b),
        lambda c: jobs.quote_cook(c, b),
        lambda c: jobs.start_cook(c, b),
        lambda c: jobs.edit_collection(c, b, {"name": "mine"}),
        lambda c: jobs.share_collection(c, b, b, "edit"),
    ]
    for call in calls:
        same_message(await refusal(call(col.id)), col.id, await refusal(call(gap)), gap)
    assert await books.snapshot() == before
    assert (await jobs.collection(col.id, a)).name == "Secret"


# ---- the CLI, where it takes ids ---------------------------------------------------------------


def cli(stack: Stack, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli.main", *argv],
        check=False,
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_the_cli_acting_for_b_finds_none_of_as_ids(
    dev_stack: Stack, jobs: JobsClient, tmp_path: Path
) -> None:
    a, b = await new_user(jobs, "a"), await new_user(jobs, "b")
    wid, _source, _output = await a_done_resize(jobs, a)
    ds = await jobs.create_dataset(a, "clisecret", trigger_word="zqxa_cl")
    col = await jobs.create_collection(a, "CliSecret", config=CollectionConfig(master_prompt="x"))
    books = Books(jobs, b)
    before = await books.snapshot()
    for argv in (
        ("jobs", "show", wid, "--user", b),
        ("jobs", "cancel", wid, "--user", b),
        ("dataset", "show", ds.id, "--user", b),
        ("collection", "show", col.id, "--user", b),
        ("collection", "export", col.id, "--user", b, "--out", str(tmp_path / "x.zip")),
    ):
        proc = await asyncio.to_thread(cli, dev_stack, *argv)
        assert proc.returncode == 2, (argv, proc.stdout, proc.stderr)
        said = proc.stderr
        assert any(w in said for w in ("not found", "no job", "no dataset")), (argv, said)
        assert wid not in proc.stdout
    assert await books.snapshot() == before
