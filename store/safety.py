"""Content safety in MongoDB: the operator's settings and prompt block list, each chat's policy,
and the audit trail of every decision on a job's outputs.

Collections:
- `safety_settings`: `_id: "operator"` — the operator's default policy, whether private chats
  may opt in to unfiltered results, the classifier threshold.
- `safety_words`: the block list, `_id` = `word:<text>` or `pattern:<text>`, so adding twice
  stores one entry.
- `safety_chats`: `_id` = `<platform>:<chat id>`, the policy the chat's admins (or a private
  chat's user) chose, who set it and when.
- `safety_decisions`: `_id` = `<workflow id>:<blob id>`, one per checked image: score, label,
  policy, action, and `released_by` once an operator releases a blocked image to its owner.
  Keyed so a retried check records one decision.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database

from domain.errors import UserInputError
from domain.jobs import ReplyTarget
from domain.safety import (
    Action,
    BlockEntry,
    OperatorSafety,
    Policy,
    SafetyPlace,
    Verdict,
    check_chat_setting,
    compile_block_list,
    prompt_blocked,
    resolve_policy,
    validate_entry,
)

# How long a process reuses the block list it read: an operator's `safety words add` reaches
# every prepare within this many seconds, and a busy worker reads MongoDB once per interval.
BLOCK_LIST_TTL = 5.0


class SafetyRepo:
    def __init__(self, db: Database[Any]) -> None:
        self.settings = db["safety_settings"]
        self.words = db["safety_words"]
        self.chats = db["safety_chats"]
        self.decisions = db["safety_decisions"]
        self._rules: tuple[float, re.Pattern[str] | None] | None = None

    def ensure_indexes(self) -> None:
        self.decisions.create_index(
            [("action", ASCENDING), ("user_id", ASCENDING), ("at", DESCENDING)],
            name="action_user_recent",
        )
        self.decisions.create_index([("job_id", ASCENDING)], name="job")

    # ---- operator settings -----------------------------------------------------------------

    def operator(self) -> OperatorSafety:
        doc = self.settings.find_one({"_id": "operator"}) or {}
        doc.pop("_id", None)
        return OperatorSafety.model_validate(doc)

    def set_operator(self, **changes: Any) -> OperatorSafety:
        """Change some of the operator's settings; validated before anything is written."""
        current = self.operator().model_dump()
        current.update({k: v for k, v in changes.items() if v is not None})
        merged = OperatorSafety.model_validate(current)
        self.settings.update_one(
            {"_id": "operator"}, {"$set": merged.model_dump(mode="json")}, upsert=True
        )
        return merged

    # ---- the prompt block list -------------------------------------------------------------

    def add_word(self, entry: BlockEntry, *, by: str = "") -> BlockEntry:
        entry = validate_entry(entry)
        self.words.update_one(
            {"_id": _word_id(entry)},
            {"$setOnInsert": {**entry.model_dump(), "by": by, "at": datetime.now(UTC)}},
            upsert=True,
        )
        self._rules = None
        return entry

    def remove_word(self, entry: BlockEntry) -> bool:
        removed = self.words.delete_one({"_id": _word_id(validate_entry(entry))}).deleted_count
        self._rules = None
        return bool(removed)

    def list_words(self) -> list[BlockEntry]:
        return [
            BlockEntry(text=d["text"], pattern=bool(d.get("pattern")))
            for d in self.words.find({}).sort("_id", ASCENDING)
        ]

    def block_rules(self) -> re.Pattern[str] | None:
        now = time.monotonic()
        if self._rules is None or now - self._rules[0] > BLOCK_LIST_TTL:
            self._rules = (now, compile_block_list(self.list_words()))
        return self._rules[1]

    def is_blocked(self, *texts: str | None) -> bool:
        """True if any text matches the operator's block list."""
        return prompt_blocked(self.block_rules(), *texts)

    # ---- per-chat policy -------------------------------------------------------------------

    def chat_policy(self, place: SafetyPlace) -> Policy | None:
        if place.key is None:
            return None
        doc = self.chats.find_one({"_id": place.key})
        return Policy(doc["policy"]) if doc else None

    def set_chat_policy(self, place: SafetyPlace, policy: Policy | None, *, by: str) -> None:
        """Store (or with None, forget) a chat's policy. Who may is checked by the caller
        through `domain.safety.check_chat_setting`, with the platform's own admin list."""
        if place.key is None:
            raise UserInputError("a safety setting needs a chat")
        if policy is None:
            self.chats.delete_one({"_id": place.key})
            return
        self.chats.update_one(
            {"_id": place.key},
            {"$set": {"policy": policy.value, "by": by, "at": datetime.now(UTC)}},
            upsert=True,
        )

    def choose(
        self, place: SafetyPlace, policy: Policy | None, *, by: str, is_admin: bool
    ) -> Policy:
        """A chat's own choice, checked: the one entry point of every platform's command
        (Telegram /safety). `is_admin` is the platform's answer for `by` in that chat; the
        chat is the one the command came from, never one named by the user. Returns the
        policy that now applies."""
        operator = self.operator()
        check_chat_setting(
            operator, policy or operator.policy, group=place.group, is_admin=is_admin
        )
        self.set_chat_policy(place, policy, by=by)
        return resolve_policy(operator, place, policy)

    def policy_for(self, place: SafetyPlace) -> tuple[Policy, float]:
        """The policy and threshold that apply to a result shown in `place`."""
        operator = self.operator()
        return resolve_policy(operator, place, self.chat_policy(place)), operator.threshold

    def plan_settings(
        self, platform: str, reply: ReplyTarget | None, *, queue: str = "safety"
    ) -> dict[str, Any]:
        """What prepare adds to a plan's settings for the saga's output check: nothing when
        the place's policy is `off` (the saga then asks no check), else the policy and the
        threshold, decided once per job so a retried check applies the same rules."""
        place = place_of(platform, reply)
        policy, threshold = self.policy_for(place)
        if policy is Policy.OFF:
            return {}
        return {"safety": policy.value, "safety_threshold": threshold, "safety_queue": queue}

    # ---- the audit trail -------------------------------------------------------------------

    def record(
        self, job_id: str, user_id: str, policy: Policy, threshold: float, verdict: Verdict
    ) -> None:
        """One decision per (job, image); a retried check overwrites it with the same values
        and keeps an operator's release."""
        self.decisions.update_one(
            {"_id": f"{job_id}:{verdict.blob_id}"},
            {
                "$set": {
                    "job_id": job_id,
                    "user_id": user_id,
                    "blob_id": verdict.blob_id,
                    "score": verdict.score,
                    "label": verdict.label,
                    "policy": policy.value,
                    "threshold": threshold,
                    "action": verdict.action.value,
                },
                "$setOnInsert": {"at": datetime.now(UTC)},
            },
            upsert=True,
        )

    def decisions_of(self, job_id: str) -> list[dict[str, Any]]:
        return list(self.decisions.find({"job_id": job_id}).sort("_id", ASCENDING))

    def blocked(self, user_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Blocked images, newest first (one user's with `user_id`)."""
        query: dict[str, Any] = {"action": Action.BLOCK.value}
        if user_id:
            query["user_id"] = user_id
        return list(self.decisions.find(query).sort("at", DESCENDING).limit(limit))

    def release(self, job_id: str, *, by: str) -> list[dict[str, Any]]:
        """An operator's override: the job's blocked images become its owner's to download
        (`stationthis jobs show ID --out DIR` as the owner). Returns the released decisions."""
        query = {"job_id": job_id, "action": Action.BLOCK.value}
        self.decisions.update_many(
            query, {"$set": {"released_by": by, "released_at": datetime.now(UTC)}}
        )
        return list(self.decisions.find(query).sort("_id", ASCENDING))

    def released_blobs(self, job_id: str) -> list[str]:
        docs = self.decisions.find(
            {"job_id": job_id, "action": Action.BLOCK.value, "released_by": {"$exists": True}}
        )
        return [d["blob_id"] for d in docs]


def _word_id(entry: BlockEntry) -> str:
    kind = "pattern" if entry.pattern else "word"
    text = entry.text if entry.pattern else entry.text.lower()
    return f"{kind}:{text}"


def place_of(platform: str, reply: ReplyTarget | None) -> SafetyPlace:
    """The place whose policy applies to a job's results: its chat, or on Discord its guild
    (a guild's `/safety` covers every channel of it, as Discord's server settings do)."""
    if reply is None:
        return SafetyPlace(platform=platform)
    return SafetyPlace(
        platform=platform,
        chat_id=reply.guild_id or reply.chat_id,
        group=reply.group_chat or reply.guild_id is not None,
    )
