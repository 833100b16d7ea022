"""Webhooks on the real stack: a receiver that checks signatures, dedupes by event id and sees
each state of the job, a retry after a failed answer, and SSRF refusals."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import uvicorn
from fastapi import FastAPI, Request, Response

from activities.webhooks import UnsafeWebhookUrl, _refused, check_url
from domain.webhooks import SIGNATURE_HEADER, sign, verify
from tests.fixtures.devstack import Stack
from tests.web.conftest import Api
from workers.processes import LOOPBACK, free_port

pytestmark = pytest.mark.stack

HISTORIES = Path(__file__).parents[1] / "workflows" / "histories"

SMALL = {"width": 256, "height": 256, "steps": 4}


@dataclass
class Receiver:
    """A webhook endpoint as a customer would write it: verify, dedupe by id, record."""

    url: str
    secret: str = ""
    fail_next: int = 0  # answer 500 to this many requests first (to force retries)
    redirect: bool = False
    seen: dict[str, dict[str, Any]] = field(default_factory=dict)
    deliveries: int = 0
    bad_signatures: int = 0

    def states(self) -> list[str]:
        return [e["job"]["state"] for e in sorted(self.seen.values(), key=lambda e: e["created"])]


@pytest_asyncio.fixture(loop_scope="session")
async def receiver() -> AsyncIterator[Receiver]:
    app = FastAPI()
    port = free_port()
    rec = Receiver(url=f"http://{LOOPBACK}:{port}/hook")

    @app.post("/hook")
    async def hook(request: Request) -> Response:
        body = await request.body()
        rec.deliveries += 1
        if rec.redirect:
            return Response(status_code=307, headers={"Location": "http://10.0.0.1/"})
        if not verify(rec.secret, body, request.headers.get(SIGNATURE_HEADER, "")):
            rec.bad_signatures += 1
            return Response(status_code=400)
        if rec.fail_next > 0:
            rec.fail_next -= 1
            return Response(status_code=500)
        event = json.loads(body)
        rec.seen.setdefault(event["id"], event)  # dedupe by event id
        return Response(status_code=204)

    server = uvicorn.Server(uvicorn.Config(app, host=LOOPBACK, port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield rec
    finally:
        server.should_exit = True
        await task


async def test_each_state_reaches_the_receiver_signed_once_deduped(
    api: Api, receiver: Receiver
) -> None:
    _identity, key = await api.new_key()
    async with api.client(key) as c:
        receiver.secret = (await c.get("/v1/me/webhook-secret")).json()["secret"]
    assert receiver.secret.startswith("whsec_")
    receiver.fail_next = 2  # the first two deliveries fail: retried with backoff
    async with api.client(key) as c:
        r = await c.post(
            "/v1/jobs",
            json={
                "kind": "make",
                "prompt": "a fox",
                "overrides": SMALL,
                "webhook_url": receiver.url,
            },
        )
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]

        async def final() -> None:
            while not receiver.states() or receiver.states()[-1] not in ("done", "failed"):
                await asyncio.sleep(0.2)

        await asyncio.wait_for(final(), 90)
    states = receiver.states()
    # Every state the job records comes, in order, even after failed answers; live-only
    # states (running) passed while the receiver failed are not replayed.
    assert states[0] == "starting" and "queued" in states and states[-1] == "done", states
    assert len(states) == len(set(states)), states
    assert receiver.bad_signatures == 0
    assert receiver.deliveries >= len(states) + 2  # the failed ones came again
    last = max(receiver.seen.values(), key=lambda e: e["created"])
    assert last["job"]["id"] == job_id
    assert last["job"]["outputs"] and last["job"]["price"] > 0
    handle = api.jobs.temporal.get_workflow_handle(f"webhook-{job_id}")
    result = await asyncio.wait_for(handle.result(), 30)  # the API's client: plain JSON
    assert result["delivered"] == len(states) and result["gave_up"] is None
    path = HISTORIES / "webhook_delivered.json"  # for tests/workflows/test_replay.py
    if os.environ.get("SAVE_HISTORIES") or not path.exists():
        path.write_text((await handle.fetch_history()).to_json())


async def test_a_receiver_that_answers_sees_the_live_states_too(
    api: Api, receiver: Receiver, dev_stack: Stack
) -> None:
    identity, key = await api.new_key()
    owner = await api.jobs.user(identity)
    receiver.secret = await asyncio.to_thread(api.jobs.stores.webhook_secrets.secret, owner.id)
    dev_stack.faults(render_time=2.0)
    try:
        async with api.client(key) as c:
            r = await c.post(
                "/v1/jobs",
                json={
                    "kind": "make",
                    "prompt": "a slow fox",
                    "overrides": SMALL,
                    "webhook_url": receiver.url,
                },
            )
            assert r.status_code == 201, r.text

            async def final() -> None:
                while not receiver.states() or receiver.states()[-1] != "done":
                    await asyncio.sleep(0.2)

            await asyncio.wait_for(final(), 90)
    finally:
        dev_stack.reset_faults()
    assert receiver.states()[:2] == ["starting", "queued"]
    assert "running" in receiver.states()
    assert receiver.deliveries == len(receiver.seen)  # no failure: each event exactly once


async def test_a_redirect_is_not_followed(api: Api, receiver: Receiver) -> None:
    import httpx

    from activities.webhooks import post_event

    receiver.redirect = True
    async with httpx.AsyncClient(follow_redirects=False) as http:
        code = await post_event(http, receiver.url, b"{}", "s", allow_loopback=True)
    assert code == 307
    assert receiver.seen == {}


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8080/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "ftp://example.com/hook",
        "http://user:pw@8.8.8.8/hook",
    ],
)
async def test_private_loopback_and_link_local_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeWebhookUrl):
        await check_url(url)


async def test_the_api_refuses_an_unsafe_webhook_before_starting_anything(api: Api) -> None:
    api.jobs.config = api.jobs.config.model_copy(update={"webhook_allow_loopback": False})
    _identity, key = await api.new_key()
    async with api.client(key) as c:
        for url in ("http://127.0.0.1:9/x", "http://10.0.0.5/x", "http://169.254.169.254/"):
            r = await c.post(
                "/v1/jobs",
                json={"kind": "make", "prompt": "a fox", "overrides": SMALL, "webhook_url": url},
            )
            assert r.status_code == 422, r.text
            assert r.json()["code"] == "unsafe_webhook_url"
        assert (await c.get("/v1/me")).json()["balance"] == 500
        assert (await c.get("/v1/jobs")).json()["jobs"] == []


def test_a_public_address_passes_and_the_signature_verifies() -> None:
    assert not _refused(ipaddress.ip_address("8.8.8.8"), False)
    header = sign("whsec_x", b'{"a":1}', timestamp=1_700_000_000)
    assert verify("whsec_x", b'{"a":1}', header, now=1_700_000_010)
    assert not verify("whsec_y", b'{"a":1}', header, now=1_700_000_010)
    assert not verify("whsec_x", b'{"a":2}', header, now=1_700_000_010)
    assert not verify("whsec_x", b'{"a":1}', header, now=1_700_001_000)  # too old
