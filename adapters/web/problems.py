"""RFC 9457 problem documents (`application/problem+json`) for every API error.

Each refusal is a `StationError` with a stable `code`; the problem's `type` is built from that
code and its `detail` is the error's message, the same words the bot says. Another user's job or
output is the same 404 as a missing one (the services raise the same error for both).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from domain.errors import (
    InsufficientPoints,
    NotConfigured,
    StationError,
    TooManyJobs,
    UnknownUser,
)
from services.jobs import JobNotFound, NotCancellable
from store.blobs import BlobNotFound

PROBLEM_TYPE = "https://stationthis.dev/problems/"
PROBLEM_JSON = "application/problem+json"

# code of a StationError -> HTTP status; anything else a user did wrong is 422.
STATUS_BY_CLASS: tuple[tuple[type[Exception], int], ...] = (
    (JobNotFound, 404),
    (UnknownUser, 404),
    (NotCancellable, 409),
    (TooManyJobs, 409),
    (InsufficientPoints, 402),
    (NotConfigured, 503),
)


class Problem(Exception):
    """An error the API itself raises (auth, rate limit, idempotency): status, code, detail."""

    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    instance: str = "",
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + code,
        "title": code.replace("_", " "),
        "status": status,
        "detail": detail,
        "code": code,
    }
    if instance:
        body["instance"] = instance
    body.update(extra or {})
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def status_of(err: StationError) -> int:
    for cls, status in STATUS_BY_CLASS:
        if isinstance(err, cls):
            return status
    return 422


def install(app: FastAPI) -> None:
    """Make every error of the app a problem document."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, err: Problem) -> JSONResponse:
        return problem_response(
            err.status, err.code, err.detail, instance=request.url.path, headers=err.headers
        )

    @app.exception_handler(StationError)
    async def _station(request: Request, err: StationError) -> JSONResponse:
        return problem_response(status_of(err), err.code, err.message, instance=request.url.path)

    @app.exception_handler(BlobNotFound)
    async def _blob(request: Request, err: BlobNotFound) -> JSONResponse:
        return problem_response(
            404, "output_not_found", f"no output {err.args[0]!r}", instance=request.url.path
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        fields = [
            {"field": ".".join(str(p) for p in e.get("loc", ())[1:]), "message": e.get("msg", "")}
            for e in err.errors()
        ]
        detail = "; ".join(f"{f['field']}: {f['message']}" for f in fields) or "invalid request"
        return problem_response(
            422, "bad_input", detail, instance=request.url.path, extra={"errors": fields}
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 413: "too_large"}.get(err.status_code, f"http_{err.status_code}")
        return problem_response(err.status_code, code, str(err.detail), instance=request.url.path)
