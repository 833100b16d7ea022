"""Content safety rules: which policy applies where, what a classifier score leads to, and
which prompts the operator's block list refuses.

Pure rules, no I/O: the store (store/safety.py) keeps the block list, the per-chat settings and
the audit trail; the activity (activities/safety.py) runs the classifier; the saga
(workflows/job_saga.py) withholds and refunds. Kept here so the jobs client, the prepare
activities and the Telegram adapter apply one set of rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum

from pydantic import BaseModel, Field

from domain.errors import StationError, UserInputError
from domain.jobs import StoredOutput


class Policy(StrEnum):
    """What happens to a result the classifier flags.

    `off`: nothing is checked. `blur`: a flagged image is sent behind Telegram's spoiler
    (`has_spoiler`), the original kept as it is. `block`: a flagged image is withheld and its
    share of the price refunded (our refusal, not the user's failure).
    """

    OFF = "off"
    BLUR = "blur"
    BLOCK = "block"


class Action(StrEnum):
    ALLOW = "allow"
    BLUR = "blur"
    BLOCK = "block"


# A detector score at or above this flags an image. NudeNet's exposed-part classes score
# 0.4-0.9 on real nudity and stay under 0.3 on portraits and landscapes (bench/safety.py).
DEFAULT_THRESHOLD = 0.5


class OperatorSafety(BaseModel):
    """The operator's settings (`stationthis safety default ...`), one document in MongoDB so
    every worker, the bot and the CLI read the same without a restart."""

    policy: Policy = Policy.OFF
    allow_unfiltered: bool = False  # may a private chat choose `off` below a stricter default
    threshold: float = Field(default=DEFAULT_THRESHOLD, ge=0.0, le=1.0)


class SafetyPlace(BaseModel):
    """Where a result is shown: the place whose policy applies."""

    platform: str = "cli"
    chat_id: str | None = None
    group: bool = False

    @property
    def key(self) -> str | None:
        return f"{self.platform}:{self.chat_id}" if self.chat_id else None


class Verdict(BaseModel):
    """The classifier's answer for one image and what the policy made of it."""

    blob_id: str
    score: float = 0.0
    label: str = ""
    action: Action = Action.ALLOW


class CheckOutputsInput(BaseModel):
    workflow_id: str
    user_id: str
    policy: Policy
    threshold: float = DEFAULT_THRESHOLD
    outputs: list[StoredOutput] = Field(default_factory=list)


class CheckOutputsResult(BaseModel):
    verdicts: list[Verdict] = Field(default_factory=list)


class NotChatAdmin(StationError):
    """Only a group's administrators change its safety policy."""

    code = "not_chat_admin"


class UnfilteredNotAllowed(StationError):
    code = "unfiltered_not_allowed"


class PromptBlocked(UserInputError):
    """A prompt the operator's block list refuses. Nothing is charged, and the message says so."""

    code = "blocked_prompt"

    def __init__(self, where: str = "prompt") -> None:
        super().__init__(
            f"this {where} uses a term this service does not allow; nothing was charged"
        )


def decide(policy: Policy, score: float, threshold: float) -> Action:
    """The action for one image: only a flagged image (score >= threshold) is blurred or
    blocked, and only under a policy that says so."""
    if policy is Policy.OFF or score < threshold:
        return Action.ALLOW
    return Action.BLOCK if policy is Policy.BLOCK else Action.BLUR


def resolve_policy(
    operator: OperatorSafety, place: SafetyPlace, chat_policy: Policy | None
) -> Policy:
    """The policy of a place: the chat's own setting, else the operator's default.

    A group's setting was checked when its admin set it (`check_chat_setting`); a private
    chat's `off` counts only while the operator allows unfiltered results, so withdrawing the
    permission takes effect at once without rewriting every chat's setting.
    """
    if chat_policy is None:
        return operator.policy
    if (
        chat_policy is Policy.OFF
        and not place.group
        and not operator.allow_unfiltered
        and operator.policy is not Policy.OFF
    ):
        return operator.policy
    return chat_policy


def check_chat_setting(
    operator: OperatorSafety, policy: Policy, *, group: bool, is_admin: bool
) -> None:
    """Who may set what: a group's admins any policy; a private chat's user `blur`/`block`,
    and `off` only if the operator allows unfiltered results."""
    if group and not is_admin:
        raise NotChatAdmin("only this group's administrators can change its safety setting")
    if (
        not group
        and policy is Policy.OFF
        and not operator.allow_unfiltered
        and operator.policy is not Policy.OFF
    ):
        raise UnfilteredNotAllowed(
            "the operator does not allow unfiltered results; choose blur or block"
        )


# ---- the prompt block list ------------------------------------------------------------------


class BlockEntry(BaseModel):
    """One operator rule: a word (matched whole, case-insensitively, also inside `a_b` or
    `a-b`) or a regular expression (`pattern=True`, matched case-insensitively anywhere)."""

    text: str
    pattern: bool = False


_WORD_EDGE = r"(?<![0-9a-zA-Z]){}(?![0-9a-zA-Z])"


def compile_block_list(entries: Iterable[BlockEntry]) -> re.Pattern[str] | None:
    """One regex for the whole list (None when it is empty)."""
    parts = []
    for e in entries:
        if e.pattern:
            parts.append(f"(?:{e.text})")
        else:
            parts.append(_WORD_EDGE.format(re.escape(e.text.strip())))
    if not parts:
        return None
    return re.compile("|".join(parts), re.IGNORECASE)


def validate_entry(entry: BlockEntry) -> BlockEntry:
    """Refuse an empty word or a pattern that does not compile, before it is stored."""
    text = entry.text.strip()
    if not text:
        raise UserInputError("a block-list entry cannot be empty")
    if entry.pattern:
        try:
            re.compile(text)
        except re.error as err:
            raise UserInputError(f"not a valid pattern: {err}") from None
    return BlockEntry(text=text, pattern=entry.pattern)


def normalise_for_matching(text: str) -> str:
    """Fold the usual evasions before matching: case, zero-width characters and compatibility
    forms (full-width letters), so `ｗｏｒｄ` and `wo\u200brd` match `word`."""
    import unicodedata

    folded = unicodedata.normalize("NFKC", text)
    return "".join(ch for ch in folded if unicodedata.category(ch) != "Cf")


def prompt_blocked(rules: re.Pattern[str] | None, *texts: str | None) -> bool:
    """True if any of the texts matches the block list."""
    if rules is None:
        return False
    return any(t and rules.search(normalise_for_matching(t)) for t in texts)
