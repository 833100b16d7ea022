"""Typed results of the ComfyUI client.

The server speaks loose JSON (docs/comfyui-protocol.md); these models are the small, stable
shapes the rest of StationThis relies on. They are pydantic models so activities can return
them through Temporal's pydantic data converter unchanged. Every field has a default or is
required from the start, so payloads already in running histories keep decoding.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Stage = Literal["queued", "running", "done"]


class SubmitResult(BaseModel):
    """The 200 answer of POST /prompt.

    `node_errors` may be non-empty on a 200: the server then runs only the output nodes that
    passed validation and silently drops the others (protocol §1).
    """

    model_config = ConfigDict(frozen=True)

    prompt_id: str
    number: float
    node_errors: dict[str, Any] = Field(default_factory=dict)


class Progress(BaseModel):
    """One progress report for a prompt, handed to `on_progress` callbacks.

    `queue_position` is the number of prompts that run before this one (the running prompt
    counts); it is only set while `stage == "queued"`. `node`, `value` and `max` describe the
    node being executed and its step counter (`progress` events); `percent` is that node's
    step progress (0-100), or 100 when the run is done.
    """

    model_config = ConfigDict(frozen=True)

    prompt_id: str
    stage: Stage
    queue_position: int | None = None
    node: str | None = None
    value: float | None = None
    max: float | None = None
    percent: float | None = None


class OutputFile(BaseModel):
    """One file a node reported in its UI output; fetch it with `ComfyClient.view`."""

    model_config = ConfigDict(frozen=True)

    node_id: str
    filename: str
    subfolder: str = ""
    type: str = "output"


class RunResult(BaseModel):
    """A prompt that finished successfully, read from /history (the source of truth)."""

    prompt_id: str
    status: Literal["success"] = "success"
    outputs: list[OutputFile] = Field(default_factory=list)
    texts: dict[str, list[str]] = Field(default_factory=dict)
    history: dict[str, Any] = Field(default_factory=dict)
    execution_seconds: float | None = None


class NodeErrorDetail(BaseModel):
    """One per-node validation error, flattened from a 400's `node_errors` (protocol §1)."""

    model_config = ConfigDict(frozen=True)

    node_id: str
    class_type: str | None = None
    title: str | None = None
    type: str = ""
    message: str = ""
    details: str = ""
    input_name: str | None = None
    received_value: Any = None

    def describe(self) -> str:
        """One line a person can act on: which node, which input, and why."""
        who = f"node {self.node_id}"
        if self.class_type:
            who += f" ({self.class_type})"
        if self.title and self.title != self.class_type:
            who += f" {self.title!r}"
        where = f" input {self.input_name!r}" if self.input_name else ""
        reason = self.message or self.type or "invalid"
        if self.details and self.details != self.input_name:
            reason += f": {self.details}"
        return f"{who}{where}: {reason}"
