"""A shared place's batch, decided once where a make is planned (services/job_plans.py): a
Discord guild's stored rule, else the fixed group batch of Telegram groups; overrides carrying a
larger batch (a repeat of a run made elsewhere) are capped with a note, not refused; only a
manager changes a guild's rules, and never beyond the operator's batch cap."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pymongo.database import Database

from domain.errors import UserInputError
from domain.guild_rules import GuildRules
from domain.jobs import JobPlan, MakeImageRequest, PrepareInput, ReplyTarget
from services.job_plans import MakePlanner
from store.db import Stores
from tests.fixtures.stores import stores_with

USER = "discord:4242"
GUILD = "9001"
SMALL: dict[str, Any] = {"width": 512, "height": 512, "steps": 20}


@pytest.fixture
def stores(mongo_db: Database[Any]) -> Iterator[Stores]:
    s = stores_with(mongo_db, USER)
    user, _ = s.users.get_or_create(USER)
    s.ledger.grant(user, 6000, "test-grant", by="test", reason="batch room")
    s.settings.update(USER, {"batch": 3})
    yield s


def plan(stores: Stores, reply: ReplyTarget | None, **overrides: Any) -> JobPlan:
    request = MakeImageRequest(
        user=USER,
        platform="discord",
        prompt="herons",
        overrides={**SMALL, **overrides},
        reply=reply,
    )
    return MakePlanner(stores).plan_make_image(PrepareInput(workflow_id="", request=request))


GUILD_CHANNEL = ReplyTarget(chat_id="77", group_chat=True, guild_id=GUILD)
TELEGRAM_GROUP = ReplyTarget(chat_id="-1001", group_chat=True)
DM = ReplyTarget(chat_id="78")


def test_a_guild_without_rules_makes_one_image_and_its_rule_raises_that(stores: Stores) -> None:
    assert plan(stores, GUILD_CHANNEL).units == 1
    stores.guild_rules.set("discord", GUILD, by="test", batch=2)
    assert plan(stores, GUILD_CHANNEL).units == 2  # the guild's 2, not the user's 3
    assert plan(stores, DM).units == 3
    stores.guild_rules.set("discord", "9002", by="test", batch=3)  # another guild's rule
    assert plan(stores, GUILD_CHANNEL).units == 2


def test_a_repeat_carrying_a_larger_batch_is_capped_in_a_group_not_refused(
    stores: Stores,
) -> None:
    """The overrides of /again of a DM run say batch 3: in a group that is the group's batch."""
    telegram = plan(stores, TELEGRAM_GROUP, batch=3)
    assert telegram.units == 1 and any("batch 3 → 1" in n for n in telegram.clamps)
    stores.guild_rules.set("discord", GUILD, by="test", batch=2)
    assert plan(stores, GUILD_CHANNEL, batch=3).units == 2
    with pytest.raises(UserInputError):  # the user's own limit still refuses
        plan(stores, DM, batch=7)


def test_only_a_manager_changes_a_guilds_rules_within_the_batch_cap(stores: Stores) -> None:
    repo = stores.guild_rules
    with pytest.raises(UserInputError, match="Manage Server"):
        repo.choose("discord", GUILD, by=USER, is_admin=False, batch=2)
    assert repo.get("discord", GUILD) == GuildRules()
    with pytest.raises(UserInputError, match="batch must be"):
        repo.choose("discord", GUILD, by=USER, is_admin=True, batch=repo.batch_cap + 1)
    rules = repo.choose("discord", GUILD, by=USER, is_admin=True, collections=False)
    assert rules == GuildRules(batch=1, collections=False)
    assert repo.for_reply("discord", DM) is None
    assert repo.for_reply("discord", GUILD_CHANNEL) == rules
