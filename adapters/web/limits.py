"""Request-body limits applied before a route reads its body.

FastAPI parses a multipart form (spooling the file to a temporary file) before the route runs,
so a size check inside the route comes after the whole upload was received. This ASGI
middleware refuses an upload larger than media/safety.py's byte limit first: at once when
`Content-Length` says so, and while it streams in when the length is not declared (chunked),
so no more than the limit is ever read.
"""

from __future__ import annotations

from collections.abc import Collection

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Room for the multipart envelope (boundaries, part headers) around the file itself.
ENVELOPE = 64 * 1024


class BodyLimit:
    """Refuse bodies over `limit` bytes on `paths` with 413 before they are read."""

    def __init__(self, app: ASGIApp, *, limit: int, paths: Collection[str]) -> None:
        self.app = app
        self.limit = limit + ENVELOPE
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._too_large(scope, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, self.detail())
            return message

        await self.app(scope, limited, send)

    def detail(self) -> str:
        return f"the upload is larger than {(self.limit - ENVELOPE) // 2**20} MB"

    async def _too_large(self, scope: Scope, send: Send) -> None:
        from adapters.web.problems import problem_response

        response = problem_response(413, "too_large", self.detail(), instance=scope["path"])
        await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}
