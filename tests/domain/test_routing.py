"""Which GPU queue a job's prompts go to, and whose turn it is (domain/routing.py)."""

from __future__ import annotations

from typing import Any

from domain.queues import JobRoute
from domain.routing import checkpoint_queue, checkpoints_needed, comfy_route, queue_for_graphs


def graph(*ckpts: str) -> dict[str, Any]:
    nodes: dict[str, Any] = {
        str(i): {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": c}}
        for i, c in enumerate(ckpts)
    }
    nodes["9"] = {"class_type": "SaveImage", "inputs": {"images": ["0", 0]}}
    return nodes


def test_a_graph_loading_a_checkpoint_goes_to_that_checkpoints_queue() -> None:
    assert checkpoints_needed(graph("flux1-dev.safetensors")) == ["flux1-dev.safetensors"]
    assert queue_for_graphs("comfy", [graph("flux1-dev.safetensors")]) == (
        "comfy:ckpt:flux1-dev.safetensors"
    )
    assert checkpoint_queue("comfy", "a.safetensors") == "comfy:ckpt:a.safetensors"


def test_a_graph_loading_no_checkpoint_goes_to_the_base_queue_every_server_polls() -> None:
    upscale = {"1": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "4x.pth"}}}
    assert checkpoints_needed(upscale) == []
    assert queue_for_graphs("comfy", [upscale]) == "comfy"


def test_the_plan_names_the_user_as_fairness_key_and_none_without_a_user() -> None:
    route = comfy_route(JobRoute(), [graph("x.safetensors")], "u-123")
    assert (route.comfy_queue, route.fairness_key) == ("comfy:ckpt:x.safetensors", "u-123")
    assert comfy_route(JobRoute(), [], "").fairness_key == ""
    assert len(comfy_route(JobRoute(), [], "u" * 100).fairness_key) == 64  # Temporal's limit
