"""The Discord bot skeleton (adapters/discord) against the stand-in: it registers its slash
commands at start and answers /balance ephemerally through the jobs client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial

import discord.gateway
import discord.http
import pytest

from adapters.discord.client import DiscordSettings, build_client
from domain.settings import Limits
from domain.users import LedgerEntry
from tests.discord_standin.standin import DiscordStandin

pytestmark = pytest.mark.timeout(60)


class FakeJobs:
    """The jobs client's balance calls, recording who asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def balance_summary(self, identity: str, n: int = 5) -> tuple[int, Sequence[LedgerEntry]]:
        self.asked.append(identity)
        entry = LedgerEntry(
            key="make-1:charge",
            kind="charge",
            user_id=identity,
            amount=8,
            job_id="make-1",
            balance_after=42,
            created_at=datetime(2026, 12, 3, 21, 0, tzinfo=UTC),
        )
        return 42, [entry]

    async def limits(self, identity: str) -> Limits:
        return Limits(max_size=1024, max_batch=4, max_steps=50)


async def test_balance_is_answered_only_to_the_user_who_asked(
    discord_standin: DiscordStandin,
) -> None:
    old = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    jobs = FakeJobs()
    settings = DiscordSettings(
        api_base=discord_standin.api_base, gateway_url=discord_standin.gateway_url
    )
    client = build_client(jobs, settings)
    ready = asyncio.Event()
    client.event(_setter(ready))
    task = asyncio.create_task(client.start(discord_standin.token))
    try:
        await asyncio.wait_for(ready.wait(), 20)
        [registered] = await discord_standin.commands()
        assert registered["name"] == "balance"
        assert registered["contexts"] == [0, 1]  # guilds and the bot's DMs
        for user, dm in ((5001, False), (5002, True)):
            sent = await discord_standin.invoke(user, "balance", dm=dm)
            iid = str(sent["interaction_id"])
            state = await discord_standin.wait_for(
                partial(_answered, discord_standin, iid), what="balance answer"
            )
            message = await discord_standin.message(state["original_id"])
            assert message["content"].startswith("Balance: 42 points")
            assert "charge -8 make-1" in message["content"]
            assert message["ephemeral"] is True and message["visible_to"] == str(user)
            assert state["ack_type"] == 5 and state["ack_after"] < 3.0
        assert jobs.asked == ["discord:5001", "discord:5002"]
    finally:
        await client.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old


def _setter(event: asyncio.Event):
    async def on_ready() -> None:
        event.set()

    return on_ready


async def _answered(standin: DiscordStandin, interaction_id: str) -> dict | None:
    state = await standin.interaction(interaction_id)
    if not state["original_id"]:
        return None
    message = await standin.message(state["original_id"])
    return state if not message["loading"] else None
