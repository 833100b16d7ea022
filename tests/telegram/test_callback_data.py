"""Callback data never cut (issue 14, item 6): every keyboard stays within Telegram's 64 bytes
for the longest workflow ids the bot makes (10-digit chat and message ids, a button's request
key, an anonymous admin's group identity), and names the job it was built for.

Pure functions only: no stack. The stand-in (which refuses data over 64 bytes, like Telegram)
checks the same end to end in test_buttons.py.
"""

from __future__ import annotations

import pytest

from adapters.telegram import render
from domain.jobs import JOB_REF_LENGTH, JobState, JobStatus, StoredOutput, job_ref, new_job_id

GROUP = -1001234567890  # a supergroup: -100 and ten digits
BIG_MESSAGE = 1234567890  # message ids of busy chats reach ten digits
BUTTON_KEY = f"btn{GROUP}.{BIG_MESSAGE}.0123456789ab"  # request_keys.request_key of a tap

LONG_IDS = {
    kind: new_job_id(kind, f"telegram:{GROUP}", BUTTON_KEY)
    for kind in ("make", "train", "upscale", "rmbg", "convert", "resize")
}
LONG_IDS["cook"] = "cook-c0123456789-regen-1234567890"
LONG_IDS["piece"] = LONG_IDS["cook"] + "-piece-1234567-retry12"


def datas(markup: object) -> list[str]:
    rows = getattr(markup, "inline_keyboard", ())
    return [str(b.callback_data) for row in rows for b in row if b.callback_data is not None]


def status(kind: str, wid: str, state: JobState = JobState.RUNNING) -> JobStatus:
    return JobStatus(
        workflow_id=wid,
        kind="make" if kind in ("piece",) else kind,
        user=f"telegram:{GROUP}",
        state=state,
        outputs=[StoredOutput(blob_id="0123456789abcdef01234567")],
        seeds=[4242],
        prompt="a fox",
    )


def test_the_ids_are_really_longer_than_a_button_takes() -> None:
    assert all(len(f"job:cancel:{w}".encode()) > 64 for k, w in LONG_IDS.items() if k != "cook")


@pytest.mark.parametrize("kind", sorted(LONG_IDS))
def test_cancel_buttons_of_long_ids_fit_and_name_their_own_job(kind: str) -> None:
    wid = LONG_IDS[kind]
    others = [w for w in LONG_IDS.values() if w != wid]
    listing = render.jobs_keyboard([status(kind, wid)] + [status("make", w) for w in others])
    live = render.status_keyboard(status(kind, wid))
    for data in datas(listing) + datas(live):
        assert len(data.encode()) <= 64
    assert datas(listing)[0] == f"job:cancel:{job_ref(wid)}"
    assert datas(live) == [f"job:cancel:{job_ref(wid)}"]
    refs = [d.rsplit(":", 1)[1] for d in datas(listing)]
    assert len(set(refs)) == len(refs) == len(LONG_IDS)  # no two jobs share a button
    assert all(len(r) == JOB_REF_LENGTH for r in refs)


def test_the_live_status_cancel_button_goes_once_the_job_cannot_be_cancelled() -> None:
    wid = LONG_IDS["make"]
    for state in (JobState.DELIVERING, JobState.DONE, JobState.CANCELLED, JobState.FAILED):
        assert render.status_keyboard(status("make", wid, state)) is None


@pytest.mark.parametrize("kind", ["make", "upscale", "rmbg"])
def test_result_buttons_of_long_ids_fit_and_name_the_run_they_sit_under(kind: str) -> None:
    wid = LONG_IDS[kind]
    done = status(kind, wid, JobState.DELIVERING)
    found = datas(render.result_keyboard(done, 0))
    assert all(len(d.encode()) <= 64 for d in found)
    if kind == "make":
        assert f"res:regen:{job_ref(wid)}" in found
        assert f"res:again:{job_ref(wid)}" in found


def test_the_one_builder_refuses_data_over_64_bytes_instead_of_cutting_it() -> None:
    assert render.button("ok", "x" * 64).callback_data == "x" * 64
    with pytest.raises(ValueError, match="65 bytes"):
        render.button("too long", "x" * 65)
    with pytest.raises(ValueError):
        render.button("multi-byte", "é" * 33)  # 66 bytes in 33 characters
