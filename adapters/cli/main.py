"""`stationthis` console script: one argparse tree, one module per command group."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# Each module exposes `register(subparsers)`; the handlers it registers take the parsed
# namespace and return an exit code.
COMMAND_MODULES: list[str] = [
    "adapters.cli.up",
    "adapters.cli.points",
    "adapters.cli.templates_cmd",
    "adapters.cli.workers_cmd",
    "adapters.cli.jobs_cmd",
    "adapters.cli.media_cmd",
    "adapters.cli.training_cmd",
    "adapters.cli.collection_cmd",
    "adapters.cli.demo",
    "adapters.cli.bot_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stationthis", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
