"""The jobs client: every feature's service in one object, for the adapters that use them all.

The work is in services/ (one module per feature: jobs, accounts, media sources, deliveries,
collections, training); this facade combines them over the same Temporal client, stores and
config, so the CLI and the bot keep one `JobsClient`. An adapter that needs only part of it
(the web page's account view, a delivery worker) builds that service alone from the same three
dependencies. The names adapters import from here are re-exported.
"""

from __future__ import annotations

from services.accounts import AccountService
from services.collections import CollectionExport, CollectionService, CookQuote
from services.deliveries import DeliveryService
from services.jobs import (
    COOK_STATES,
    ENDED_BY_OPERATOR,
    LIVE_STATES,
    SLOT_START_GRACE,
    WORKFLOW_TYPES,
    JobListing,
    JobNotFound,
    JobRequest,
    NotCancellable,
    StartedJob,
    StuckJob,
    Terminated,
    cook_job_status,
    is_cook_id,
    is_cook_piece_id,
    with_live_progress,
)
from services.training import CaptionQuote, TrainingService

__all__ = [
    "COOK_STATES",
    "ENDED_BY_OPERATOR",
    "LIVE_STATES",
    "SLOT_START_GRACE",
    "WORKFLOW_TYPES",
    "CaptionQuote",
    "CollectionExport",
    "CookQuote",
    "JobListing",
    "JobNotFound",
    "JobRequest",
    "JobsClient",
    "NotCancellable",
    "StartedJob",
    "StuckJob",
    "Terminated",
    "cook_job_status",
    "is_cook_id",
    "is_cook_piece_id",
    "with_live_progress",
]


class JobsClient(CollectionService, TrainingService, AccountService, DeliveryService):
    """Jobs, collections, training, accounts and deliveries over one Temporal client.

    `JobsClient(temporal, stores, config, ui_url=...)`, as every service is built.
    """
