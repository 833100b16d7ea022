"""Per-guild rules in MongoDB (`guild_rules`, `_id` = `<platform>:<guild id>`).

A guild without a document has `GuildRules()` (batch 1, collections allowed), so nothing needs
to be written for a guild until its managers change something. Who may change them is the
platform's question (Discord's Manage Server, asked by the adapter from the permissions the
interaction carries); `choose` takes its answer, as `SafetyRepo.choose` does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo.database import Database

from domain.errors import UserInputError
from domain.guild_rules import GuildRules, check_batch
from domain.jobs import ReplyTarget


class GuildRulesRepo:
    def __init__(self, db: Database[Any], *, batch_cap: int) -> None:
        self.guilds = db["guild_rules"]
        self.batch_cap = batch_cap  # DomainRules.limits.batch_cap: no place may ask more

    def get(self, platform: str, guild_id: str) -> GuildRules:
        doc = self.guilds.find_one({"_id": f"{platform}:{guild_id}"})
        if not doc:
            return GuildRules()
        return GuildRules(batch=doc.get("batch", 1), collections=doc.get("collections", True))

    def for_reply(self, platform: str, reply: ReplyTarget | None) -> GuildRules | None:
        """The rules of the guild a job answers in (or a command came from); None outside a
        guild, where a group has the fixed group batch and no stored rules."""
        if reply is None or reply.guild_id is None:
            return None
        return self.get(platform, reply.guild_id)

    def choose(
        self,
        platform: str,
        guild_id: str,
        *,
        by: str,
        is_admin: bool,
        batch: int | None = None,
        collections: bool | None = None,
    ) -> GuildRules:
        """Change some of a guild's rules; refused unless the platform says `by` manages the
        guild. The guild is the one the command came from, never one named by the user."""
        if not is_admin:
            raise UserInputError("only the server's managers (Manage Server) can change its rules")
        return self.set(platform, guild_id, by=by, batch=batch, collections=collections)

    def set(
        self,
        platform: str,
        guild_id: str,
        *,
        by: str,
        batch: int | None = None,
        collections: bool | None = None,
    ) -> GuildRules:
        """Store the given rules (validated first; None leaves one as it is). The operator's
        CLI comes here directly."""
        changes: dict[str, Any] = {}
        if batch is not None:
            changes["batch"] = check_batch(batch, self.batch_cap)
        if collections is not None:
            changes["collections"] = collections
        if changes:
            self.guilds.update_one(
                {"_id": f"{platform}:{guild_id}"},
                {"$set": {**changes, "by": by, "at": datetime.now(UTC)}},
                upsert=True,
            )
        return self.get(platform, guild_id)

    def reset(self, platform: str, guild_id: str) -> GuildRules:
        self.guilds.delete_one({"_id": f"{platform}:{guild_id}"})
        return GuildRules()
