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
