"""Shared test configuration. Service fixtures live in tests/fixtures/, one module per service."""

from __future__ import annotations

import pytest

pytest_plugins: list[str] = [
    "tests.fixtures.stack",
    "tests.fixtures.comfy",
    "tests.fixtures.telegram",
    "tests.fixtures.devstack",
]

# `make test` runs two xdist workers (`--dist loadgroup`), each with its own dev stack. The
# files that run a Telegram bot against that stack, and the tests that need no bot to have
# polled `deliver-telegram` on it (a job waiting for an absent bot, `jobs stuck`), go to one
# worker as one group, in collection order: the no-bot tests (tests/adversary) run first.
TELEGRAM_STACK_GROUP = "telegram-stack"
_GROUPED = (
    "tests/telegram/",
    "tests/fuzz/test_fuzz_bot.py",
    "tests/adversary/test_operator_status.py",
    "tests/adversary/test_operator_and_delivery.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = str(config.rootpath)
    for item in items:
        path = str(item.path).removeprefix(root).lstrip("/")
        if path.startswith(_GROUPED):
            item.add_marker(pytest.mark.xdist_group(TELEGRAM_STACK_GROUP))
