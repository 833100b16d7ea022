"""A Caption confirm handled twice at once (a double tap Claims did not see, the gateway
replaying the press to a restarted bot, a Telegram double tap, two CLI runs) captions once and
charges once: the dataset names its caption workflow, so a second start while one runs joins
it, whoever asks and however."""

from __future__ import annotations

import asyncio
import io
import uuid

import pytest
from PIL import Image

from adapters.jobs import JobsClient
from domain.training import CAPTION_PRICE_PER_IMAGE

pytestmark = pytest.mark.stack


def photo(n: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (256, 192), (50 * n, 90, 200 - 40 * n)).save(buf, "PNG")
    return buf.getvalue()


async def test_two_caption_starts_at_once_charge_once(jobs: JobsClient) -> None:
    who = f"discord:{uuid.uuid4().int % 10**17}"
    await jobs.register(who)
    await jobs.grant(who, 500, by="test", key=f"test-caption-{who}")
    ds = await jobs.create_dataset(who, f"cap-{uuid.uuid4().hex[:6]}", trigger_word="zcapword")
    await jobs.add_dataset_images(who, ds.id, [(photo(n), f"{n}.png") for n in range(4)])
    before = await asyncio.to_thread(jobs.stores.ledger.balance, who)

    first, second = await asyncio.gather(  # no press key: Telegram's and the CLI's way
        jobs.caption_dataset(who, ds.id),
        jobs.caption_dataset(who, ds.id),
    )
    assert first.captioned == second.captioned == 4
    after = await asyncio.to_thread(jobs.stores.ledger.balance, who)
    assert after == before - 4 * CAPTION_PRICE_PER_IMAGE, "charged once"
