"""Temporal workflows. They import only domain/ and activity names, never store/ or comfy/."""

from __future__ import annotations

from workflows.cook_collection import CookCollectionWorkflow
from workflows.make_image import MakeImageWorkflow
from workflows.media_job import MediaJobWorkflow
from workflows.train_lora import CaptionDatasetWorkflow, DatasetImagesWorkflow, TrainLoraWorkflow

ALL_WORKFLOWS: list[type] = [MakeImageWorkflow, MediaJobWorkflow, CookCollectionWorkflow]
ALL_WORKFLOWS += [TrainLoraWorkflow, CaptionDatasetWorkflow, DatasetImagesWorkflow]
