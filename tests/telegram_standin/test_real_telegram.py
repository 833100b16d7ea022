"""Behaviours of real Telegram the stand-in models for the bot's adversary tests: edited and
replayed messages, anonymous group admins, migrated groups, missing media rights and private
chats the user never opened. Each is checked as python-telegram-bot sees it."""

from __future__ import annotations

import pytest
from telegram import Bot
from telegram.error import BadRequest, ChatMigrated, Forbidden

from standins.telegram.server import GROUP_ANONYMOUS_BOT_ID
from tests.fixtures.telegram import TelegramStandin
from tests.telegram_standin.util import png

USER = 888003
GROUP = -4_000_000_017


async def test_an_edit_arrives_as_edited_message_with_the_same_message_id(
    bot: Bot, telegram: TelegramStandin
) -> None:
    sent = await telegram.send_async(USER, "/make a red fox")
    edited = await telegram.edit_async(USER, sent["message_id"], "/make a red fox in snow")
    first, second = await bot.get_updates(timeout=1)
    assert first.message is not None and first.edited_message is None
    assert second.update_id == edited["update_id"] != first.update_id
    assert second.message is None and second.edited_message is not None
    assert second.edited_message.message_id == sent["message_id"]
    assert second.edited_message.text == "/make a red fox in snow"
    assert second.edited_message.edit_date is not None
    assert telegram.messages(USER)[0]["text"] == "/make a red fox in snow"


async def test_a_redelivered_message_has_a_new_update_id_and_the_same_message(
    bot: Bot, telegram: TelegramStandin
) -> None:
    sent = await telegram.send_async(USER, "hello")
    again = telegram.redeliver(USER, sent["message_id"])
    first, second = await bot.get_updates(timeout=1)
    assert (first.update_id, second.update_id) == (sent["update_id"], again["update_id"])
    assert first.message is not None and second.message is not None
    assert first.message.message_id == second.message.message_id


async def test_anonymous_admins_send_as_their_group(bot: Bot, telegram: TelegramStandin) -> None:
    await telegram.send_async(USER, "/balance", chat_id=GROUP, chat_type="group", anonymous=True)
    (update,) = await bot.get_updates(timeout=1)
    message = update.message
    assert message is not None and message.from_user is not None
    assert message.from_user.id == GROUP_ANONYMOUS_BOT_ID
    assert message.sender_chat is not None and message.sender_chat.id == GROUP
    assert message.text == "/balance"
    assert not telegram.messages(GROUP)[0]["from_bot"]


async def test_a_migrated_group_answers_chat_migrated_with_the_new_id(
    bot: Bot, telegram: TelegramStandin
) -> None:
    telegram.faults(migrated_chat_id=GROUP, migrate_to_chat_id=GROUP * 1000)
    with pytest.raises(ChatMigrated) as caught:
        await bot.send_photo(GROUP, png(32, 32))
    assert caught.value.new_chat_id == GROUP * 1000
    await bot.send_photo(caught.value.new_chat_id, png(32, 32))
    assert len(telegram.messages(GROUP * 1000)) == 1


async def test_without_media_rights_photos_are_refused_and_text_goes(
    bot: Bot, telegram: TelegramStandin
) -> None:
    telegram.faults(no_media_chat_id=GROUP)
    with pytest.raises(BadRequest, match=r"(?i)not enough rights to send photos"):
        await bot.send_photo(GROUP, png(32, 32))
    with pytest.raises(BadRequest, match=r"(?i)not enough rights to send documents"):
        await bot.send_document(GROUP, png(32, 32), filename="a.png")
    await bot.send_message(GROUP, "no rights for photos here")
    telegram.faults(media_allowed_chat_id=GROUP)
    await bot.send_photo(GROUP, png(32, 32))


async def test_a_bot_cannot_open_a_private_chat_first(bot: Bot, telegram: TelegramStandin) -> None:
    telegram.options(private_needs_start=True)
    with pytest.raises(Forbidden, match="can't initiate conversation"):
        await bot.send_message(USER, "your balance is …")
    await telegram.send_async(USER, "/start")
    await bot.send_message(USER, "hello")
    telegram.reset()
    await bot.send_message(USER + 1, "a test may talk to anyone again")
