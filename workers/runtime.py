"""Connections every process builds the same way: the Temporal client and the stores."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from domain.rules import DomainRules
from store.db import Stores
from workers.config import Config
from workers.devstack import Endpoints, load_runtime
from workers.metrics import temporal_runtime


def domain_rules(config: Config) -> DomainRules:
    return DomainRules(starter_grant=config.starter_grant, max_running_jobs=config.max_running_jobs)


async def connect_temporal(config: Config, endpoints: Endpoints) -> Client:
    """A client with the pydantic converter: every model crosses Temporal as JSON.

    In a process serving metrics (`workers.metrics.start_metrics`) the client, and so every
    worker built on it, runs on the Runtime that exports the SDK's metrics.
    """
    api_key = config.temporal_api_key.get_secret_value() if config.temporal_api_key else None
    return await Client.connect(
        endpoints.temporal_address,
        namespace=endpoints.namespace,
        data_converter=pydantic_data_converter,
        api_key=api_key,
        tls=config.temporal_tls or bool(api_key),
        runtime=temporal_runtime(),
    )


def open_stores(config: Config, endpoints: Endpoints, *, indexes: bool = True) -> Stores:
    stores = Stores.from_uri(
        endpoints.mongodb_uri,
        config.mongodb_database,
        rules=domain_rules(config),
        webhook_key=config.webhook_key(),
    )
    if indexes:
        stores.ensure_indexes()
    return stores


def stores_from_config(config: Config) -> Stores:
    """Stores for commands that need only MongoDB: MONGODB_URI, else the running dev stack."""
    uri = config.mongodb_uri or load_runtime(config).mongodb_uri
    stores = Stores.from_uri(
        uri, config.mongodb_database, rules=domain_rules(config), webhook_key=config.webhook_key()
    )
    stores.ensure_indexes()
    return stores
