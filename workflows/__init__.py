"""Temporal workflows. They import only domain/ and activity names, never store/ or comfy/."""

from __future__ import annotations

from workflows.make_image import MakeImageWorkflow
from workflows.media_job import MediaJobWorkflow

ALL_WORKFLOWS: list[type] = [MakeImageWorkflow, MediaJobWorkflow]
