"""A LoRA trained entirely in Telegram, through the Bot API stand-in with the bot, workers and
dev stack all real: /train's guided flow (name → photos → trigger word → captions review with
one caption edited → quote → confirm), the live status message, the done message naming the
model and its trigger word, /models listing it, and a /make with the trigger word."""

from __future__ import annotations

import asyncio
import io
import itertools
import uuid
from collections.abc import Iterator

import pytest
from PIL import Image

from adapters.jobs import JobsClient
from domain.pricing import quote_training
from tests.fixtures.devstack import Stack
from tests.fixtures.telegram import TelegramStandin, said
from tests.telegram.conftest import BotProcess, start_bot

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def bot(
    dev_stack: Stack, telegram_standin: TelegramStandin, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BotProcess]:
    """This module's bot, with the default limits: the story's ~20 taps and answers are flow
    steps, which have their own budget (handlers._flow_step), not the 20 commands a minute."""
    log_path = tmp_path_factory.mktemp("bot-train") / "bot.log"
    proc = start_bot(dev_stack, telegram_standin, log_path)
    running = BotProcess(proc, telegram_standin)
    try:
        running.start()
        yield running
    finally:
        running.process.stop()


def photo_png(n: int) -> bytes:
    """A small photo, different for each n (so each is a new dataset image)."""
    buf = io.BytesIO()
    img = Image.new("RGB", (320, 240), (40 * n, 120, 200 - 30 * n))
    img.paste((250, 240 - 50 * n, 20), (20 * n, 30, 20 * n + 120, 150))
    img.save(buf, "PNG")
    return buf.getvalue()


async def test_a_user_trains_a_lora_in_telegram_and_makes_an_image_with_its_trigger_word(
    bot: BotProcess,
    telegram: TelegramStandin,
    jobs: JobsClient,
    dev_stack: Stack,
    user_id: int,
) -> None:
    tg, me, who = telegram, user_id, f"telegram:{user_id}"
    tg.send(me, "/start")
    said(tg, me, "starter points")
    await jobs.grant(who, 2000, by="test", key=f"test-train-{me}")
    commands = {c["command"]: c["description"] for c in tg.commands()}
    assert commands.get("train") and commands.get("models")

    # 1/5 name, 2/5 photos (sent as an album would be: all at once).
    name = f"rex-{uuid.uuid4().hex[:6]}"
    tg.send(me, "/train")
    said(tg, me, "(1/5)")
    tg.send(me, name)
    said(tg, me, "(2/5)")
    tg.send_document(me, b"just some notes", "notes.txt", mime_type="text/plain")
    assert "not an image" in said(tg, me, "notes.txt")["text"]
    for n in range(4):
        tg.send_photo(me, photo_png(n))
    four = said(tg, me, "✓ 4 photos")
    ds = await jobs.dataset(who, name)
    assert len(ds.images) == 4
    tg.press(me, me, four["message_id"], f"train:photos:{ds.id}")

    # 3/5 trigger word: a bad one is refused with what to do, a good one captions the photos.
    said(tg, me, "(3/5)")
    tg.send(me, "x")
    assert "Send another trigger word" in said(tg, me, "trigger word 'x'")["text"]
    trigger = f"zx{uuid.uuid4().hex[:5]}"
    tg.send(me, trigger)
    footer = said(tg, me, "(4/5)", timeout=40)
    captions = [m for m in tg.bot_messages(me) if (m["caption"] or "").startswith("#")]
    assert len(captions) == 4 and all(m["photo"] for m in captions)
    assert all(trigger in m["caption"] for m in captions), [m["caption"] for m in captions]
    second = next(m for m in captions if m["caption"].startswith("#2:"))
    assert second["buttons"] == [f"train:edit:{ds.id}:2"]

    # Edit caption #2: the typed caption replaces the generated one, here and in the dataset.
    tg.press(me, me, second["message_id"], f"train:edit:{ds.id}:2")
    said(tg, me, "new caption for photo #2")
    typed = f"{trigger} a red square on a blue wall"
    tg.send(me, typed)
    saved = said(tg, me, "✓ caption #2 saved")
    edited = tg.wait_for_message(
        me, lambda m: m["message_id"] == second["message_id"] and typed in (m["caption"] or "")
    )
    assert edited["buttons"] == [f"train:edit:{ds.id}:2"]
    ds = await jobs.dataset(who, name)
    assert ds.images[1].caption == typed and ds.images[1].caption_source == "user"
    assert ds.images[0].caption_source == "auto"
    assert footer["buttons"] == [f"train:quote:{ds.id}"]

    # 5/5 quote: the default 1500 steps, then 300 typed; nothing is charged before Train.
    before = await asyncio.to_thread(jobs.stores.ledger.balance, who)
    tg.press(me, me, saved["message_id"], f"train:quote:{ds.id}")
    assert f"{quote_training(4, 1500)} points" in said(tg, me, "(5/5)")["text"]
    tg.send(me, "300")
    price = quote_training(4, 300)
    quote = said(tg, me, f"(sdxl, 300 steps, 4 images): {price} points")
    assert f"train:go:{ds.id}:300" in quote["buttons"]
    assert await asyncio.to_thread(jobs.stores.ledger.balance, who) == before

    # Confirm: the quote message becomes the live status, then the done message arrives.
    dev_stack.faults(train_step_delay=0.02)  # 300 steps in two chunks of a few seconds
    try:
        tg.press(me, me, quote["message_id"], f"train:go:{ds.id}:300")
        live = tg.wait_for_message(
            me,
            lambda m: m["message_id"] == quote["message_id"] and "· step " in (m["text"] or ""),
            timeout=30,
        )
        assert "training" in live["text"] and "%" in live["text"] and "/300" in live["text"]
        done = said(tg, me, "is ready", timeout=40)
    finally:
        dev_stack.reset_faults()
    assert name in done["text"] and f"Trigger word: {trigger}" in done["text"]
    assert await asyncio.to_thread(jobs.stores.ledger.balance, who) == before - price
    edits = [
        c
        for c in tg.calls("editMessageText")
        if str(c["params"].get("message_id")) == str(quote["message_id"]) and c.get("status") == 200
    ]
    texts = [str(c["params"].get("text")) for c in edits]
    assert any("· step " in t and "/300" in t for t in texts), texts
    times = [float(c["time"]) for c in edits[1:]]  # after the "starting" edit
    assert all(b - a >= 1.9 for a, b in itertools.pairwise(times)), times

    # /models lists it with its buttons.
    [model] = await jobs.models(who, include_public=False)
    assert (model.name, model.trigger_word) == (name, trigger)
    tg.send(me, "/models")
    listed = said(tg, me, "Your LoRA models")
    assert f"{name} — trigger {trigger}" in listed["text"]
    assert {f"model:ren:{model.id}", f"model:del:{model.id}", f"model:pub:{model.id}"} <= set(
        listed["buttons"]
    )

    # A /make with the trigger word renders (with the LoRA) and arrives as a photo.
    tg.send(me, f"/make {trigger} on a hill at dawn")
    photo = tg.wait_for_message(
        me,
        lambda m: m["from_bot"] and m["photo"] and f"{trigger} on a hill" in (m["caption"] or ""),
        timeout=30,
    )
    assert photo["photo"]["width"] > 0

    # The /models buttons: publish, rename (typed), delete (confirmed).
    tg.press(me, me, listed["message_id"], f"model:pub:{model.id}")
    published = said(tg, me, f"🌐 {name} is public")
    assert f"model:priv:{model.id}" in published["buttons"]
    tg.press(me, me, published["message_id"], f"model:ren:{model.id}")
    said(tg, me, f"new name for {name}")
    tg.send(me, f"{name}-v2")
    renamed = said(tg, me, f"✓ renamed to {name}-v2")
    tg.press(me, me, renamed["message_id"], f"model:del:{model.id}")
    asked = tg.wait_for_message(me, lambda m: f"model:delok:{model.id}" in m["buttons"])
    tg.press(me, me, asked["message_id"], f"model:delok:{model.id}")
    assert "no models yet" in said(tg, me, f"🗑 deleted {name}-v2")["text"]
    assert await jobs.models(who, include_public=False) == []
