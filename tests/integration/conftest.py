"""Integration tests run on the shared dev stack fixtures (`dev_stack`, `jobs`), which live in
tests/fixtures/devstack.py so tests/telegram uses the same one stack per session."""

from __future__ import annotations

from tests.fixtures.devstack import HEARTBEAT_TIMEOUT, Stack

__all__ = ["HEARTBEAT_TIMEOUT", "Stack"]
