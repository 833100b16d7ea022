"""Every client command run while the stack is down prints one line naming `stationthis up`
and exits non-zero — never a traceback (issue 15: `jobs list` and `make` printed 36 lines)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from workers.processes import free_port, venv_bin

COMMANDS = [
    ["jobs", "list"],
    ["jobs", "show", "make-cli-x-1"],
    ["jobs", "save", "make-cli-x-1"],
    ["jobs", "stuck"],
    ["jobs", "terminate", "make-cli-x-1", "--reason", "stuck"],
    ["make", "a fox", "--user", "cli:x"],
    ["points", "balance", "cli:x"],
    ["points", "audit"],
    ["templates", "list"],
    ["dataset", "list", "--user", "cli:x"],
    ["models", "list", "--user", "cli:x"],
    ["apikey", "list", "--user", "cli:x"],
]


def run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv_bin("stationthis")), *argv],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TEMPORAL_ADDRESS", "MONGODB_URI", "COMFYUI_URLS")
    }
    return {**env, **extra}


def assert_one_line(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 3, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "stationthis up" in lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_no_stack_recorded_is_one_line(argv: list[str], tmp_path: Path) -> None:
    assert_one_line(run(argv, clean_env(DEVSTACK_DIR=str(tmp_path / "none")), tmp_path))


@pytest.mark.parametrize("argv", [["jobs", "list"], ["points", "balance", "cli:x"]], ids=" ".join)
def test_services_that_do_not_answer_are_one_line(argv: list[str], tmp_path: Path) -> None:
    env = clean_env(
        TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",
        MONGODB_URI=f"mongodb://127.0.0.1:{free_port()}/?directConnection=true"
        "&serverSelectionTimeoutMS=300&connectTimeoutMS=300",
        COMFYUI_URLS=f"http://127.0.0.1:{free_port()}",
    )
    assert_one_line(run(argv, env, tmp_path))
