"""Errors a user or operator can act on.

Every refusal in StationThis is one of these: it carries a stable `code` that adapters map to
their own wording and a message that already names the field, limit or value at fault. They are
plain exceptions so domain code stays free of Temporal; activities turn them into non-retryable
`ApplicationError`s with `type=code`.
"""

from __future__ import annotations

from dataclasses import dataclass


class StationError(Exception):
    """Base of every expected, explainable refusal."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotConfigured(StationError):
    """The operator has not set something this feature needs (named in the message)."""

    code = "not_configured"


class UserInputError(StationError):
    """Bad input from a user: nothing was charged or written."""

    code = "bad_input"


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class SettingsError(UserInputError):
    """One or more settings are invalid; none of the update was applied."""

    code = "invalid_settings"

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


class PromptError(UserInputError):
    code = "invalid_prompt"


class UnknownUser(UserInputError):
    code = "unknown_user"

    def __init__(self, user: str) -> None:
        self.user = user
        super().__init__(f"unknown user {user!r}: send /start (or `points grant`) first")


class UnknownTemplate(UserInputError):
    code = "unknown_template"

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        self.name = name
        hint = f" (known: {', '.join(sorted(known))})" if known else ""
        super().__init__(f"unknown template {name!r}{hint}")


class TemplateGraphError(UserInputError):
    """A ComfyUI graph that cannot be a template (broken links, no output, bad input map)."""

    code = "invalid_template"


class InsufficientPoints(StationError):
    code = "insufficient_points"

    def __init__(self, quote: int, balance: int) -> None:
        self.quote = quote
        self.balance = balance
        super().__init__(f"this job costs {quote} points and the balance is {balance}")


class TooManyJobs(StationError):
    code = "too_many_jobs"

    def __init__(self, running: int, limit: int) -> None:
        self.running = running
        self.limit = limit
        super().__init__(
            f"{running} jobs are already running (limit {limit}); "
            "wait for one to finish or cancel one"
        )


class InvalidIdentity(UserInputError):
    code = "invalid_identity"


class LedgerRefused(StationError):
    """A ledger operation that would break the books: a refund with no charge to refund, a refund
    larger than what is left of the charge, or an idempotency key reused for another user or kind.
    It is a bug in the caller, not a user's mistake, so it is never retried."""

    code = "ledger_refused"


class NoServerCanRun(UserInputError):
    """No GPU server seen lately has what a template (or every variant of it) needs.

    Raised at quote time, so nothing is charged; the message names what the closest server
    lacks (never a server's address) so the operator knows what to install."""

    code = "no_server_can_run"

    def __init__(self, template: str, missing: str) -> None:
        self.template = template
        self.missing = missing
        super().__init__(
            f"no GPU server can run template {template!r} now (missing: {missing}); "
            "nothing was charged — the operator can see why with `stationthis comfy check`"
        )
