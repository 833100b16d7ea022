"""The Discord bot as a real subprocess (`stationthis discord-bot`) on the dev stack, talking to
the Discord stand-in; one stand-in and one bot per module, with a restart helper.

The stand-in is not reset between tests (a reset forgets the registered commands, which only
the bot's start registers again): each test uses its own user ids instead."""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.discord_standin.standin import DiscordStandin, start_discord_standin
from tests.fixtures.devstack import Stack
from workers.config import REPO_ROOT
from workers.processes import ManagedProcess


def bot_env(stack: Stack, standin: DiscordStandin) -> dict[str, str]:
    return {
        **stack.env(),
        "DISCORD_BOT_TOKEN": standin.token,
        "DISCORD_API_BASE": standin.api_base,
        "DISCORD_GATEWAY_URL": standin.gateway_url,
    }


@dataclass
class DiscordBot:
    """A running bot; `restart()` brings it back and waits until it is connected again."""

    process: ManagedProcess
    standin: DiscordStandin

    def wait_ready(self, timeout: float = 40.0) -> None:
        """Ready = its commands are registered and its delivery worker is polling."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.process.log_tail(200)
            cmds = httpx.get(f"{self.standin.url}/_control/commands", timeout=5).json()
            if "delivery worker polling" in log and len(cmds) > 1 and self._connected():
                return
            if not self.process.is_running():
                raise AssertionError(f"bot exited:\n{self.process.log_tail(40)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"bot not ready after {timeout}s:\n{log}")
            time.sleep(0.2)

    def _connected(self) -> bool:
        view = httpx.get(f"{self.standin.url}/_control/gateway", timeout=5).json()
        return any(s["connected"] for s in view["sessions"] if s["id"] == view["current"])

    def start(self) -> None:
        self.process.start()
        self.wait_ready()

    def restart(self) -> None:
        """kill -9 of the whole process group, like a crash, then start again."""
        self.process.kill()
        self.start()

    def log(self, lines: int = 80) -> str:
        return self.process.log_tail(lines)


@pytest.fixture(scope="module")
def discord_module_standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DiscordStandin]:
    standin = start_discord_standin(tmp_path_factory.mktemp("discord-standin") / "standin.log")
    try:
        yield standin
    finally:
        assert standin.process is not None
        standin.process.stop()


@pytest.fixture(scope="module")
def discord_bot(
    dev_stack: Stack,
    discord_module_standin: DiscordStandin,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DiscordBot]:
    log_path = tmp_path_factory.mktemp("discord-bot") / "bot.log"
    process = ManagedProcess(
        "discord-bot",
        [sys.executable, "-m", "adapters.cli.main", "discord-bot"],
        env=bot_env(dev_stack, discord_module_standin),
        log_path=log_path,
        cwd=REPO_ROOT,
        stop_timeout=10.0,
    )
    running = DiscordBot(process, discord_module_standin)
    try:
        running.start()
        yield running
    finally:
        running.process.stop()


@pytest.fixture
def user_id() -> int:
    """A fresh Discord user id per test."""
    return random.randint(10**17, 10**18)
