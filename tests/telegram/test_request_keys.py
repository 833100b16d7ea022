"""Who asked and what they asked, from raw Telegram updates (no stack): the identity and
request-key rules of adapters/telegram/request_keys.py, and the log redaction of the token."""

from __future__ import annotations

import io
import logging
from typing import Any

import pytest
from telegram import Update

from adapters.telegram.log_redaction import MASK, RedactSecrets
from adapters.telegram.request_keys import Claims, identity, request_key, speaks_as_chat
from domain.errors import UserInputError
from domain.identity import normalise_identity

USER = 5472638766
GROUP = -1001234567890
CHANNEL = -1009876543210


def message(**extra: Any) -> dict[str, Any]:
    return {
        "message_id": 42,
        "date": 1,
        "chat": {"id": GROUP, "type": "supergroup", "title": "G"},
        "from": {"id": USER, "is_bot": False, "first_name": "A"},
        "text": "/make a fox",
        **extra,
    }


def update(kind: str = "message", update_id: int = 1, **extra: Any) -> Update:
    return Update.de_json({"update_id": update_id, kind: message(**extra)}, None)


ANONYMOUS: dict[str, Any] = {
    "from": {"id": 1087968824, "is_bot": True, "first_name": "Group"},
    "sender_chat": {"id": GROUP, "type": "supergroup", "title": "G"},
}


def test_a_person_is_their_user_id() -> None:
    assert identity(update()) == f"telegram:{USER}"


def test_an_anonymous_admin_is_the_group_and_a_channel_sender_is_the_channel() -> None:
    anonymous = update(**ANONYMOUS)
    assert identity(anonymous) == f"telegram:{GROUP}"
    assert normalise_identity(identity(anonymous)) == f"telegram:{GROUP}"  # a valid identity
    assert speaks_as_chat(anonymous)
    on_behalf: dict[str, Any] = {
        "from": {"id": 136817688, "is_bot": True, "first_name": "Channel"},
        "sender_chat": {"id": CHANNEL, "type": "channel", "title": "C"},
    }
    channel = update(**on_behalf)
    assert identity(channel) == f"telegram:{CHANNEL}"
    assert not speaks_as_chat(channel)


def test_the_shared_anonymous_sender_alone_is_no_identity() -> None:
    with pytest.raises(UserInputError):
        identity(update(**{"from": ANONYMOUS["from"]}))


def test_an_edit_and_a_replay_have_the_request_key_of_the_message() -> None:
    first = update()
    edited = update("edited_message", update_id=2, text="/make a fox in snow", edit_date=2)
    replayed = update(update_id=3)
    assert request_key(first) == request_key(edited) == request_key(replayed)
    assert request_key(first) == f"msg{GROUP}.42"
    assert request_key(update(message_id=43)) != request_key(first)


def press(data: str, query_id: str) -> Update:
    bot_message = message(**{"from": {"id": 1, "is_bot": True, "first_name": "Bot"}})
    return Update.de_json(
        {
            "update_id": 9,
            "callback_query": {
                "id": query_id,
                "from": {"id": USER, "is_bot": False, "first_name": "A"},
                "chat_instance": "1",
                "message": bot_message,
                "data": data,
            },
        },
        None,
    )


def test_taps_of_one_button_share_a_key_and_other_buttons_do_not() -> None:
    assert request_key(press("res:again", "q1")) == request_key(press("res:again", "q2"))
    assert request_key(press("res:again", "q1")) != request_key(press("res:up:abc", "q1"))
    assert request_key(press("res:again", "q1")).startswith(f"btn{GROUP}.42.")
    assert identity(press("res:again", "q1")) == f"telegram:{USER}"  # taps name the person


def test_a_claim_is_taken_once_until_released_or_expired() -> None:
    now = [0.0]
    claims = Claims(ttl=10, clock=lambda: now[0])
    assert claims.claim("k") and not claims.claim("k")
    claims.release("k")
    assert claims.claim("k")
    now[0] = 11
    assert claims.claim("k")


TOKEN = "123456:AAH-secret_part-of-the-token"


def test_the_token_is_masked_in_messages_arguments_and_tracebacks() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactSecrets([TOKEN]))
    log = logging.getLogger("test.redaction")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        log.debug("Set Bot API URL: %s", f"https://api.telegram.org/bot{TOKEN}")
        log.info("HTTP Request: POST https://x/bot%s/getUpdates", TOKEN.replace(":", "%3A"))
        log.info("secret only: %s", TOKEN.split(":", 1)[1])
        try:
            raise RuntimeError(f"connect failed for https://x/bot{TOKEN}/getMe")
        except RuntimeError:
            log.exception("poll failed")
    finally:
        log.removeHandler(handler)
    text = out.getvalue()
    assert TOKEN.split(":", 1)[1] not in text
    assert text.count(MASK) == 4, text  # URL, quoted URL, bare secret, exception message
    assert "RuntimeError" in text and "Set Bot API URL" in text
