"""No secret in any log line, at any level: the bot token and the webhook secret are masked.

Bot API URLs carry the token (`https://api.telegram.org/bot<token>/getUpdates`), and libraries
log URLs: python-telegram-bot's `Set Bot API URL: …` at DEBUG, httpx's `HTTP Request: POST …`
at INFO, and exception texts that quote a request. Silencing those loggers would hide useful
lines and miss the next library that logs a URL, so the secrets are masked instead, in one
filter on the handlers of the root logger (every logger propagates there), before any
formatter sees the record: its message, its formatted exception and its stack.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import quote

MASK = "<redacted>"
MIN_SECRET_PART = 8  # the part of `id:secret` after the colon is masked on its own too


class RedactSecrets(logging.Filter):
    """Masks each secret (and its URL-quoted forms) in every record passing a handler."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._forms: list[str] = []
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        """Mask `secret` from now on (a webhook secret generated at start, say)."""
        forms = {secret, quote(secret), quote(secret, safe="")}
        _, _, tail = secret.partition(":")
        if len(tail) >= MIN_SECRET_PART:
            forms |= {tail, quote(tail, safe="")}
        self._forms = sorted(set(self._forms) | {f for f in forms if f}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for form in self._forms:
            text = text.replace(form, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not leak its arguments either
            message = f"{record.msg} {record.args}"
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def install_redaction(*secrets: str | None) -> RedactSecrets:
    """Add one `RedactSecrets` to every handler of the root logger (configure logging first)."""
    redactor = RedactSecrets(s for s in secrets if s)
    handlers = list(logging.getLogger().handlers)
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)  # used while no handler is configured
    for handler in handlers:
        handler.addFilter(redactor)
    return redactor
