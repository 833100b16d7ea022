"""One request, one job: who asked, and the key of what they asked, from a Telegram update.

**Who** (`identity`): the sender's Telegram id as `telegram:<id>`. Anonymous group admins and
messages sent on behalf of a channel all share one `from_user` (GroupAnonymousBot, Channel_Bot;
PTB's `constants.ChatID`), so their real sender is `sender_chat`, as PTB recommends: the
identity is then the chat's id, which Telegram makes negative for every group and channel
(`telegram:-1001234567890`), so it never collides with a person's (positive) id and needs no
other format. Anonymous admins of one group share that group's account; a button press always
names the real person (Telegram never makes callback queries anonymous).

**What** (`request_key`): the key a job's workflow id and an admin grant's ledger key are made
from. A message is keyed by its chat and message id, which stay the same when the user edits
it and when an update is delivered again under a new update id; a button press is keyed by the
message the button sits on plus the button's data, never by the callback query id (new for
every tap), so any number of taps of one button start one job. Edited messages never reach a
handler at all (bot.py's edit gate); the key makes a replayed update harmless too.

`Claims` closes the last window inside one bot process: two taps handled concurrently both
find no job yet; the first claims the key and the second is told the job already started.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from telegram import Update
from telegram.constants import ChatID

from domain.errors import UserInputError

SHARED_SENDER_IDS = frozenset({ChatID.ANONYMOUS_ADMIN, ChatID.FAKE_CHANNEL, ChatID.SERVICE_CHAT})
"""`from_user` ids Telegram gives to many real senders at once: never an identity."""

CLAIM_SECONDS = 600.0
"""How long a started request stays claimed in-process; by then the job is long visible."""


def identity(update: Update) -> str:
    """`telegram:<id>` of whoever sent the update (see the module docstring)."""
    msg = update.effective_message
    if update.callback_query is None and msg is not None and msg.sender_chat is not None:
        return f"telegram:{msg.sender_chat.id}"
    user = update.effective_user
    if user is None or user.id in SHARED_SENDER_IDS:
        raise UserInputError("I can't tell who sent this, so I can't act on it")
    return f"telegram:{user.id}"


def speaks_as_chat(update: Update) -> bool:
    """Whether the sender is the chat itself (an anonymous admin of this group): then the
    identity is the group's own account, and its data may be shown in it."""
    msg = update.effective_message
    chat = update.effective_chat
    return (
        update.callback_query is None
        and msg is not None
        and msg.sender_chat is not None
        and chat is not None
        and msg.sender_chat.id == chat.id
    )


def request_key(update: Update) -> str:
    """The idempotency key of the request (see the module docstring).

    `msg<chat id>.<message id>` for a message, `btn<chat id>.<message id>.<data hash>` for a
    button press (the data is hashed: it can be 64 bytes with colons and ids).
    """
    query = update.callback_query
    msg = update.effective_message
    if msg is None:
        raise UserInputError("this update carries no message to act on")
    where = f"{msg.chat_id}.{msg.message_id}"
    if query is None:
        return f"msg{where}"
    digest = hashlib.sha256((query.data or "").encode()).hexdigest()[:12]
    return f"btn{where}.{digest}"


class Claims:
    """Keys whose request this process is starting or started lately (see module docstring)."""

    def __init__(
        self, ttl: float = CLAIM_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.clock = clock
        self._at: dict[str, float] = {}

    def claim(self, key: str) -> bool:
        """True for the first caller with `key` (no await inside: atomic in one event loop)."""
        now = self.clock()
        for old in [k for k, at in self._at.items() if now - at > self.ttl]:
            del self._at[old]
        if key in self._at:
            return False
        self._at[key] = now
        return True

    def release(self, key: str) -> None:
        """Forget a claim whose request started nothing (refused), so it may be tried again."""
        self._at.pop(key, None)
