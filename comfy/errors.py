"""Typed failures of the ComfyUI client.

Every exception says whether trying again can help (`retryable`), so the activity layer can map
it to a retryable error or to a non-retryable `ApplicationError` without knowing ComfyUI:

| exception | when | retryable |
|---|---|---|
| ComfyUnavailable | connect error, HTTP timeout, 5xx, server unreachable while following | yes |
| ComfyValidationError | 400 from POST /prompt (bad graph, bad value, no outputs, bad id) | no |
| ComfyMissingNode | 400: a node's class_type is not installed on this server | no |
| ComfyExecutionError | the run failed in a node (`execution_error`) | only out-of-memory |
| ComfyInterrupted | the run was interrupted (`execution_interrupted`) | no |
| PromptLost | the server has no trace of the prompt (restart lost its queue) | yes: resubmit |
| ComfyTimeout | the caller's deadline passed before the prompt finished | yes |
| ComfyOutputTooLarge | an output file read through /view is bigger than the client's cap | no |

`ComfyExecutionError` is retryable only when the failure looks like running out of memory: that
depends on what else the GPU holds at the moment and often passes, while every other node
failure (bad model file, shape mismatch, a bug in a custom node) happens again on a retry.
"""

from __future__ import annotations

from typing import Any

from comfy.models import NodeErrorDetail


class ComfyError(Exception):
    """Base of every ComfyUI client failure."""

    retryable: bool = False

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class ComfyUnavailable(ComfyError):
    """The server could not be reached or failed internally (connect error, timeout, 5xx)."""

    retryable = True


class ComfyValidationError(ComfyError):
    """POST /prompt was refused with 400: nothing was queued and nothing will run.

    Attributes:
        error_type: the server's `error.type` (`prompt_outputs_failed_validation`, ...).
        error_message: the server's `error.message`.
        details: the server's `error.details`.
        extra_info: the server's `error.extra_info`.
        node_errors: the raw `node_errors` mapping.
        errors: `node_errors` flattened, one entry per error, in node-id order.
        summary: the human-readable text of `errors` (also the exception message).
    """

    retryable = False

    def __init__(
        self,
        *,
        error_type: str,
        error_message: str,
        details: str = "",
        extra_info: dict[str, Any] | None = None,
        node_errors: dict[str, Any] | None = None,
        errors: list[NodeErrorDetail] | None = None,
        summary: str | None = None,
        status_code: int | None = 400,
    ) -> None:
        self.error_type = error_type
        self.error_message = error_message
        self.details = details
        self.extra_info = extra_info or {}
        self.node_errors = node_errors or {}
        self.errors = errors or []
        if summary is None:
            summary = "; ".join(e.describe() for e in self.errors) or details or error_message
        self.summary = summary
        super().__init__(
            f"ComfyUI refused the prompt ({error_type}): {summary}", status_code=status_code
        )


class ComfyMissingNode(ComfyValidationError):
    """A node's class_type is not installed on the server (v0.3.64 `invalid_prompt` "does not
    exist", newer `missing_node_type`). Install the custom node or fix the template."""

    retryable = False

    def __init__(
        self,
        *,
        node_id: str | None,
        class_type: str | None,
        error_type: str,
        error_message: str,
        details: str = "",
        extra_info: dict[str, Any] | None = None,
    ) -> None:
        self.node_id = node_id
        self.class_type = class_type
        summary = f"node {node_id or '?'}: class_type {class_type or '?'} is not installed"
        super().__init__(
            error_type=error_type,
            error_message=error_message,
            details=details,
            extra_info=extra_info,
            errors=[
                NodeErrorDetail(
                    node_id=node_id or "?",
                    class_type=class_type,
                    type=error_type,
                    message=error_message,
                    details=details,
                )
            ],
            summary=summary,
        )


_OOM_MARKERS = ("outofmemory", "out of memory", "allocation on device")


class ComfyExecutionError(ComfyError):
    """A node raised while the prompt ran (`execution_error`); history holds the details.

    `retryable` is True only for out-of-memory-looking failures (see the module docstring).
    """

    retryable = False

    def __init__(
        self,
        *,
        prompt_id: str,
        node_id: str | None,
        node_type: str | None,
        exception_type: str,
        exception_message: str,
        traceback: list[str] | None = None,
    ) -> None:
        self.prompt_id = prompt_id
        self.node_id = node_id
        self.node_type = node_type
        self.exception_type = exception_type
        self.exception_message = exception_message
        self.traceback = traceback or []
        text = f"{exception_type} {exception_message}".lower()
        self.retryable = any(marker in text for marker in _OOM_MARKERS)
        first_line = exception_message.strip().splitlines()[0] if exception_message.strip() else ""
        super().__init__(
            f"prompt {prompt_id} failed in node {node_id} ({node_type}): "
            f"{exception_type}: {first_line}"
        )


class ComfyInterrupted(ComfyError):
    """The run was interrupted (by `interrupt`/`cancel` or an operator); not retried."""

    retryable = False

    def __init__(self, *, prompt_id: str, node_id: str | None, node_type: str | None) -> None:
        self.prompt_id = prompt_id
        self.node_id = node_id
        self.node_type = node_type
        super().__init__(f"prompt {prompt_id} was interrupted in node {node_id} ({node_type})")


class PromptLost(ComfyError):
    """The server has neither queued, running nor finished this prompt: a restart emptied its
    in-memory queue and history (or someone deleted it). The caller resubmits."""

    retryable = True

    def __init__(self, prompt_id: str) -> None:
        self.prompt_id = prompt_id
        super().__init__(
            f"prompt {prompt_id} is unknown to the server (lost on restart or deleted); resubmit"
        )


class ComfyTimeout(ComfyError):
    """The caller's deadline passed; the prompt may still be queued or running on the server
    (re-attach with `wait` or stop it with `cancel`)."""

    retryable = True

    def __init__(self, prompt_id: str, timeout: float) -> None:
        self.prompt_id = prompt_id
        self.timeout = timeout
        super().__init__(f"prompt {prompt_id} did not finish within {timeout:g} s")


class ComfyOutputTooLarge(ComfyError):
    """A /view answer is bigger than the cap the client was given (`max_view_bytes`): the read
    stopped there, so a misbehaving or hostile server cannot fill the worker's memory or the
    store. Not retried: the same file is as big the next time."""

    retryable = False

    def __init__(self, what: str, limit: int) -> None:
        self.limit = limit
        super().__init__(f"output {what} is larger than the {limit:,} byte cap on outputs")
