"""The process helpers keep their promise: no orphan server, whatever happens to the parent."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from typing import Any

import psutil
import pytest
from pymongo.database import Database
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment

from tests.fixtures.stack import SEARCH_ATTRIBUTE_NAMES, MongoServer
from workers.config import REPO_ROOT
from workers.processes import (
    ManagedProcess,
    PortInUseError,
    ServiceNotReadyError,
    free_port,
    tcp_check,
    temporal_check,
)

PARENT = """
import sys, time
from workers.processes import ManagedProcess
p = ManagedProcess("sleeper", [sys.executable, "-c", "import time; time.sleep(120)"]).start()
print(p.pid, flush=True)
time.sleep(120)
"""


def test_a_server_dies_with_its_parent_even_when_the_parent_is_killed_with_sigkill() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child = psutil.Process(int(parent.stdout.readline()))
        assert child.is_running()
        time.sleep(0.3)  # let the guardian read the registration
        parent.kill()
        parent.wait()
        child.wait(timeout=10)  # raises TimeoutExpired if the guardian did not kill it
    finally:
        parent.kill()


def test_a_taken_port_is_refused_before_the_service_starts() -> None:
    port = free_port()
    listener = ManagedProcess(
        "listener",
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        port=port,
        health=tcp_check("127.0.0.1", port),
    )
    with listener:
        second = ManagedProcess("second", [sys.executable, "-c", "pass"], port=port)
        with pytest.raises(PortInUseError, match=f"port {port}.*second"):
            second.start()
        assert second.pid is None


def test_a_killed_mongodb_comes_back_on_restart_with_its_data(
    mongo_server: MongoServer, mongo_db: Database[Any]
) -> None:
    mongo_db.notes.insert_one({"n": 1})
    old = mongo_server.process.pid
    mongo_server.process.kill()
    assert not mongo_server.process.is_running()
    mongo_server.process.restart()
    assert mongo_server.process.pid != old
    assert mongo_db.notes.count_documents({"n": 1}) == 1


async def test_the_dev_server_fixture_knows_the_project_search_attributes(
    temporal_dev_env: WorkflowEnvironment,
) -> None:
    client = temporal_dev_env.client
    resp = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    assert set(SEARCH_ATTRIBUTE_NAMES) <= set(resp.custom_attributes)


async def test_the_readiness_check_registers_a_search_attribute_an_older_server_lacks(
    temporal_dev_env: WorkflowEnvironment,
) -> None:
    """A .devstack whose SQLite file predates an attribute (ParentJob) must still come up."""
    client = temporal_dev_env.client
    address = client.service_client.config.target_host
    name = f"Probe{uuid.uuid4().hex[:8]}"
    check = temporal_check(address, client.namespace, {name: "Keyword"})
    with pytest.raises(ServiceNotReadyError):
        await asyncio.to_thread(check)  # registers it, then says "not yet"
    deadline = time.monotonic() + 20
    while True:
        try:
            await asyncio.to_thread(check)
            break
        except ServiceNotReadyError:
            assert time.monotonic() < deadline, "never registered"
            await asyncio.sleep(0.2)
    resp = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    assert name in resp.custom_attributes


async def test_the_time_skipping_fixture_starts_with_the_pydantic_converter(
    temporal_ts_env: WorkflowEnvironment,
) -> None:
    from temporalio.contrib.pydantic import pydantic_data_converter

    assert temporal_ts_env.supports_time_skipping
    assert temporal_ts_env.client.data_converter is pydantic_data_converter
