"""`stationthis dataset …`, `stationthis train DATASET`, `stationthis models …`: LoRA training
from the command line.

```sh
S=.venv/bin/stationthis; U=telegram:5472638766
$S dataset create me --trigger zxq_me --user $U
$S dataset add me a.jpg b.jpg c.jpg d.jpg --user $U     # checked, square-cropped, resized
$S dataset caption me --user $U                          # auto-caption what has none (paid)
$S dataset caption me --image 2 --text "zxq_me smiling" --user $U   # typed: never overwritten
$S dataset show me --user $U
$S train me --family sdxl --steps 1500 --user $U         # quote, charge, progress bar, Ctrl-C
$S models list --user $U
$S make "zxq_me on the moon" --user $U                   # the trigger word adds the LoRA
$S make "a portrait <lora:me:0.6>" --user $U             # or by name and weight
$S models add inkstyle --user $U      # someone's public model: its trigger word applies too
$S models remove inkstyle --user $U   # (a public model applies to your prompts only if added
                                      #  or named with <lora:inkstyle>)
```
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from adapters.cli.context import jobs_client
from adapters.cli.jobs_cmd import _interrupted, _progress_line, run_cli
from adapters.jobs import JobsClient, StartedJob
from domain.errors import UserInputError
from domain.jobs import JobStatus
from domain.training import (
    FAMILIES,
    LR_DEFAULT,
    RANK_DEFAULT,
    STEPS_DEFAULT,
    Dataset,
    TrainingParams,
    TrainRequest,
)

READ_CAP = 64 * 1024 * 1024


def register(subparsers: Any) -> None:
    ds = subparsers.add_parser("dataset", help="LoRA training datasets: create, add, caption, …")
    dsub = ds.add_subparsers(dest="dataset_command", required=True, metavar="ACTION")

    c = _sub(dsub, "create", "create an empty dataset")
    c.add_argument("--trigger", default="", help="the trigger word (one word, e.g. zxq_me)")
    c.add_argument("--family", choices=FAMILIES, default="sdxl", help="sets the image size")
    c.set_defaults(handler=lambda a: run_cli(_create(a)))

    ad = _sub(dsub, "add", "add images (4 … 20 in all), each checked and square-cropped")
    ad.add_argument("files", nargs="+", type=Path)
    ad.set_defaults(handler=lambda a: run_cli(_add(a)))

    cp = _sub(dsub, "caption", "caption the images that have none, or set one caption")
    cp.add_argument("--image", help="1-based number (or id) of the image to caption by hand")
    cp.add_argument("--text", help="the caption (with --image); at most 1000 characters")
    cp.add_argument("--quote", action="store_true", help="only show what captioning costs")
    cp.add_argument("--yes", action="store_true", help="do not ask to confirm the quote")
    cp.set_defaults(handler=lambda a: run_cli(_caption(a)))

    tr = _sub(dsub, "trigger", "set the trigger word")
    tr.add_argument("word")
    tr.set_defaults(handler=lambda a: run_cli(_trigger(a)))

    sh = _sub(dsub, "show", "images, captions and trigger word")
    sh.set_defaults(handler=lambda a: run_cli(_show(a)))

    rn = _sub(dsub, "rename", "rename a dataset")
    rn.add_argument("new_name")
    rn.set_defaults(handler=lambda a: run_cli(_rename(a)))

    rm = _sub(dsub, "rm", "delete a dataset, or one image of it with --image N")
    rm.add_argument("--image", help="1-based number (or id) of the image to remove")
    rm.set_defaults(handler=lambda a: run_cli(_rm(a)))

    ls = dsub.add_parser("list", help="your datasets")
    ls.add_argument("--user", required=True)
    ls.set_defaults(handler=lambda a: run_cli(_list(a)))

    t = subparsers.add_parser("train", help="train a LoRA from a dataset (quoted, charged once)")
    t.add_argument("dataset", help="dataset name or id")
    t.add_argument("--user", required=True)
    t.add_argument("--family", choices=FAMILIES, default=None, help="default: the dataset's")
    t.add_argument("--steps", type=int, default=STEPS_DEFAULT, help="100 … 5000")
    t.add_argument("--lr", type=float, default=LR_DEFAULT, help="learning rate")
    t.add_argument("--rank", type=int, default=RANK_DEFAULT)
    t.add_argument("--name", help="model name (default: the dataset's name)")
    t.add_argument("--request-id", help="the platform's request id: a repeat starts nothing new")
    t.add_argument("--quote", action="store_true", help="print the price and stop")
    t.add_argument("--detach", action="store_true", help="start and print the id, do not wait")
    t.set_defaults(handler=lambda a: run_cli(_train(a)))

    m = subparsers.add_parser("models", help="your trained LoRAs: list, rm, publish, rename")
    msub = m.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    ml = msub.add_parser("list", help="your models and the public ones")
    ml.add_argument("--user", required=True)
    ml.set_defaults(handler=lambda a: run_cli(_models(a)))
    mr = _sub(msub, "rm", "delete a model and its file")
    mr.set_defaults(handler=lambda a: run_cli(_model_rm(a)))
    mp = _sub(msub, "publish", "make a model usable by everyone (--private to undo)")
    mp.add_argument("--private", action="store_true")
    mp.set_defaults(handler=lambda a: run_cli(_model_publish(a)))
    mn = _sub(msub, "rename", "rename a model")
    mn.add_argument("new_name")
    mn.set_defaults(handler=lambda a: run_cli(_model_rename(a)))
    ma = _sub(msub, "add", "add someone's public model to your list: its trigger word applies")
    ma.set_defaults(handler=lambda a: run_cli(_model_add(a)))
    mx = _sub(msub, "remove", "take a model off your list (it stays its owner's)")
    mx.set_defaults(handler=lambda a: run_cli(_model_remove(a)))


def _sub(sub: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
    p.add_argument("name", help="name or id")
    p.add_argument("--user", required=True, help="e.g. telegram:5472638766")
    return p


def _print_dataset(ds: Dataset) -> None:
    print(
        f"dataset {ds.name} ({ds.id}): {len(ds.images)} images, family {ds.family}, "
        f"trigger word {ds.trigger_word or '(none yet)'}"
    )
    for n, im in enumerate(ds.images, 1):
        source = f" [{im.caption_source}]" if im.caption_source else ""
        print(f"  {n:2}. {im.image_id}{source} {im.caption or '(no caption)'}")


async def _create(a: argparse.Namespace) -> int:
    async with jobs_client() as jobs:
        ds = await jobs.create_dataset(a.user, a.name, trigger_word=a.trigger, family=a.family)
    _print_dataset(ds)
    return 0


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise UserInputError(f"no such file: {path}")
    with path.open("rb") as fh:
        return fh.read(READ_CAP + 1)


async def _add(a: argparse.Namespace) -> int:
    files = [(await asyncio.to_thread(_read, p), p.name) for p in a.files]
    async with jobs_client() as jobs:
        res = await jobs.add_dataset_images(a.user, a.name, files)
        ds = await jobs.dataset(a.user, a.name)
    print(f"added {res.added} image(s); the dataset has {res.total}")
    _print_dataset(ds)
    return 0


async def _caption(a: argparse.Namespace) -> int:
    async with jobs_client() as jobs:
        if a.image is not None:
            if a.text is None:
                raise UserInputError("--image needs --text")
            ds = await jobs.set_caption(a.user, a.name, a.image, a.text)
        else:
            quote = await jobs.quote_captions(a.user, a.name)
            print(
                f"{quote.images} image(s) without a caption at {quote.per_image} points = "
                f"{quote.total} points (balance {quote.balance})"
            )
            if a.quote:
                return 0
            if quote.images and not a.yes and sys.stdin.isatty():
                answer = await asyncio.to_thread(input, "caption? [y/N] ")
                if not answer.strip().lower().startswith("y"):
                    print("not captioned, nothing charged")
                    return 1
            outcome = await jobs.caption_dataset(a.user, a.name)
            paid = f" for {outcome.price} points" if outcome.price else ""
            back = f", {outcome.refunded} refunded" if outcome.refunded else ""
            print(f"captioned {outcome.captioned} image(s){paid}{back}")
            for image_id, why in outcome.failed.items():
                print(f"  failed {image_id}: {why}")
            if outcome.balance is not None:
                print(f"balance {outcome.balance}")
            ds = await jobs.dataset(a.user, a.name)
    _print_dataset(ds)
    return 0


async def _trigger(a: argparse.Namespace) -> int:
    async with jobs_client() as jobs:
        ds = await jobs.set_trigger_word(a.user, a.name, a.word)
    _print_dataset(ds)
    return 0


async def _show(a: argparse.Namespace) -> int:
    async with jobs_client() as jobs:
        ds = await jobs.dataset(a.user, a.name)
    _print_dataset(ds)
    return 0


async def _rename(a: argparse.Namespace) -> int:
    async with jobs_client() as jobs:
        ds = await jobs.rename_dataset(a.user, a.name, a.new_name)
    _print_dataset(ds)
    return 0


async def _rm(a: argparse.Namespace) -> int:
    async with jobs_client() as jobs:
        if a.image is not None:
            ds = await jobs.remove_dataset_image(a.user, a.name, a.image)
            _print_dataset(ds)
        else:
            ds = await jobs.delete_dataset(a.user, a.name)
            print(f"deleted dataset {ds.name}")
    return 0


async def _list(a: argparse.Namespace) -> int:
    async with jobs_client() as jobs:
        found = await jobs.datasets(a.user)
    for ds in found:
        print(f"{ds.name:<24} {len(ds.images):2} images  trigger {ds.trigger_word or '-'}")
    if not found:
        print("no datasets yet")
    return 0


async def _train(a: argparse.Namespace) -> int:
    async with jobs_client() as jobs:
        ds = await jobs.dataset(a.user, a.dataset)
        request = TrainRequest(
            user=a.user,
            platform="cli",
            dataset=ds.id,
            params=TrainingParams(
                family=a.family or ds.family, steps=a.steps, learning_rate=a.lr, rank=a.rank
            ),
            model_name=a.name,
            request_id=a.request_id,
        )
        plan = await jobs.quote_training(request)
        print(f"{plan.summary}: {plan.price} points (balance {plan.balance})")
        if a.quote:
            return 0
        started = await jobs.start_train(request)
        return await _follow(jobs, started, plan.balance, detach=a.detach)


async def _follow(jobs: JobsClient, started: StartedJob, before: int, *, detach: bool) -> int:
    wid = started.workflow_id
    print(f"job {wid}{' (already started by this request)' if started.existing else ''}")
    if started.ui_url:
        print(f"  {started.ui_url}")
    if detach:
        return 0
    final: JobStatus | None = None
    try:
        async for status in jobs.watch(wid, interval=0.5):
            _progress_line(status)
            final = status
    except (KeyboardInterrupt, asyncio.CancelledError):
        print()
        return await _interrupted(jobs, wid)
    print()
    assert final is not None
    balance = await asyncio.to_thread(jobs.stores.ledger.balance, final.user)
    print(final.headline())
    if final.model:
        m = final.model
        print(
            f"  model {m['name']}: trigger word {m['trigger_word']}, {m['family']}, "
            f"default weight {m['default_weight']}, {m['size']} bytes, sha256 {m['sha256'][:16]}…"
        )
        print(f'  use it: stationthis make "{m["trigger_word"]} …" --user {final.user}')
    print(f"  price {final.price}, refund {final.refund}; balance {before} -> {balance}")
    return 0 if final.state.value == "done" else 1


async def _models(a: argparse.Namespace) -> int:
    async with jobs_client() as jobs:
        owner = await jobs.user(a.user)
        found = await jobs.models(a.user)
        added = {m.id for m in await jobs.added_models(a.user)}
    for m in found:
        whose = "yours" if m.owner == owner.id else "public"
        flag = ", public" if m.public and whose == "yours" else ""
        if whose == "public":
            flag = ", added: trigger word on" if m.id in added else f", use <lora:{m.name}>"
        print(
            f"{m.name:<24} trigger {m.trigger_word:<16} {m.family:<5} weight "
            f"{m.default_weight} ({whose}{flag}) {m.size} bytes"
        )
    if not found:
        print("no models yet: stationthis train DATASET")
    return 0


async def _model_rm(a: argparse.Namespace) -> int:
    async with jobs_client() as jobs:
        m = await jobs.delete_model(a.user, a.name)
    print(f"deleted model {m.name}")
    return 0


async def _model_publish(a: argparse.Namespace) -> int:
    async with jobs_client() as jobs:
        m = await jobs.publish_model(a.user, a.name, not a.private)
    print(f"model {m.name} is {'public' if m.public else 'private'}")
    return 0


async def _model_add(a: argparse.Namespace) -> int:
    async with jobs_client() as jobs:
        m = await jobs.add_model(a.user, a.name)
    print(f"added {m.name} ({m.id}): its trigger word {m.trigger_word} now applies to your prompts")
    return 0


async def _model_remove(a: argparse.Namespace) -> int:
    async with jobs_client() as jobs:
        m = await jobs.remove_model(a.user, a.name)
    print(f"removed {m.name} from your list (<lora:{m.name}> still names it while it is public)")
    return 0


async def _model_rename(a: argparse.Namespace) -> int:
    async with jobs_client() as jobs:
        m = await jobs.rename_model(a.user, a.name, a.new_name)
    print(f"model renamed to {m.name}")
    return 0
