"""The `Stores` bundle: every repository over one MongoDB database.

Every repository takes one `pymongo.database.Database`; `Stores` builds them all over the same
database so a worker or the CLI holds one client and one object. `ensure_indexes()` creates every
index the repositories rely on (unique idempotency keys above all) and is safe to call at every
start. Connecting and transactions live in `store.connection`, which the repositories import
instead of this module, so these imports are plain top-level ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymongo import MongoClient
from pymongo.database import Database

from domain.rules import DEFAULT_RULES, DomainRules
from store.api_keys import ApiKeyRepo
from store.blobs import BlobStore
from store.button_tokens import ButtonTokens
from store.collections import CollectionRepo
from store.connection import connect
from store.datasets import DatasetRepo
from store.deliveries import DeliveryRepo
from store.gpu_idle import GpuIdle
from store.guild_rules import GuildRulesRepo
from store.inventory import ComfyInventory
from store.jobs import JobRepo
from store.ledger import Ledger
from store.models import ModelRepo
from store.safety import SafetyRepo
from store.settings_repo import SettingsRepo
from store.templates import TemplateRepo
from store.users import UserRepo
from store.web_sessions import WebSessions
from store.webhooks import WebhookSecrets


@dataclass
class Stores:
    """All repositories over one database. Build with `Stores.from_uri` or `Stores(db)`."""

    db: Database[Any]
    rules: DomainRules = DEFAULT_RULES
    # The operator's key webhook secrets are derived from (Config.webhook_key); never stored.
    webhook_key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.ledger = Ledger(self.db)
        self.users = UserRepo(self.db, self.ledger, starter_grant=self.rules.starter_grant)
        self.settings = SettingsRepo(self.db, self.users, rules=self.rules)
        self.templates = TemplateRepo(self.db)
        self.jobs = JobRepo(self.db)
        self.blobs = BlobStore(self.db)
        self.collections = CollectionRepo(self.db, self.users)
        self.datasets = DatasetRepo(self.db)
        self.models = ModelRepo(self.db)
        self.inventory = ComfyInventory(self.db)
        self.gpu_idle = GpuIdle(self.db)
        self.button_tokens = ButtonTokens(self.db)
        self.deliveries = DeliveryRepo(self.db)
        self.safety = SafetyRepo(self.db)
        self.guild_rules = GuildRulesRepo(self.db, batch_cap=self.rules.limits.batch_cap)
        self.api_keys = ApiKeyRepo(self.db)
        self.webhook_secrets = WebhookSecrets(self.db, self.webhook_key)
        self.web_sessions = WebSessions(self.db)

    @classmethod
    def from_uri(
        cls,
        uri: str,
        database: str = "stationthis",
        *,
        rules: DomainRules = DEFAULT_RULES,
        webhook_key: bytes | None = None,
    ) -> Stores:
        return cls(connect(uri)[database], rules, webhook_key)

    @property
    def client(self) -> MongoClient[Any]:
        return self.db.client

    def ensure_indexes(self) -> None:
        """Create every index, idempotently (creating an existing index is a no-op)."""
        self.ledger.ensure_indexes()
        self.users.ensure_indexes()
        self.templates.ensure_indexes()
        self.jobs.ensure_indexes()
        self.blobs.ensure_indexes()
        self.collections.ensure_indexes()
        self.datasets.ensure_indexes()
        self.models.ensure_indexes()
        self.inventory.ensure_indexes()
        self.gpu_idle.ensure_indexes()
        self.button_tokens.ensure_indexes()
        self.safety.ensure_indexes()
        self.api_keys.ensure_indexes()
        self.web_sessions.ensure_indexes()

    def close(self) -> None:
        self.db.client.close()
