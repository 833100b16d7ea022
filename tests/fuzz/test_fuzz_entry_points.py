"""Bad input at scale through the PUBLIC entry point every adapter uses, the JobsClient, on the
real dev stack (Temporal dev server, MongoDB-compatible server, ComfyUI stand-in, workers).

For each generated case: a clear StationError, nothing charged (balance and ledger unchanged),
no workflow started. Afterwards every worker is still running and a normal job still succeeds.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Awaitable
from typing import Any

import pytest

from adapters.jobs import JobNotFound, JobsClient
from domain.errors import StationError
from domain.jobs import JobState, MakeImageRequest, MediaRequest
from tests.fixtures.devstack import Stack
from tests.fuzz import corpus
from tests.fuzz.conftest import SCALE
from tests.fuzz.tally import Tally, check_refusal

pytestmark = [pytest.mark.stack, pytest.mark.slow]

POINTS = 5000  # enough that a wrongly accepted case would be charged, not refused for money


async def _user(jobs: JobsClient, name: str) -> str:
    identity = f"cli:fuzz-{name}-{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(jobs.stores.users.get_or_create, identity, POINTS)
    return identity


async def _books(jobs: JobsClient, user: str) -> tuple[int, int]:
    """(balance, ledger entries) of the user: both must stay put for refused input."""
    balance, entries = await jobs.balance_summary(user, 1000)
    return balance, len(entries)


async def _refuse(tally: Tally, entry: str, case: object, call: Awaitable[Any]) -> None:
    """Await `call` (a coroutine of the public entry point): it must refuse clearly."""
    try:
        await call
    except BaseException as err:
        if isinstance(err, asyncio.CancelledError | KeyboardInterrupt):
            raise
        check_refusal(tally, entry, err, case)
        return
    tally.crash(entry)
    raise AssertionError(f"{entry} accepted bad input: {str(case)[:200]}")


def _make(user: str, prompt: Any = "a red fox", **overrides: Any) -> MakeImageRequest:
    base = {"width": 256, "height": 256, "steps": 4}
    base.update(overrides)
    # model_construct: the typed model would refuse a non-text prompt before the client sees
    # it; this is what a careless adapter could still hand over.
    return MakeImageRequest.model_construct(
        user=user,
        platform="cli",
        prompt=prompt,
        template=None,
        overrides=base,
        source_image_id=None,
        reply=None,
        request_id=None,
        regen_of=None,
    )


def _assert_alive(dev_stack: Stack) -> None:
    dead = {n: p.log_tail(20) for n, p in dev_stack.stack.processes.items() if not p.is_running()}
    assert not dead, f"processes died during the fuzz run: {dead}"


async def test_a_barrage_of_bad_input_charges_nobody_and_crashes_nothing(
    dev_stack: Stack, jobs: JobsClient, fuzz_tally: Tally
) -> None:
    user = await _user(jobs, "entry")
    books = await _books(jobs, user)

    # Prompts (and prompts that are not text at all).
    for label, prompt in corpus.bad_prompts(SCALE):
        await _refuse(
            fuzz_tally,
            "JobsClient.start_make (prompt)",
            label,
            jobs.start_make(_make(user, prompt)),
        )

    # Settings: per-run overrides and saved settings, every field and unknown keys.
    saved = await jobs.settings(user)
    for label, update in corpus.bad_setting_updates(SCALE):
        await _refuse(
            fuzz_tally,
            "JobsClient.start_make (overrides)",
            label,
            jobs.start_make(_make(user, **update)),
        )
        await _refuse(
            fuzz_tally,
            "JobsClient.update_settings",
            label,
            jobs.update_settings(user, update),
        )
    assert await jobs.settings(user) == saved, "a refused bulk update changed the settings"

    # Who and which template.
    for label, who in [
        ("empty user", ""),
        ("no platform", "12345"),
        ("unknown platform", "icq:1"),
        ("spaces", "cli: x"),
        ("huge id", "cli:" + "9" * 500),
        ("unknown user", "cli:nobody-x1"),
        ("control chars", "cli:a\x00b"),
    ]:
        await _refuse(
            fuzz_tally,
            "JobsClient.start_make (user)",
            label,
            jobs.start_make(_make(who)),
        )
        await _refuse(
            fuzz_tally,
            "JobsClient.store_source (user)",
            label,
            jobs.store_source(who, b"\x89PNG", "x.png"),
        )
    for name in ["nope", "../make", "upscale", "rmbg", "caption", "t" * 300]:
        request = _make(user).model_copy(update={"template": name})
        await _refuse(
            fuzz_tally,
            "JobsClient.start_make (template)",
            name,
            jobs.start_make(request),
        )

    # Images: every bad file is refused before anything is stored or started.
    blobs_before = await asyncio.to_thread(jobs.stores.db["images.files"].count_documents, {})
    for label, data in corpus.bad_images(SCALE):
        await _refuse(
            fuzz_tally,
            "JobsClient.store_source",
            label,
            jobs.store_source(user, data, "cat.png"),
        )
    blobs_after = await asyncio.to_thread(jobs.stores.db["images.files"].count_documents, {})
    assert blobs_after == blobs_before, "a refused image was stored"

    # Odd but acceptable images are stored; media jobs with bad parameters on them refused.
    sources = []
    for label, data in corpus.odd_good_images():
        sources.append(await jobs.store_source(user, data, f"{label}.img"))
        fuzz_tally.accepted("JobsClient.store_source")
    bad_params: list[tuple[str, dict[str, Any]]] = [
        ("upscale", {"scale": 3}),
        ("upscale", {"scale": "x"}),
        ("upscale", {"scale": math.nan}),
        ("upscale", {"scale": True}),
        ("upscale", {"scale": 2, "extra": 1}),
        ("upscale", {"scale": 10**30}),
        ("rmbg", {"anything": 1}),
        ("resize", {}),
        ("resize", {"width": 0, "height": 0}),
        ("resize", {"width": -1, "height": 5}),
        ("resize", {"width": 10**9, "height": 10}),
        ("resize", {"width": "a", "height": "b"}),
        ("resize", {"width": 64, "height": 64, "mode": "stretch"}),
        ("resize", {"width": math.inf, "height": 64}),
        ("convert", {}),
        ("convert", {"format": "gif"}),
        ("convert", {"format": "png", "quality": 1000}),
        ("convert", {"format": "jpeg", "quality": math.nan}),
        ("convert", {"format": "webp", "background": "red; drop"}),
        ("convert", {"format": None}),
    ]
    for kind, params in bad_params:
        req = MediaRequest(user=user, kind=kind, source_image_id=sources[0], params=params)  # type: ignore[arg-type]
        await _refuse(
            fuzz_tally,
            "JobsClient.start_media",
            f"{kind} {params}",
            jobs.start_media(req),
        )
    for source in ["", "nope", "0" * 24, "f" * 24, "../../etc/passwd", "x" * 1000]:
        req = MediaRequest(
            user=user, kind="resize", source_image_id=source, params={"width": 64, "height": 64}
        )
        await _refuse(
            fuzz_tally,
            "JobsClient.start_media (source)",
            source[:30],
            jobs.start_media(req),
        )

    # Collections: trait lines, master prompts, edits.
    col = await jobs.create_collection(user, "fuzz", supply=2)
    for label, lines in corpus.bad_trait_lines():
        await _refuse(
            fuzz_tally,
            "JobsClient.set_traits",
            label,
            jobs.set_traits(col.id, user, "Hat", lines),
        )
    for label, prompt in corpus.bad_master_prompts():
        await _refuse(
            fuzz_tally,
            "JobsClient.edit_collection",
            label,
            jobs.edit_collection(col.id, user, {"config": {"master_prompt": prompt}}),
        )
    for label, call in [
        ("cook with no master prompt", jobs.start_cook(col.id, user)),
        ("cook unknown collection", jobs.start_cook("colnope", user)),
        ("create blank name", jobs.create_collection(user, "  ")),
        ("create supply 0", jobs.create_collection(user, "x", supply=0)),
        ("stranger edits", jobs.edit_collection(col.id, "cli:stranger-1", {"name": "y"})),
        ("pause never cooked", jobs.control_cook(col.id, user, "pause")),
        ("unknown cook action", jobs.control_cook(col.id, user, "explode")),
        ("export nothing approved", jobs.export_collection(col.id, user)),
    ]:
        await _refuse(fuzz_tally, "JobsClient (collections)", label, call)

    # Job handles and points that do not exist or are not yours.
    for label, call in [
        ("status of nothing", jobs.status("make-nope-123")),
        ("status of empty id", jobs.status("")),
        ("cancel of nothing", jobs.cancel("make-nope-123")),
        ("regen 0", jobs.start_repeat(user, n=0)),
        ("regen 99", jobs.start_repeat(user, n=99)),
        ("again with no runs", jobs.start_repeat(user)),
        ("grant 0", jobs.grant(user, 0, by="cli:admin", key="fuzz-0")),
        ("grant -5", jobs.grant(user, -5, by="cli:admin", key="fuzz-neg")),
    ]:
        await _refuse(fuzz_tally, "JobsClient (jobs and points)", label, call)

    # Nothing was charged and no workflow was started for any refused case.
    assert await _books(jobs, user) == books, "refused input moved points"
    assert await jobs.list_jobs(user=user) == []
    slots = await asyncio.to_thread(jobs.slots.taken_at, (await jobs.user(user)).id)
    assert not slots, f"refused input left job slots taken: {slots}"
    _assert_alive(dev_stack)

    # The stack still works: a normal job on one of the odd images and a normal /make succeed.
    ok = await _user(jobs, "after")
    started = await jobs.start_make(_make(ok, "a lighthouse after the storm"))
    result = await asyncio.wait_for(jobs.result(started.workflow_id), 90)
    assert result.state is JobState.DONE, result.reason
    src = await jobs.store_source(ok, dict(corpus.odd_good_images())["cmyk jpeg"], "c.jpg")
    media = await jobs.start_media(
        MediaRequest(
            user=ok, kind="resize", source_image_id=src, params={"width": 32, "height": 32}
        )
    )
    media_result = await asyncio.wait_for(jobs.result(media.workflow_id), 90)
    assert media_result.state is JobState.DONE, media_result.reason
    _assert_alive(dev_stack)
    with pytest.raises(StationError):  # the check itself still bites after the barrage
        await jobs.start_make(_make(ok, ""))


async def test_the_status_of_an_empty_job_id_is_job_not_found(jobs: JobsClient) -> None:
    """Found by fuzzing: was a bare WorkflowQueryFailedError (the bot's `job:cancel:` button
    with no id answered with the generic apology)."""
    with pytest.raises(JobNotFound):
        await jobs.status("")
