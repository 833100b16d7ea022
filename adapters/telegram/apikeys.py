"""Telegram /apikey: a user's keys for the HTTP API (README "HTTP API").

`/apikey` creates a key and shows it once; `/apikey list` shows the key ids; `/apikey revoke
<key id>` revokes one. Only in a private chat: a key shown in a group is a key given to the
group. The key belongs to the sender's Telegram identity, so jobs started with it are theirs
everywhere (the same balance and history); only its hash is stored (store/api_keys.py).
"""

from __future__ import annotations

import asyncio

from telegram import Update
from telegram.constants import ChatType
from telegram.ext import Application, CommandHandler

from adapters.telegram.handlers import Ctx, answer, deps, identity

USAGE = "Usage: /apikey (a new key) | /apikey list | /apikey revoke <key id>"
PRIVATE_ONLY = "API keys are given only in a private chat with me: ask there."


def register(app: Application) -> None:
    app.add_handler(CommandHandler("apikey", apikey_cmd))


async def apikey_cmd(update: Update, context: Ctx) -> None:
    """/apikey [list | revoke <key id>]: create, list or revoke the sender's API keys."""
    chat = update.effective_chat
    if chat is None or update.effective_message is None or update.effective_user is None:
        return
    if chat.type != ChatType.PRIVATE:
        await answer(update, PRIVATE_ONLY)
        return
    repo = deps(context).jobs.stores.api_keys
    who = identity(update)
    args = context.args or []
    if not args:
        await deps(context).jobs.register(who)
        token, key = await asyncio.to_thread(repo.create, who, "telegram")
        await answer(
            update,
            f"Your new API key (shown once, keep it secret):\n{token}\n\n"
            f"Use it as `Authorization: Bearer <key>`. Revoke it with /apikey revoke {key.key_id}",
        )
        return
    if args[0] == "list":
        keys = await asyncio.to_thread(repo.list, who)
        lines = [
            f"{k.key_id} created {k.created_at:%Y-%m-%d}"
            + ("" if k.active else f", revoked {k.revoked_at:%Y-%m-%d}")
            for k in keys
        ]
        await answer(update, "\n".join(lines) if lines else "You have no API keys.")
        return
    if args[0] == "revoke" and len(args) == 2:
        done = await asyncio.to_thread(repo.revoke, who, args[1])
        await answer(
            update, f"Revoked {args[1]}." if done else f"You have no active key {args[1]}."
        )
        return
    await answer(update, USAGE)
