"""400 bodies that only newer ComfyUI servers send (protocol §1), which the v0.3.64 stand-in
cannot produce: decoded from the documented shapes, without a server."""

from __future__ import annotations

from comfy.client import _validation_error
from comfy.errors import ComfyMissingNode, ComfyValidationError

GRAPH = {
    "1": {"class_type": "EmptyImage", "inputs": {}},
    "7": {"class_type": "Florence2Run", "inputs": {}, "_meta": {"title": "Caption"}},
}


def test_a_newer_missing_node_type_refusal_names_the_node_and_class() -> None:
    error = _validation_error(
        {
            "error": {
                "type": "missing_node_type",
                "message": "Node 'Caption' not found. The custom node may not be installed.",
                "details": "Node ID '#7'",
                "extra_info": {
                    "node_id": "7",
                    "class_type": "Florence2Run",
                    "node_title": "Caption",
                },
            },
            "node_errors": {},
        },
        GRAPH,
    )
    assert isinstance(error, ComfyMissingNode)
    assert (error.node_id, error.class_type) == ("7", "Florence2Run")
    assert not error.retryable


def test_a_v0364_unknown_class_refusal_is_the_same_missing_node() -> None:
    error = _validation_error(
        {
            "error": {
                "type": "invalid_prompt",
                "message": "Cannot execute because node Florence2Run does not exist.",
                "details": "Node ID '#7'",
                "extra_info": {},
            },
            "node_errors": {},
        },
        GRAPH,
    )
    assert isinstance(error, ComfyMissingNode)
    assert (error.node_id, error.class_type) == ("7", "Florence2Run")


def test_a_node_without_class_type_is_a_plain_validation_error() -> None:
    error = _validation_error(
        {
            "error": {
                "type": "invalid_prompt",
                "message": "Cannot execute because a node is missing the class_type property.",
                "details": "Node ID '#3'",
                "extra_info": {},
            },
            "node_errors": {},
        },
        {"3": {"inputs": {}}},
    )
    assert type(error) is ComfyValidationError
    assert "missing the class_type" in error.summary
    assert "#3" in error.summary


def test_a_newer_invalid_prompt_id_refusal_is_not_retryable() -> None:
    error = _validation_error(
        {
            "error": {
                "type": "invalid_prompt_id",
                "message": "Invalid prompt_id format",
                "details": "prompt_id must be a valid UUID",
                "extra_info": {},
            },
            "node_errors": {},
        },
        GRAPH,
    )
    assert error.error_type == "invalid_prompt_id"
    assert not error.retryable
