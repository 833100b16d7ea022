"""Replays saved histories of every path: a change that breaks running workflows fails here.

The histories are written by the saga tests the first time they run (or with SAVE_HISTORIES=1
after an intended, versioned change) and committed. Subfolders keep the histories of earlier
versions (`before-ledger-patch/`: charge and refund as local activities; `before-run-keys/`:
ledger keys per workflow id, the slot held through a delivery of up to 7 days;
`before-failed-status/`: a failed job completed with its failed status instead of failing;
`before-caption-run-keys/`: the caption workflow's ledger keys per workflow id;
`before-saga-top-down/`: the saga recorded, freed and delivered in a `finally` and asked every
patch), which must keep replaying through their `workflow.patched` branches (docs/patches.md).
`old-comfy-worker/` holds jobs whose comfy worker, of an earlier release, ignored `store_for`
(the job stored the outputs with `store_comfy_outputs`, as during a rolling deploy).
Every subfolder is replayed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.cook_collection import CookCollectionWorkflow
from workflows.job_webhooks import JobWebhooksWorkflow
from workflows.make_image import MakeImageWorkflow
from workflows.media_job import MediaJobWorkflow
from workflows.train_lora import CaptionDatasetWorkflow, TrainLoraWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").rglob("*.json"))
CURRENT = sorted((Path(__file__).parent / "histories").glob("*.json"))
WORKFLOWS: dict[str, list[type]] = {
    "make": [MakeImageWorkflow],
    "media": [MediaJobWorkflow],
    "cook": [CookCollectionWorkflow, MakeImageWorkflow],
    "train": [TrainLoraWorkflow],
    "caption": [CaptionDatasetWorkflow],
    "webhook": [JobWebhooksWorkflow],
}


@pytest.mark.parametrize(
    "path", HISTORIES, ids=[str(p.relative_to(p.parents[1])) for p in HISTORIES]
)
async def test_saved_history_replays_on_the_current_code(path: Path) -> None:
    kind = path.stem.split("_")[0]
    replayer = Replayer(workflows=WORKFLOWS[kind], data_converter=pydantic_data_converter)
    text = path.read_text()
    await replayer.replay_workflow(WorkflowHistory.from_json(workflow_id_of(path, text), text))


def workflow_id_of(path: Path, text: str) -> str:
    """The id the history ran under: a cook names its children after it (`<id>-piece-<n>`), so
    replaying under another id would be a different workflow."""
    m = re.search(r'"workflowId":\s*"([^"]+)-piece-\d+', text)
    return m.group(1) if m else path.stem


def test_every_path_has_a_saved_history() -> None:
    names = {p.stem for p in CURRENT}
    expected = {
        "make_done",
        "make_invalid",
        "make_timeout",
        "make_refused",
        "make_partial",
        "make_cancel_hang",
        "make_cancel_queued-hang",
        "make_operator_cancel",
        "make_not_delivered",
        "make_delivery_refused",
        "make_safety_blocked",
        "make_safety_blurred",
        "make_safety_partial",
        "media_upscale_done",
        "media_rmbg_done",
        "media_resize_done",
        "media_convert_done",
        "media_bad_image",
        "media_comfy_invalid",
        "media_refused",
        "media_cancel_upscale",
        "media_cancel_resize",
        "media_operator_cancel",
        "train_done",
        "train_failed",
        "train_crash_resumed",
        "train_refused",
        "train_cancel",
        "train_operator_cancel",
        "cook_done",
        "cook_failed_piece",
        "cook_continued",
        "cook_points",
        "cook_pause",
        "cook_cancel",
        "cook_operator_cancel",
        "caption_done",
        "caption_partly_failed",
        "caption_refused",
        "webhook_delivered",
    }
    assert expected <= names, f"missing histories: {sorted(expected - names)}"
