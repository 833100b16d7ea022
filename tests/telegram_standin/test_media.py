"""Photos and documents go both ways with real bytes and Telegram's photo limits."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from telegram import Bot
from telegram.error import BadRequest

from tests.fixtures.telegram import TelegramStandin
from tests.telegram_standin.util import png

USER = 777001


async def test_a_sent_photo_has_its_real_dimensions(bot: Bot, telegram: TelegramStandin) -> None:
    await telegram.options_async(photo_recompression=False)  # bytes kept (see test_real_photos)
    image = png(640, 480)
    sent = await bot.send_photo(USER, image, caption="a red fox · seed 42 · 12 points")
    largest = sent.photo[-1]
    assert (largest.width, largest.height) == (640, 480)
    assert sent.photo[0].width == 320 and sent.photo[0].height == 240
    assert sent.caption == "a red fox · seed 42 · 12 points"

    (view,) = await telegram.messages_async(USER)
    assert view["photo"]["width"] == 640 and view["caption"].startswith("a red fox")
    assert await telegram.file_async(view["photo"]["file_id"]) == image

    again = await bot.send_photo(USER, largest.file_id)
    assert again.photo[-1].file_id == largest.file_id


async def test_a_photo_over_telegrams_limits_is_refused_and_goes_as_a_document(
    bot: Bot, telegram: TelegramStandin
) -> None:
    huge = png(9000, 1200)
    with pytest.raises(BadRequest, match=r"(?i)photo_invalid_dimensions"):
        await bot.send_photo(USER, huge)
    doc = await bot.send_document(USER, huge, filename="result.png", caption="as a file")
    assert doc.document is not None and doc.document.file_name == "result.png"
    assert doc.document.mime_type == "image/png" and doc.document.file_size == len(huge)

    (view,) = await telegram.messages_async(USER)  # the refused photo left nothing in the chat
    assert view["document"]["file_name"] == "result.png" and view["photo"] is None
    (refused,) = telegram.calls("sendPhoto")
    assert refused["status"] == 400 and refused["params"]["photo"]["size"] == len(huge)


async def test_the_bot_downloads_a_users_photo(bot: Bot, telegram: TelegramStandin) -> None:
    await telegram.options_async(photo_recompression=False)  # bytes kept (see test_real_photos)
    original = png(300, 200, (10, 200, 30))
    await telegram.send_photo_async(USER, original, caption="/upscale")
    (update,) = await bot.get_updates(timeout=1)
    message = update.message
    assert message is not None and message.caption == "/upscale"
    assert message.caption_entities[0].type == "bot_command"
    (only,) = message.photo  # small images get no thumbnail of their own
    file = await only.get_file()
    assert file.file_path is not None and file.file_path.startswith(telegram.base_file_url)
    data = bytes(await file.download_as_bytearray())
    assert data == original
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == (300, 200)


async def test_a_reply_to_a_photo_carries_the_photo(bot: Bot, telegram: TelegramStandin) -> None:
    first = await telegram.send_photo_async(USER, png(64, 64))
    await telegram.send_async(USER, "/rmbg", reply_to_message_id=first["message_id"])
    _, update = await bot.get_updates(timeout=1)
    message = update.message
    assert message is not None and message.reply_to_message is not None
    assert message.reply_to_message.photo[-1].width == 64


async def test_an_unknown_file_id_is_refused(bot: Bot) -> None:
    with pytest.raises(BadRequest, match=r"(?i)invalid file_id"):
        await bot.get_file("nope")
    with pytest.raises(BadRequest, match=r"(?i)wrong file identifier"):
        await bot.send_photo(USER, "nope")
