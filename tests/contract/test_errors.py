"""Refusals and failures reach the caller as typed exceptions that say whether to retry."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from comfy.client import ComfyClient
from comfy.errors import (
    ComfyExecutionError,
    ComfyMissingNode,
    ComfyUnavailable,
    ComfyValidationError,
)
from tests.contract.conftest import Pace, txt2img
from tests.fixtures.comfy import ComfyServer
from workers.processes import free_port


def _set(graph: dict[str, Any], node: str, name: str, value: Any) -> dict[str, Any]:
    graph[node]["inputs"][name] = value
    return graph


def _drop(graph: dict[str, Any], node: str, name: str) -> dict[str, Any]:
    del graph[node]["inputs"][name]
    return graph


@pytest.mark.parametrize(
    ("break_graph", "node_id", "class_type", "input_name", "error_type"),
    [
        (
            lambda g: _set(g, "5", "width", 8),
            "5",
            "EmptyLatentImage",
            "width",
            "value_smaller_than_min",
        ),
        (
            lambda g: _set(g, "3", "sampler_name", "no_such_sampler"),
            "3",
            "KSampler",
            "sampler_name",
            "value_not_in_list",
        ),
        (lambda g: _drop(g, "3", "steps"), "3", "KSampler", "steps", "required_input_missing"),
    ],
    ids=["value-below-min", "unknown-combo-value", "missing-input"],
)
async def test_an_invalid_graph_is_refused_naming_node_input_and_reason(
    comfy: ComfyClient,
    ckpt: str,
    break_graph: Any,
    node_id: str,
    class_type: str,
    input_name: str,
    error_type: str,
    pace: Pace,
) -> None:
    prompt_id = str(uuid.uuid4())
    with pytest.raises(ComfyValidationError) as caught:
        await comfy.run(break_graph(txt2img(ckpt)), prompt_id=prompt_id, timeout=pace.timeout())

    error = caught.value
    assert not error.retryable
    assert type(error) is ComfyValidationError
    assert error.error_type == "prompt_outputs_failed_validation"
    assert node_id in error.node_errors
    matching = [e for e in error.errors if e.node_id == node_id and e.type == error_type]
    assert matching, error.errors
    assert matching[0].class_type == class_type
    assert matching[0].input_name == input_name
    for word in (f"node {node_id}", class_type, input_name):
        assert word in error.summary
        assert word in str(error)
    # A refused prompt leaves no trace on the server.
    assert await comfy.history(prompt_id) is None
    assert await comfy.queue_position(prompt_id) is None


async def test_an_unknown_node_class_is_reported_as_a_missing_node(
    comfy: ComfyClient, ckpt: str
) -> None:
    graph = txt2img(ckpt)
    graph["12"] = {"class_type": "NoSuchNode", "inputs": {}}
    with pytest.raises(ComfyMissingNode) as caught:
        await comfy.submit(graph)
    assert caught.value.node_id == "12"
    assert caught.value.class_type == "NoSuchNode"
    assert not caught.value.retryable
    assert "NoSuchNode" in str(caught.value)
    assert isinstance(caught.value, ComfyValidationError)


async def test_a_graph_without_output_nodes_is_refused(comfy: ComfyClient, ckpt: str) -> None:
    graph = txt2img(ckpt)
    del graph["9"]
    with pytest.raises(ComfyValidationError) as caught:
        await comfy.submit(graph)
    assert caught.value.error_type == "prompt_no_outputs"
    assert "no outputs" in str(caught.value).lower()


async def test_a_prompt_id_that_is_not_a_canonical_uuid_is_refused_on_every_server_version(
    comfy: ComfyClient, ckpt: str
) -> None:
    with pytest.raises(ComfyValidationError) as caught:
        await comfy.submit(txt2img(ckpt), prompt_id="job-1")
    assert caught.value.error_type == "invalid_prompt_id"


async def test_an_accepted_prompt_with_a_broken_branch_runs_only_the_valid_output(
    comfy: ComfyClient, ckpt: str, pace: Pace
) -> None:
    graph = txt2img(ckpt)
    graph["10"] = {"class_type": "SaveImage", "inputs": {"images": ["8", 0]}}
    submitted = await comfy.submit(graph)
    assert "10" in submitted.node_errors
    result = await comfy.wait(submitted.prompt_id, timeout=pace.timeout())
    assert {f.node_id for f in result.outputs} == {"9"}


async def test_a_node_failure_raises_an_execution_error_naming_the_node(
    comfy: ComfyClient, ckpt: str, faults: ComfyServer, pace: Pace
) -> None:
    faults.set_faults(execution_error={"next": 1})
    graph = txt2img(ckpt)
    prompt_id = str(uuid.uuid4())
    with pytest.raises(ComfyExecutionError) as caught:
        await comfy.run(graph, prompt_id=prompt_id, timeout=pace.timeout())
    error = caught.value
    assert error.prompt_id == prompt_id
    assert error.node_id in graph
    assert error.node_type == graph[error.node_id]["class_type"]
    assert error.exception_type == "RuntimeError"
    assert "simulated node failure" in error.exception_message
    assert not error.retryable
    assert f"node {error.node_id} ({error.node_type})" in str(error)


async def test_a_server_error_on_submit_is_retryable_unavailability(
    comfy: ComfyClient, ckpt: str, faults: ComfyServer, pace: Pace
) -> None:
    faults.set_faults(http_500={"next": 1})
    with pytest.raises(ComfyUnavailable) as caught:
        await comfy.run(txt2img(ckpt), timeout=pace.timeout())
    assert caught.value.retryable
    assert caught.value.status_code == 500
    # The next submission goes through: the fault was transient.
    assert (await comfy.run(txt2img(ckpt), timeout=pace.timeout())).status == "success"


async def test_an_unreachable_server_is_retryable_unavailability() -> None:
    async with ComfyClient(f"http://127.0.0.1:{free_port()}", timeout=2.0) as nowhere:
        with pytest.raises(ComfyUnavailable) as caught:
            await nowhere.run({"1": {"class_type": "SaveImage", "inputs": {}}}, timeout=5)
        assert caught.value.retryable
        with pytest.raises(ComfyUnavailable):
            await nowhere.system_stats()
