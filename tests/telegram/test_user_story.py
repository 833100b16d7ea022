"""One user's whole story with the bot, the workers and the dev stack all real, the user acting
through the Bot API stand-in as it models real Telegram (photo recompression, privacy mode,
flood limits): start → make → regen → upscale a 2560 px phone photo → rmbg received as a
document with alpha → settings in a group under privacy mode → train a LoRA → cook a collection
and see it in /status. The story a reader can follow from end to end (issue 14)."""

from __future__ import annotations

import asyncio
import io
import random
import re
import uuid

import pytest
from PIL import Image, ImageDraw

from adapters.jobs import JobsClient
from domain.collections import CollectionConfig
from domain.jobs import JobState, job_ref
from domain.pricing import quote_training
from tests.fixtures.devstack import Stack
from tests.fixtures.telegram import Message, TelegramStandin, documents, photos, said
from tests.telegram.conftest import BotProcess
from tests.telegram.test_paid_files import phone_photo
from tests.telegram.test_train_flow import photo_png

pytestmark = pytest.mark.stack


def seed_of(message: Message) -> str:
    found = re.search(r"seed (\d+)", message["caption"] or "")
    assert found, message["caption"]
    return found.group(1)


def at_least(n: int, found: list[Message]) -> list[Message] | None:
    return found if len(found) >= n else None


async def balance(jobs: JobsClient, who: str) -> int:
    return await asyncio.to_thread(jobs.stores.ledger.balance, who)


async def test_one_user_from_start_to_a_cook(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, dev_stack: Stack, user_id: int
) -> None:
    tg, me, who = telegram, user_id, f"telegram:{user_id}"

    # Start: the starter grant, once.
    tg.send(me, "/start")
    said(tg, me, "starter points")
    await jobs.grant(who, 3000, by="test", key=f"story-{me}")

    # Make: a photo with Regen / Again / Upscale under it, acting on this image's job.
    tg.send(me, "/make a lighthouse at dusk")
    [first] = tg.wait_for(me, photos, timeout=30)
    ref = next(b.split(":")[2] for b in first["buttons"] if b.startswith("res:regen:"))
    assert len(f"res:regen:{ref}") <= 64

    # Regen right after delivery: the same seed again, one job however often it is tapped.
    tg.press(me, me, first["message_id"], f"res:regen:{ref}")
    tg.press(me, me, first["message_id"], f"res:regen:{ref}")
    both = tg.wait_for(me, lambda ms: at_least(2, photos(ms)), timeout=30)
    assert seed_of(both[1]) == seed_of(first)
    await asyncio.sleep(1.0)
    assert len(photos(tg.messages(me))) == 2, "a double tap started one job"

    # Upscale a phone photo of 2560 px: not refused, not shrunk — a full-size document.
    before = await balance(jobs, who)
    tg.send_photo(me, phone_photo((2560, 1707)), caption="/upscale 2")
    [big] = tg.wait_for(me, documents, timeout=90)
    got = Image.open(io.BytesIO(tg.file(big["document"]["file_id"])))
    assert got.size == (5120, 3414) and got.format == "PNG"
    assert await balance(jobs, who) < before

    # rmbg: the alpha the user paid for arrives (a document; a photo would be an opaque JPEG).
    im = Image.new("RGB", (320, 240), (235, 235, 235))
    ImageDraw.Draw(im).ellipse((80, 60, 240, 180), fill=(200, 30, 30))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    tg.send_photo(me, buf.getvalue(), caption="/rmbg")
    docs = tg.wait_for(me, lambda ms: at_least(2, documents(ms)), timeout=30)
    cut = Image.open(io.BytesIO(tg.file(docs[-1]["document"]["file_id"])))
    assert cut.mode == "RGBA" and cut.getchannel("A").getpixel((3, 3)) == 0

    # Settings in a group under privacy mode: plain text never reaches the bot, a command does.
    group = -(10**12 + random.randint(10**9, 9 * 10**9))
    plain = tg.send(me, "steps 12 please", chat_id=group, chat_type="supergroup")
    assert plain["delivered"] is False, "privacy mode: the bot never sees plain group text"
    tg.send(me, "/set steps 12", chat_id=group, chat_type="supergroup")
    said(tg, group, "✓ steps set to 12")
    assert (await jobs.settings(who)).steps == 12
    tg.send(me, "/balance", chat_id=group, chat_type="supergroup")
    said(tg, group, "private message")  # personal data goes to the private chat
    said(tg, me, "points")

    # Train a LoRA: name → 4 photos → trigger word → captions → quote → confirm → ready.
    name, trigger = f"rex-{uuid.uuid4().hex[:6]}", f"zx{uuid.uuid4().hex[:5]}"
    tg.send(me, "/train")
    said(tg, me, "(1/5)")
    tg.send(me, name)
    said(tg, me, "(2/5)")
    for n in range(4):
        tg.send_photo(me, photo_png(n))
    four = said(tg, me, "✓ 4 photos")
    ds = await jobs.dataset(who, name)
    tg.press(me, me, four["message_id"], f"train:photos:{ds.id}")
    said(tg, me, "(3/5)")
    tg.send(me, trigger)
    footer = said(tg, me, "(4/5)", timeout=60)
    tg.press(me, me, footer["message_id"], f"train:quote:{ds.id}")
    said(tg, me, "(5/5)")
    tg.send(me, "300")
    quote = said(tg, me, f"{quote_training(4, 300)} points")
    dev_stack.faults(train_step_delay=0.01)
    try:
        tg.press(me, me, quote["message_id"], f"train:go:{ds.id}:300")
        ready = said(tg, me, "is ready", timeout=60)
    finally:
        dev_stack.reset_faults()
    assert f"Trigger word: {trigger}" in ready["text"]

    # Cook a collection: /status shows the cook as ONE job with its progress and a Cancel.
    config = CollectionConfig(master_prompt="a lantern", allow_duplicates=True)
    col = await jobs.create_collection(who, "Lanterns", supply=3, config=config)
    dev_stack.faults(render_time=20)
    try:
        cook = await jobs.start_cook(col.id, who, platform="telegram", in_flight=1)
        tg.send(me, "/status")
        listing = said(tg, me, "Your running jobs")
        lines = [ln for ln in listing["text"].splitlines() if re.match(r"\d+\. ", ln)]
        assert len(lines) == 1 and "cook" in lines[0], listing["text"]
        assert listing["buttons"] == [f"job:cancel:{job_ref(cook.workflow_id)}"]
        tg.press(me, me, listing["message_id"], listing["buttons"][0])
        said(tg, me, "Cancelled", timeout=60)
    finally:
        dev_stack.reset_faults()
    assert (await jobs.status(cook.workflow_id, user=who)).state is JobState.CANCELLED
    assert await asyncio.to_thread(jobs.stores.ledger.audit) == []
