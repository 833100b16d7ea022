"""`stationthis up` gives every worker its own metrics ports and prints where to scrape them."""

from __future__ import annotations

from pathlib import Path

from adapters.cli.up import format_ready
from workers.config import Config
from workers.devstack import DevStack, Endpoints, ExtraCommand, worker_commands

ENDPOINTS = Endpoints("127.0.0.1:7233", "default", "mongodb://127.0.0.1:1", ("http://c:1",))


def test_every_worker_and_the_bot_get_their_own_metrics_ports(tmp_path: Path) -> None:
    config = Config(devstack_dir=tmp_path, telegram_bot_token="123:abc", comfyui_urls="")  # type: ignore[arg-type]
    stack = DevStack(config, extra=[*worker_commands(config), ExtraCommand("other", ["true"])])
    procs = {p.name: p for p in stack._extras_for(ENDPOINTS)}
    assert set(stack.metrics_urls) == {
        "worker",
        "comfy-worker",
        "media-worker",
        "safety-worker",
        "bot",
    }
    ports = {int(procs[name].env["METRICS_PORT"]) for name in stack.metrics_urls}  # type: ignore[index]
    assert len(ports) == 5  # one per process, the SDK's on the port after each
    for name, (ours, sdk) in stack.metrics_urls.items():
        port = int(procs[name].env["METRICS_PORT"])  # type: ignore[index]
        assert (ours, sdk) == (
            f"http://127.0.0.1:{port}/metrics",
            f"http://127.0.0.1:{port + 1}/metrics",
        )
        assert procs[name].health is not None  # ready once it serves metrics
    assert "METRICS_PORT" not in (procs["other"].env or {})


def test_up_prints_each_processs_metrics_urls(tmp_path: Path) -> None:
    stack = DevStack(Config(devstack_dir=tmp_path), extra=[])
    stack.metrics_urls = {
        "worker": ("http://127.0.0.1:9100/metrics", "http://127.0.0.1:9101/metrics")
    }
    text = format_ready(stack, ENDPOINTS)
    assert "worker:" in text
    assert "http://127.0.0.1:9100/metrics | http://127.0.0.1:9101/metrics" in text
