"""Telegram /login and /link: one person, one account on every platform (issue 18).

`/login` answers (in a private chat only: the code is a secret) a one-time code that signs a
browser in on the web page as this account; `/link CODE` adds this Telegram identity to the
account whose code it is (a code from the web page's "link another platform"). The codes are
the store's link codes (store/users.py): 10 minutes, single use, one live code per account;
the bot's command rate gate limits how often they are asked for.
"""

from __future__ import annotations

from telegram import Update
from telegram.ext import Application, CommandHandler

from adapters.telegram.handlers import Ctx, answer, deps, identity, is_group
from domain.errors import StationError


def register(app: Application) -> None:
    app.add_handler(CommandHandler("login", login_cmd))
    app.add_handler(CommandHandler("link", link_cmd))


PRIVATE_ONLY = "/login and /link work only in a private chat with me."


async def login_cmd(update: Update, context: Ctx) -> None:
    """/login: a one-time code that signs the web page in as this account.

    Refused in groups: a code asked there by an anonymous admin would be the group account's
    and be read by every member, so codes are only ever written into a private chat."""
    if is_group(update.effective_chat):
        await answer(update, PRIVATE_ONLY)
        return
    code = await deps(context).jobs.link_code(identity(update))
    await answer(
        update,
        f"Your sign-in code: {code}\n"
        "Type it into the web page's sign-in form within 10 minutes; it works once. "
        "Asking again voids this one.",
    )


async def link_cmd(update: Update, context: Ctx) -> None:
    """/link CODE: add this Telegram identity to the account whose code it is (private chats
    only, so a group's own identity is never linked by an anonymous admin)."""
    if is_group(update.effective_chat):
        await answer(update, PRIVATE_ONLY)
        return
    args = context.args or []
    if len(args) != 1:
        await answer(update, "Usage: /link CODE (get a code on the web page)")
        return
    try:
        user = await deps(context).jobs.link_identity(args[0], identity(update))
    except StationError as err:
        await answer(update, f"⚠️ {err.message}")
        return
    await answer(update, f"✓ Linked: this chat now uses the account with {user.points} points.")
