"""Fixtures of the store tests: repositories over a fresh database per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pymongo.database import Database

from domain.rules import DomainRules
from store.db import Stores

MAIN_USER = "telegram:5472638766"


@pytest.fixture
def stores(mongo_db: Database[Any]) -> Iterator[Stores]:
    """Every repository over the test's own database, indexes created, starter grant 500."""
    s = Stores(mongo_db, DomainRules(starter_grant=500))
    s.ensure_indexes()
    yield s


@pytest.fixture
def cli_db(mongo_db: Database[Any], mongo_server: Any, monkeypatch: pytest.MonkeyPatch) -> Stores:
    """Point the CLI at the test database through the environment, as an operator would."""
    monkeypatch.setenv("MONGODB_URI", mongo_server.uri)
    monkeypatch.setenv("MONGODB_DATABASE", mongo_db.name)
    stores = Stores(mongo_db)
    stores.ensure_indexes()
    return stores
