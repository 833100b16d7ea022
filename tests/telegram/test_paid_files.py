"""What the user paid for reaches them (issue 14, items 1, 2 and 8), with the bot, workers and
dev stack all real and the user acting through the Bot API stand-in: a phone photo upscaled
2× and 4× arrives as a full-size document priced by its megapixels, an rmbg result keeps its
alpha, a batch is one album with one row of buttons, and a request made in a forum topic is
answered in that topic."""

from __future__ import annotations

import asyncio
import io
import random

import pytest
from PIL import Image, ImageDraw

from adapters.jobs import JobsClient
from tests.fixtures.telegram import Message, TelegramStandin, documents, photos, said
from tests.telegram.conftest import BotProcess

pytestmark = pytest.mark.stack


def phone_photo(size: tuple[int, int]) -> bytes:
    """A JPEG as a phone sends it: a gradient with a red disc."""
    w, h = size
    im = Image.linear_gradient("L").resize(size).convert("RGB")
    ImageDraw.Draw(im).ellipse((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=(200, 30, 30))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return buf.getvalue()


async def balance(jobs: JobsClient, user: int) -> int:
    return await asyncio.to_thread(jobs.stores.ledger.balance, f"telegram:{user}")


async def started(tg: TelegramStandin, user_id: int) -> None:
    tg.send(user_id, "/start")
    said(tg, user_id, "starter points")


@pytest.mark.parametrize(
    ("size", "scale", "out", "price"),
    [((2560, 1707), 2, (5120, 3414), 44), ((1280, 960), 4, (5120, 3840), 48)],
)
async def test_a_phone_photo_upscales_into_a_full_size_document_priced_by_megapixels(
    bot: BotProcess,
    telegram: TelegramStandin,
    jobs: JobsClient,
    user_id: int,
    size: tuple[int, int],
    scale: int,
    out: tuple[int, int],
    price: int,
) -> None:
    tg = telegram
    await started(tg, user_id)
    before = await balance(jobs, user_id)
    tg.send_photo(user_id, phone_photo(size), caption=f"/upscale {scale}")
    [doc] = tg.wait_for(user_id, documents, timeout=60)
    got = Image.open(io.BytesIO(tg.file(doc["document"]["file_id"])))
    assert (got.format, got.size) == ("PNG", out), "not refused, not shrunk to 2560 px"
    assert not photos(tg.messages(user_id))
    assert f"{price} points" in doc["caption"]
    assert await balance(jobs, user_id) == before - price


async def test_an_rmbg_result_arrives_as_a_document_with_alpha(
    bot: BotProcess, telegram: TelegramStandin, user_id: int
) -> None:
    tg = telegram
    await started(tg, user_id)
    im = Image.new("RGB", (320, 240), (235, 235, 235))
    ImageDraw.Draw(im).ellipse((80, 60, 240, 180), fill=(200, 30, 30))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    tg.send_photo(user_id, buf.getvalue(), caption="/rmbg")
    [doc] = tg.wait_for(user_id, documents, timeout=30)
    got = Image.open(io.BytesIO(tg.file(doc["document"]["file_id"])))
    assert (got.format, got.mode) == ("PNG", "RGBA")
    alpha = got.getchannel("A")
    assert alpha.getpixel((3, 3)) == 0 and alpha.getpixel((160, 120)) == 255
    assert doc["document"]["thumbnail"] is not None, "a small preview"


async def test_a_batch_arrives_as_one_album_with_one_row_of_buttons(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    tg = telegram
    await started(tg, user_id)
    await jobs.grant(f"telegram:{user_id}", 5000, by="test", key=f"test-grant:{user_id}")
    tg.send(user_id, "/set batch 3")
    said(tg, user_id, "✓ batch set to 3")
    tg.send(user_id, "/make three lighthouses")

    def album_and_buttons(ms: list[Message]) -> list[Message] | None:
        album = [m for m in photos(ms) if m["media_group_id"]]
        row = [  # the result's row, not the live status message (which carries Cancel)
            m
            for m in ms
            if m["from_bot"]
            and not m["deleted"]
            and any(not b.startswith("job:cancel:") for b in m["buttons"])
        ]
        return album + row if len(album) == 3 and row else None

    found = tg.wait_for(user_id, album_and_buttons, timeout=60)
    album, [row] = found[:3], found[3:]
    assert len({m["media_group_id"] for m in album}) == 1
    assert "three lighthouses" in album[0]["caption"]
    [buttons] = row["reply_markup"]["inline_keyboard"]
    assert [b["text"] for b in buttons] == ["Regen", "Again", "⬆ 1", "⬆ 2", "⬆ 3"]
    sends = [
        c["method"]
        for c in tg.calls()
        if c["method"].startswith("send")
        and str((c.get("params") or {}).get("chat_id")) == str(user_id)
        and c.get("status") == 200
    ]
    assert sends.count("sendMediaGroup") == 1 and "sendPhoto" not in sends


async def test_a_request_in_a_forum_topic_is_answered_in_that_topic(
    bot: BotProcess, telegram: TelegramStandin, user_id: int
) -> None:
    tg = telegram
    await started(tg, user_id)
    forum = -random.randint(10**12, 2 * 10**12)
    tg.send(
        user_id,
        "/make a harbour in fog",
        chat_id=forum,
        chat_type="supergroup",
        message_thread_id=42,
    )
    [photo] = tg.wait_for(forum, photos, timeout=30)
    assert photo["message_thread_id"] == 42
    # A tap under the result answers in the topic too (the tapped message is in it).
    [up] = [b for b in photo["buttons"] if b.startswith("res:up:")]
    tg.press(user_id, forum, photo["message_id"], up)
    [doc] = tg.wait_for(forum, documents, timeout=30)
    assert doc["message_thread_id"] == 42
    sent = [m for m in tg.bot_messages(forum, include_deleted=True)]
    assert sent and {m["message_thread_id"] for m in sent} == {42}, [
        (m["text"] or m["caption"], m["message_thread_id"]) for m in sent
    ]
