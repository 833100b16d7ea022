"""Signed webhooks: what a job's webhook delivers and how a receiver checks it.

Each state change of a job is one event, POSTed as JSON with a stable event id (the same id on
every retry: delivery is at least once, a receiver dedupes by id). The body is signed Stripe-style:
`StationThis-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, with the
secret of the job's account, so a receiver knows the event is ours and recent (replays of old
events fail the timestamp tolerance).
"""

from __future__ import annotations

import hashlib
import hmac
import time

from pydantic import BaseModel

SIGNATURE_HEADER = "StationThis-Signature"
DEFAULT_TOLERANCE = 300.0  # seconds a receiver accepts between our timestamp and its clock


class WebhookInput(BaseModel):
    """One job's webhook: where its events go and whose secret signs them."""

    job_id: str
    url: str
    user_id: str  # the account whose webhook secret signs
    identity: str  # the identity that started the job (the owner check of its status)


class WebhookWorkflowInput(WebhookInput):
    """JobWebhooksWorkflow's input: the webhook, its queue and how long to keep trying."""

    queue: str = "deliver-webhook"
    deadline: float = 24 * 3600.0


class WebhookResult(BaseModel):
    delivered: int = 0
    gave_up: str | None = None


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The signature header's value for `body` sent at `timestamp` (now by default)."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(
    secret: str,
    body: bytes,
    header: str,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> bool:
    """True if `header` signs `body` with `secret` and is at most `tolerance` seconds old."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        k, _, v = item.strip().partition("=")
        parts.setdefault(k, []).append(v)
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, v) for v in parts.get("v1", []))
