"""Telegram /safety: a chat's content filter for generated images (issue 19).

`/safety` shows the policy that applies in this chat; `/safety off|blur|block|default` sets it.
In a group only its administrators may (the bot asks Telegram with getChatMember; an anonymous
admin speaks as the group itself and counts as one); the setting always belongs to the chat
the command was sent in, so nobody changes another chat's. In a private chat the user may
choose blur or block, and `off` only if the operator allows unfiltered results. Every rule is
in domain/safety.py and store/safety.py (`SafetyRepo.choose`); this module only asks and
answers.
"""

from __future__ import annotations

import asyncio

from telegram import Update
from telegram.constants import ChatMemberStatus
from telegram.ext import Application, CommandHandler

from adapters.telegram.handlers import Ctx, answer, deps, identity, is_group
from adapters.telegram.request_keys import speaks_as_chat
from domain.errors import StationError
from domain.safety import Policy, SafetyPlace

USAGE = "Usage: /safety off | blur | block | default"
EXPLAIN = {
    Policy.OFF: "off: images are shown unfiltered",
    Policy.BLUR: "blur: images the filter flags are sent behind a spoiler (tap to reveal)",
    Policy.BLOCK: "block: images the filter flags are withheld and refunded",
}
ADMIN_STATUSES = (ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.OWNER)


def register(app: Application) -> None:
    app.add_handler(CommandHandler("safety", safety_cmd))


async def safety_cmd(update: Update, context: Ctx) -> None:
    """/safety [off|blur|block|default]: show or set this chat's content filter."""
    chat = update.effective_chat
    if chat is None or update.effective_message is None:
        return
    repo = deps(context).jobs.stores.safety
    place = SafetyPlace(platform="telegram", chat_id=str(chat.id), group=is_group(chat))
    args = [a.lower() for a in (context.args or [])]
    if not args:
        applies, _ = await asyncio.to_thread(repo.policy_for, place)
        own = await asyncio.to_thread(repo.chat_policy, place)
        where = "this chat's own setting" if own else "the operator's default"
        await answer(update, f"Content filter here: {EXPLAIN[applies]} ({where}).\n{USAGE}")
        return
    if args[0] not in (*(p.value for p in Policy), "default"):
        await answer(update, USAGE)
        return
    policy = None if args[0] == "default" else Policy(args[0])
    who = identity(update)
    admin = await _is_admin(update, context) if place.group else True
    try:
        applies = await asyncio.to_thread(repo.choose, place, policy, by=who, is_admin=admin)
    except StationError as err:
        await answer(update, f"⚠️ {err.message}")
        return
    await answer(update, f"✓ Content filter here is now {EXPLAIN[applies]}.")


async def _is_admin(update: Update, context: Ctx) -> bool:
    """Telegram's own answer: the sender is the group's owner or an administrator (or an
    anonymous admin, who writes as the group itself)."""
    if speaks_as_chat(update):
        return True
    chat, user = update.effective_chat, update.effective_user
    if chat is None or user is None or update.effective_message is None:
        return False
    if update.effective_message.sender_chat is not None:
        return False  # a channel writing in the group is nobody's admin
    member = await context.bot.get_chat_member(chat.id, user.id)
    return member.status in ADMIN_STATUSES
