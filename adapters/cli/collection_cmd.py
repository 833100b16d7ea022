"""`stationthis collection create|show|edit|traits|share|cook|pause|resume|cancel|review|export`.

Every command acts as `--user`; the repository decides what that user may see or change (a
collection they have no access to is "not found"). Refusals are one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from adapters.cli.context import jobs_client
from adapters.cli.jobs_cmd import run_cli
from adapters.jobs import JobsClient
from domain.collections import Collection, CollectionConfig, CookProgress, format_trait_lines
from domain.errors import UserInputError
from domain.identity import parse_identity


def register(subparsers: Any) -> None:
    col = subparsers.add_parser("collection", help="trait-based collections: design, cook, review")
    sub = col.add_subparsers(dest="collection_command", required=True)

    c = sub.add_parser("create", help="create a collection")
    c.add_argument("name")
    _user(c)
    c.add_argument("--description", default="")
    c.add_argument("--supply", type=int, default=1)
    c.add_argument("--prompt", default="", help="master prompt, e.g. 'a fox [wearing [[Hat]]]'")
    c.add_argument("--template", default="make")
    c.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="render setting for every piece (width, height, steps, cfg, ...)",
    )
    c.add_argument("--allow-duplicates", action="store_true")
    c.set_defaults(handler=lambda a: run_cli(_create(a)))

    s = sub.add_parser("show", help="one collection (or, without an id, the user's list)")
    s.add_argument("id", nargs="?")
    _user(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=lambda a: run_cli(_show(a)))

    e = sub.add_parser("edit", help="change fields; all or nothing")
    e.add_argument("id")
    _user(e)
    e.add_argument("--name")
    e.add_argument("--description")
    e.add_argument("--supply", type=int)
    e.add_argument("--prompt")
    e.add_argument("--template")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    e.add_argument("--allow-duplicates", choices=["yes", "no"])
    e.set_defaults(handler=lambda a: run_cli(_edit(a)))

    t = sub.add_parser("traits", help="set one trait type's values from name|prompt|rarity lines")
    t.add_argument("id")
    t.add_argument("trait")
    _user(t)
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", type=Path, help="a file of lines ('-' for stdin)")
    src.add_argument("--lines", help="the lines themselves ('\\n' or ';' separated)")
    src.add_argument("--remove", action="store_true")
    t.set_defaults(handler=lambda a: run_cli(_traits(a)))

    sh = sub.add_parser("share", help="give another user view or edit access (owner only)")
    sh.add_argument("id")
    sh.add_argument("with_user")
    _user(sh)
    sh.add_argument("--permission", choices=["view", "edit", "none"], default="view")
    sh.set_defaults(handler=lambda a: run_cli(_share(a)))

    k = sub.add_parser("cook", help="generate every piece (paid per piece), and follow it")
    k.add_argument("id")
    _user(k)
    k.add_argument(
        "--in-flight",
        type=int,
        default=3,
        help="pieces rendered at once (at most COOK_MAX_IN_FLIGHT)",
    )
    k.add_argument("--continue-after", type=int, default=200)
    k.add_argument("--yes", action="store_true", help="do not ask to confirm the quote")
    k.add_argument("--detach", action="store_true", help="start and return")
    k.set_defaults(handler=lambda a: run_cli(_cook(a)))

    for action in ("pause", "resume", "cancel"):
        p = sub.add_parser(action, help=f"{action} the collection's cook")
        p.add_argument("id")
        _user(p)
        p.add_argument("--reason", default="")
        p.set_defaults(handler=lambda a, act=action: run_cli(_control(a, act)))

    r = sub.add_parser("review", help="list pieces to review; approve, reject, regenerate")
    r.add_argument("id")
    _user(r)
    r.add_argument("--approve", default="", help="piece numbers, e.g. 1,2,5-7 or 'all'")
    r.add_argument("--reject", default="")
    r.add_argument("--regenerate", default="", help="new seed, same traits")
    r.add_argument("--state", default="pending_review", help="which pieces to list")
    r.add_argument("--out", type=Path, help="save the listed pieces' images here")
    r.add_argument("--wait", action="store_true", help="wait for a regeneration to finish")
    r.set_defaults(handler=lambda a: run_cli(_review(a)))

    x = sub.add_parser("export", help="zip of approved pieces with metadata (kept in GridFS)")
    x.add_argument("id")
    _user(x)
    x.add_argument("--out", type=Path, required=True, help="where to write the zip")
    x.set_defaults(handler=lambda a: run_cli(_export(a)))


def _user(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", required=True, help="who acts, e.g. telegram:5472638766")


def _settings(pairs: list[str]) -> dict[str, int | float | str]:
    out: dict[str, int | float | str] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UserInputError(f"--set wants KEY=VALUE, got {pair!r}")
        value: int | float | str = raw
        for cast in (int, float):
            try:
                value = cast(raw)
                break
            except ValueError:
                continue
        out[key.strip()] = value
    return out


def _numbers(spec: str, every: list[int]) -> list[int]:
    if not spec:
        return []
    if spec.strip() == "all":
        return every
    out: list[int] = []
    for raw in spec.split(","):
        part = raw.strip()
        try:
            if "-" in part:
                a, b = part.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
        except ValueError:
            raise UserInputError(f"piece numbers look like 1,2,5-7; got {spec!r}") from None
    return out


def _print_collection(col: Collection) -> None:
    c = col.config
    print(f"{col.id}  {col.name}  (supply {col.supply}, owner {col.owner_identity})")
    if col.description:
        print(f"  {col.description}")
    print(f"  master prompt: {c.master_prompt or '(none)'}")
    print(f"  template: {c.template}  settings: {c.overrides or '{}'}")
    print(f"  config hash: {col.config_hash[:16]}…  cooks: {col.cooks}  {col.last_cook}")
    for t in c.traits:
        print(f"  [{t.name}] {len(t.values)} values")
        for line in format_trait_lines(t.values).splitlines():
            print(f"      {line}")
    for s in col.shares:
        print(f"  shared with {s.user} ({s.permission})")


async def _create(a: argparse.Namespace) -> int:
    config = CollectionConfig(
        master_prompt=a.prompt,
        template=a.template,
        overrides=_settings(a.set),
        allow_duplicates=a.allow_duplicates,
    )
    async with jobs_client() as jobs:
        col = await jobs.create_collection(
            a.user, a.name, description=a.description, supply=a.supply, config=config
        )
    print(f"created {col.id}")
    _print_collection(col)
    return 0


async def _show(a: argparse.Namespace) -> int:
    async with jobs_client() as jobs:
        if not a.id:
            for col in await jobs.collections(a.user):
                print(f"{col.id}  {col.name}  supply {col.supply}  cooks {col.cooks}")
            return 0
        col = await jobs.collection(a.id, a.user)
        counts = await asyncio.to_thread(jobs.stores.collections.counts, col.id)
    if a.json:
        print(json.dumps({**col.model_dump(), "pieces": counts}, indent=2, default=str))
        return 0
    _print_collection(col)
    if counts:
        print("  pieces: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0


async def _edit(a: argparse.Namespace) -> int:
    changes: dict[str, Any] = {}
    for field, key in (
        ("name", "name"),
        ("description", "description"),
        ("supply", "supply"),
        ("prompt", "master_prompt"),
        ("template", "template"),
    ):
        if getattr(a, field) is not None:
            changes[key] = getattr(a, field)
    if a.allow_duplicates:
        changes["allow_duplicates"] = a.allow_duplicates == "yes"
    async with jobs_client() as jobs:
        if a.set:
            current = await jobs.collection(a.id, a.user)
            changes["overrides"] = {**current.config.overrides, **_settings(a.set)}
        if not changes:
            raise UserInputError("nothing to change: pass --name, --prompt, --supply, ...")
        col = await jobs.edit_collection(a.id, a.user, changes)
    _print_collection(col)
    return 0


async def _traits(a: argparse.Namespace) -> int:
    lines: str | None = None
    if a.file is not None:
        lines = sys.stdin.read() if str(a.file) == "-" else a.file.read_text()
    elif a.lines is not None:
        lines = a.lines.replace("\\n", "\n").replace(";", "\n")
    async with jobs_client() as jobs:
        col = await jobs.set_traits(a.id, a.user, a.trait, None if a.remove else lines)
    _print_collection(col)
    return 0


async def _share(a: argparse.Namespace) -> int:
    perm = None if a.permission == "none" else a.permission
    async with jobs_client() as jobs:
        col = await jobs.share_collection(a.id, a.user, a.with_user, perm)
    print(
        f"{col.id} shares: " + (", ".join(f"{s.user}:{s.permission}" for s in col.shares) or "none")
    )
    return 0


async def _cook(a: argparse.Namespace) -> int:
    platform, _ = parse_identity(a.user)
    async with jobs_client() as jobs:
        quote = await jobs.quote_cook(a.id, a.user)
        print(
            f"{quote.pieces} pieces at {quote.piece_price} points = {quote.total} points "
            f"(balance {quote.balance})"
        )
        if not a.yes and sys.stdin.isatty():
            answer = await asyncio.to_thread(input, "cook? [y/N] ")
            if not answer.strip().lower().startswith("y"):
                print("not started")
                return 1
        started = await jobs.start_cook(
            a.id, a.user, platform=platform, in_flight=a.in_flight, continue_after=a.continue_after
        )
        print(f"cook {started.workflow_id}")
        if started.ui_url:
            print(f"  {started.ui_url}")
        if a.detach:
            return 0
        final = await follow_cook(jobs, a.id, a.user)
    return 0 if final.state.value == "done" else 1


async def follow_cook(jobs: JobsClient, cid: str, user: str) -> CookProgress:
    """Print the progress each time it changes until the cook ends."""
    last = ""
    while True:
        p = await jobs.cook_progress(cid, user)
        line = p.headline()
        if line != last:
            print(f"  {line}", flush=True)
            last = line
        if p.state.final:
            return p
        await asyncio.sleep(0.5)


async def _control(a: argparse.Namespace, action: str) -> int:
    async with jobs_client() as jobs:
        p = await jobs.control_cook(a.id, a.user, action, reason=a.reason)
    print(p.headline())
    return 0


async def _review(a: argparse.Namespace) -> int:
    async with jobs_client() as jobs:
        pending = await jobs.collection_pieces(a.id, a.user, states=["pending_review"])
        every = [p.number for p in pending]
        approve, reject = _numbers(a.approve, every), _numbers(a.reject, every)
        regen = _numbers(a.regenerate, every)
        if approve:
            await jobs.review_pieces(a.id, a.user, approve, "approved")
            print(f"approved {len(approve)}: {', '.join(map(str, approve))}")
        if reject:
            await jobs.review_pieces(a.id, a.user, reject, "rejected")
            print(f"rejected {len(reject)}: {', '.join(map(str, reject))}")
        if regen:
            started = await jobs.start_cook(a.id, a.user, numbers=regen)
            print(f"regenerating {', '.join(map(str, regen))}: {started.workflow_id}")
            if a.wait:
                await follow_cook(jobs, a.id, a.user)
        if approve or reject or regen:
            return 0
        states = [s.strip() for s in a.state.split(",") if s.strip()]
        pieces = await jobs.collection_pieces(a.id, a.user, states=states)
        for p in pieces:
            traits = ", ".join(f"{k}={v}" for k, v in p.traits.items() if v)
            print(f"#{p.number:<4} {p.state:<15} seed {p.seed:<10} {traits}")
            print(f"      {p.prompt}")
            if a.out and p.blob_id:
                a.out.mkdir(parents=True, exist_ok=True)
                data = await asyncio.to_thread(jobs.stores.blobs.get, p.blob_id)
                (a.out / f"{p.number}.png").write_bytes(data)
        print(f"{len(pieces)} pieces")
    return 0


async def _export(a: argparse.Namespace) -> int:
    async with jobs_client() as jobs:
        export = await jobs.export_collection(a.id, a.user)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_bytes(export.data)
    print(f"exported {export.summary['pieces']} pieces to {a.out} (GridFS {export.blob_id})")
    for trait, values in export.summary["trait_frequencies"].items():
        print(f"  {trait}: " + ", ".join(f"{v} {n}" for v, n in sorted(values.items())))
    return 0
