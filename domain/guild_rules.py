"""A group place's own rules (a Discord guild today): how many images one make may have there
and whether its members may start collections and cooks there.

Why a rule of the place, not of the user: in a shared channel one member's batch of six or a
cook of hundreds of pieces is everyone's noise, so the people who run the place (Discord's
Manage Server) decide. Telegram groups have no stored rules: they keep the fixed batch 1.
Every rule is applied where the work is planned (services/job_plans.py for the batch,
services/collections.py for collections), never in a handler.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from domain.errors import UserInputError

GROUP_BATCH = 1
"""The batch of a group place without rules of its own (Telegram groups, a fresh guild)."""


class GuildRules(BaseModel):
    """One guild's rules; the defaults are what a guild that never set any gets."""

    batch: int = Field(default=GROUP_BATCH, ge=1)
    collections: bool = True  # members may create collections and start cooks here


def check_batch(batch: int, batch_cap: int) -> int:
    """A guild's batch must be a whole number of images the planner can make at all."""
    if not 1 <= batch <= batch_cap:
        raise UserInputError(f"a server's batch must be 1 … {batch_cap}, got {batch}")
    return batch


def collections_refused() -> UserInputError:
    return UserInputError(
        "this server's rules do not allow collections here: use them in a DM with the bot "
        "(members with Manage Server can change it with /guildrules)"
    )
