"""How expected errors cross into Temporal: non-retryable ApplicationErrors typed by code."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from domain.errors import StationError


def as_application_error(err: StationError) -> ApplicationError:
    """A refusal retrying cannot fix: the workflow sees `type=err.code` and the message."""
    return ApplicationError(err.message, type=err.code, non_retryable=True)
