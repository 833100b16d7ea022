"""A batch cancelled after part of it was made keeps that part's points, so the user must get
that part too (issue 13, item 10: Telegram never received those images)."""

from __future__ import annotations

import asyncio
import time

import pytest

from adapters.jobs import JobsClient
from domain.jobs import JobState
from tests.fixtures.devstack import Stack
from tests.fixtures.telegram import TelegramStandin, photos
from tests.telegram.conftest import BotProcess
from tests.telegram.test_bot import bot_text, job_of

pytestmark = pytest.mark.stack


async def test_a_batch_cancelled_after_its_first_image_delivers_that_image(
    bot: BotProcess,
    telegram: TelegramStandin,
    jobs: JobsClient,
    dev_stack: Stack,
    user_id: int,
) -> None:
    telegram.send(user_id, "/start")
    bot_text(telegram, user_id, "starter points")
    who = f"telegram:{user_id}"
    await jobs.grant(who, 2000, by="test", key=f"test-batch-{user_id}")  # batch 2 needs 2000
    await jobs.update_settings(who, {"batch": 2, "steps": 4, "width": 256, "height": 256})
    dev_stack.faults(render_time=3)  # one GPU slot: image 1 at ~3 s, image 2 at ~6 s
    try:
        telegram.send(user_id, "/make two lighthouses")
        wid = await job_of(jobs, user_id)
        deadline = time.monotonic() + 30
        while (await jobs.status(wid)).percent < 50:  # image 1 made, image 2 rendering
            assert time.monotonic() < deadline, "the first image never finished"
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # its copy into GridFS (comfy-io) is done well within this
        result = await jobs.cancel(wid)
    finally:
        dev_stack.reset_faults()
    status = await jobs.status(wid)
    assert result.state is JobState.CANCELLED and status.state is JobState.CANCELLED
    assert len(status.outputs) == 1 and 0 < status.refund < status.price, "one image kept"
    [photo] = telegram.wait_for(user_id, photos, timeout=20)
    assert "two lighthouses" in photo["caption"]
    bot_text(telegram, user_id, f"cancelled, refunded {status.refund} points")
