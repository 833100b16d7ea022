"""The layers issue 18 step 0 made room with: adapters over services over store, activities as
thin wrappers, and no import between the client and the activity classes."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from pymongo.database import Database

from adapters.jobs import JobsClient
from services.accounts import AccountService
from services.base import ServiceBase
from services.collections import CollectionService
from services.deliveries import DeliveryService
from services.jobs import JobService
from services.media_sources import MediaSourceService
from services.training import TrainingService
from store.db import Stores
from workers.config import Config

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def _importers(folder: str, prefix: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        bad = {m for m in _imports(path) if m == prefix or m.startswith(prefix + ".")}
        if bad:
            out[str(path.relative_to(ROOT))] = bad
    return out


def test_the_services_and_the_client_import_no_activity_and_no_adapter() -> None:
    assert _importers("services", "activities") == {}
    assert _importers("services", "adapters") == {}
    assert "activities" not in {m.split(".")[0] for m in _imports(ROOT / "adapters/jobs.py")}


def test_the_activities_import_no_adapter_and_no_feature_service() -> None:
    """Activities wrap planners (services/*_plans.py) and the store, never a client service."""
    assert _importers("activities", "adapters") == {}
    plans = {"services.job_plans", "services.training_plans", "services.collection_plans"}
    used = {m for ms in _importers("activities", "services").values() for m in ms}
    assert used <= plans, used - plans


def test_the_client_is_every_feature_service_and_each_stands_alone(
    mongo_db: Database[Any],
) -> None:
    for service in (
        JobService,
        AccountService,
        MediaSourceService,
        DeliveryService,
        CollectionService,
        TrainingService,
    ):
        assert issubclass(JobsClient, service)
        # What an adapter that needs only this feature builds (no Temporal call is made).
        built = service(None, Stores(mongo_db), Config())  # type: ignore[arg-type]
        assert isinstance(built, ServiceBase)
        assert built.stores.db is mongo_db
    assert not issubclass(AccountService, JobService), "accounts need no job machinery"
    assert not issubclass(DeliveryService, JobService)
