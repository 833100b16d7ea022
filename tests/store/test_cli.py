"""The operator's CLI: `stationthis points ...` and `stationthis templates ...`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.cli.main import main
from store.db import Stores
from tests.domain.graphs import template_file
from tests.store.conftest import MAIN_USER


def test_an_admin_grants_points_once_per_key(cli_db: Stores, capsys) -> None:
    args = ["points", "grant", MAIN_USER, "250", "--reason", "welcome", "--key", "promo-1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "created user" in out and "balance: 750" in out
    assert main(args) == 0
    assert "nothing changed" in capsys.readouterr().out
    assert cli_db.ledger.balance(MAIN_USER) == 750
    grant = cli_db.ledger.entry("promo-1")
    assert grant is not None and grant.reason == "welcome" and grant.by and "cli:" in grant.by


def test_bad_grants_are_refused_clearly(cli_db: Stores, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["points", "grant", MAIN_USER, "ten", "--reason", "x"])
    assert "not a whole number" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["points", "grant", MAIN_USER, "-5", "--reason", "x"])
    assert "must be positive" in capsys.readouterr().err
    assert main(["points", "grant", "nosuchuser", "5", "--reason", "x"]) == 1
    assert "unknown user 'nosuchuser'" in capsys.readouterr().err
    assert main(["points", "grant", "fax:123", "5", "--reason", "x"]) == 1
    assert "unknown platform" in capsys.readouterr().err


def test_balance_shows_points_and_recent_entries(cli_db: Stores, capsys) -> None:
    user, _ = cli_db.users.get_or_create(MAIN_USER)
    cli_db.ledger.charge(user, 35, "make-1:charge", job_id="make-1", reason="make")
    assert main(["points", "balance", MAIN_USER]) == 0
    out = capsys.readouterr().out
    assert "465 points" in out and "make-1:charge" in out and "starter:" in out
    assert main(["points", "balance", "telegram:404"]) == 1
    assert "unknown user" in capsys.readouterr().err


def test_audit_passes_on_clean_books_and_fails_on_tampered_ones(cli_db: Stores, capsys) -> None:
    user, _ = cli_db.users.get_or_create(MAIN_USER)
    assert main(["points", "audit"]) == 0
    assert "ledger OK: 1 users" in capsys.readouterr().out
    cli_db.db["users"].update_one({"_id": user.id}, {"$set": {"points": 9999}})
    assert main(["points", "audit"]) == 1
    out = capsys.readouterr().out
    assert user.id in out and "9999" in out and "500" in out


def test_templates_load_and_list(cli_db: Stores, tmp_path: Path, capsys) -> None:
    good = tmp_path / "make.json"
    good.write_text(json.dumps(template_file()))
    assert main(["templates", "load", str(good)]) == 0
    assert "loaded" in capsys.readouterr().out
    assert main(["templates", "load", str(good)]) == 0
    assert "unchanged" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(template_file("bad", graph={"1": {"class_type": "X"}})))
    assert main(["templates", "load", str(bad), str(good)]) == 1
    assert "bad.json: node 1 (X) has no inputs" in capsys.readouterr().err
    assert cli_db.templates.names() == ["make"]  # nothing of the failed batch was written
    assert main(["templates", "list"]) == 0
    out = capsys.readouterr().out
    assert "make" in out and "txt2img" in out and "prompt" in out
