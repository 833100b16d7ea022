"""`stationthis make|regen|again` and `stationthis jobs list|show|save|cancel|history|refund`,
plus the operator commands `jobs terminate` and `jobs stuck`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from adapters.cli.context import jobs_client
from adapters.jobs import JobsClient, StartedJob
from domain.errors import StationError
from domain.jobs import JobState, JobStatus, MakeImageRequest
from workers.config import REPO_ROOT

OUT_DIR = REPO_ROOT / "out"


def register(subparsers: Any) -> None:
    m = subparsers.add_parser("make", help="make an image and wait for it")
    m.add_argument("prompt")
    m.add_argument("--user", required=True, help="e.g. telegram:5472638766")
    for name, typ in (
        ("steps", int),
        ("width", int),
        ("height", int),
        ("seed", int),
        ("batch", int),
        ("cfg", float),
    ):
        m.add_argument(f"--{name}", type=typ)
    m.add_argument("--template", help="template name (default: the user's setting)")
    m.add_argument("--negative")
    m.add_argument("--request-id", help="the platform's request id: a repeat starts nothing new")
    m.add_argument("--out", type=Path, default=OUT_DIR, help="folder for the images")
    m.add_argument("--detach", action="store_true", help="start and print the id, do not wait")
    m.set_defaults(handler=lambda a: run_cli(_make(a)))

    r = subparsers.add_parser("regen", help="repeat one of the user's last 5 runs, same seed")
    r.add_argument("n", type=int, nargs="?", default=1, help="1 = the newest run")
    r.add_argument("--user", required=True)
    r.add_argument("--out", type=Path, default=OUT_DIR)
    r.set_defaults(handler=lambda a: run_cli(_repeat(a, again=False)))
    g = subparsers.add_parser("again", help="repeat the user's last run with a new seed")
    g.add_argument("--user", required=True)
    g.add_argument("--out", type=Path, default=OUT_DIR)
    g.set_defaults(handler=lambda a: run_cli(_repeat(a, again=True)))

    jobs = subparsers.add_parser("jobs", help="list, inspect, cancel and refund jobs")
    sub = jobs.add_subparsers(dest="jobs_command", required=True)
    ls = sub.add_parser("list", help="jobs by user and state (Temporal visibility)")
    ls.add_argument("--user")
    ls.add_argument("--state", help="starting, queued, running, done, failed, cancelled, ...")
    ls.add_argument("--running", action="store_true")
    ls.add_argument("--limit", type=int, default=20)
    ls.add_argument("--pieces", action="store_true", help="also each piece of a cook")
    ls.set_defaults(handler=lambda a: run_cli(_list(a)))
    show = sub.add_parser("show", help="one job's live status")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    show.add_argument("--user", help="act as this user: only their own jobs exist")
    show.add_argument(
        "--out", type=Path, help="save the outputs into this folder (a result never delivered)"
    )
    show.set_defaults(handler=lambda a: run_cli(_show(a)))
    cancel = sub.add_parser("cancel", help="cancel a job; refunds what it did not produce")
    cancel.add_argument("id")
    cancel.add_argument("--user", help="act as this user: only their own jobs exist")
    cancel.set_defaults(handler=lambda a: run_cli(_cancel(a)))
    hist = sub.add_parser("history", help="the user's last runs with settings and seeds")
    hist.add_argument("--user", required=True)
    hist.add_argument("-n", type=int, default=5)
    hist.set_defaults(handler=lambda a: run_cli(_history(a)))
    refund = sub.add_parser(
        "refund", help="refund a job an operator terminated (safe to repeat: keyed by job)"
    )
    refund.add_argument("id")
    refund.set_defaults(handler=lambda a: run_cli(_refund(a)))
    save = sub.add_parser("save", help="write a job's outputs to files (jobs show ID --out DIR)")
    save.add_argument("id")
    save.add_argument("--out", type=Path, default=OUT_DIR, help="folder for the files")
    save.add_argument("--user", help="act as this user: only their own jobs exist")
    save.set_defaults(handler=lambda a: run_cli(_show(a)), json=False)
    term = sub.add_parser(
        "terminate",
        help="operator: stop a job that cannot be cancelled, refund what it did not make",
    )
    term.add_argument("id")
    term.add_argument("--reason", required=True, help="kept in the job's history and record")
    term.set_defaults(handler=lambda a: run_cli(_terminate(a)))
    stuck = sub.add_parser(
        "stuck", help="operator: running jobs waiting on a queue nobody polls or past deadline"
    )
    stuck.add_argument("--limit", type=int, default=200, help="running jobs to look at")
    stuck.set_defaults(handler=lambda a: run_cli(_stuck(a)))


def run_cli(coro: Any) -> int:
    """Run a command's coroutine; a refusal is one line on stderr and exit code 2."""
    try:
        code: int = asyncio.run(coro)
        return code
    except StationError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 2


async def _make(args: argparse.Namespace) -> int:
    overrides = {
        k: getattr(args, k)
        for k in ("steps", "width", "height", "seed", "batch", "cfg", "negative")
        if getattr(args, k) is not None
    }
    # The identity pays; the result stays with the CLI (a pull platform), whichever platform
    # the identity belongs to: no delivery step waits for a Telegram bot.
    request = MakeImageRequest(
        user=args.user,
        platform="cli",
        prompt=args.prompt,
        template=args.template,
        overrides=overrides,
        request_id=args.request_id,
    )
    async with jobs_client() as jobs:
        before = await asyncio.to_thread(jobs.stores.users.get, args.user)
        started = await jobs.start_make(request)
        return await follow(jobs, started, args.out, before.points, detach=args.detach)


async def _repeat(args: argparse.Namespace, *, again: bool) -> int:
    async with jobs_client() as jobs:
        before = await asyncio.to_thread(jobs.stores.users.get, args.user)
        started = await jobs.start_repeat(args.user, n=None if again else args.n, platform="cli")
        return await follow(jobs, started, args.out, before.points)


async def follow(
    jobs: JobsClient, started: StartedJob, out: Path, balance_before: int, *, detach: bool = False
) -> int:
    """Show progress until the job ends, save its images, and print what it cost."""
    wid = started.workflow_id
    print(f"job {wid}{' (already started by this request)' if started.existing else ''}")
    if started.ui_url:
        print(f"  {started.ui_url}")
    if detach:
        return 0
    final: JobStatus | None = None
    try:
        async for status in jobs.watch(wid):
            _progress_line(status)
            final = status
    except (KeyboardInterrupt, asyncio.CancelledError):
        print()
        return await _interrupted(jobs, wid)
    print()
    assert final is not None
    return await _report(jobs, final, out, balance_before)


def _progress_line(s: JobStatus) -> None:
    width = 30
    percent = 100.0 if s.state is JobState.DONE else s.percent
    filled = int(width * percent / 100)
    bar = "#" * filled + "-" * (width - filled)
    sys.stdout.write(f"\r  [{bar}] {s.headline():<40}")
    sys.stdout.flush()


async def _interrupted(jobs: JobsClient, wid: str) -> int:
    answer = ""
    if sys.stdin.isatty():
        answer = await asyncio.to_thread(
            input, "Interrupted. [c]ancel the job (with refund) or [d]etach and leave it running? "
        )
    if answer.strip().lower().startswith("c"):
        result = await jobs.cancel(wid)
        print(f"cancelled, refunded {result.refund}")
        return 130
    print(f"detached; follow it with: stationthis jobs show {wid}")
    return 130


async def _save_outputs(jobs: JobsClient, s: JobStatus, out: Path) -> list[Path]:
    """Write the job's outputs into `out/<workflow id>/`; returns the files written."""
    folder = out / s.workflow_id
    paths: list[Path] = []
    for i, o in enumerate(s.outputs):
        data = await asyncio.to_thread(jobs.image, o)
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{i + 1}-seed{o.seed}" if o.seed is not None else f"{i + 1}-{s.kind}"
        path = folder / f"{stem}.{_extension(o.content_type)}"
        path.write_bytes(data)
        paths.append(path)
    return paths


async def _report(jobs: JobsClient, s: JobStatus, out: Path, balance_before: int) -> int:
    folder = out / s.workflow_id
    paths = await _save_outputs(jobs, s, out)
    balance = await asyncio.to_thread(jobs.stores.ledger.balance, s.user)
    print(f"{s.headline()}")
    if s.clamps:
        print("  clamped to your limits: " + ", ".join(s.clamps))
    for p, o in zip(paths, s.outputs, strict=True):
        print(f"  saved {p} ({o.width}x{o.height} {o.content_type})")
    if paths:
        print(f"  images in {folder}")
    print(f"  price {s.price}, refund {s.refund}; balance {balance_before} -> {balance}")
    return 0 if s.state.value == "done" else 1


def _extension(content_type: str) -> str:
    """The file extension for what the job produced (its content type, not a guess)."""
    known = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}
    return known.get(content_type, content_type.rsplit("/", 1)[-1] or "bin")


async def _list(args: argparse.Namespace) -> int:
    async with jobs_client() as jobs:
        rows = await jobs.list_jobs(
            user=args.user,
            state=args.state,
            running=args.running,
            limit=args.limit,
            pieces=args.pieces,
        )
    print(f"{'workflow id':<50} {'kind':<8} {'state':<11} {'status':<10} started")
    for r in rows:
        print(f"{r.workflow_id:<50} {r.kind:<8} {r.state:<11} {r.status:<10} {r.started}")
    return 0


async def _show(args: argparse.Namespace) -> int:
    async with jobs_client() as jobs:
        s = await jobs.status(args.id, user=args.user)
        url = jobs.job_url(args.id)
        saved = await _save_outputs(jobs, s, args.out) if args.out else []
    if args.json:
        print(json.dumps(s.model_dump(mode="json"), indent=2))
        return 0
    print(f"{s.workflow_id}  {s.kind}  {s.user}")
    print(f"  {s.headline()}")
    if s.prompt is not None:
        print(f"  prompt: {s.prompt}")
    elif s.settings.get("params") is not None:
        print(f"  params: {s.settings['params']}")
    print(f"  price {s.price}, refund {s.refund}, seeds {s.seeds}")
    for o in s.outputs:
        print(f"  output {o.blob_id} {o.width}x{o.height} {o.content_type} seed {o.seed}")
    for p in saved:
        print(f"  saved {p}")
    if url:
        print(f"  {url}")
    return 0


async def _cancel(args: argparse.Namespace) -> int:
    async with jobs_client() as jobs:
        result = await jobs.cancel(
            args.id, reason="cancelled from the command line", user=args.user
        )
    print(f"{result.state}, refunded {result.refund}")
    return 0


async def _history(args: argparse.Namespace) -> int:
    async with jobs_client() as jobs:
        runs = await jobs.recent_runs(args.user, args.n)
    for i, r in enumerate(runs, 1):
        st = r.settings
        print(
            f"{i}. {r.workflow_id}  {r.template} {st.get('width')}x{st.get('height')} "
            f"steps {st.get('steps')} seeds {r.seeds}  {r.prompt[:60]!r}"
        )
    if not runs:
        print("no runs yet")
    return 0


async def _refund(args: argparse.Namespace) -> int:
    async with jobs_client() as jobs:
        amount = await jobs.refund_terminated(args.id)
    print(
        f"refunded {amount}" if amount else "nothing to refund (already refunded or never charged)"
    )
    return 0


async def _terminate(args: argparse.Namespace) -> int:
    async with jobs_client() as jobs:
        done = await jobs.terminate(args.id, args.reason)
    print(f"{args.id}: {done.status.headline()}")
    print(f"  refunded {done.refund} now" if done.refund else "  nothing (more) to refund")
    return 0


async def _stuck(args: argparse.Namespace) -> int:
    """Exit 1 when a job is stuck, so a cron line or an alert can use it as is."""
    async with jobs_client() as jobs:
        rows = await jobs.stuck(limit=args.limit)
    if not rows:
        print("no stuck jobs")
        return 0
    print(f"{'workflow id':<50} {'activity':<20} {'queue':<18} {'try':>3}  why")
    for r in rows:
        print(f"{r.workflow_id:<50} {r.activity:<20} {r.task_queue:<18} {r.attempt:>3}  {r.why}")
    return 1
