"""The upload body limit stops reading at the limit, before the route (and its form parser)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import HTTPException

from adapters.web.limits import ENVELOPE, BodyLimit

MB = 2**20


async def test_a_chunked_body_is_cut_off_at_the_limit() -> None:
    reads = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"\0" * MB, "more_body": True}

    async def reader(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass

    limited = BodyLimit(reader, limit=3 * MB, paths={"/v1/uploads"})
    scope = {"type": "http", "path": "/v1/uploads", "headers": []}
    with pytest.raises(HTTPException) as err:
        await limited(scope, receive, None)  # type: ignore[arg-type,unused-ignore]
    assert err.value.status_code == 413
    assert reads == 4  # 3 MB + the envelope: the 4th megabyte is the first one over
    assert 3 * MB + ENVELOPE < 4 * MB


async def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    called = False
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal called
        called = True

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body must not be read")

    limited = BodyLimit(app, limit=MB, paths={"/v1/uploads"})
    headers = [(b"content-length", str(5 * MB).encode())]
    await limited({"type": "http", "path": "/v1/uploads", "headers": headers}, receive, send)  # type: ignore[arg-type,unused-ignore]
    assert not called
    assert sent[0]["status"] == 413
