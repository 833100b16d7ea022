"""What CLI commands share: the configuration, endpoints, and a connected jobs client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from adapters.jobs import JobsClient
from workers.config import Config
from workers.devstack import resolve_endpoints
from workers.runtime import connect_temporal, open_stores


@asynccontextmanager
async def jobs_client(config: Config | None = None) -> AsyncIterator[JobsClient]:
    config = config or Config()
    endpoints = resolve_endpoints(config)
    temporal = await connect_temporal(config, endpoints)
    stores = open_stores(config, endpoints)
    try:
        yield JobsClient(temporal, stores, config, ui_url=endpoints.temporal_ui_url)
    finally:
        stores.close()
