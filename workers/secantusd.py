"""The embedded MongoDB-compatible server (secantusd-py), with its retryable-write registry pruned
in constant time: `python -m workers.secantusd <secantusd-py arguments>`.

Why (issue 17, "a dev stack that slows with every job it has run"): pymongo sends every single
write as a retryable write (`retryWrites`, on by default and kept on: store/connection.py), and
secantusdb 0.7.0b3 records each one's reply for 30 minutes, capped at 10,000. It prunes that
registry on every retryable write, twice, with a list comprehension over all of it, and once it
holds 10,000 it also sorts all of it on every write. Measured on this server (`update_one` by
`_id`, one client): 1.0 ms per write after 100 writes, 1.4 after 5,000, 2.4 after 9,900, and
8–10 ms from 10,000 on; a make job sends about 12 writes, so a stack past ~800 jobs in half an
hour paid about 100 ms more of MongoDB per job.

The registry is a dict filled in time order (`record_retryable` inserts with the current
time), so its stale and its oldest entries are at its front. `_prune_front` drops them from the
front: the entries the server's own prune drops (stale ones; then the oldest above the cap), in
time proportional to what it drops. One case differs: a key recorded a second time (a retry
whose first reply was not recorded) keeps its first position with a newer time, and stale
entries behind it then wait until it is stale too (at most 30 minutes more); such an entry
only answers a very late retry with its recorded reply instead of running it again. Nothing
else of the server changes. The fix belongs upstream in secantus; this wrapper goes when a
release prunes in constant time.

Private server API (secantusdb 0.7.0b3, pinned): tests/adversary/test_mongo_scans.py fails if
the hooks move.
"""

from __future__ import annotations

import sys
from typing import Any

from secantus import cli, transactions


def _prune_front(self: Any) -> None:
    """`TransactionRegistry._prune_retryable_locked`, from the front of the time-ordered dict."""
    records: dict[Any, tuple[Any, float, Any]] = self._retryable
    cutoff = self._time() - transactions._RETRYABLE_RECORD_LIFETIME_SECONDS
    cap = transactions._RETRYABLE_RECORD_MAX
    while records:
        key, (_reply, at, _identity) = next(iter(records.items()))
        if at >= cutoff and len(records) <= cap:
            return
        del records[key]


def patch() -> None:
    """Install the constant-time prune on the server's transaction registry."""
    transactions.TransactionRegistry._prune_retryable_locked = _prune_front


def main() -> int:
    patch()
    sys.argv[0] = "secantusd-py"
    return int(cli.main() or 0)


if __name__ == "__main__":
    raise SystemExit(main())
