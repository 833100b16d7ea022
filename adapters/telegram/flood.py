"""The one sender's flood control: python-telegram-bot's AIORateLimiter plus a per-chat limit.

Every outgoing Bot API call of the bot process (handlers, the /train and collection review
loops, status watchers, the delivery activity) goes through the one `ExtBot` of the
Application, and that bot carries this limiter, so Telegram's limits are honoured in one place
instead of a retry loop per handler:

- all requests: PTB's overall limit (30 a second, `FloodLimit.MESSAGES_PER_SECOND`);
- every request to a group or channel: 20 a minute per chat (PTB's group limiter,
  `FloodLimit.MESSAGES_PER_MINUTE_PER_GROUP`);
- new messages to one chat (send*, copy, forward): about one a second with a burst of
  `CHAT_BURST` — the Bot API FAQ's "avoid sending more than one message per second" in a chat,
  which AIORateLimiter itself does not enforce;
- a 429 anyway (limits shared with other clients, or Telegram's own judgement): the request is
  retried after `retry_after` (+0.1 s), up to `MAX_RETRIES` times; meanwhile PTB holds every
  other request too. Only after that does RetryAfter reach the caller (the delivery activity
  turns it into a Temporal retry at that delay).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from aiolimiter import AsyncLimiter
from telegram._utils.types import JSONDict
from telegram.ext import AIORateLimiter

CHAT_PER_SECOND = 1.0
CHAT_BURST = 20
"""Messages a chat may get at once before the one-a-second pace applies (Telegram allows
"short bursts"; the Bot API stand-in models the same bucket)."""
MAX_RETRIES = 5
"""429s retried per request: enough to ride out flood waits, few enough that a chat Telegram
keeps refusing surfaces as an error instead of stalling a handler for minutes."""
MESSAGE_ENDPOINTS = ("send", "copyMessage", "copyMessages", "forwardMessage", "forwardMessages")
NOT_MESSAGES = {"sendChatAction"}

Result = bool | JSONDict | list[JSONDict]


def counts_as_message(endpoint: str) -> bool:
    """Whether the call posts a new message into a chat (the per-chat one-a-second limit)."""
    return endpoint.startswith(MESSAGE_ENDPOINTS) and endpoint not in NOT_MESSAGES


class ChatRateLimiter(AIORateLimiter):
    """AIORateLimiter (overall and per-group limits, 429 retries) plus a per-chat bucket."""

    def __init__(
        self,
        *,
        chat_per_second: float = CHAT_PER_SECOND,
        chat_burst: int = CHAT_BURST,
        max_retries: int = MAX_RETRIES,
    ) -> None:
        super().__init__(max_retries=max_retries)
        self._chat_burst = chat_burst
        self._chat_period = chat_burst / chat_per_second
        self._chat_limiters: dict[str, AsyncLimiter] = {}

    def _chat_limiter(self, chat_id: object) -> AsyncLimiter:
        key = str(chat_id)
        if len(self._chat_limiters) > 1024:  # forget idle chats (full capacity again)
            for k, lim in list(self._chat_limiters.items()):
                if k != key and lim.has_capacity(self._chat_burst):
                    del self._chat_limiters[k]
        found = self._chat_limiters.get(key)
        if found is None:
            found = AsyncLimiter(self._chat_burst, self._chat_period)
            self._chat_limiters[key] = found
        return found

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, Result]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> Result:
        chat_id = data.get("chat_id")
        if chat_id is None or not counts_as_message(endpoint):
            return await super().process_request(
                callback, args, kwargs, endpoint, data, rate_limit_args
            )
        limiter = self._chat_limiter(chat_id)

        async def paced(*a: Any, **kw: Any) -> Result:
            # Inside PTB's retry loop: a retried send takes a new slot of the chat too.
            async with limiter:
                return await callback(*a, **kw)

        return await super().process_request(paced, args, kwargs, endpoint, data, rate_limit_args)
