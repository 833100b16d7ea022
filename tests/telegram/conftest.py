"""The bot as a real subprocess (`python -m adapters.cli.main bot`) on the dev stack, talking
to the Bot API stand-in; one per module, with a restart helper (kill -9 or graceful)."""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.devstack import Stack
from tests.fixtures.telegram import TelegramStandin
from workers.config import REPO_ROOT
from workers.processes import ManagedProcess

ADMIN_ID = 777_000_001


def bot_env(stack: Stack, standin: TelegramStandin, **extra: str) -> dict[str, str]:
    """The environment of a bot process pointed at the stand-in and the stack."""
    return {
        **stack.env(),
        "TELEGRAM_BOT_TOKEN": standin.token,
        "TELEGRAM_BASE_URL": standin.base_url,
        "TELEGRAM_BASE_FILE_URL": standin.base_file_url,
        "ADMIN_IDS": f"telegram:{ADMIN_ID}",
        **extra,
    }


@dataclass
class BotProcess:
    """A running bot; `restart()` brings it back and waits until it polls again."""

    process: ManagedProcess
    standin: TelegramStandin

    def wait_polling(self, timeout: float = 30.0) -> None:
        """Ready = the bot is long-polling getUpdates (its handlers and worker are up)."""
        before = len(self.standin.calls("getUpdates"))
        deadline = time.monotonic() + timeout
        while len(self.standin.calls("getUpdates")) <= before:
            if not self.process.is_running():
                raise AssertionError(f"bot exited:\n{self.process.log_tail(40)}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"bot not polling after {timeout}s:\n{self.process.log_tail()}"
                )
            time.sleep(0.1)

    def start(self) -> None:
        self.process.start()
        self.wait_polling()

    def kill(self) -> None:
        """kill -9 of the whole process group, like a crash."""
        self.process.kill()

    def restart(self, *, crash: bool = True) -> None:
        if crash:
            self.kill()
        else:
            self.process.stop()
        self.start()

    def log(self, lines: int = 60) -> str:
        return self.process.log_tail(lines)


def start_bot(
    stack: Stack, standin: TelegramStandin, log_path: Path, *args: str, **env: str
) -> ManagedProcess:
    return ManagedProcess(
        "bot",
        [sys.executable, "-m", "adapters.cli.main", "bot", *args],
        env=bot_env(stack, standin, **env),
        log_path=log_path,
        cwd=REPO_ROOT,
        stop_timeout=10.0,
    )


@pytest.fixture(scope="module")
def bot(
    dev_stack: Stack, telegram_standin: TelegramStandin, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BotProcess]:
    log_path = tmp_path_factory.mktemp("bot") / "bot.log"
    running = BotProcess(start_bot(dev_stack, telegram_standin, log_path), telegram_standin)
    try:
        running.start()
        yield running
    finally:
        running.process.stop()


@pytest.fixture
def user_id() -> int:
    """A fresh Telegram user (and private chat) id per test."""
    return random.randint(10**9, 2 * 10**9)
