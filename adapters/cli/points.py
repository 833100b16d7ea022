"""`stationthis points grant|balance|audit`: the operator's view of the books.

Only operators run the CLI (it talks to MongoDB directly), so a grant from here is an admin
grant; it records the operating-system user as `by`.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
import uuid
from typing import Any

from domain.errors import StationError
from store.db import Stores

log = logging.getLogger(__name__)


def open_stores() -> Stores:
    """Stores over the configured MongoDB, else the running dev stack's; indexes ensured."""
    from workers.config import Config
    from workers.runtime import stores_from_config

    return stores_from_config(Config())


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of points") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"points must be positive, got {value}")
    return value


def register(subparsers: Any) -> None:
    """Add `points grant`, `points balance` and `points audit` to the CLI tree."""
    parser = subparsers.add_parser("points", help="grant points, show balances, audit the ledger")
    sub = parser.add_subparsers(dest="points_command", required=True, metavar="ACTION")

    grant = sub.add_parser(
        "grant",
        help="grant N points to a user",
        description="Grant points (a ledger entry). USER is an identity such as "
        "telegram:5472638766 (created with the starter grant if new) or a user id. "
        "Re-running with the same --key grants nothing more.",
    )
    grant.add_argument("user", metavar="USER")
    grant.add_argument("amount", metavar="N", type=positive_int)
    grant.add_argument("--reason", required=True, help="why (kept in the ledger)")
    grant.add_argument("--key", help="idempotency key (default: a new random key)")
    grant.set_defaults(handler=run_grant)

    balance = sub.add_parser("balance", help="show a user's balance and recent ledger entries")
    balance.add_argument("user", metavar="USER")
    balance.add_argument("--entries", type=int, default=10, help="recent entries to show")
    balance.set_defaults(handler=run_balance)

    audit = sub.add_parser(
        "audit",
        help="prove balance = grants − charges + refunds for every user, and that every done "
        "job with outputs holds a charge not refunded in full (exit 1 if not)",
    )
    audit.set_defaults(handler=run_audit)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def run_grant(args: argparse.Namespace) -> int:
    key = args.key or f"grant:{uuid.uuid4().hex}"
    stores = open_stores()  # a stack that is down: one line from main()
    try:
        if ":" in args.user:
            user, created = stores.users.get_or_create(args.user)
            if created:
                print(f"created user {user.id} ({args.user}) with {user.points} starter points")
        else:
            user = stores.users.get(args.user)
        result = stores.ledger.grant(
            user, args.amount, key, by=f"cli:{getpass.getuser()}", reason=args.reason
        )
        balance = stores.ledger.balance(user)
    except (StationError, ValueError) as e:
        return _fail(str(e))
    finally:
        stores.close()
    if result.replayed:
        note = ""
        if result.amount_mismatch:
            note = f" (this run asked for {args.amount}; the key keeps {result.entry.amount})"
        print(f"key {key} was already granted {result.entry.amount} points; nothing changed{note}")
    else:
        print(f"granted {result.entry.amount} points to {args.user} (key {key})")
    print(f"balance: {balance}")
    return 0


def run_balance(args: argparse.Namespace) -> int:
    stores = open_stores()  # a stack that is down: one line from main()
    try:
        user = stores.users.get(args.user)
        entries = stores.ledger.entries(user, limit=max(0, args.entries))
    except StationError as e:
        return _fail(str(e))
    finally:
        stores.close()
    print(f"{', '.join(user.identities)} (user {user.id}): {user.points} points")
    for entry in entries:
        sign = "-" if entry.kind == "charge" else "+"
        what = entry.job_id or entry.by or ""
        print(
            f"  {entry.created_at:%Y-%m-%d %H:%M:%S}  {entry.kind:<6} {sign}{entry.amount:<6} "
            f"→ {entry.balance_after:<7} {entry.key}  {what}  {entry.reason}"
        )
    return 0


def run_audit(args: argparse.Namespace) -> int:
    stores = open_stores()  # a stack that is down: one line from main()
    try:
        users = stores.users.all(limit=1_000_000)
        problems = stores.ledger.audit()
        unpaid = stores.ledger.unpaid_jobs(stores.jobs.done_with_outputs())
    finally:
        stores.close()
    if not problems and not unpaid:
        print(f"ledger OK: {len(users)} users, balance = grants − charges + refunds for each")
        print("jobs OK: every done job with outputs holds a charge")
        return 0
    if unpaid:
        print(f"{'done job with outputs but no standing charge':<50} {'user':<26} ", end="")
        print(f"{'price':>6} {'charged':>8} {'refunded':>9}")
        for job in unpaid:
            print(
                f"{job.job_id:<50} {job.identity or job.user_id:<26} {job.price:>6} "
                f"{job.charged:>8} {job.refunded:>9}"
            )
        print(f"{len(unpaid)} done jobs given away", file=sys.stderr)
    if not problems:
        return 1
    header = f"{'user':<26} {'identities':<30} {'balance':>9} {'expected':>9} "
    header += f"{'grants':>9} {'charges':>9} {'refunds':>9}"
    print(header)
    for p in problems:
        balance = "missing" if p.balance is None else str(p.balance)
        print(
            f"{p.user_id:<26} {','.join(p.identities)[:30]:<30} {balance:>9} {p.expected:>9} "
            f"{p.grants:>9} {p.charges:>9} {p.refunds:>9}"
        )
    print(f"{len(problems)} discrepancies", file=sys.stderr)
    return 1
