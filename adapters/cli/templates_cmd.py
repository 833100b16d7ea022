"""`stationthis templates load FILE... | list`: put ComfyUI graphs into MongoDB and list them."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from adapters.cli.points import open_stores
from domain.errors import StationError
from store.templates import read_template_file


def register(subparsers: Any) -> None:
    """Add `templates load` and `templates list` to the CLI tree."""
    parser = subparsers.add_parser("templates", help="load and list ComfyUI templates")
    sub = parser.add_subparsers(dest="templates_command", required=True, metavar="ACTION")
    load = sub.add_parser(
        "load",
        help="validate and load template files (idempotent; a changed file becomes a new version)",
    )
    load.add_argument("files", nargs="*", metavar="FILE")
    load.add_argument("--bundled", action="store_true", help="also load templates/*.json")
    load.set_defaults(handler=run_load)
    listing = sub.add_parser("list", help="list the current version of every template")
    listing.set_defaults(handler=run_list)


def run_load(args: argparse.Namespace) -> int:
    from templates import bundled_template_files

    paths = [*args.files, *(bundled_template_files() if args.bundled else [])]
    if not paths:
        print("error: name at least one FILE (or --bundled)", file=sys.stderr)
        return 2
    # Validate every file before writing any, so a typo in one does not half-load a set.
    parsed = []
    failed = False
    for path in paths:
        try:
            parsed.append(read_template_file(path))
        except StationError as e:
            print(f"error: {e}", file=sys.stderr)
            failed = True
    if failed:
        return 1
    stores = open_stores()  # a stack that is down: one line from main()
    try:
        for t in parsed:
            r = stores.templates.load(t)
            state = "loaded" if r.changed else "unchanged"
            print(f"{r.name:<20} v{r.version:<3} {r.hash[:12]}  {state}")
    finally:
        stores.close()
    return 0


def run_list(args: argparse.Namespace) -> int:
    stores = open_stores()  # a stack that is down: one line from main()
    try:
        infos = stores.templates.list()
    finally:
        stores.close()
    if not infos:
        print("no templates loaded (try `stationthis templates load --bundled`)")
        return 0
    print(f"{'name':<20} {'kind':<10} {'family':<6} {'base':>5} {'ver':>4}  inputs")
    for i in infos:
        print(
            f"{i.name:<20} {i.kind:<10} {i.family:<6} {i.base_price:>5} {i.version:>4}  "
            f"{', '.join(i.inputs)}"
        )
    return 0
