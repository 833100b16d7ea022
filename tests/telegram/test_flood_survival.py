"""The bot under Telegram's flood control (issue 14, items 4 and 8): the /train caption review
(20 photos) and the collection review (10 pieces) arrive whole when the stand-in answers 429
(its per-chat limit, tightened here, plus an injected 429 with retry_after), the user is not
left "still working on your photos" afterwards, and an export Telegram refuses as too large
(HTTP 413) is explained instead of lost."""

from __future__ import annotations

import asyncio
import io
import re
import time
import uuid

import pytest
from PIL import Image

from adapters.jobs import JobsClient
from domain.collections import CollectionConfig
from tests.fixtures.telegram import TelegramStandin, said
from tests.telegram.conftest import BotProcess

pytestmark = pytest.mark.stack

TIGHT = {"chat_burst": 4, "chat_per_second": 1.0}
"""Tighter than the bot's own per-chat pace (burst 20): the stand-in answers 429 often."""
SMALL: dict[str, int | float | str] = {"width": 256, "height": 256, "steps": 4}


def photo(n: int) -> bytes:
    buf = io.BytesIO()
    img = Image.new("RGB", (320, 256), (10 * n, 120, 250 - 10 * n))
    img.paste((250, 200 - 8 * n, 20), (10 * n, 30, 10 * n + 100, 150))
    img.save(buf, "PNG")
    return buf.getvalue()


def sent_photos(tg: TelegramStandin, chat: int) -> list[int]:
    return [
        c["status"]
        for c in tg.calls("sendPhoto")
        if str(c.get("params", {}).get("chat_id")) == str(chat)
    ]


async def test_the_train_review_of_20_photos_arrives_whole_under_flood_control(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    tg, me, who = telegram, user_id, f"telegram:{user_id}"
    tg.send(me, "/start")
    said(tg, me, "starter points")
    name = f"flood-{uuid.uuid4().hex[:6]}"
    trigger = f"zx{uuid.uuid4().hex[:5]}"
    ds = await jobs.create_dataset(who, name)
    await jobs.add_dataset_images(who, ds.id, [(photo(n), f"{n}.png") for n in range(20)])
    await jobs.set_trigger_word(who, ds.id, trigger)
    for n in range(1, 21):  # captioned already: the review sends the photos at once
        await jobs.set_caption(who, ds.id, n, f"{trigger} photo number {n}")

    tg.options(flood_limits=TIGHT)
    tg.faults("sendPhoto", 429, retry_after=2, chat_id=me)
    tg.send(me, f"/train {name}")
    footer = said(tg, me, "(4/5)", timeout=120)
    captions = [m for m in tg.bot_messages(me) if (m["caption"] or "").startswith("#")]
    numbers = sorted(int(re.match(r"#(\d+)", m["caption"]).group(1)) for m in captions)  # type: ignore[union-attr]
    assert numbers == list(range(1, 21)), numbers
    statuses = sent_photos(tg, me)
    assert statuses.count(429) >= 2, statuses  # the injected one and the stand-in's own
    assert statuses.count(200) == 20, statuses  # each photo once
    assert f"train:quote:{ds.id}" in footer["buttons"]

    tg.send(me, "are you there?")  # not stuck: the review step answers with its next move
    hint = said(tg, me, "Your captions are above")
    assert f"train:quote:{ds.id}" in hint["buttons"]
    assert not any("still working" in (m["text"] or "") for m in tg.bot_messages(me))


async def test_the_collection_review_of_10_arrives_and_a_too_large_export_is_explained(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    tg, me, who = telegram, user_id, f"telegram:{user_id}"
    tg.send(me, "/start")
    anchor = said(tg, me, "starter points")
    await jobs.grant(who, 20_000, by="test", key=f"test-flood-{me}")
    col = await jobs.create_collection(
        who,
        "Flood foxes",
        supply=10,
        config=CollectionConfig(master_prompt="a fox", overrides=SMALL, allow_duplicates=True),
    )
    await jobs.start_cook(col.id, who, in_flight=3)
    deadline = time.monotonic() + 120
    while not (progress := await jobs.cook_progress(col.id, who)).state.final:
        assert time.monotonic() < deadline, progress
        await asyncio.sleep(0.5)
    assert progress.made == 10, progress

    tg.options(flood_limits=TIGHT)
    tg.faults("sendPhoto", 429, retry_after=2, chat_id=me)
    tg.press(me, me, anchor["message_id"], f"coll:review:{col.id}", forge=True)
    said(tg, me, "piece(s) above to review", timeout=90)
    pieces = [m for m in tg.bot_messages(me) if m["photo"] and m["caption"]]
    assert len(pieces) == 10, [m["caption"] for m in pieces]
    statuses = sent_photos(tg, me)
    assert statuses.count(429) >= 2 and statuses.count(200) == 10, statuses

    # The export: Telegram answers 413 Request Entity Too Large; the user is told what to do.
    await jobs.review_pieces(col.id, who, [1, 2], "approved")
    tg.faults("sendDocument", 413, chat_id=me)
    tg.press(me, me, anchor["message_id"], f"coll:export:{col.id}", forge=True)
    told = said(tg, me, "at most 50 MB from bots", timeout=30)
    assert f"stationthis collection export {col.id}" in told["text"]
    [call] = [c for c in tg.calls("sendDocument") if str(c["params"].get("chat_id")) == str(me)]
    assert call["status"] == 413
