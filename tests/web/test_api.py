"""The HTTP API on the real stack, through httpx: a user's story, then the adversary's."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from typing import Any

import httpx
import pytest
from PIL import Image

from adapters.telegram.ratelimit import RateLimiter
from domain.jobs import MakeImageRequest
from tests.fixtures.devstack import Stack
from tests.web.conftest import Api

pytestmark = pytest.mark.stack

SMALL = {"width": 256, "height": 256, "steps": 4}


def make(prompt: str = "a red fox in snow", **overrides: Any) -> dict[str, Any]:
    return {"kind": "make", "prompt": prompt, "overrides": {**SMALL, **overrides}}


def png(size: tuple[int, int] = (48, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(buf, "PNG")
    return buf.getvalue()


async def until_final(c: httpx.AsyncClient, job_id: str, timeout: float = 60) -> dict[str, Any]:
    async def poll() -> dict[str, Any]:
        while True:
            r = await c.get(f"/v1/jobs/{job_id}")
            assert r.status_code == 200, r.text
            if r.json()["final"]:
                return dict(r.json())
            await asyncio.sleep(0.2)

    return await asyncio.wait_for(poll(), timeout)


async def test_a_job_is_made_watched_and_its_output_downloaded(api: Api) -> None:
    identity, key = await api.new_key()
    async with api.client(key) as c:
        quote = await c.get("/v1/quote", params={"prompt": "a fox", **SMALL})
        assert quote.status_code == 200, quote.text
        r = await c.post("/v1/jobs", json=make(), headers={"Idempotency-Key": "one"})
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["id"].startswith("make-web-")
        assert job["existing"] is False

        states: list[str] = []
        async with c.stream("GET", f"/v1/jobs/{job['id']}/events") as events:
            assert events.headers["content-type"].startswith("text/event-stream")
            async for line in events.aiter_lines():
                if line.startswith("data: "):
                    states.append(json.loads(line[6:])["state"])
        assert states[-1] == "done", states

        done = await until_final(c, job["id"])
        assert done["price"] == quote.json()["price"] > 0
        [out] = done["outputs"]
        img = await c.get(out["url"])
        assert img.status_code == 200
        assert img.headers["content-type"] == "image/png"
        assert "immutable" in img.headers["cache-control"]
        assert Image.open(io.BytesIO(img.content)).size == (256, 256)

        me = (await c.get("/v1/me")).json()
        assert me["identity"] == identity
        assert me["balance"] == 500 - done["price"]
        page = (await c.get("/v1/jobs", params={"kind": "make"})).json()
        for _ in range(50):
            if page["jobs"]:
                break
            await asyncio.sleep(0.2)
            page = (await c.get("/v1/jobs", params={"kind": "make"})).json()
        assert [j["id"] for j in page["jobs"]] == [job["id"]]
        assert (await c.get("/v1/jobs", params={"state": "nonsense"})).status_code == 422


async def test_a_replayed_idempotency_key_gives_the_same_job_and_one_charge(api: Api) -> None:
    _identity, key = await api.new_key()
    async with api.client(key) as c:
        headers = {"Idempotency-Key": f"k-{uuid.uuid4().hex}"}
        # A double submit: both at once, then a retry after the answer.
        first, second = await asyncio.gather(
            c.post("/v1/jobs", json=make(), headers=headers),
            c.post("/v1/jobs", json=make(), headers=headers),
        )
        assert first.status_code == second.status_code == 201, (first.text, second.text)
        again = await c.post("/v1/jobs", json=make(), headers=headers)
        assert again.status_code == 201
        assert first.json()["id"] == second.json()["id"] == again.json()["id"]
        other = await c.post("/v1/jobs", json=make("another prompt"), headers=headers)
        assert other.status_code == 422
        assert other.headers["content-type"] == "application/problem+json"
        assert other.json()["code"] == "idempotency_key_reused"
        await until_final(c, first.json()["id"])
    totals = await asyncio.to_thread(api.jobs.stores.ledger.job_totals, first.json()["id"])
    assert totals.charges == 1


async def test_another_users_job_and_output_read_as_missing_ones(api: Api) -> None:
    _, alice = await api.new_key()
    _, bob = await api.new_key()
    async with api.client(alice) as a, api.client(bob) as b:
        job = (await a.post("/v1/jobs", json=make())).json()
        done = await until_final(a, job["id"])
        output = done["outputs"][0]["id"]
        missing_job = job["id"][:-4] + "zzzz"
        for path in (f"/v1/jobs/{job['id']}", f"/v1/jobs/{job['id']}/events"):
            theirs, none = await b.get(path), await b.get(path.replace(job["id"], missing_job))
            assert theirs.status_code == none.status_code == 404
            assert theirs.json()["code"] == none.json()["code"]
        cancel = await b.post(f"/v1/jobs/{job['id']}/cancel")
        assert cancel.status_code == 404
        theirs = await b.get(f"/v1/outputs/{output}")
        none = await b.get(f"/v1/outputs/{'0' * 24}")
        assert theirs.status_code == none.status_code == 404
        assert theirs.json()["code"] == none.json()["code"] == "output_not_found"
        assert b"\x89PNG" not in theirs.content
        for odd in ("not-an-id", "%00", "..%2f..%2fetc"):  # malformed ids: 404, never a 500
            assert (await b.get(f"/v1/outputs/{odd}")).status_code == 404
            assert (await b.get(f"/v1/jobs/{odd}")).status_code == 404


async def test_a_key_revoked_mid_way_stops_at_its_next_request(api: Api) -> None:
    identity, key = await api.new_key()
    async with api.client(key) as c:
        assert (await c.get("/v1/me")).status_code == 200
        key_id = key[:11]
        assert await asyncio.to_thread(api.jobs.stores.api_keys.revoke, identity, key_id)
        r = await c.get("/v1/me")
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        assert (await c.post("/v1/jobs", json=make())).status_code == 401
    async with httpx.AsyncClient(base_url=api.url) as anon:
        assert (await anon.get("/v1/me")).status_code == 401


async def test_a_key_over_its_rate_gets_429_with_retry_after(api: Api) -> None:
    _, key = await api.new_key()
    saved = api.app.state.rate_limiter  # type: ignore[attr-defined]
    api.app.state.rate_limiter = RateLimiter(3, 60.0)  # type: ignore[attr-defined]
    try:
        async with api.client(key) as c:
            codes = [(await c.get("/v1/me")).status_code for _ in range(4)]
            r = await c.get("/v1/me")
    finally:
        api.app.state.rate_limiter = saved  # type: ignore[attr-defined]
    assert codes == [200, 200, 200, 429]
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    assert r.json()["code"] == "rate_limited"


async def test_cancel_refunds_and_errors_speak_the_bots_words(api: Api, dev_stack: Stack) -> None:
    _identity, key = await api.new_key()
    dev_stack.faults(render_time=4.0)
    async with api.client(key) as c:
        job = (await c.post("/v1/jobs", json=make())).json()
        r = await c.post(f"/v1/jobs/{job['id']}/cancel")
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "cancelled"
        assert r.json()["refund"] == r.json()["price"] > 0
        again = await c.post(f"/v1/jobs/{job['id']}/cancel")
        assert again.status_code == 409
        bad = await c.post("/v1/jobs", json=make(steps=10_000))
        assert bad.status_code == 422
        assert bad.headers["content-type"] == "application/problem+json"
        assert bad.json()["detail"]
        assert (await c.get("/v1/me")).json()["balance"] == 500
    dev_stack.reset_faults()


async def test_uploads_are_checked_before_anything_is_stored(api: Api) -> None:
    identity, key = await api.new_key()
    owner = await api.jobs.user(identity)
    files = api.jobs.stores.db["images.files"]

    async def stored() -> int:
        return await asyncio.to_thread(files.count_documents, {"metadata.user_id": owner.id})

    async with api.client(key) as c:
        text = await c.post("/v1/uploads", files={"file": ("x.png", b"not an image at all")})
        assert text.status_code == 422, text.text
        assert text.headers["content-type"] == "application/problem+json"
        huge = await c.post("/v1/uploads", files={"file": ("x.png", b"\0" * (21 * 2**20))})
        assert huge.status_code == 413
        assert huge.json()["code"] == "too_large"

        async def chunks():  # no Content-Length: refused while it streams in
            boundary = b"--b\r\nContent-Disposition: form-data; name=file; filename=x.png\r\n\r\n"
            yield boundary
            for _ in range(30):
                yield b"\0" * 2**20

        chunked = await c.post(
            "/v1/uploads",
            content=chunks(),
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
        assert chunked.status_code == 413, chunked.text
        assert chunked.json()["code"] == "too_large"
        assert await stored() == 0
        up = await c.post("/v1/uploads", files={"file": ("red.png", png())})
        assert up.status_code == 201, up.text
        job = await c.post(
            "/v1/jobs",
            json={
                "kind": "resize",
                "source_image_id": up.json()["id"],
                "params": {"width": 16, "mode": "fit"},
            },
        )
        assert job.status_code == 201, job.text
        done = await until_final(c, job.json()["id"])
        assert done["state"] == "done", done
        img = await c.get(done["outputs"][0]["url"])
        assert Image.open(io.BytesIO(img.content)).width == 16


async def test_settings_are_changed_all_or_nothing(api: Api) -> None:
    _, key = await api.new_key()
    async with api.client(key) as c:
        ok = await c.patch("/v1/me/settings", json={"steps": 12})
        assert ok.status_code == 200, ok.text
        assert ok.json()["steps"] == 12
        bad = await c.patch("/v1/me/settings", json={"steps": 13, "width": -5})
        assert bad.status_code == 422
        assert "width" in bad.json()["detail"]
        assert (await c.get("/v1/me")).json()["settings"]["steps"] == 12


async def test_a_job_started_on_telegram_is_seen_and_cancelled_through_the_api(
    api: Api, dev_stack: Stack
) -> None:
    stores = api.jobs.stores
    tg = f"telegram:{uuid.uuid4().int % 10**9 + 10**9}"
    await asyncio.to_thread(stores.users.get_or_create, tg, 500)
    code = await asyncio.to_thread(stores.users.create_link_code, tg)
    web = f"web:linked-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(stores.users.redeem_link_code, code, web)
    key, _ = await asyncio.to_thread(stores.api_keys.create, web, "test")
    dev_stack.faults(render_time=4.0)
    try:
        started = await api.jobs.start_make(
            MakeImageRequest(user=tg, platform="cli", prompt="a fox", overrides=SMALL)
        )
        async with api.client(key) as c:
            seen = await c.get(f"/v1/jobs/{started.workflow_id}")
            assert seen.status_code == 200, seen.text
            ids: list[str] = []
            for _ in range(50):
                ids = [j["id"] for j in (await c.get("/v1/jobs")).json()["jobs"]]
                if ids:
                    break
                await asyncio.sleep(0.2)
            assert ids == [started.workflow_id]
            cancelled = await c.post(f"/v1/jobs/{started.workflow_id}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            assert cancelled.json()["state"] == "cancelled"
            assert (await c.get("/v1/me")).json()["balance"] == 500
    finally:
        dev_stack.reset_faults()


async def test_the_job_list_pages_with_a_cursor(api: Api) -> None:
    _, key = await api.new_key()
    async with api.client(key) as c:
        made = [(await c.post("/v1/jobs", json=make(f"fox {i}"))).json()["id"] for i in range(3)]
        for job in made:
            await until_final(c, job)
        pages: list[list[str]] = []
        for _ in range(50):
            first = (await c.get("/v1/jobs", params={"limit": 2})).json()
            if len(first["jobs"]) == 2 and first["next_cursor"]:
                break
            await asyncio.sleep(0.2)
        pages.append([j["id"] for j in first["jobs"]])
        rest = (await c.get("/v1/jobs", params={"limit": 2, "cursor": first["next_cursor"]})).json()
        pages.append([j["id"] for j in rest["jobs"]])
        assert rest["next_cursor"] is None
        assert sorted(pages[0] + pages[1]) == sorted(made)  # each once, none twice
        bad = await c.get("/v1/jobs", params={"cursor": "!!"})
        assert bad.status_code == 422
