"""The bigger fuzz run: `make fuzz` (or `python bench/fuzz.py --scale 10`).

It runs the same fuzz suite as `make test` (tests/fuzz: domain and store level with
hypothesis, the generated corpus through the JobsClient on the real dev stack, and odd
Telegram updates through the Bot API stand-in to the real bot), with every case count
multiplied by `--scale`, and ends with the table of cases tried per entry point.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=10, help="multiply every case count")
    parser.add_argument("-k", default="", help="only tests matching this pytest expression")
    args = parser.parse_args(argv)
    os.environ["FUZZ_SCALE"] = str(max(1, args.scale))
    os.chdir(REPO)
    pytest_args = ["-q", "-p", "no:cacheprovider", "tests/fuzz"]
    if args.k:
        pytest_args += ["-k", args.k]
    return int(pytest.main(pytest_args))


if __name__ == "__main__":
    sys.exit(main())
