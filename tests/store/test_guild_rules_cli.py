"""The operator's view of a Discord guild's rules: `stationthis discord-guild GUILD ...`."""

from __future__ import annotations

import pytest

from adapters.cli.main import main
from domain.guild_rules import GuildRules
from store.db import Stores


def test_the_operator_shows_sets_and_resets_a_guilds_rules(
    cli_db: Stores, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["discord-guild", "9001"]) == 0
    assert "at most 1 image(s)" in capsys.readouterr().out
    assert main(["discord-guild", "9001", "--batch", "2", "--collections", "no"]) == 0
    assert "Guild 9001: a make has at most 2 image(s)" in capsys.readouterr().out
    assert cli_db.guild_rules.get("discord", "9001") == GuildRules(batch=2, collections=False)
    assert main(["discord-guild", "9001", "--batch", "99"]) == 2
    assert "batch must be 1 …" in capsys.readouterr().out
    assert main(["discord-guild", "9001", "--reset"]) == 0
    assert cli_db.guild_rules.get("discord", "9001") == GuildRules()
