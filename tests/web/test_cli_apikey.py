"""`stationthis apikey create|list|revoke`: the key printed once, listed by id, revoked."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import uuid

import pytest

from adapters.jobs import JobsClient
from tests.fixtures.devstack import Stack

pytestmark = pytest.mark.stack


def cli(stack: Stack, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli.main", *argv],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_cli_creates_lists_and_revokes_keys(dev_stack: Stack, jobs: JobsClient) -> None:
    user = f"cli:keys-{uuid.uuid4().hex[:8]}"
    made = await asyncio.to_thread(cli, dev_stack, "apikey", "create", "--user", user)
    assert made.returncode == 0, made.stderr
    token = re.match(r"(st_\S+)\n", made.stdout)
    assert token is not None, made.stdout
    key = await asyncio.to_thread(jobs.stores.api_keys.verify, token.group(1))
    assert key is not None and key.identity == user

    listed = await asyncio.to_thread(cli, dev_stack, "apikey", "list", "--user", user)
    assert key.key_id in listed.stdout and "active" in listed.stdout
    assert token.group(1) not in listed.stdout  # shown once, never again

    other = await asyncio.to_thread(
        cli, dev_stack, "apikey", "revoke", "--user", "cli:someone-else", key.key_id
    )
    assert other.returncode == 1  # another user's key id is not theirs to revoke
    gone = await asyncio.to_thread(cli, dev_stack, "apikey", "revoke", "--user", user, key.key_id)
    assert gone.returncode == 0, gone.stderr
    assert await asyncio.to_thread(jobs.stores.api_keys.verify, token.group(1)) is None
