"""`stationthis up` as a developer runs it: real subprocesses, real ports, real signals."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pymongo
import pytest
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client

from tests.fixtures.stack import SEARCH_ATTRIBUTE_NAMES, MongoServer
from workers.config import REPO_ROOT, Config, TemporalDev
from workers.devstack import DevStack, StackNotRunningError, resolve_endpoints
from workers.processes import LOOPBACK, free_port

pytestmark = pytest.mark.stack

STANDIN_AVAILABLE = importlib.util.find_spec("standins.comfyui.__main__") is not None
"""The ComfyUI stand-in is written by another helper; until it exists, point at a dummy URL."""

SERVICE_ENV = ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "MONGODB_URI", "COMFYUI_URLS")


def up_env(devstack_dir: Path, **extra: str) -> dict[str, str]:
    """Environment of a `stationthis up` on private ports and a private directory."""
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_ENV}
    env.update(
        DEVSTACK_DIR=str(devstack_dir),
        TEMPORAL__PORT=str(free_port()),
        TEMPORAL__UI_PORT=str(free_port()),
        PYTHONUNBUFFERED="1",
    )
    if not STANDIN_AVAILABLE:
        env["COMFYUI_URLS"] = "http://127.0.0.1:9"
    env.update(extra)
    return env


class UpProcess:
    """A `stationthis up` subprocess whose stdout is read line by line in the background."""

    def __init__(self, env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "adapters.cli.main", "up", "--no-workers"],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.popen.poll() is not None and self.lines.empty():
                    break
                continue
            self.stdout.append(line)
            if text in line:
                return line
        stderr = self.popen.stderr.read() if self.popen.poll() is not None else ""  # type: ignore[union-attr]
        raise AssertionError(f"no {text!r} in output: {''.join(self.stdout)}\n{stderr}")

    def kill_everything(self, extra_pids: list[int]) -> None:
        """Cleanup that works even when the test failed half-way."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        for pid in extra_pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.popen.wait(10)


@pytest.fixture
def devstack_dir(tmp_path: Path) -> Path:
    return tmp_path / "devstack"


def processes_using(path: Path) -> list[psutil.Process]:
    """Live processes whose command line mentions `path` (our services pass their dirs)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if str(path) in cmd and proc.pid != os.getpid():
            found.append(proc)
    return found


async def test_up_serves_every_service_and_sigterm_leaves_no_process_behind(
    devstack_dir: Path,
) -> None:
    up = UpProcess(up_env(devstack_dir))
    children: list[int] = []
    try:
        began = time.monotonic()
        up.wait_for("ready", timeout=60)
        ready_after = time.monotonic() - began
        children = [p.pid for p in psutil.Process(up.popen.pid).children(recursive=True)]
        config = Config(devstack_dir=devstack_dir)
        endpoints = resolve_endpoints(config)

        client = await Client.connect(endpoints.temporal_address, namespace=endpoints.namespace)
        attrs = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=endpoints.namespace)
        )
        assert set(SEARCH_ATTRIBUTE_NAMES) <= set(attrs.custom_attributes)
        async with httpx.AsyncClient(timeout=5) as http:
            assert (await http.get(endpoints.temporal_ui_url)).status_code == 200
            if STANDIN_AVAILABLE:
                (comfy_url,) = endpoints.comfyui_urls
                assert (await http.get(f"{comfy_url}/system_stats")).status_code == 200

        mongo: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
            endpoints.mongodb_uri, serverSelectionTimeoutMS=5000
        )
        assert mongo.admin.command("ping")["ok"] == 1
        mongo.close()

        expected = {"temporal", "workers.secantusd"} | (
            {"standins.comfyui"} if STANDIN_AVAILABLE else set()
        )
        cmdlines = " ".join(" ".join(psutil.Process(p).cmdline()) for p in children)
        assert all(name in cmdlines for name in expected), cmdlines
        # The server runs tuned (temporal-dev.yaml): no 20/s transfer-queue throttle, and its
        # SQLite file in WAL mode (the -wal file exists only in that mode).
        assert "history.transferProcessorMaxPollRPS=1000" in cmdlines
        assert (devstack_dir / "temporal.sqlite-wal").exists()

        up.popen.send_signal(signal.SIGTERM)
        assert up.popen.wait(30) == 0
        _gone, alive = psutil.wait_procs(
            [psutil.Process(p) for p in children if psutil.pid_exists(p)], timeout=10
        )
        assert alive == [], f"left running after SIGTERM: {alive}"
        assert not (devstack_dir / "runtime.json").exists()
        with pytest.raises(StackNotRunningError, match="stationthis up"):
            resolve_endpoints(config)
        print(f"stack ready after {ready_after:.2f}s (launcher start to 'ready' line)")
    finally:
        up.kill_everything(children)


def test_a_busy_port_is_named_in_the_error_and_nothing_keeps_running(devstack_dir: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind((LOOPBACK, 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        up = UpProcess(up_env(devstack_dir, TEMPORAL__PORT=str(busy)))
        try:
            code = up.popen.wait(30)
            assert up.popen.stderr is not None
            err = up.popen.stderr.read()
        finally:
            up.kill_everything([])
    assert code == 1
    assert f"port {busy}" in err and "temporal" in err and "in use" in err, err
    assert processes_using(devstack_dir) == []


def test_an_external_mongodb_uri_skips_the_embedded_mongodb(
    devstack_dir: Path, mongo_server: MongoServer
) -> None:
    config = Config(
        devstack_dir=devstack_dir,
        mongodb_uri=mongo_server.uri,
        temporal=TemporalDev(port=free_port(), ui_port=free_port()),
        comfyui_urls="" if STANDIN_AVAILABLE else "http://127.0.0.1:9",
    )
    with DevStack(config, workers=False) as stack:
        assert "mongodb" not in stack.processes
        assert "temporal" in stack.processes
        assert stack.endpoints.mongodb_uri == mongo_server.uri
        assert not any("secantusd" in " ".join(p.cmdline()) for p in processes_using(devstack_dir))
        # Another process (no MONGODB_URI in its environment) finds the same endpoints.
        found = resolve_endpoints(Config(devstack_dir=devstack_dir, mongodb_uri=""))
        assert found == stack.endpoints
    with pytest.raises(StackNotRunningError):
        resolve_endpoints(Config(devstack_dir=devstack_dir, mongodb_uri=""))


@pytest.fixture
def stack_without_temporal(devstack_dir: Path) -> Iterator[DevStack]:
    """A supervised stack of only the embedded MongoDB (Temporal and ComfyUI external)."""
    config = Config(
        devstack_dir=devstack_dir,
        temporal_address="127.0.0.1:9",
        mongodb_uri="",
        comfyui_urls="http://127.0.0.1:9",
    )
    with DevStack(config, workers=False, supervise=True, max_restarts=2) as stack:
        yield stack


def test_a_crashed_service_is_restarted_on_the_same_address(
    stack_without_temporal: DevStack,
) -> None:
    stack = stack_without_temporal
    mongo = stack.processes["mongodb"]
    first_pid = mongo.pid
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        stack.endpoints.mongodb_uri, serverSelectionTimeoutMS=15_000
    )
    try:
        client.devstack_test.items.insert_one({"kept": True})
        mongo.kill()  # SIGKILL, as a crash would
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (mongo.pid != first_pid and mongo.is_running()):
            time.sleep(0.1)
        assert mongo.pid != first_pid
        assert stack.restarts["mongodb"] == 1
        assert client.devstack_test.items.find_one({"kept": True}) is not None
    finally:
        client.close()
