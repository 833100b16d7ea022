"""The web adapter's ASGI app: the HTTP API (`/v1/...`) and, mounted by the web page, its pages.

One FastAPI app for every HTTP surface, built over the same `JobsClient` the bot and the CLI use,
so ownership checks, prices and messages are the ones they have. Other routers (the server-rendered
page) join it with `app.include_router(...)`; `create_app` is the one place it is assembled.
"""

from __future__ import annotations

from fastapi import FastAPI

from adapters.jobs import JobsClient
from adapters.telegram.ratelimit import RateLimiter
from adapters.web import api, pages, problems
from adapters.web.limits import BodyLimit
from media.safety import DEFAULT_LIMITS
from workers.config import Config


def create_app(config: Config, jobs: JobsClient) -> FastAPI:
    """The app for `stationthis web`: the API's routes, its problem documents, OpenAPI at /docs."""
    app = FastAPI(
        title="StationThis",
        version="1",
        description="Durable AI-image jobs: the HTTP API of StationThis.",
        docs_url="/docs",
    )
    app.state.config = config
    app.state.jobs = jobs
    # Per API key: at most `api_request_rate` requests per `api_request_window` seconds.
    app.state.rate_limiter = RateLimiter(config.api_request_rate, config.api_request_window)
    problems.install(app)
    # Uploads over media/safety.py's byte limit are refused before their body is read.
    app.add_middleware(BodyLimit, limit=DEFAULT_LIMITS.max_bytes, paths={"/v1/uploads"})
    app.include_router(api.router)

    # The web page (adapters/web/pages.py): sign-in, prompt box, jobs, gallery, uploads.
    app.include_router(pages.router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
