"""The bot token never reaches a log line, at any level (issue 13, item 10).

A module of its own: the verbose bot here runs the `deliver-telegram` worker too, and no other
bot process may be polling that queue meanwhile (it would deliver to its own stand-in).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.fixtures.devstack import Stack
from tests.fixtures.telegram import photos, start_telegram_standin
from tests.telegram.conftest import BotProcess, bot_env
from workers.config import REPO_ROOT
from workers.processes import ManagedProcess

pytestmark = pytest.mark.stack

SECRET_TOKEN = "424242:AAHsecret-Token_never-to-be-logged"
WEBHOOK_SECRET = "webhook-secret-never-logged-either"


async def test_the_bot_token_appears_in_no_log_line_even_at_debug(
    dev_stack: Stack, tmp_path: Path, user_id: int
) -> None:
    standin = start_telegram_standin(tmp_path / "standin.log", token=SECRET_TOKEN)
    log_path = tmp_path / "bot.log"
    proc = ManagedProcess(
        "bot-verbose",
        [sys.executable, "-m", "adapters.cli.main", "-v", "bot"],
        env=bot_env(dev_stack, standin, TELEGRAM_WEBHOOK_SECRET=WEBHOOK_SECRET),
        log_path=log_path,
        cwd=REPO_ROOT,
        stop_timeout=10.0,
    )
    try:
        proc.start()
        BotProcess(proc, standin).wait_polling()
        standin.faults("getUpdates", 502)  # a failed poll is logged with what it asked
        standin.faults("sendMessage", 400, description="Bad Request: chat not found")
        standin.send(user_id, "/help")  # its answer fails: logged as a Telegram error
        standin.send(user_id, "/start")
        standin.wait_for_message(user_id, lambda m: "starter points" in (m["text"] or ""))
        standin.send(user_id, "/make a quiet log")
        standin.wait_for(user_id, photos, timeout=30)  # the delivery worker logged too
    finally:
        proc.stop()
        standin.close()
        assert standin.process is not None
        standin.process.stop()
    text = log_path.read_text(errors="replace")
    assert " DEBUG " in text and "getUpdates" in text  # the log really is verbose
    secret = SECRET_TOKEN.split(":", 1)[1]
    for leaked in (SECRET_TOKEN, secret, SECRET_TOKEN.replace(":", "%3A"), WEBHOOK_SECRET):
        assert leaked not in text, f"{leaked!r} is in the bot's log"
