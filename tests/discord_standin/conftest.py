"""The session's Discord stand-in subprocess, reset before each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.discord_standin.standin import DiscordStandin, start_discord_standin


@pytest.fixture(scope="session")
def discord_standin_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DiscordStandin]:
    """`python -m standins.discord --port 0`, started once per session."""
    standin = start_discord_standin(tmp_path_factory.mktemp("discord-standin") / "standin.log")
    try:
        yield standin
    finally:
        assert standin.process is not None
        standin.process.stop()


@pytest.fixture
async def discord_standin(discord_standin_process: DiscordStandin) -> DiscordStandin:
    """The stand-in with messages, interactions, calls, forced 429s and switches forgotten."""
    await discord_standin_process.reset()
    return discord_standin_process
