"""A bot built on python-telegram-bot talks to the stand-in exactly as it would to Telegram."""

from __future__ import annotations

import asyncio
import datetime as dtm
import time

import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, MessageEntity
from telegram.error import BadRequest, Conflict, EndPointNotFound, InvalidToken

from tests.fixtures.telegram import TelegramStandin

USER = 5472638766


async def test_the_bot_learns_who_it_is(bot: Bot) -> None:
    me = await bot.get_me()
    assert me.is_bot and me.id == 123456 and me.username == "stationthis_test_bot"


async def test_a_wrong_token_is_unauthorized(telegram: TelegramStandin) -> None:
    wrong = Bot("999:WRONG", base_url=telegram.base_url)
    with pytest.raises(InvalidToken, match="rejected"):
        await wrong.initialize()
    await wrong.shutdown()
    assert telegram.calls("getMe")[-1]["status"] == 401


async def test_an_unknown_method_is_not_found(bot: Bot) -> None:
    with pytest.raises(EndPointNotFound, match="sendTelepathy"):
        await bot.do_api_request("sendTelepathy", api_kwargs={"chat_id": USER})


async def test_a_user_command_arrives_and_the_reply_is_edited_in_place(
    bot: Bot, telegram: TelegramStandin
) -> None:
    sent = await telegram.send_async(USER, "/make a red fox")
    (update,) = await bot.get_updates(timeout=1)
    assert update.update_id == sent["update_id"]
    message = update.message
    assert message is not None and message.text == "/make a red fox"
    assert message.chat.type == "private" and message.chat.id == USER
    assert message.from_user is not None and message.from_user.id == USER
    assert message.entities[0].type == MessageEntity.BOT_COMMAND
    assert message.entities[0].length == len("/make")

    keyboard = InlineKeyboardMarkup(
        [[InlineKeyboardButton("Cancel", callback_data="job:cancel:1")]]
    )
    status = await bot.send_message(USER, "Queued (position 2)", reply_markup=keyboard)
    assert status.message_id == message.message_id + 1 and status.from_user is not None
    assert status.from_user.id == 123456
    edited = await bot.edit_message_text(
        "Rendering 40%", USER, status.message_id, reply_markup=keyboard
    )
    assert isinstance(edited, type(status)) and edited.text == "Rendering 40%"
    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await bot.edit_message_text("Rendering 40%", USER, status.message_id, reply_markup=keyboard)

    chat = await telegram.messages_async(USER)
    assert [(m["from_bot"], m["text"]) for m in chat] == [
        (False, "/make a red fox"),
        (True, "Rendering 40%"),
    ]
    assert chat[1]["edits"] == 1 and len(chat[1]["edit_times"]) == 1
    assert chat[1]["buttons"] == ["job:cancel:1"]

    # The offset confirms the first update; nothing else is pending.
    assert await bot.get_updates(offset=update.update_id + 1, timeout=0) == ()


async def test_a_button_press_reaches_the_bot_and_is_answered(
    bot: Bot, telegram: TelegramStandin
) -> None:
    keyboard = InlineKeyboardMarkup(
        [[InlineKeyboardButton("Steps", callback_data="settings:steps")]]
    )
    shown = await bot.send_message(USER, "Settings", reply_markup=keyboard)
    with pytest.raises(AssertionError, match="no button"):
        await telegram.press_async(USER, USER, shown.message_id, "settings:nope")
    pressed = await telegram.press_async(USER, USER, shown.message_id, "settings:steps")

    (update,) = await bot.get_updates(timeout=1)
    query = update.callback_query
    assert query is not None and query.id == pressed["callback_query_id"]
    assert query.data == "settings:steps" and query.from_user.id == USER
    assert query.message is not None and query.message.message_id == shown.message_id
    assert await query.answer("Send a number from 1 to 150")
    with pytest.raises(BadRequest, match=r"(?i)query is too old"):
        await query.answer()
    await bot.edit_message_reply_markup(USER, shown.message_id, reply_markup=None)

    (answer,) = telegram.answered_callbacks()
    assert answer["text"] == "Send a number from 1 to 150"
    (view,) = [m for m in await telegram.messages_async(USER) if m["from_bot"]]
    assert view["reply_markup"] is None and view["edits"] == 1


async def test_a_long_poll_waits_for_the_user(bot: Bot, telegram: TelegramStandin) -> None:
    started = time.monotonic()
    assert await bot.get_updates(timeout=dtm.timedelta(milliseconds=300)) == ()
    assert time.monotonic() - started >= 0.3

    poll = asyncio.create_task(bot.get_updates(timeout=10))
    await asyncio.sleep(0.2)
    assert not poll.done()
    await telegram.send_async(USER, "hello")
    (update,) = await asyncio.wait_for(poll, 5)
    assert update.message is not None and update.message.text == "hello"


async def test_a_second_poller_terminates_the_first(bot: Bot, telegram: TelegramStandin) -> None:
    first = asyncio.create_task(bot.get_updates(timeout=10))
    await asyncio.sleep(0.2)
    async with Bot(telegram.token, base_url=telegram.base_url) as other_instance:
        second = asyncio.create_task(
            other_instance.get_updates(timeout=dtm.timedelta(milliseconds=500))
        )
        with pytest.raises(Conflict, match="terminated by other getUpdates"):
            await asyncio.wait_for(first, 5)
        assert await second == ()


async def test_group_messages_carry_the_group_and_mentions(
    bot: Bot, telegram: TelegramStandin
) -> None:
    await telegram.send_async(
        USER, "@stationthis_test_bot draw a cat", chat_id=-100, chat_type="group"
    )
    (update,) = await bot.get_updates(timeout=1)
    message = update.message
    assert message is not None and message.chat.type == "group" and message.chat.id == -100
    assert message.chat.title and message.entities[0].type == MessageEntity.MENTION
    reply = await bot.send_message(-100, "On it", reply_to_message_id=message.message_id)
    assert reply.reply_to_message is not None
    assert reply.reply_to_message.message_id == message.message_id


async def test_deleted_messages_stay_visible_as_deleted(
    bot: Bot, telegram: TelegramStandin
) -> None:
    sent = await bot.send_message(USER, "temporary")
    assert await bot.delete_message(USER, sent.message_id)
    with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
        await bot.edit_message_text("again", USER, sent.message_id)
    (view,) = await telegram.messages_async(USER)
    assert view["deleted"] and view["text"] == "temporary"


async def test_commands_and_chat_actions(bot: Bot, telegram: TelegramStandin) -> None:
    await bot.set_my_commands([("make", "Make an image from a prompt"), ("help", "How to use me")])
    assert [c.command for c in await bot.get_my_commands()] == ["make", "help"]
    assert telegram.commands()[0] == {
        "command": "make",
        "description": "Make an image from a prompt",
    }
    with pytest.raises(BadRequest, match=r"(?i)bot_command_invalid"):
        await bot.set_my_commands([("Make-It", "bad name")])
    assert await bot.send_chat_action(USER, "upload_photo")
    assert [c["status"] for c in telegram.calls("sendChatAction")] == [200]
