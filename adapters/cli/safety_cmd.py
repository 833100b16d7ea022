"""`stationthis safety ...`: the operator's content-safety controls.

- `safety default [--policy off|blur|block] [--allow-unfiltered yes|no] [--threshold T]`:
  the operator's default policy (shown without options).
- `safety words add|remove|list [--pattern] TEXT`: the prompt block list, applied before any
  quote (make, collection pieces, training captions); a refused prompt costs nothing.
- `safety chat PLATFORM:CHAT [off|blur|block|default]`: show or set a chat's policy as the
  operator (the chat's own admins use /safety in the chat).
- `safety blocked [--user U]`: blocked images with their job, score and policy, newest first.
- `safety release JOB [--out DIR]`: the operator's override: the job's blocked images become
  its owner's to download (`jobs show JOB --out DIR --user OWNER`), and with `--out` are
  written here too.

Only operators run the CLI (it talks to MongoDB directly); `by` records the OS user.
"""

from __future__ import annotations

import argparse
import getpass
from pathlib import Path
from typing import Any

from adapters.cli.points import open_stores
from domain.errors import StationError
from domain.safety import BlockEntry, Policy, SafetyPlace


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "safety", help="content safety: default policy, prompt block list, blocked jobs"
    )
    sub = parser.add_subparsers(dest="safety_command", required=True, metavar="ACTION")

    d = sub.add_parser("default", help="show or change the operator's default policy")
    d.add_argument("--policy", choices=[p.value for p in Policy])
    d.add_argument("--allow-unfiltered", choices=["yes", "no"])
    d.add_argument("--threshold", type=float)
    d.set_defaults(handler=run_default)

    w = sub.add_parser("words", help="the prompt block list")
    wsub = w.add_subparsers(dest="words_command", required=True, metavar="ACTION")
    for name, helptext in (("add", "block a word or pattern"), ("remove", "unblock it")):
        a = wsub.add_parser(name, help=helptext)
        a.add_argument("text", metavar="TEXT")
        a.add_argument("--pattern", action="store_true", help="TEXT is a regular expression")
        a.set_defaults(handler=run_words)
    ls = wsub.add_parser("list", help="list the block list")
    ls.set_defaults(handler=run_words)

    c = sub.add_parser("chat", help="show or set one chat's policy")
    c.add_argument("chat", metavar="PLATFORM:CHAT", help="e.g. telegram:-1001234567890")
    c.add_argument("policy", nargs="?", choices=[*(p.value for p in Policy), "default"])
    c.add_argument("--group", action="store_true", help="the chat is a group (for `show`)")
    c.set_defaults(handler=run_chat)

    b = sub.add_parser("blocked", help="list blocked images, newest first")
    b.add_argument("--user", help="only this user's (identity or user id)")
    b.add_argument("--limit", type=int, default=50)
    b.set_defaults(handler=run_blocked)

    r = sub.add_parser("release", help="release a job's blocked images to its owner")
    r.add_argument("job", metavar="JOB")
    r.add_argument("--out", type=Path, help="also write the images into this folder")
    r.set_defaults(handler=run_release)


def run_default(args: argparse.Namespace) -> int:
    stores = open_stores()
    try:
        allow = None if args.allow_unfiltered is None else args.allow_unfiltered == "yes"
        settings = stores.safety.set_operator(
            policy=args.policy, allow_unfiltered=allow, threshold=args.threshold
        )
    except ValueError as err:
        print(f"error: {err}")
        return 2
    finally:
        stores.close()
    print(
        f"default policy: {settings.policy.value}; private chats may opt in to unfiltered: "
        f"{'yes' if settings.allow_unfiltered else 'no'}; threshold: {settings.threshold:g}"
    )
    return 0


def run_words(args: argparse.Namespace) -> int:
    stores = open_stores()
    try:
        if args.words_command == "list":
            for e in stores.safety.list_words():
                print(f"{'pattern' if e.pattern else 'word'}\t{e.text}")
            return 0
        entry = BlockEntry(text=args.text, pattern=args.pattern)
        if args.words_command == "add":
            stores.safety.add_word(entry, by=getpass.getuser())
            print(f"blocked: {entry.text}")
            return 0
        if stores.safety.remove_word(entry):
            print(f"removed: {entry.text}")
            return 0
        print(f"not on the list: {entry.text}")
        return 1
    except StationError as err:
        print(f"error: {err.message}")
        return 2
    finally:
        stores.close()


def run_chat(args: argparse.Namespace) -> int:
    platform, _, chat = args.chat.partition(":")
    if not platform or not chat:
        print("error: name the chat as PLATFORM:CHAT, e.g. telegram:-1001234567890")
        return 2
    place = SafetyPlace(platform=platform, chat_id=chat, group=args.group or chat.startswith("-"))
    stores = open_stores()
    try:
        if args.policy is not None:
            policy = None if args.policy == "default" else Policy(args.policy)
            stores.safety.set_chat_policy(place, policy, by=f"operator:{getpass.getuser()}")
        own = stores.safety.chat_policy(place)
        applies, _ = stores.safety.policy_for(place)
    finally:
        stores.close()
    print(f"{args.chat}: {own.value if own else 'default'} (applies: {applies.value})")
    return 0


def run_blocked(args: argparse.Namespace) -> int:
    stores = open_stores()
    try:
        user_id = None
        if args.user:
            found = stores.users.find(args.user)
            user_id = found.id if found else args.user
        rows = stores.safety.blocked(user_id, limit=args.limit)
    except StationError as err:
        print(f"error: {err.message}")
        return 2
    finally:
        stores.close()
    if not rows:
        print("no blocked images")
        return 0
    print("when\tjob\tuser\timage\tscore\tlabel\tpolicy\treleased")
    for r in rows:
        print(
            f"{r['at']:%Y-%m-%d %H:%M}\t{r['job_id']}\t{r['user_id']}\t{r['blob_id']}\t"
            f"{r['score']:.2f}\t{r['label'] or '-'}\t{r['policy']}\t{r.get('released_by', '-')}"
        )
    return 0


def run_release(args: argparse.Namespace) -> int:
    stores = open_stores()
    try:
        released = stores.safety.release(args.job, by=f"operator:{getpass.getuser()}")
        if not released:
            print(f"job {args.job} has no blocked images")
            return 1
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            for r in released:
                path = args.out / f"{r['blob_id']}.png"
                path.write_bytes(stores.blobs.get(r["blob_id"]))
                print(path)
    finally:
        stores.close()
    print(f"released {len(released)} image(s) of {args.job} to their owner")
    return 0
