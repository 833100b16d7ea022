"""Groups under privacy mode (issue 14, item 3).

With privacy mode on (every bot's default) a group delivers a bot only commands, replies to the
bot's messages and a few service messages (Bot API FAQ, "What messages will my bot get?").
So a typed answer must be a reply: the bot asks with a selective ForceReply. Commands for
another bot are not ours to answer; each member's menus are their own; the group menu lists
only what works in a group.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest

from adapters.jobs import JobsClient
from tests.fixtures.telegram import Message, TelegramStandin, said
from tests.telegram.conftest import BotProcess
from tests.telegram.test_adversary import SETTLE, bot_texts, charges, started

pytestmark = pytest.mark.stack


def group_id() -> int:
    return -(10**12 + random.randint(10**9, 9 * 10**9))


def sent_with(tg: TelegramStandin, chat: int, message: Message) -> dict[str, Any]:
    """The parameters of the sendMessage call that sent `message` (JSON fields decoded)."""
    for call in reversed(tg.calls("sendMessage")):
        params = dict(call.get("params") or {})
        if str(params.get("chat_id")) == str(chat) and params.get("text") == message["text"]:
            for key in ("reply_markup", "entities"):
                if isinstance(params.get(key), str):
                    params[key] = json.loads(params[key])
            return params
    raise AssertionError(f"no sendMessage of {message['text']!r} in {chat}")


def asks_for_a_reply(tg: TelegramStandin, chat: int, question: Message) -> None:
    markup = sent_with(tg, chat, question).get("reply_markup") or {}
    assert markup.get("force_reply") is True, markup
    assert markup.get("selective") is True, markup


async def test_the_group_menu_lists_only_commands_that_work_in_groups(
    bot: BotProcess, telegram: TelegramStandin
) -> None:
    log: list[dict[str, Any]] = telegram._request("GET", "/_control/commands/log")
    groups = [e for e in log if e["scope"] == {"type": "all_group_chats"}]
    assert groups, log
    names = {c["command"] for c in groups[-1]["commands"]}
    assert {"make", "status", "collections"} <= names
    assert "train" not in names  # refused in groups
    assert "train" in {c["command"] for c in telegram.commands()}  # private chats have it


async def test_a_command_for_another_bot_is_ignored_silently(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    tg = telegram
    group = group_id()
    await started(tg, user_id)
    tg.send(user_id, "/nope@other_bot", chat_id=group, chat_type="supergroup")
    tg.send(user_id, "/make@other_bot a cat", chat_id=group, chat_type="supergroup")
    tg.send(user_id, "/help", chat_id=group, chat_type="supergroup")  # handled after those
    said(tg, group, "StationThis makes images")
    await asyncio.sleep(SETTLE)
    texts = bot_texts(tg, group)
    assert "I don't know" not in texts
    assert texts.count("StationThis makes images") == 1
    assert await charges(jobs, f"telegram:{user_id}") == 0


async def test_collection_answers_in_a_group_are_replies_to_a_force_reply(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    tg = telegram
    group = group_id()
    await started(tg, user_id)
    asked = tg.send(user_id, "/collections new", chat_id=group, chat_type="supergroup")
    question = said(tg, group, "what is its name")
    assert question["reply_to_message_id"] == asked["message_id"]  # selective: the asker
    asks_for_a_reply(tg, group, question)
    tg.send(
        user_id,
        "Owls",
        chat_id=group,
        chat_type="supergroup",
        reply_to_message_id=question["message_id"],
    )
    second = said(tg, group, "(2/4)")
    asks_for_a_reply(tg, group, second)


async def test_each_member_has_their_own_menus_in_a_group(
    bot: BotProcess, telegram: TelegramStandin, jobs: JobsClient, user_id: int
) -> None:
    tg = telegram
    group = group_id()
    owner, other = user_id, user_id + 1
    await started(tg, owner)
    await started(tg, other)
    col = await jobs.create_collection(f"telegram:{owner}", "Moths", supply=2)
    tg.send(owner, f"/collections {col.id}", chat_id=group, chat_type="supergroup")
    view = said(tg, group, "Moths")
    data = f"coll:addtrait:{col.id}"
    assert data in view["buttons"]

    tg.press(other, group, view["message_id"], data)
    tg.wait_for(
        group,
        lambda ms: any("not your menu" in (a["text"] or "") for a in tg.answered_callbacks()),
    )
    assert "Name of the new trait type" not in bot_texts(tg, group)

    tg.press(owner, group, view["message_id"], data)  # the owner's tap asks the owner
    question = said(tg, group, "Name of the new trait type")
    asks_for_a_reply(tg, group, question)
    entities = sent_with(tg, group, question).get("entities")
    assert entities and entities[0]["type"] == "text_mention"
    assert entities[0]["user"]["id"] == owner  # selective ForceReply reaches the presser
