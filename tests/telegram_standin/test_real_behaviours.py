"""What real Telegram always does, modelled by the stand-in (each switchable per test): photos
recompressed to JPEG of at most 2560 px, privacy mode in groups, flood limits with
retry_after, 413 over 50 MB, https-only webhooks, forum topics, and albums (sendMediaGroup).
Each test fails on a stand-in that lacks the behaviour."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from PIL import Image
from telegram import Bot, InputMediaDocument, InputMediaPhoto
from telegram.error import BadRequest, NetworkError, RetryAfter

from adapters.telegram.status_watch import retry_seconds
from tests.fixtures.telegram import TelegramStandin
from tests.telegram_standin.util import png

USER = 777_014
GROUP = -777_014
BOT_NAME = "stationthis_test_bot"


def rgba_png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    img = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    img.paste((250, 10, 10, 255), (width // 4, height // 4, width // 2, height // 2))
    img.save(buf, format="PNG")
    return buf.getvalue()


# ---- photos ------------------------------------------------------------------------------------


async def test_a_photo_is_stored_as_an_opaque_jpeg_of_at_most_2560_px(
    bot: Bot, telegram: TelegramStandin
) -> None:
    image = rgba_png(3000, 2000)  # an rmbg result bigger than Telegram keeps
    sent = await bot.send_photo(USER, image)
    sides = [max(p.width, p.height) for p in sent.photo]
    assert sides == [90, 320, 800, 1280, 2560]
    largest = sent.photo[-1]
    assert (largest.width, largest.height) == (2560, 1707)
    stored = await telegram.file_async(largest.file_id)
    with Image.open(io.BytesIO(stored)) as img:
        assert img.format == "JPEG" and img.mode == "RGB"  # the alpha the user paid for: gone
        assert img.size == (2560, 1707)
        assert img.getpixel((5, 5)) == (255, 255, 255)  # transparent became white
    doc = await bot.send_document(USER, image, filename="cutout.png")
    assert doc.document is not None
    assert await telegram.file_async(doc.document.file_id) == image  # a document keeps bytes


async def test_a_users_photo_arrives_recompressed_too(bot: Bot, telegram: TelegramStandin) -> None:
    await telegram.send_photo_async(USER, png(4000, 3000))
    (update,) = await bot.get_updates(timeout=1)
    assert update.message is not None
    largest = update.message.photo[-1]
    assert (largest.width, largest.height) == (2560, 1920)
    data = bytes(await (await largest.get_file()).download_as_bytearray())
    assert data[:3] == b"\xff\xd8\xff"  # JPEG


async def test_recompression_can_be_switched_off(bot: Bot, telegram: TelegramStandin) -> None:
    await telegram.options_async(photo_recompression=False)
    image = png(640, 480)
    sent = await bot.send_photo(USER, image)
    assert await telegram.file_async(sent.photo[-1].file_id) == image


# ---- privacy mode ------------------------------------------------------------------------------


async def test_privacy_mode_delivers_only_commands_replies_and_mentions_in_groups(
    bot: Bot, telegram: TelegramStandin
) -> None:
    me = await bot.get_me()
    assert me.can_read_all_group_messages is False
    kw: dict[str, Any] = {"chat_id": GROUP, "chat_type": "group"}
    plain = await telegram.send_async(USER, "red", **kw)
    assert plain["delivered"] is False and plain["update_id"] is None
    other_bot = await telegram.send_async(USER, "/help@other_bot", **kw)
    assert other_bot["delivered"] is False
    asked = await bot.send_message(GROUP, "Which colour?")
    expected = [
        await telegram.send_async(USER, "/help", **kw),
        await telegram.send_async(USER, f"/help@{BOT_NAME}", **kw),
        await telegram.send_async(USER, "blue", reply_to_message_id=asked.message_id, **kw),
        await telegram.send_async(USER, f"@{BOT_NAME} a fox", **kw),
    ]
    updates = await bot.get_updates(timeout=1)
    assert [u.update_id for u in updates] == [e["update_id"] for e in expected]
    # Every message is still in the group, as the members see it.
    assert len(await telegram.messages_async(GROUP)) == 7
    private = await telegram.send_async(USER, "red")  # private chats get everything
    assert private["delivered"] is True


async def test_privacy_mode_off_delivers_every_group_message(
    bot: Bot, telegram: TelegramStandin
) -> None:
    await telegram.options_async(privacy_mode=False)
    assert (await bot.get_me()).can_read_all_group_messages is True
    sent = await telegram.send_async(USER, "red", chat_id=GROUP, chat_type="group")
    (update,) = await bot.get_updates(timeout=1)
    assert update.update_id == sent["update_id"]


# ---- flood limits -------------------------------------------------------------------------------


async def test_a_burst_to_one_chat_is_answered_429_with_retry_after(
    bot: Bot, telegram: TelegramStandin
) -> None:
    await telegram.options_async(flood_limits={"chat_burst": 3, "chat_per_second": 1.0})
    for n in range(3):
        await bot.send_message(USER, f"#{n}")
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(USER, "one too many")
    assert 1 <= retry_seconds(caught.value) <= 2
    [refused] = [c for c in telegram.calls("sendMessage") if c["status"] == 429]
    assert refused["params"]["text"] == "one too many"
    await bot.send_chat_action(USER, "typing")  # chat actions are not messages: not counted
    await bot.send_message(USER + 1, "another chat has its own budget")
    await asyncio.sleep(1.1)
    await bot.send_message(USER, "after the wait")


async def test_a_group_gets_20_messages_a_minute(bot: Bot, telegram: TelegramStandin) -> None:
    await telegram.options_async(flood_limits={"chat_burst": 100, "chat_per_second": 100})
    for n in range(20):
        await bot.send_message(GROUP, f"#{n}")
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(GROUP, "21st")
    assert 50 <= retry_seconds(caught.value) <= 60
    await bot.send_message(USER, "a private chat is not a group")


async def test_flood_limits_can_be_switched_off(bot: Bot, telegram: TelegramStandin) -> None:
    await telegram.options_async(flood=False, flood_limits={"chat_burst": 1})
    for n in range(5):
        await bot.send_message(USER, f"#{n}")


# ---- uploads, webhooks ------------------------------------------------------------------------


async def test_an_upload_over_50_mb_is_413(bot: Bot, telegram: TelegramStandin) -> None:
    big = b"PK" + b"\0" * (50 * 1024 * 1024 + 10)
    with pytest.raises(NetworkError, match="Request Entity Too Large"):
        await bot.send_document(USER, big, filename="export.zip", write_timeout=60)
    [call] = telegram.calls("sendDocument")
    assert call["status"] == 413 and call["description"] == "Request Entity Too Large"
    assert await telegram.messages_async(USER) == []


async def test_an_http_webhook_is_refused_unless_loopback_is_allowed(
    bot: Bot, telegram: TelegramStandin
) -> None:
    try:
        with pytest.raises(BadRequest, match=r"(?i)https url must be provided"):
            await bot.set_webhook("http://127.0.0.1:9/hook")
        await telegram.options_async(allow_http_webhook=True)
        with pytest.raises(BadRequest, match=r"(?i)https url must be provided"):
            await bot.set_webhook("http://example.org/hook")  # loopback only
        assert await bot.set_webhook("http://127.0.0.1:9/hook")
        assert await bot.set_webhook("https://example.org/hook")
    finally:
        await bot.delete_webhook()


# ---- forum topics, albums ----------------------------------------------------------------------


async def test_forum_topics_carry_the_thread_and_sends_without_it_land_in_general(
    bot: Bot, telegram: TelegramStandin
) -> None:
    forum = -100_777_014
    sent = await telegram.send_async(
        USER,
        "/make a fox",
        chat_id=forum,
        chat_type="supergroup",
        is_forum=True,
        message_thread_id=42,
    )
    (update,) = await bot.get_updates(timeout=1)
    msg = update.message
    assert msg is not None and msg.chat.is_forum
    assert msg.message_thread_id == 42 and msg.is_topic_message
    bare = await bot.send_message(forum, "no thread", reply_to_message_id=sent["message_id"])
    threaded = await bot.send_message(forum, "in the topic", message_thread_id=42)
    assert bare.message_thread_id is None and threaded.message_thread_id == 42
    views = {m["text"]: m for m in await telegram.messages_async(forum)}
    assert views["no thread"]["message_thread_id"] is None  # General
    assert views["in the topic"]["message_thread_id"] == 42


async def test_an_album_is_one_media_group_of_recompressed_photos(
    bot: Bot, telegram: TelegramStandin
) -> None:
    album = await bot.send_media_group(
        USER,
        [
            InputMediaPhoto(rgba_png(300, 200), caption="#1"),
            InputMediaPhoto(png(200, 300), caption="#2"),
        ],
    )
    assert len(album) == 2 and album[0].media_group_id == album[1].media_group_id
    assert [m.caption for m in album] == ["#1", "#2"]
    stored = await telegram.file_async(album[0].photo[-1].file_id)
    assert stored[:3] == b"\xff\xd8\xff"
    docs = await bot.send_media_group(
        USER,
        [
            InputMediaDocument(rgba_png(30, 20), filename="a.png"),
            InputMediaDocument(rgba_png(20, 30), filename="b.png"),
        ],
    )
    assert [d.document.file_name for d in docs if d.document] == ["a.png", "b.png"]
    views = await telegram.messages_async(USER)
    assert len({v["media_group_id"] for v in views}) == 2
    with pytest.raises(BadRequest, match="2-10"):
        await bot.send_media_group(USER, [InputMediaPhoto(png(10, 10))])
