"""The one configuration class of StationThis.

Values come, highest priority first, from the environment, then temporal-dev.yaml, then the
defaults below. Entry points (CLI, workers, bot) build one `Config` and hand the pieces to the
objects they construct; nothing below workers/ and adapters/ reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from domain.queues import Routing, TaskQueues
from domain.search_attributes import SEARCH_ATTRIBUTES

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_YAML = REPO_ROOT / "temporal-dev.yaml"

DEFAULT_SEARCH_ATTRIBUTES = SEARCH_ATTRIBUTES  # declared with their keys in domain/


class TemporalDev(BaseModel):
    namespace: str = "default"
    port: int = 7233
    ui_port: int = 8233
    db_filename: str = "temporal.sqlite"
    search_attributes: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_SEARCH_ATTRIBUTES)
    )
    # Server tuning (README "Temporal server settings"). The dev server reads its transfer queue
    # at most 20 times a second by default, so every hand-over to another task queue waits
    # ~40 ms; 1000 removes that wait without changing any history. `matching.enableFairness`
    # turns on task-queue fairness (server 1.29+; the embedded one is 1.32): a backlog on a
    # comfy queue is dispatched round-robin across the fairness keys (users, domain/routing.py)
    # instead of in arrival order. Off, one user's batch of 50 makes everyone else wait.
    # Fairness (like ordering) holds within one partition of a task queue: with the default 4
    # a small user's single job still ran 6th-7th behind a backlog of 12 in tests, with 1 it
    # runs 2nd. A dev server gains nothing from partitions; a cluster sets 1 for comfy queues
    # only (a dynamic-config constraint by task queue name), README "GPU pool".
    dynamic_config: dict[str, str | int | float | bool] = Field(
        default_factory=lambda: dict[str, str | int | float | bool](
            {
                "history.transferProcessorMaxPollRPS": 1000,
                "matching.enableFairness": True,
                "matching.numTaskqueueReadPartitions": 1,
                "matching.numTaskqueueWritePartitions": 1,
            }
        )
    )
    # WAL + synchronous=normal: a kill -9 of the server loses nothing acknowledged; an OS crash
    # or power loss may lose the last commits (synchronous=full keeps those, ~10-15 ms a job).
    sqlite_pragmas: dict[str, str] = Field(
        default_factory=lambda: {"journal_mode": "wal", "synchronous": "normal"}
    )

    def tuning_args(self) -> list[str]:
        """`temporal server start-dev` flags for the settings above."""
        args: list[str] = []
        for key, value in self.dynamic_config.items():
            rendered = str(value).lower() if isinstance(value, bool) else str(value)
            args += ["--dynamic-config-value", f"{key}={rendered}"]
        for pragma, value in self.sqlite_pragmas.items():
            args += ["--sqlite-pragma", f"{pragma}={value}"]
        return args


class MongoDev(BaseModel):
    port: int = 0
    database: str = "stationthis"
    data_dir: str = "mongo"
    # Fsync every commit: without it an acknowledged write made just before a kill -9 of the
    # server is lost on restart (measured: ~0.3 ms more per insert on this machine).
    sync_on_commit: bool = True


class ComfyDev(BaseModel):
    port: int = 0
    slots: int = 1
    step_delay: float = 0.02


class _YamlSource(PydanticBaseSettingsSource):
    """Reads temporal-dev.yaml (or STATIONTHIS_CONFIG) below the environment in priority."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        if path.is_file():
            loaded = yaml.safe_load(path.read_text()) or {}
            if not isinstance(loaded, dict):
                raise ValueError(f"{path}: expected a mapping at the top level")
            self._data = loaded

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._data.items() if k in self.settings_cls.model_fields}


class Config(BaseSettings):
    """Everything a StationThis process needs to know about its surroundings."""

    model_config = SettingsConfigDict(env_nested_delimiter="__", extra="ignore")

    # External services; empty means "use the embedded dev stack".
    temporal_address: str = ""
    temporal_namespace: str = "default"
    temporal_api_key: SecretStr | None = None
    temporal_tls: bool = False
    mongodb_uri: str = ""
    mongodb_database: str = "stationthis"
    comfyui_urls: str = ""

    # Dev stack (temporal-dev.yaml)
    devstack_dir: Path = REPO_ROOT / ".devstack"
    temporal: TemporalDev = Field(default_factory=TemporalDev)
    mongodb: MongoDev = Field(default_factory=MongoDev)
    comfyui: ComfyDev = Field(default_factory=ComfyDev)
    task_queues: TaskQueues = Field(default_factory=TaskQueues)

    # Business rules that belong in configuration (docs/domain.md)
    starter_grant: int = 500
    max_running_jobs: int = 3
    # Pieces of one collection cook rendered at once (a cook takes one running-job slot; this
    # bounds what that one slot can put on the GPUs). `--in-flight` above it is lowered to it.
    cook_max_in_flight: int = 3
    admin_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)
    temporal_ui_url: str = ""
    render_timeout: float = 900.0  # seconds one ComfyUI prompt may take, queue included
    # Seconds a finished job's result may wait for its chat's delivery worker (the bot): after
    # that the job ends done but not delivered, the result retrievable by id. Its running-job
    # slot is freed before delivery either way.
    delivery_deadline: float = 3600.0
    comfy_heartbeat_timeout: float = 30.0  # a comfy worker silent this long is presumed dead
    # Prompts a comfy worker keeps queued on its ComfyUI server beyond the ones running (README
    # "GPU pool"): 1 means the next prompt already waits in the server's own queue when the
    # running one ends, so the GPU does not idle for a Temporal round trip between prompts.
    # 0 is the old behaviour (the next task is polled only after the running one completed).
    comfy_feed_ahead: int = Field(default=1, ge=0)
    workflow_worker_threads: int = 16  # threads for the sync (pymongo) activities

    # Prometheus metrics (README "Metrics"): a worker or bot serves StationThis's metrics on
    # `metrics_port` and the Temporal SDK's on `metrics_port + 1`; 0 is off (the default of a
    # process started by hand; `stationthis up` gives each process free ports and prints them).
    # `--metrics-port` on the command line wins over METRICS_PORT.
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    # Seconds between ledger audits of the workflow worker, published as the gauge
    # stationthis_ledger_audit_discrepancies (0: never; only with metrics on).
    ledger_audit_interval: float = 300.0

    # LoRA training and use. A comfy worker shares its ComfyUI server's file system: it writes
    # training datasets under <folder>/input and puts LoRA files into models/loras. The folder
    # is configured, never read from the server (its reported argv is the server's word, and a
    # worker writing wherever a server says is a write-anywhere primitive). `comfyui_dirs`
    # names one folder per server URL (`URL=DIR,URL=DIR`); `comfyui_dir` is the folder of any
    # server not named there. A server with neither cannot train or place LoRA files.
    comfyui_dir: str = ""
    comfyui_dirs: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    lora_cache_bytes: int = 20 * 1024**3  # size cap of the LoRA files a worker keeps
    training_chunk_steps: int = 250  # steps per training prompt (a crash redoes at most this)
    training_chunk_timeout: float = 3600.0  # seconds one chunk may take, queue included
    max_loras_per_prompt: int = Field(default=3, ge=0)  # more is refused before any charge
    # Checkpoints the ComfyUI servers have besides the templates' defaults: file name -> family
    # (sdxl, flux, sd15). The `checkpoint` setting may name these or a template's default of
    # the same family as the template; the price follows the checkpoint's family.
    checkpoints: dict[str, str] = Field(default_factory=dict)
    # Operator-chosen model files over the templates' `choices` (none is a code constant):
    # upscale model per factor (`{"2": "RealESRGAN_x2.pth", "4": "RealESRGAN_x4plus.pth"}`,
    # over templates/upscale.json) and the base checkpoint each training family trains on
    # (`{"sd15": "v1-5-pruned-emaonly.safetensors"}`, over templates/train-lora.json).
    upscale_models: dict[str, str] = Field(default_factory=dict)
    training_checkpoints: dict[str, str] = Field(default_factory=dict)

    # Storage of uploads (store/storage.py). Free storage — sources no job used yet and
    # dataset images — is capped per user; unused sources and orphaned dataset images are
    # removed `source_ttl` seconds after their upload, exports `export_ttl` seconds after they
    # were made; the workflow worker sweeps every `storage_sweep_interval` seconds (0: never).
    storage_quota_bytes: int = 1024**3
    source_ttl: float = 24 * 3600.0
    export_ttl: float = 7 * 24 * 3600.0
    storage_sweep_interval: float = 3600.0
    # Largest ComfyUI output file read through /view and stored in GridFS: a bigger answer is
    # cut off while streaming and fails the job (refunded) instead of filling memory.
    comfy_max_output_bytes: int = 100 * 1024**2

    # Telegram
    telegram_bot_token: SecretStr | None = None
    # Bot API endpoints; point them at a local stand-in in tests (python-telegram-bot's
    # base_url / base_file_url: the token is appended to them).
    telegram_base_url: str = "https://api.telegram.org/bot"
    telegram_base_file_url: str = "https://api.telegram.org/file/bot"
    # Webhook mode: Telegram sends this in X-Telegram-Bot-Api-Secret-Token; generated per run
    # when empty. `listen` is the local address the webhook server binds.
    telegram_webhook_secret: SecretStr | None = None
    telegram_webhook_listen: str = "0.0.0.0"
    telegram_webhook_port: int = 8443
    # Per-user command rate limit: at most `rate` commands per `window` seconds.
    telegram_command_rate: int = 20
    telegram_command_window: float = 60.0

    # HTTP API and web page (`stationthis web`, adapters/web/). Requests per API key: at most
    # `api_request_rate` per `api_request_window` seconds, then 429 with Retry-After.
    web_host: str = "127.0.0.1"
    web_port: int = 8080
    api_request_rate: int = 120
    api_request_window: float = 60.0
    # Webhooks (README "Webhooks"): a job's events are retried with backoff for this many
    # seconds. Loopback receivers are refused like private ones unless allowed (tests only).
    webhook_deadline: float = 24 * 3600.0
    webhook_allow_loopback: bool = False
    # The key every account's webhook secret is derived from (store/webhooks.py): MongoDB
    # keeps only a random nonce per account, so a copy of the database signs nothing. Set it
    # in production (32+ random bytes, e.g. `openssl rand -base64 32`); the dev stack makes
    # one in `devstack_dir` (webhook-signing.key, mode 0600) and hands it to its processes.
    webhook_signing_key: SecretStr | None = None
    # Discord (adapters/discord): the token is held by the `stationthis discord-bot` process
    # only. The two endpoints point discord.py at real Discord (default) or the loopback
    # stand-in (standins/discord); `sync_commands` bulk-overwrites the global slash commands
    # at start; `upload_limit` is the largest attachment sent (Discord's default for a server
    # without boosts: 10 MiB); a larger result is sent as a link instead.
    discord_bot_token: SecretStr | None = None
    discord_api_base: str = "https://discord.com/api/v10"
    discord_gateway_url: str = "wss://gateway.discord.gg/"
    discord_sync_commands: bool = True
    discord_upload_limit: int = 10 * 1024**2
    discord_command_rate: int = 20  # slash commands per member per window (guild_rules.py)
    discord_command_window: float = 60.0

    @field_validator("admin_ids", mode="before")
    @classmethod
    def _split_admins(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [s.strip() for s in v.split(",") if s.strip()]
        return v

    @field_validator("comfyui_dirs", mode="before")
    @classmethod
    def _split_comfyui_dirs(cls, v: Any) -> Any:
        if isinstance(v, str):
            pairs = [p.strip() for p in v.split(",") if p.strip()]
            out: dict[str, str] = {}
            for pair in pairs:
                url, sep, folder = pair.rpartition("=")
                if not sep or not url.strip() or not folder.strip():
                    raise ValueError(f"COMFYUI_DIRS: expected URL=DIR, got {pair!r}")
                out[url.strip()] = folder.strip()
            return out
        return v

    @field_validator("devstack_dir", mode="after")
    @classmethod
    def _anchor_devstack(cls, v: Path) -> Path:
        return v if v.is_absolute() else REPO_ROOT / v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        import os

        path = Path(os.environ.get("STATIONTHIS_CONFIG", str(DEFAULT_YAML)))
        return (init_settings, env_settings, _YamlSource(settings_cls, path), file_secret_settings)

    def routing(self) -> Routing:
        """The queues and timeouts prepare writes into each job's plan (`JobPlan.route`)."""
        return Routing(
            queues=self.task_queues,
            render_timeout=self.render_timeout,
            heartbeat_timeout=self.comfy_heartbeat_timeout,
            chunk_timeout=self.training_chunk_timeout,
        )

    @property
    def comfyui_url_list(self) -> list[str]:
        return [u.strip().rstrip("/") for u in self.comfyui_urls.split(",") if u.strip()]

    def comfyui_dir_for(self, url: str) -> Path | None:
        """The configured folder of the ComfyUI server at `url`, or None (no training there)."""
        wanted = url.strip().rstrip("/")
        for key, folder in self.comfyui_dirs.items():
            if key.strip().rstrip("/") == wanted:
                return Path(folder)
        return Path(self.comfyui_dir) if self.comfyui_dir else None

    @property
    def standin_root(self) -> Path:
        """The embedded ComfyUI stand-in's folder (`stationthis up` starts it with this
        `--root` and passes the same folder to its comfy worker)."""
        return self.devstack_dir / "comfy"

    @property
    def dev_webhook_key_file(self) -> Path:
        """The dev stack's webhook signing key, made by `stationthis up` when none is set."""
        return self.devstack_dir / "webhook-signing.key"

    def webhook_key(self) -> bytes | None:
        """WEBHOOK_SIGNING_KEY, else the running dev stack's key file, else None (webhook
        secrets are then refused with a message naming the setting)."""
        if self.webhook_signing_key is not None:
            return self.webhook_signing_key.get_secret_value().encode()
        try:
            return self.dev_webhook_key_file.read_bytes().strip() or None
        except OSError:
            return None

    @property
    def runtime_file(self) -> Path:
        """Where `stationthis up` writes the addresses of the services it started."""
        return self.devstack_dir / "runtime.json"
