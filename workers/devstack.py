"""The embedded dev stack: Temporal dev server, MongoDB-compatible server, ComfyUI stand-in.

`stationthis up`, `stationthis demo` and the integration tests all start the stack through
`DevStack`, so the three of them run the same services the same way. A service is skipped when
the configuration points at an external one (TEMPORAL_ADDRESS, MONGODB_URI, COMFYUI_URLS).

Once every service answers its health check the stack:

1. runs the post-ready hooks (e.g. loading the bundled templates into MongoDB),
2. starts the extra commands (Temporal workers), passing the endpoints as environment variables,
3. writes `<devstack_dir>/runtime.json`, from which other processes (`stationthis make`, a
   worker started by hand) find the running stack through `resolve_endpoints(config)`.

While it runs, a supervisor restarts any process that dies unexpectedly (a bounded number of
times); stopping the stack stops every child, workers first, and removes runtime.json.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from workers.config import REPO_ROOT, Config
from workers.processes import (
    LOOPBACK,
    ManagedProcess,
    ServiceError,
    all_checks,
    ensure_ports_free,
    free_port,
    http_check,
    mongo_check,
    port_in_use,
    stop_all,
    temporal_check,
    venv_bin,
)

log = logging.getLogger(__name__)

RUNTIME_VERSION = 1


class StackNotRunningError(RuntimeError):
    """No external service is configured and no live `stationthis up` was found."""


class StackAlreadyRunningError(ServiceError):
    """Another live stack already owns this devstack directory."""


@dataclass(frozen=True)
class Endpoints:
    """Where the services of a running stack answer: what every client needs to connect."""

    temporal_address: str
    namespace: str
    mongodb_uri: str
    comfyui_urls: tuple[str, ...]
    temporal_ui_url: str = ""

    def as_env(self) -> dict[str, str]:
        """Environment variables that point a `Config` (in a child process) at these services."""
        return {
            "TEMPORAL_ADDRESS": self.temporal_address,
            "TEMPORAL_NAMESPACE": self.namespace,
            "MONGODB_URI": self.mongodb_uri,
            "COMFYUI_URLS": ",".join(self.comfyui_urls),
            "TEMPORAL_UI_URL": self.temporal_ui_url,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "temporal_address": self.temporal_address,
            "namespace": self.namespace,
            "mongodb_uri": self.mongodb_uri,
            "comfyui_urls": list(self.comfyui_urls),
            "temporal_ui_url": self.temporal_ui_url,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Endpoints:
        return cls(
            temporal_address=str(data["temporal_address"]),
            namespace=str(data["namespace"]),
            mongodb_uri=str(data["mongodb_uri"]),
            comfyui_urls=tuple(data["comfyui_urls"]),
            temporal_ui_url=str(data.get("temporal_ui_url", "")),
        )


@dataclass
class ExtraCommand:
    """A process started after the services are ready (a Temporal worker, say) and supervised.

    It receives the endpoints as TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, MONGODB_URI and
    COMFYUI_URLS on top of this process's environment and `env`.
    """

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    health: Callable[[Endpoints], Callable[[], None]] | None = None
    """Optional readiness check built from the endpoints; None means "started is ready"."""
    metrics: bool = False
    """Give it free metrics ports (METRICS_PORT=N: StationThis on N, the Temporal SDK on N+1)."""


PostReadyHook = Callable[[Endpoints, Config], None]
"""Runs once the services answer and before the extra commands start."""


def stationthis_command(*args: str) -> list[str]:
    """argv running a `stationthis` subcommand with this interpreter (no PATH lookup)."""
    return [sys.executable, "-m", "adapters.cli.main", *args]


def worker_commands(config: Config) -> list[ExtraCommand]:
    """The processes `stationthis up` supervises unless `--no-workers` is given: the workflow
    worker, the media worker (queue `media`), the safety worker (queue `safety`), one comfy
    worker per ComfyUI server (each of COMFYUI_URLS, or the embedded stand-in with
    `comfyui.slots` slots), and the Telegram bot
    when TELEGRAM_BOT_TOKEN is set (it alone holds the token and serves `deliver-telegram`),
    and the Discord bot when DISCORD_BOT_TOKEN is set (likewise, `deliver-discord`)."""
    slots = str(config.comfyui.slots)
    urls = config.comfyui_url_list
    comfy = (
        [
            ExtraCommand(
                f"comfy-worker-{i + 1}" if len(urls) > 1 else "comfy-worker",
                stationthis_command("comfy-worker", "--url", url, "--slots", slots),
                metrics=True,
            )
            for i, url in enumerate(urls)
        ]
        if urls
        else [
            # The embedded stand-in's folder is ours: passed explicitly, never read from the
            # server's answer.
            ExtraCommand(
                "comfy-worker",
                stationthis_command(
                    "comfy-worker", "--slots", slots, "--comfyui-dir", str(config.standin_root)
                ),
                metrics=True,
            )
        ]
    )
    commands = [
        ExtraCommand("worker", stationthis_command("worker"), metrics=True),
        *comfy,
        ExtraCommand("media-worker", stationthis_command("media-worker"), metrics=True),
    ]
    # The output classifier: the stand-in's images carry the stand-in's mark, so the embedded
    # stack runs the marker classifier; real servers get NudeNet when the `safety` extra is
    # installed (without it the operator's policy must stay `off`; README "Content safety").
    classifier = "marker" if not urls else "nudenet"
    if classifier == "marker" or importlib.util.find_spec("nudenet") is not None:
        commands.append(
            ExtraCommand(
                "safety-worker",
                stationthis_command("safety-worker", "--classifier", classifier),
                metrics=True,
            )
        )
    if config.telegram_bot_token is not None:
        commands.append(ExtraCommand("bot", stationthis_command("bot"), metrics=True))
    # The HTTP API and web page (`stationthis web`), ready once it answers /healthz.
    web = web_url(config)
    commands.append(
        ExtraCommand(
            "web",
            stationthis_command("web", "--host", config.web_host, "--port", str(config.web_port)),
            health=lambda _endpoints: http_check(f"{web}/healthz"),
            # A test stack's webhook receivers listen on loopback (never in production).
            env={"WEBHOOK_ALLOW_LOOPBACK": "true"} if config.webhook_allow_loopback else {},
        )
    )
    if config.discord_bot_token is not None:  # it alone holds its token: `deliver-discord`
        commands.append(ExtraCommand("discord-bot", stationthis_command("discord-bot")))
    return commands


def web_url(config: Config) -> str:
    """Where `stationthis web` started by `up` serves (printed by `up`)."""
    return f"http://{config.web_host}:{config.web_port}"


def metrics_port_pair() -> int:
    """A free port N whose N+1 is free too: a process's StationThis and SDK metrics ports."""
    for _ in range(50):
        port = free_port()
        if port < 65535 and not port_in_use(port + 1):
            return port
    raise ServiceError("no two adjacent free ports for metrics")


def metrics_urls(host: str, port: int) -> tuple[str, str]:
    """The two metrics URLs of a process serving on `port` (see workers/metrics.py)."""
    return f"http://{host}:{port}/metrics", f"http://{host}:{port + 1}/metrics"


def _load_templates(endpoints: Endpoints, config: Config) -> None:
    """Create the indexes and load the bundled templates (idempotent: same hash, no change)."""
    from store.db import Stores

    stores = Stores.from_uri(endpoints.mongodb_uri, config.mongodb_database)
    try:
        stores.ensure_indexes()
        for result in stores.templates.load_bundled():
            log.info("template %s", result)
    finally:
        stores.close()


def default_hooks(config: Config) -> list[PostReadyHook]:
    """Post-ready hooks every stack runs."""
    del config
    return [_load_templates]


def _pid_alive(pid: int, create_time: float | None) -> bool:
    """True when `pid` runs and is the same process as recorded (pids are recycled)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(proc.create_time() - create_time) < 0.01
    except psutil.Error:
        return False


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def read_runtime(config: Config) -> dict[str, Any] | None:
    """The runtime record of a *live* stack in `config.devstack_dir`, or None.

    Live means the launcher and every recorded service process still run; a record left by a
    stack that was killed is stale and ignored.
    """
    path = config.runtime_file
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("version") != RUNTIME_VERSION:
        return None
    procs = [data.get("launcher", {}), *data.get("processes", {}).values()]
    for rec in procs:
        if not _pid_alive(int(rec.get("pid", 0)), rec.get("create_time")):
            return None
    return data


def load_runtime(config: Config) -> Endpoints:
    """Endpoints recorded by the running `stationthis up` (ignores external settings).

    Raises:
        StackNotRunningError: no runtime.json, or its processes are gone.
    """
    data = read_runtime(config)
    if data is None:
        raise StackNotRunningError(
            f"stack not running: run `stationthis up` (no live stack recorded in "
            f"{config.runtime_file}), or set TEMPORAL_ADDRESS, MONGODB_URI and COMFYUI_URLS"
        )
    return Endpoints.from_json(data["endpoints"])


def resolve_endpoints(config: Config) -> Endpoints:
    """Where to find each service: the environment/config first, else the running dev stack.

    Raises:
        StackNotRunningError: a service is not configured and no live stack is recorded.
    """
    external = _external(config)
    if external.temporal_address and external.mongodb_uri and external.comfyui_urls:
        return external
    running = load_runtime(config)
    return Endpoints(
        temporal_address=external.temporal_address or running.temporal_address,
        namespace=external.namespace if external.temporal_address else running.namespace,
        mongodb_uri=external.mongodb_uri or running.mongodb_uri,
        comfyui_urls=external.comfyui_urls or running.comfyui_urls,
        temporal_ui_url=(
            external.temporal_ui_url if external.temporal_address else running.temporal_ui_url
        ),
    )


def _external(config: Config) -> Endpoints:
    """The services the configuration points at; empty fields are to be started locally."""
    return Endpoints(
        temporal_address=config.temporal_address,
        namespace=config.temporal_namespace,
        mongodb_uri=config.mongodb_uri,
        comfyui_urls=tuple(config.comfyui_url_list),
        temporal_ui_url=config.temporal_ui_url,
    )


def ensure_dev_webhook_key(config: Config) -> None:
    """Make the dev stack's webhook signing key once (mode 0600), unless the operator set
    WEBHOOK_SIGNING_KEY: kept across restarts, so the accounts' webhook secrets are too."""
    path = config.dev_webhook_key_file
    if config.webhook_signing_key is not None or path.exists():
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another launcher made it meanwhile
        return
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(32) + "\n")


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


# -------------------------------------------------------------------------------- DevStack


def mongo_argv(port: int, data_dir: Path, sync_on_commit: bool = True) -> list[str]:
    """Command line of the MongoDB-compatible server (shared with the test fixtures).

    `--sync-on-commit`: without it, a write acknowledged a moment before the server is killed
    with SIGKILL is gone after the restart (checked on secantusdb 0.7.0b3), which would break
    the "nothing is lost when the database restarts" promise the chaos tests check.

    Run through `workers.secantusd`, which prunes the server's retryable-write registry in
    constant time (without it every write slowed from ~1 ms to 8–10 ms once 10,000 writes had
    been made within 30 minutes: about 800 make jobs).
    """
    argv = [
        sys.executable,  # secantusd-py with its retryable-write prune in constant time
        "-m",
        "workers.secantusd",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--storage-path",
        str(data_dir),
        "--log-level",
        "WARNING",
    ]
    if sync_on_commit:
        argv.append("--sync-on-commit")
    return argv


def _child_env(drop_prefixes: Sequence[str] = ()) -> dict[str, str]:
    env = dict(os.environ)
    for key in list(env):
        if any(key.upper().startswith(p) for p in drop_prefixes):
            del env[key]
    return env


class DevStack:
    """Starts, supervises and stops the dev stack described by a `Config`.

    Usage::

        with DevStack(config) as stack:
            client = await Client.connect(stack.endpoints.temporal_address, ...)

    `supervise=True` restarts crashed processes from a background thread (the CLI calls
    `run()` instead, which supervises in the foreground until asked to stop).
    """

    def __init__(
        self,
        config: Config,
        *,
        extra: Sequence[ExtraCommand] | None = None,
        hooks: Sequence[PostReadyHook] | None = None,
        workers: bool = True,
        supervise: bool = False,
        max_restarts: int = 3,
        ready_timeout: float = 60.0,
        stop_timeout: float = 10.0,
    ) -> None:
        """Describe the stack; nothing starts until `start()` / `with`.

        Args:
            config: Ports, directories, namespace, search attributes, external services.
            extra: Commands started after the services are ready; default `worker_commands()`.
            hooks: Post-ready hooks; default `default_hooks()`.
            workers: False drops the default worker commands (`stationthis up --no-workers`).
            supervise: Restart crashed processes from a background thread.
            max_restarts: Restarts allowed per process before the supervisor gives up.
            ready_timeout: Seconds each service may take to pass its health check.
            stop_timeout: Seconds between SIGTERM and SIGKILL when stopping.
        """
        self.config = config
        if extra is None:
            extra = worker_commands(config) if workers else []
        self.extra = list(extra)
        self.hooks = list(default_hooks(config) if hooks is None else hooks)
        self.supervise = supervise
        self.max_restarts = max_restarts
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.processes: dict[str, ManagedProcess] = {}
        # Process name -> (StationThis metrics URL, Temporal SDK metrics URL)
        self.metrics_urls: dict[str, tuple[str, str]] = {}
        self.restarts: dict[str, int] = {}
        self.ready_seconds: float | None = None
        self.failed: str | None = None
        self._endpoints: Endpoints | None = None
        self._lock = threading.RLock()
        self._stop_event = threading.Event()
        self._supervisor: threading.Thread | None = None

    @property
    def endpoints(self) -> Endpoints:
        if self._endpoints is None:
            raise StackNotRunningError("the dev stack has not been started")
        return self._endpoints

    @property
    def log_dir(self) -> Path:
        return self.config.devstack_dir / "logs"

    # ------------------------------------------------------------ building

    def _services(self) -> tuple[list[ManagedProcess], Endpoints]:
        """The ManagedProcesses to start and the endpoints they will have."""
        cfg = self.config
        ext = _external(cfg)
        root = cfg.devstack_dir
        procs: list[ManagedProcess] = []

        address, namespace, ui_url = ext.temporal_address, ext.namespace, ext.temporal_ui_url
        if not address:
            t = cfg.temporal
            port = t.port or free_port()
            ui_port = t.ui_port or free_port()
            address, namespace = f"{LOOPBACK}:{port}", t.namespace
            ui_url = f"http://{LOOPBACK}:{ui_port}"
            argv = [
                str(venv_bin("temporal")),
                "server",
                "start-dev",
                "--ip",
                LOOPBACK,
                "--port",
                str(port),
                "--ui-port",
                str(ui_port),
                "--db-filename",
                str(root / t.db_filename),
                "--ui-disable-news-fetch",
                "--log-level",
                "warn",
                *t.tuning_args(),
            ]
            if namespace != "default":
                argv += ["--namespace", namespace]
            for key, kind in t.search_attributes.items():
                argv += ["--search-attribute", f"{key}={kind}"]
            procs.append(
                ManagedProcess(
                    "temporal",
                    argv,
                    port=port,
                    ports=[ui_port],
                    health=all_checks(
                        temporal_check(address, namespace, t.search_attributes),
                        http_check(ui_url),
                    ),
                    log_path=self.log_dir / "temporal.log",
                    # The CLI reads TEMPORAL_* (address, profile...) for itself: keep it clean.
                    env=_child_env(drop_prefixes=("TEMPORAL_",)),
                    cwd=root,
                    ready_timeout=self.ready_timeout,
                    stop_timeout=self.stop_timeout,
                )
            )

        mongodb_uri = ext.mongodb_uri
        if not mongodb_uri:
            port = cfg.mongodb.port or free_port()
            mongodb_uri = f"mongodb://{LOOPBACK}:{port}/?directConnection=true"
            procs.append(
                ManagedProcess(
                    "mongodb",
                    mongo_argv(port, root / cfg.mongodb.data_dir, cfg.mongodb.sync_on_commit),
                    port=port,
                    health=mongo_check(mongodb_uri),
                    log_path=self.log_dir / "mongodb.log",
                    cwd=root,  # it auto-discovers ./secantusd.toml: not the user's cwd
                    ready_timeout=self.ready_timeout,
                    stop_timeout=self.stop_timeout,
                )
            )

        comfyui_urls = ext.comfyui_urls
        if not comfyui_urls:
            if importlib.util.find_spec("standins.comfyui.__main__") is None:
                raise ServiceError(
                    "the ComfyUI stand-in (python -m standins.comfyui) is not installed; "
                    "set COMFYUI_URLS to point at a ComfyUI server instead"
                )
            port = cfg.comfyui.port or free_port()
            url = f"http://{LOOPBACK}:{port}"
            comfyui_urls = (url,)
            procs.append(
                ManagedProcess(
                    "comfyui",
                    [
                        sys.executable,
                        "-m",
                        "standins.comfyui",
                        "--host",
                        LOOPBACK,
                        "--port",
                        str(port),
                        "--root",
                        str(cfg.standin_root),
                        "--step-delay",
                        str(cfg.comfyui.step_delay),
                    ],
                    port=port,
                    health=http_check(f"{url}/system_stats"),
                    log_path=self.log_dir / "comfyui.log",
                    cwd=REPO_ROOT,
                    ready_timeout=self.ready_timeout,
                    stop_timeout=self.stop_timeout,
                )
            )

        return procs, Endpoints(address, namespace, mongodb_uri, comfyui_urls, ui_url)

    def _extras_for(self, endpoints: Endpoints) -> list[ManagedProcess]:
        env = {**os.environ, **endpoints.as_env()}
        env.pop("METRICS_PORT", None)  # one port per process, never one for all
        key = self.config.webhook_key()
        if key is not None:  # the stack's own key, whatever devstack_dir a child reads
            env["WEBHOOK_SIGNING_KEY"] = key.decode()
        procs = []
        for cmd in self.extra:
            health = cmd.health(endpoints) if cmd.health is not None else None
            metrics_env: dict[str, str] = {}
            if cmd.metrics:
                port = metrics_port_pair()
                metrics_env = {"METRICS_PORT": str(port), "METRICS_HOST": LOOPBACK}
                self.metrics_urls[cmd.name] = metrics_urls(LOOPBACK, port)
                if health is None:  # ready once it serves metrics (it is about to connect)
                    health = http_check(self.metrics_urls[cmd.name][0])
            procs.append(
                ManagedProcess(
                    cmd.name,
                    cmd.argv,
                    health=health,
                    log_path=self.log_dir / f"{cmd.name}.log",
                    env={**env, **cmd.env, **metrics_env},
                    cwd=REPO_ROOT,
                    ready_timeout=self.ready_timeout,
                    stop_timeout=self.stop_timeout,
                )
            )
        return procs

    # ----------------------------------------------------------- lifecycle

    def start(self) -> Endpoints:
        """Start every service, wait until healthy, run hooks, start extras, write runtime.json.

        On any failure (including Ctrl-C) everything already started is stopped again.
        """
        began = time.monotonic()
        cfg = self.config
        self._stop_event = threading.Event()
        live = read_runtime(cfg)
        if live is not None:
            raise StackAlreadyRunningError(
                f"a dev stack is already running from {cfg.devstack_dir} "
                f"(launcher pid {live['launcher']['pid']}); stop it first"
            )
        cfg.devstack_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        ensure_dev_webhook_key(cfg)
        services, endpoints = self._services()
        # Every fixed port is checked before anything starts: a busy port leaves nothing behind.
        for proc in services:
            ensure_ports_free(proc.name, proc.ports)
        try:
            for proc in services:
                self._add(proc).start()
            for proc in services:
                proc.wait_ready()
                log.info("%s ready (pid %s)", proc.name, proc.pid)
            self._endpoints = endpoints
            for hook in self.hooks:
                hook(endpoints, cfg)
            extras = [self._add(p) for p in self._extras_for(endpoints)]
            for proc in extras:
                proc.start()
            for proc in extras:
                proc.wait_ready()
            self._write_runtime()
        except BaseException:
            self.stop()
            raise
        self.ready_seconds = time.monotonic() - began
        log.info("dev stack ready in %.2fs", self.ready_seconds)
        if self.supervise:
            self._supervisor = threading.Thread(
                target=self._supervise_loop, name="devstack-supervisor", daemon=True
            )
            self._supervisor.start()
        return endpoints

    def _add(self, proc: ManagedProcess) -> ManagedProcess:
        self.processes[proc.name] = proc
        self.restarts.setdefault(proc.name, 0)
        return proc

    def stop(self) -> None:
        """Stop the extras first, then the services, in parallel; remove runtime.json."""
        self._stop_event.set()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=self.ready_timeout + 5)
        with self._lock:
            names = list(self.processes)
            service_names = {"temporal", "mongodb", "comfyui"}
            extras = [self.processes[n] for n in names if n not in service_names]
            services = [self.processes[n] for n in names if n in service_names]
            stop_all(reversed(extras), self.stop_timeout)
            stop_all(services, self.stop_timeout)
            self._remove_runtime()

    def _write_runtime(self) -> None:
        data = {
            "version": RUNTIME_VERSION,
            "launcher": {"pid": os.getpid(), "create_time": _create_time(os.getpid())},
            "endpoints": self.endpoints.to_json(),
            "processes": {
                name: {
                    "pid": p.pid,
                    "create_time": _create_time(p.pid) if p.pid else None,
                    "port": p.port,
                    "log": str(p.log_path),
                    "metrics": list(self.metrics_urls.get(name, ())),
                }
                for name, p in self.processes.items()
            },
            "devstack_dir": str(self.config.devstack_dir),
        }
        _write_json_atomic(self.config.runtime_file, data)

    def _remove_runtime(self) -> None:
        path = self.config.runtime_file
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(path.read_text())
            if data.get("launcher", {}).get("pid") == os.getpid():
                path.unlink()

    # ---------------------------------------------------------- supervision

    def check_once(self) -> bool:
        """Restart every process that died unexpectedly; False once one ran out of restarts."""
        with self._lock:
            for name, proc in self.processes.items():
                if self._stop_event.is_set() or not proc.exited_unexpectedly():
                    continue
                log.warning(
                    "%s (pid %s) exited unexpectedly with status %s; log tail:\n%s",
                    name,
                    proc.pid,
                    proc.returncode,
                    proc.log_tail(10),
                )
                while self.restarts[name] < self.max_restarts:
                    # Back off a little more each time, so a crash loop does not spin.
                    if self._stop_event.wait(min(0.25 * 2 ** self.restarts[name], 4.0)):
                        return True
                    self.restarts[name] += 1
                    log.warning(
                        "restarting %s (%d/%d)", name, self.restarts[name], self.max_restarts
                    )
                    try:
                        proc.restart()
                    except ServiceError:
                        log.exception("restart of %s failed", name)
                        continue
                    self._write_runtime()
                    break
                else:
                    self.failed = name
                    log.error(
                        "%s keeps failing; giving up after %d restarts", name, self.restarts[name]
                    )
                    return False
        return True

    def _supervise_loop(self, interval: float = 0.5) -> None:
        while not self._stop_event.wait(interval):
            if not self.check_once():
                return

    def run(self, stop: threading.Event, interval: float = 0.5) -> int:
        """Supervise in the foreground until `stop` is set (0) or a process keeps dying (1)."""
        while not stop.wait(interval):
            if not self.check_once():
                return 1
        return 0

    def __enter__(self) -> DevStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_stack(config: Config, **kwargs: Any) -> Iterator[Endpoints]:
    """`with running_stack(config) as endpoints:` for callers that need only the addresses."""
    with DevStack(config, **kwargs) as stack:
        yield stack.endpoints
