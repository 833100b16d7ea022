"""`stationthis up` starts the web app with the workers and prints where it serves."""

from __future__ import annotations

from pathlib import Path

from adapters.cli.up import format_ready
from workers.config import Config
from workers.devstack import DevStack, Endpoints, worker_commands

ENDPOINTS = Endpoints("127.0.0.1:7233", "default", "mongodb://127.0.0.1:1", ("http://c:1",))


def test_up_starts_the_web_app_and_prints_its_url(tmp_path: Path) -> None:
    config = Config(devstack_dir=tmp_path, web_port=18123)
    [web] = [c for c in worker_commands(config) if c.name == "web"]
    assert web.argv[-5:] == ["web", "--host", "127.0.0.1", "--port", "18123"]
    assert web.health is not None  # ready once /healthz answers
    stack = DevStack(config, extra=[web])
    stack.processes["web"] = stack._extras_for(ENDPOINTS)[0]
    assert "Web / API:      http://127.0.0.1:18123 (OpenAPI at /docs)" in format_ready(
        stack, ENDPOINTS
    )
