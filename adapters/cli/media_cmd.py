"""`stationthis upscale|rmbg|resize|convert FILE --user U`: media jobs from the command line.

Each command checks and stores the file first (`JobsClient.store_source`: a bad file is refused
there, with nothing charged or started), starts the job, shows its progress and prints where
the result was saved, what it cost and the balance — the same `follow()` as `make`.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from adapters.cli.context import jobs_client
from adapters.cli.jobs_cmd import OUT_DIR, follow, run_cli
from domain.errors import UserInputError
from domain.jobs import MediaKind, MediaRequest

# Read at most this much of a file: enough to let the safety module name its own size limit
# (20 MB) in the refusal, without loading an arbitrarily large file into memory.
READ_CAP = 64 * 1024 * 1024


def register(subparsers: Any) -> None:
    up = _parser(subparsers, "upscale", "make an image 2x or 4x larger (ComfyUI upscale model)")
    up.add_argument("--scale", type=int, choices=(2, 4), default=4)
    up.set_defaults(handler=lambda a: run_cli(_media(a, "upscale", {"scale": a.scale})))

    rm = _parser(subparsers, "rmbg", "remove the background: a PNG with alpha")
    rm.set_defaults(handler=lambda a: run_cli(_media(a, "rmbg", {})))

    rs = _parser(subparsers, "resize", "resize with high-quality resampling (up to 4096 px)")
    rs.add_argument("--width", type=int)
    rs.add_argument("--height", type=int)
    rs.add_argument(
        "--mode",
        choices=("fit", "fill", "exact"),
        default="fit",
        help="fit: inside the box, aspect kept; fill: cover the box and crop; exact: stretch",
    )
    rs.set_defaults(handler=lambda a: run_cli(_media(a, "resize", _resize_params(a))))

    cv = _parser(subparsers, "convert", "convert to PNG, JPEG or WebP")
    cv.add_argument("--to", required=True, choices=("png", "jpeg", "jpg", "webp"))
    cv.add_argument("--quality", type=int, help="JPEG / WebP quality 1-100")
    cv.add_argument("--lossless", action="store_true", help="lossless WebP")
    cv.add_argument("--background", help="colour under transparent parts for JPEG, e.g. '#ffffff'")
    cv.set_defaults(handler=lambda a: run_cli(_media(a, "convert", _convert_params(a))))


def _parser(subparsers: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(name, help=help_text)
    p.add_argument("file", type=Path, help="the image (its content decides its type)")
    p.add_argument("--user", required=True, help="e.g. telegram:5472638766")
    p.add_argument("--request-id", help="the platform's request id: a repeat starts nothing new")
    p.add_argument("--out", type=Path, default=OUT_DIR, help="folder for the result")
    p.add_argument("--detach", action="store_true", help="start and print the id, do not wait")
    return p


def _resize_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {"mode": args.mode}
    if args.width is not None:
        params["width"] = args.width
    if args.height is not None:
        params["height"] = args.height
    return params


def _convert_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {"format": "jpeg" if args.to == "jpg" else args.to}
    if args.quality is not None:
        params["quality"] = args.quality
    if args.lossless:
        params["lossless"] = True
    if args.background is not None:
        params["background"] = args.background
    return params


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise UserInputError(f"no such file: {path}")
    with path.open("rb") as fh:
        return fh.read(READ_CAP + 1)


async def _media(args: argparse.Namespace, kind: MediaKind, params: dict[str, Any]) -> int:
    data = await asyncio.to_thread(_read, args.file)
    async with jobs_client() as jobs:
        before = await asyncio.to_thread(jobs.stores.users.get, args.user)
        source_id = await jobs.store_source(args.user, data, args.file.name)
        info = await asyncio.to_thread(jobs.stores.blobs.info, source_id)
        meta = info.metadata
        line = (
            f"source {args.file.name}: {meta.get('format')} {meta.get('width')}x"
            f"{meta.get('height')} {meta.get('mode')}"
        )
        if meta.get("note"):
            line += f" ({meta['note']})"
        print(line)
        started = await jobs.start_media(
            MediaRequest(
                user=args.user,
                platform="cli",
                kind=kind,
                source_image_id=source_id,
                params=params,
                request_id=args.request_id,
            )
        )
        return await follow(jobs, started, args.out, before.points, detach=args.detach)
