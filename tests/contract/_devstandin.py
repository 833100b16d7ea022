"""TEMPORARY: runs /tmp/fakecomfy until tests/fixtures/comfy.py exists. Delete afterwards."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from workers.processes import ManagedProcess, free_port, http_check


@pytest.fixture(scope="session")
def comfy_standin(tmp_path_factory):
    port = free_port()
    root = tmp_path_factory.mktemp("fake")
    proc = ManagedProcess(
        "fakecomfy",
        [sys.executable, "/tmp/fakecomfy/fake.py", str(port), str(root)],
        port=port,
        health=http_check(f"http://127.0.0.1:{port}/system_stats"),
        log_path=root / "fake.log",
    )
    proc.start()
    proc.wait_ready()
    yield SimpleNamespace(url=f"http://127.0.0.1:{port}", root=root)
    proc.stop()
