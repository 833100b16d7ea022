"""The operator's content-safety CLI: `stationthis safety default|words|chat|blocked|release`."""

from __future__ import annotations

from pathlib import Path

from adapters.cli.main import main
from domain.safety import Action, BlockEntry, Policy, SafetyPlace, Verdict
from store.db import Stores


def test_the_operator_edits_the_block_list(cli_db: Stores, capsys) -> None:
    assert main(["safety", "words", "add", "Forbiddenword"]) == 0
    assert main(["safety", "words", "add", "--pattern", r"gore\w*"]) == 0
    assert main(["safety", "words", "add", "--pattern", "(bad"]) == 2
    assert main(["safety", "words", "list"]) == 0
    out = capsys.readouterr().out
    assert "word\tForbiddenword" in out and "pattern\tgore\\w*" in out
    assert "not a valid pattern" in out
    assert cli_db.safety.is_blocked("a FORBIDDENWORD")
    assert main(["safety", "words", "remove", "forbiddenword"]) == 0
    assert main(["safety", "words", "remove", "forbiddenword"]) == 1
    assert cli_db.safety.list_words() == [BlockEntry(text=r"gore\w*", pattern=True)]


def test_the_operator_sets_the_default_and_a_chats_policy(cli_db: Stores, capsys) -> None:
    assert main(["safety", "default", "--policy", "blur", "--threshold", "0.4"]) == 0
    assert "default policy: blur" in capsys.readouterr().out
    assert cli_db.safety.operator().threshold == 0.4
    assert main(["safety", "default", "--threshold", "7"]) == 2
    assert main(["safety", "chat", "telegram:-100123", "block"]) == 0
    assert "telegram:-100123: block (applies: block)" in capsys.readouterr().out
    place = SafetyPlace(platform="telegram", chat_id="-100123", group=True)
    assert cli_db.safety.chat_policy(place) is Policy.BLOCK
    assert main(["safety", "chat", "telegram:-100123", "default"]) == 0
    assert cli_db.safety.policy_for(place)[0] is Policy.BLUR


def test_the_operator_lists_blocked_images_and_releases_them(
    cli_db: Stores, capsys, tmp_path: Path
) -> None:
    blob = cli_db.blobs.put(b"\x89PNG fake", "x.png", "image/png")
    verdict = Verdict(blob_id=blob, score=0.93, label="BUTTOCKS_EXPOSED", action=Action.BLOCK)
    cli_db.safety.record("make-j1", "u1", Policy.BLOCK, 0.5, verdict)
    assert main(["safety", "blocked", "--user", "u1"]) == 0
    out = capsys.readouterr().out
    assert "make-j1" in out and "0.93" in out and "BUTTOCKS_EXPOSED" in out
    assert main(["safety", "blocked", "--user", "u2"]) == 0
    assert "no blocked images" in capsys.readouterr().out
    assert main(["safety", "release", "make-j1", "--out", str(tmp_path)]) == 0
    assert (tmp_path / f"{blob}.png").read_bytes() == b"\x89PNG fake"
    assert main(["safety", "release", "make-nothing"]) == 1
    assert cli_db.safety.released_blobs("make-j1") == [blob]
