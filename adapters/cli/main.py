"""`stationthis` console script: one argparse tree, one module per command group."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from pymongo.errors import ConnectionFailure

from workers.devstack import StackNotRunningError

# Each module exposes `register(subparsers)`; the handlers it registers take the parsed
# namespace and return an exit code.
COMMAND_MODULES: list[str] = [
    "adapters.cli.up",
    "adapters.cli.points",
    "adapters.cli.templates_cmd",
    "adapters.cli.comfy_cmd",
    "adapters.cli.workers_cmd",
    "adapters.cli.jobs_cmd",
    "adapters.cli.settings_cmd",
    "adapters.cli.media_cmd",
    "adapters.cli.training_cmd",
    "adapters.cli.collection_cmd",
    "adapters.cli.demo",
    "adapters.cli.bot_cmd",
    "adapters.cli.discord_cmd",
    "adapters.cli.safety_cmd",
    "adapters.cli.web_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stationthis", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


# Long-running services log what they do; every other command is a client whose output is
# its answer, so its library log lines (INFO) appear only with -v.
SERVICE_COMMANDS = frozenset(
    {"up", "worker", "comfy-worker", "media-worker", "safety-worker", "bot", "web", "discord-bot"}
)

# A client command run while the stack is down exits with this code and one line.
EXIT_STACK_DOWN = 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = logging.INFO if args.command in SERVICE_COMMANDS else logging.WARNING
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else quiet,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.handler(args)
    except BrokenPipeError:
        # `stationthis jobs list | head`: the reader left; that is not a service down.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except StackNotRunningError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_STACK_DOWN
    except (ConnectionFailure, OSError) as err:
        print(f"error: {unreachable(err)}", file=sys.stderr)
        return EXIT_STACK_DOWN
    except RuntimeError as err:
        # temporalio raises RuntimeError("Failed client connect: …") for an unreachable server.
        if "connect" not in str(err).lower():
            raise
        print(f"error: {unreachable(err)}", file=sys.stderr)
        return EXIT_STACK_DOWN
    return code


def unreachable(err: BaseException) -> str:
    """One line for a service that does not answer: which, and what to run."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (
        f"a StationThis service does not answer ({first[:200]}): is the stack running? "
        "Start it with `stationthis up` (or check TEMPORAL_ADDRESS, MONGODB_URI, COMFYUI_URLS)"
    )


if __name__ == "__main__":
    sys.exit(main())
