"""Buttons under results and status messages that keep working after a bot restart.

A discord.py `View` lives in the process that sent it; after a restart its callbacks are gone.
`discord.ui.DynamicItem` instead matches a press by its custom id against a template, so one
registration (`client.add_dynamic_items(JobButton)`) answers the buttons of every message ever
sent, in any process. The custom id carries what the press needs: `st:<action>:<ref>` or
`st:up:<ref>:<index>`, where `ref` is the job's fixed-length `job_ref` (22 characters, from
`domain.jobs.job_ref`), so an id is at most 33 of Discord's 100 characters and never
truncated whatever the workflow id's length. The ref is resolved with the presser as owner
(`JobsClient.job_by_ref`): another user's button, or a forged ref, reads as "not found" and
starts nothing. Whatever the press does runs in `JobButton.callback`, which hands it to the
bot's `ButtonActions` (commands.py) so this module knows no jobs client.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Protocol

import discord
from discord import ui

from domain.jobs import JOB_REF_LENGTH, JobState, JobStatus, job_ref

Action = Literal["regen", "again", "up", "cancel"]
PREFIX = "st"
TEMPLATE = (
    rf"{PREFIX}:(?P<action>regen|again|up|cancel):(?P<ref>[A-Za-z0-9_-]{{{JOB_REF_LENGTH}}})"
    r"(?::(?P<index>\d{1,2}))?"
)
LABELS: dict[str, str] = {"regen": "Regen", "again": "Again", "up": "Upscale", "cancel": "Cancel"}
STYLES: dict[str, discord.ButtonStyle] = {
    "regen": discord.ButtonStyle.secondary,
    "again": discord.ButtonStyle.secondary,
    "up": discord.ButtonStyle.primary,
    "cancel": discord.ButtonStyle.danger,
}


class ButtonActions(Protocol):
    """What the bot does on a press (commands.py implements it)."""

    async def on_button(
        self, interaction: discord.Interaction, action: str, ref: str, index: int
    ) -> None: ...


def custom_id(action: Action, ref: str, index: int | None = None) -> str:
    """`st:<action>:<ref>[:<index>]` (at most 36 characters; Discord allows 100)."""
    tail = f":{index}" if index is not None else ""
    return f"{PREFIX}:{action}:{ref}{tail}"


class JobButton(ui.DynamicItem[ui.Button[Any]], template=TEMPLATE):
    """One button under a job's message, rebuilt from its custom id on every press."""

    actions: ButtonActions | None = None
    """Set once by the bot at start (class-level: discord.py builds the item itself)."""

    def __init__(self, action: str, ref: str, index: int = 0) -> None:
        self.action = action
        self.ref = ref
        self.index = index
        cid = custom_id(action, ref, index if action == "up" else None)  # type: ignore[arg-type]
        super().__init__(ui.Button(label=LABELS[action], style=STYLES[action], custom_id=cid))

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: ui.Item[Any], match: re.Match[str], /
    ) -> JobButton:
        index = match["index"]
        return cls(match["action"], match["ref"], int(index) if index else 0)

    async def callback(self, interaction: discord.Interaction) -> None:
        if JobButton.actions is None:  # pragma: no cover - set before the gateway connects
            return
        await JobButton.actions.on_button(interaction, self.action, self.ref, self.index)


def result_view(status: JobStatus, index: int) -> ui.View:
    """Regen / Again / Upscale under one delivered image (Regen and Again for makes only)."""
    view = ui.View(timeout=None)
    ref = job_ref(status.workflow_id)
    if status.kind == "make":
        view.add_item(JobButton("regen", ref))
        view.add_item(JobButton("again", ref))
    view.add_item(JobButton("up", ref, index))
    return view


def status_view(status: JobStatus) -> ui.View | None:
    """A Cancel button under a live status while the job can still be cancelled."""
    if not status.state.cancellable or status.state is JobState.DELIVERING:
        return None
    view = ui.View(timeout=None)
    view.add_item(JobButton("cancel", job_ref(status.workflow_id)))
    return view
