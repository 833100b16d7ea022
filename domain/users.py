"""Users, ledger entries and job history records as plain models.

They live in domain/ (not store/) because workflows build and receive them — a workflow passes a
`JobRecord` to the history activity — and workflows may not import store/. The store turns them
into MongoDB documents and back.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from domain.settings import UserSettings


def _utc(value: datetime) -> datetime:
    """MongoDB keeps milliseconds and (with a naive client) drops the zone: normalise both, so a
    model read back equals the one written."""
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(microsecond=value.microsecond // 1000 * 1000)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]

LedgerKind = Literal["grant", "charge", "refund"]
LEDGER_KINDS: tuple[LedgerKind, ...] = ("grant", "charge", "refund")


class User(BaseModel):
    """One person across platforms; `id` is ours, `identities` are `platform:id` strings."""

    model_config = ConfigDict(frozen=True)

    id: str
    identities: list[str]
    points: int
    settings: UserSettings = UserSettings()
    created_at: UtcDatetime


class LedgerEntry(BaseModel):
    """One change of one balance. `key` is the idempotency key: unique across the ledger."""

    model_config = ConfigDict(frozen=True)

    key: str
    kind: LedgerKind
    user_id: str
    amount: int
    job_id: str | None = None
    reason: str = ""
    by: str | None = None
    gpu_seconds: float | None = None
    balance_after: int
    created_at: UtcDatetime


class LedgerResult(BaseModel):
    """What a charge, refund or grant did.

    `replayed` is True when the key had been applied before: nothing changed this time and
    `entry` is the first application. `requested_amount` is what this call asked for; when it
    differs from `entry.amount` the caller reused a key for a different amount (`amount_mismatch`),
    which is logged as a warning and never applied.
    """

    model_config = ConfigDict(frozen=True)

    entry: LedgerEntry
    replayed: bool = False
    requested_amount: int

    @property
    def amount_mismatch(self) -> bool:
        return self.requested_amount != self.entry.amount

    @property
    def balance(self) -> int:
        """Balance right after the entry was first applied (not necessarily the current one)."""
        return self.entry.balance_after


class Discrepancy(BaseModel):
    """A user whose balance does not equal grants − charges + refunds (or an orphan entry)."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    identities: list[str] = Field(default_factory=list)
    balance: int | None  # None: ledger entries for a user that does not exist
    expected: int
    grants: int
    charges: int
    refunds: int

    @property
    def difference(self) -> int:
        return (self.balance or 0) - self.expected


JobState = Literal["queued", "running", "delivering", "done", "failed", "cancelled"]


class JobRecord(BaseModel):
    """One job in a user's history, enough to show it and to repeat it (/regen, /again)."""

    model_config = ConfigDict(frozen=True)

    workflow_id: str
    user_id: str
    identity: str = ""  # platform identity that started the job
    kind: str
    prompt: str = ""
    template: str = ""
    settings: dict[str, Any] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)  # blob ids (GridFS, bucket `images`)
    price: int = 0
    refund: int = 0
    state: JobState | str = "queued"
    error: str = ""
    not_delivered: str = ""  # why the result did not reach its chat (JobStatus.not_delivered)
    created_at: UtcDatetime
    finished_at: UtcDatetime | None = None
