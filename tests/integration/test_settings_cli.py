"""`stationthis settings show|set|reset` on the real stack: the bot's store and checks, all of
a `set` or none, a bad value named with its reason (issue 15: the CLI manages settings too)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid

import pytest

from adapters.jobs import JobsClient
from tests.integration.conftest import Stack

pytestmark = pytest.mark.stack


async def cli(stack: Stack, *argv: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "adapters.cli.main", *argv],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_settings_set_all_or_none_show_and_reset(dev_stack: Stack, jobs: JobsClient) -> None:
    user = f"cli:settings-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(jobs.stores.users.get_or_create, user, 500)

    ok = await cli(dev_stack, "settings", "set", "steps", "12", "width", "768", "--user", user)
    assert ok.returncode == 0, ok.stderr
    saved = await jobs.settings(user)
    assert (saved.steps, saved.width) == (12, 768)

    # One bad value (batch 2 needs a balance of 2000) and nothing of the update is saved.
    bad = await cli(dev_stack, "settings", "set", "steps", "20", "batch", "2", "--user", user)
    assert bad.returncode == 2
    assert "batch" in bad.stderr and "needs a balance of 2000" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    assert (await jobs.settings(user)).steps == 12, "all or none"

    odd = await cli(dev_stack, "settings", "set", "steps", "--user", user)
    assert odd.returncode == 2 and "has no value" in odd.stderr

    shown = await cli(dev_stack, "settings", "show", "--user", user, "--json")
    body = json.loads(shown.stdout)
    assert body["settings"]["steps"] == 12 and body["limits"]["max_batch"] == 1

    reset = await cli(dev_stack, "settings", "reset", "--user", user)
    assert reset.returncode == 0
    assert (await jobs.settings(user)).steps != 12
