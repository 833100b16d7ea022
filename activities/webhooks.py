"""The `deliver-webhook` queue's activity: POST each state change of a job to its webhook.

Events come from the job's own history, not from polling its status: the saga upserts the
`JobState` search attribute at every state change (workflows/job_saga.py), so the history holds
each state in order, none skipped however fast the job runs, and reading it changes nothing in
the job. The activity long-polls that history and, for each state, POSTs one signed event whose
id is made from the job id and the history event id: the same id on every retry.

Failure and retry: a receiver that does not answer 2xx (a redirect included: none is followed)
fails the activity, and Temporal retries it with backoff (workflows/job_webhooks.py) until the
webhook's deadline. The events the receiver acknowledged are in the heartbeat details, so a
retry resends only the rest: each event reaches a 2xx receiver at least once.

SSRF: the URL's host is resolved and every address checked (no private, loopback, link-local,
multicast, reserved or unspecified address) before each POST, and the request goes to the
checked address itself (Host header and TLS server name set to the host), so a DNS answer that
changes between check and connect cannot point it elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

from domain.errors import UserInputError
from domain.jobs import FINAL_STATES, JobState
from domain.search_attributes import JOB_STATE
from domain.webhooks import SIGNATURE_HEADER, WebhookInput, WebhookResult, sign
from store.db import Stores

log = logging.getLogger(__name__)

DELIVER_WEBHOOKS = "deliver_job_webhooks"
POST_TIMEOUT = 10.0
HEARTBEAT_EVERY = 5.0
POLL_EVERY = 0.25  # seconds between reads of a running job's live status
# States in the order a job goes through them: an event is sent only for a later state.
ORDER: list[JobState] = list(JobState)


class UnsafeWebhookUrl(UserInputError):
    code = "unsafe_webhook_url"


def _refused(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_loopback: bool) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return not allow_loopback
    return bool(
        ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


async def check_url(url: str, *, allow_loopback: bool = False) -> str:
    """The address to send to for `url`, after checking every address its host resolves to;
    UnsafeWebhookUrl (a 422 in the API) for anything but a public http(s) address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeWebhookUrl("webhook_url: must be an http(s) URL with a host")
    if parts.username or parts.password:
        raise UnsafeWebhookUrl("webhook_url: must not carry a user name or password")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise UnsafeWebhookUrl(f"webhook_url: the host {host!r} does not resolve") from None
    addresses = {str(info[4][0]).split("%")[0] for info in infos}
    if not addresses:
        raise UnsafeWebhookUrl(f"webhook_url: the host {host!r} does not resolve")
    for addr in sorted(addresses):
        if _refused(ipaddress.ip_address(addr), allow_loopback):
            raise UnsafeWebhookUrl(
                "webhook_url: private, loopback and link-local addresses are not allowed"
            )
    return sorted(addresses)[0]


async def post_event(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    secret: str,
    *,
    allow_loopback: bool,
    extra_headers: Mapping[str, str] | None = None,
) -> int:
    """POST one signed event to the checked address of `url`; the status code (no redirects
    followed: a 3xx is a failure like any non-2xx)."""
    addr = await check_url(url, allow_loopback=allow_loopback)
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{addr}]" if ":" in addr else addr
    if parts.port:
        netloc += f":{parts.port}"
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    headers = {
        "Host": parts.netloc.rpartition("@")[2],
        "Content-Type": "application/json",
        "User-Agent": "StationThis-Webhooks/1",
        SIGNATURE_HEADER: sign(secret, body),
        **(extra_headers or {}),
    }
    response = await client.post(
        pinned,
        content=body,
        headers=headers,
        extensions={"sni_hostname": host} if parts.scheme == "https" else {},
    )
    return response.status_code


def _state_of(event: HistoryEvent) -> str | None:
    """The JobState an event sets: the start's search attributes or an upsert's."""
    if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
        fields = event.workflow_execution_started_event_attributes.search_attributes
    elif event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
        fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
    else:
        return None
    payload = fields.indexed_fields.get(JOB_STATE.name)
    if payload is None:
        return None
    value = json.loads(payload.data)
    return str(value[0] if isinstance(value, list) and value else value) or None


class WebhookActivities:
    """Delivers job webhooks; holds the Temporal client (to read job histories) and the stores
    (the account's secret, never carried in a payload)."""

    def __init__(
        self,
        temporal: Client,
        stores: Stores,
        *,
        status: Callable[[str, str], Awaitable[dict[str, Any]]],
        allow_loopback: bool = False,
    ) -> None:
        self.temporal = temporal
        self.stores = stores
        self.allow_loopback = allow_loopback
        # `async (job_id, identity) -> dict`: the job's full view for its final event.
        self.status = status

    @activity.defn(name=DELIVER_WEBHOOKS)
    async def deliver_job_webhooks(self, inp: WebhookInput) -> WebhookResult:
        """Send every state of the job not yet acknowledged, until the job has ended."""
        info = activity.info()
        acked: list[str] = list(info.heartbeat_details[0]) if info.heartbeat_details else []
        secret = await asyncio.to_thread(self.stores.webhook_secrets.secret, inp.user_id)

        async def beat() -> None:
            while True:
                activity.heartbeat(acked)
                await asyncio.sleep(HEARTBEAT_EVERY)

        beating = asyncio.create_task(beat())
        try:
            async with httpx.AsyncClient(timeout=POST_TIMEOUT, follow_redirects=False) as http:
                await self._follow(inp, secret, acked, http)
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
        return WebhookResult(delivered=len(acked))

    async def _follow(
        self, inp: WebhookInput, secret: str, acked: list[str], http: httpx.AsyncClient
    ) -> None:
        """Each time the live status changes: first the states the history recorded up to
        then (so none is skipped, in their order), then the live one; until it is final."""
        last = ORDER.index(JobState.STARTING) - 1
        for event_id in acked:
            last = max(last, ORDER.index(JobState(event_id.rpartition("_")[2])))
        seen: str | None = None

        async def send(state: str, job: dict[str, Any]) -> None:
            nonlocal last
            rank = ORDER.index(JobState(state))
            if rank <= last:
                return  # sent already (this attempt or an earlier one)
            event_id = f"evt_{inp.job_id}_{state}"
            body = json.dumps(
                {
                    "id": event_id,
                    "type": "job.state",
                    "created": datetime.now(UTC).isoformat(),
                    "job": job,
                },
                sort_keys=True,
            ).encode()
            code = await post_event(http, inp.url, body, secret, allow_loopback=self.allow_loopback)
            if not 200 <= code < 300:
                raise RuntimeError(f"webhook receiver answered {code}")
            last = rank
            acked.append(event_id)
            activity.heartbeat(acked)

        while True:
            view = await self.status(inp.job_id, inp.identity)
            state = str(view["state"])
            if state != seen:
                seen = state
                for recorded in await self._recorded_states(inp.job_id):
                    if recorded == state:
                        continue  # sent below, with the full view
                    job: dict[str, Any] = {"id": inp.job_id, "state": recorded}
                    if JobState(recorded) in FINAL_STATES:  # ended since the read above
                        job = await self.status(inp.job_id, inp.identity)
                    await send(recorded, job)
                await send(state, view)
            if JobState(state) in FINAL_STATES:
                return
            await asyncio.sleep(POLL_EVERY)

    async def _recorded_states(self, job_id: str) -> list[str]:
        """The JobState values the job's history recorded, in order."""
        states: list[str] = []
        async for event in self.temporal.get_workflow_handle(job_id).fetch_history_events():
            state = _state_of(event)
            if state is not None and state not in states:
                states.append(state)
        return states
