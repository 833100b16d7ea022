"""The one way StationThis starts, watches and stops service subprocesses.

The dev stack (`stationthis up`), the test fixtures and the chaos tests all run real servers
(Temporal dev server, the MongoDB-compatible server, the ComfyUI stand-in, workers) as child
processes. Doing that well has a few traps, so it lives in one place:

* Every child gets its own process group, so a stop signal reaches the whole tree and a Ctrl-C
  typed at the terminal reaches only the launcher, which then stops its children in order.
* No orphans, whatever happens to the parent. A normal exit runs an `atexit` finalizer that
  stops every child still running. A parent killed with SIGKILL runs nothing, so a tiny
  *guardian* process (one per parent, stdlib only) holds the read end of a pipe whose write end
  only the parent owns: when the parent dies for any reason the kernel closes the pipe, the
  guardian reads EOF and kills the process groups it was told about.
* A fixed port that is already taken is reported as `PortInUseError` naming the port and the
  service, before anything starts, instead of a health check that times out thirty seconds later.
* Readiness is a real protocol check (TCP accept, HTTP 200, MongoDB ping, Temporal client
  connect) polled until a deadline; a child that exits while we wait fails at once with the tail
  of its log.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"

HealthCheck = Callable[[], None]
"""Returns when the service answers; raises (anything) while it does not."""


# --------------------------------------------------------------------------------------- errors


class ServiceError(RuntimeError):
    """A managed service could not be started or did not become ready."""


class PortInUseError(ServiceError):
    """A fixed port a service needs is already taken by another process."""

    def __init__(self, service: str, port: int, host: str = LOOPBACK) -> None:
        super().__init__(
            f"port {port} on {host} is already in use, so {service} cannot listen there; "
            f"stop whatever is using port {port} or configure another port"
        )
        self.service = service
        self.port = port
        self.host = host


class ServiceExitedError(ServiceError):
    """The child exited while we were waiting for it to become ready."""


class ServiceNotReadyError(ServiceError):
    """The health check still failed when the deadline passed."""


# ------------------------------------------------------------------------------------- binaries


def venv_bin(name: str) -> Path:
    """Path of an executable shipped by a pinned wheel in this interpreter's venv.

    Looked up next to `sys.executable` rather than on PATH so that the pinned binary is used
    even when another `temporal` is installed on the machine.
    """
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise ServiceError(f"{name} not found at {path}: run `make install` to install the venv")
    return path


# ---------------------------------------------------------------------------------------- ports


def free_port(host: str = LOOPBACK) -> int:
    """A port the kernel just reported free on `host` (free now, not reserved: bind soon)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def port_in_use(port: int, host: str = LOOPBACK) -> bool:
    """True when a socket already listens on (host, port) or the port cannot be bound.

    SO_REUSEADDR matches what the servers themselves do, so connections lingering in TIME_WAIT
    after a restart do not count as "in use", while a live listener (also on 0.0.0.0) does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def ensure_ports_free(service: str, ports: Iterable[int], host: str = LOOPBACK) -> None:
    """Raise `PortInUseError` for the first fixed (non-zero) port that is taken."""
    for port in ports:
        if port and port_in_use(port, host):
            raise PortInUseError(service, port, host)


# -------------------------------------------------------------------------------- health checks


def tcp_check(host: str, port: int, timeout: float = 1.0) -> HealthCheck:
    """Ready when a TCP connection to (host, port) is accepted."""

    def check() -> None:
        with socket.create_connection((host, port), timeout=timeout):
            pass

    return check


def http_check(url: str, expect_status: int = 200, timeout: float = 2.0) -> HealthCheck:
    """Ready when GET `url` answers `expect_status`."""

    def check() -> None:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                status = resp.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        if status != expect_status:
            raise ServiceNotReadyError(f"GET {url} answered {status}, expected {expect_status}")

    return check


def mongo_check(uri: str, timeout: float = 2.0) -> HealthCheck:
    """Ready when a MongoDB `ping` on `uri` succeeds."""

    def check() -> None:
        import pymongo

        ms = int(timeout * 1000)
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            uri, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms
        )
        try:
            client.admin.command("ping")
        finally:
            client.close()

    return check


def run_coroutine_sync(
    factory: Callable[[], Coroutine[Any, Any, Any]], timeout: float = 10.0
) -> Any:
    """Run a coroutine to completion from sync code, even inside a running event loop.

    Health checks are called from plain threads and from code an asyncio test may be running;
    a private thread with its own loop works in both cases.
    """
    result: list[Any] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(factory()))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="health-check", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"coroutine did not finish within {timeout:.1f}s")
    if error:
        raise error[0]
    return result[0] if result else None


def temporal_check(
    address: str,
    namespace: str = "default",
    search_attributes: Mapping[str, str] | Iterable[str] = (),
    timeout: float = 5.0,
) -> HealthCheck:
    """Ready when a Temporal client connects and the namespace knows `search_attributes`.

    Checking the attributes as well as the connection means that a workflow started right after
    "ready" can set `UserId` etc. without failing its first task (temporal-testing.md, gotcha 1).
    Given as a mapping (name -> type, e.g. "Keyword"), missing ones are registered: a dev
    server whose SQLite file predates an attribute (`ParentJob`) does not add it by itself.
    """
    types = dict(search_attributes) if isinstance(search_attributes, Mapping) else {}
    wanted = set(search_attributes)

    async def probe() -> None:
        from temporalio.api.enums.v1 import IndexedValueType
        from temporalio.api.operatorservice.v1 import (
            AddSearchAttributesRequest,
            ListSearchAttributesRequest,
        )
        from temporalio.client import Client

        client = await Client.connect(address, namespace=namespace)
        if wanted:
            resp = await client.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace=namespace)
            )
            missing = wanted - set(resp.custom_attributes)
            known = {m: types[m] for m in missing if m in types}
            if known:
                await client.operator_service.add_search_attributes(
                    AddSearchAttributesRequest(
                        namespace=namespace,
                        search_attributes={
                            name: IndexedValueType.Value(f"INDEXED_VALUE_TYPE_{kind.upper()}")
                            for name, kind in known.items()
                        },
                    )
                )
            if missing:
                raise ServiceNotReadyError(f"search attributes not registered yet: {missing}")

    def check() -> None:
        run_coroutine_sync(probe, timeout)

    return check


def all_checks(*checks: HealthCheck) -> HealthCheck:
    """One check that passes when every given check passes, in order."""

    def check() -> None:
        for c in checks:
            c()

    return check


# ------------------------------------------------------------------------------------- guardian

# Runs as `python -I -S -c <this>`: stdlib only, no project imports, starts in ~20 ms.
# Protocol on stdin: "add <pid> <starttime>" / "del <pid>". EOF means the parent is gone.
_GUARDIAN_SOURCE = r"""
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
def start_time(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] == "Z":
        return None
    return fields[19]
watched = {}
for line in sys.stdin:
    parts = line.split()
    if len(parts) == 3 and parts[0] == "add":
        watched[int(parts[1])] = parts[2]
    elif len(parts) == 2 and parts[0] == "del":
        watched.pop(int(parts[1]), None)
live = [pid for pid, st in watched.items() if start_time(pid) == st]
for sig in (signal.SIGTERM, signal.SIGKILL):
    for pid in live:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, sig)
            except OSError:
                pass
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(start_time(p) for p in live):
        time.sleep(0.05)
"""


def _proc_start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat: tells a process apart from a later one reusing its pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[19]


class _Guardian:
    """Kills registered children if this process dies without running its finalizers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner_pid = 0

    def _pipe(self) -> IO[bytes] | None:
        if self._proc is None or self._owner_pid != os.getpid() or self._proc.poll() is not None:
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", _GUARDIAN_SOURCE],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError:
                log.warning("could not start the process guardian", exc_info=True)
                self._proc = None
                return None
            self._owner_pid = os.getpid()
        return self._proc.stdin

    def _send(self, line: str) -> None:
        with self._lock:
            pipe = self._pipe()
            if pipe is None:
                return
            try:
                pipe.write(line.encode())
                pipe.flush()
            except OSError:
                log.warning("process guardian is gone; orphan protection is off", exc_info=True)

    def watch(self, pid: int) -> None:
        """Kill `pid` (and its process group if it leads one) when this process dies."""
        started = _proc_start_time(pid)
        if started is not None:
            self._send(f"add {pid} {started}\n")

    def unwatch(self, pid: int) -> None:
        """`pid` was stopped normally; forget it."""
        if self._proc is not None and self._owner_pid == os.getpid():
            self._send(f"del {pid}\n")


_guardian = _Guardian()


def guard_pid(pid: int) -> None:
    """Make sure `pid` dies with this process, even on SIGKILL.

    For servers started by code we do not control (the Temporal SDK's `start_local`), which
    therefore cannot be a `ManagedProcess`.
    """
    _guardian.watch(pid)


def unguard_pid(pid: int) -> None:
    """Undo `guard_pid` for a process that has been stopped normally."""
    _guardian.unwatch(pid)


# ------------------------------------------------------------------------------ ManagedProcess

_live: set[ManagedProcess] = set()
_live_lock = threading.Lock()


class ManagedProcess:
    """One service subprocess: start, wait for health, stop, crash on purpose, restart.

    The argv is fixed at construction (ports included), so `restart()` brings the service back
    on the same address; callers that want a free port call `free_port()` first.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        *,
        port: int | None = None,
        ports: Sequence[int] = (),
        health: HealthCheck | None = None,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        """Describe a service; nothing starts until `start()`.

        Args:
            name: Used in logs and errors ("temporal", "mongodb", ...).
            argv: Command line; argv[0] should be an absolute path (see `venv_bin`).
            port: The service's main port (reported by `.port`, checked for "in use").
            ports: Further fixed ports the service binds (checked for "in use" too).
            health: Readiness check polled by `wait_ready`; default is TCP connect to `port`.
            log_path: File receiving stdout and stderr (appended); default discards them.
            env: Full environment of the child (default: this process's environment).
            cwd: Working directory of the child.
            ready_timeout: Default deadline of `wait_ready`, seconds.
            stop_timeout: Seconds between SIGTERM and SIGKILL in `stop()`.
        """
        self.name = name
        self.argv = [os.fspath(a) for a in argv]
        self.port = port
        self.ports = [p for p in (port, *ports) if p]
        if health is None and port:
            health = tcp_check(LOOPBACK, port)
        self.health = health
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.starts = 0
        self._popen: subprocess.Popen[bytes] | None = None
        self._stopping = False
        self._signalled = False

    def __repr__(self) -> str:
        return f"ManagedProcess({self.name!r}, pid={self.pid}, port={self.port})"

    # ------------------------------------------------------------------ state

    @property
    def pid(self) -> int | None:
        """Pid of the current child (also its process group id), or None before `start()`."""
        return self._popen.pid if self._popen is not None else None

    @property
    def returncode(self) -> int | None:
        """Exit status once the child has exited (negative: killed by that signal)."""
        return self._popen.poll() if self._popen is not None else None

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def exited_unexpectedly(self) -> bool:
        """True when the child died without `stop()` asking it to (what a supervisor restarts).

        `kill()` counts as unexpected on purpose: it simulates a crash.
        """
        return self._popen is not None and not self._stopping and self._popen.poll() is not None

    def log_tail(self, lines: int = 20) -> str:
        """Last lines of the child's log, for error messages."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    # -------------------------------------------------------------- lifecycle

    def start(self) -> ManagedProcess:
        """Spawn the child in a new process group (non-blocking; see `wait_ready`)."""
        if self.is_running():
            raise ServiceError(f"{self.name} is already running (pid {self.pid})")
        ensure_ports_free(self.name, self.ports)
        out: IO[bytes] | int = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            out = self.log_path.open("ab")
            out.write(f"\n=== {time.strftime('%F %T')} start: {' '.join(self.argv)}\n".encode())
            out.flush()
        try:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise ServiceError(f"cannot start {self.name}: {exc}") from exc
        finally:
            if not isinstance(out, int):
                out.close()
        self._stopping = False
        self.starts += 1
        with _live_lock:
            _live.add(self)
        _guardian.watch(self._popen.pid)
        log.debug("started %s pid %s: %s", self.name, self._popen.pid, self.argv)
        return self

    def wait_ready(self, timeout: float | None = None) -> None:
        """Poll the health check until it passes; fail fast if the child exits.

        Raises:
            PortInUseError: the child exited complaining that its address is in use.
            ServiceExitedError: the child exited for another reason.
            ServiceNotReadyError: still unhealthy at the deadline.
        """
        deadline = time.monotonic() + (self.ready_timeout if timeout is None else timeout)
        last: BaseException | None = None
        while True:
            code = self.returncode
            if self._popen is None or code is not None:
                self._raise_exited(code)
            if self.health is None:
                return
            try:
                self.health()
            except Exception as exc:
                last = exc
            else:
                return
            if time.monotonic() >= deadline:
                raise ServiceNotReadyError(
                    f"{self.name} not ready after {timeout or self.ready_timeout:.0f}s "
                    f"(last check: {last!r}); log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def _raise_exited(self, code: int | None) -> None:
        tail = self.log_tail()
        lowered = tail.lower()
        if "address already in use" in lowered or "eaddrinuse" in lowered:
            busy = next((p for p in self.ports if str(p) in tail), self.port or 0)
            raise PortInUseError(self.name, busy)
        raise ServiceExitedError(
            f"{self.name} exited with status {code} before it was ready; "
            f"log {self.log_path}:\n{tail}"
        )

    def send_stop_signal(self) -> None:
        """First half of `stop()`: SIGTERM to the group, so many children stop in parallel."""
        self._stopping = True
        self._signalled = self.is_running()
        if self._signalled:
            assert self._popen is not None
            _signal_group(self._popen.pid, signal.SIGTERM)

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM the process group, SIGKILL it after `timeout`; returns the exit status."""
        self.send_stop_signal()
        return self.wait_stopped(timeout)

    def wait_stopped(self, timeout: float | None = None) -> int | None:
        """Second half of `stop()`: wait, escalate to SIGKILL, reap, forget."""
        if self._popen is None:
            return None
        limit = self.stop_timeout if timeout is None else timeout
        try:
            code = self._popen.wait(limit)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs; killing it", self.name, limit)
            _signal_group(self._popen.pid, signal.SIGKILL)
            code = self._popen.wait()
        if self._signalled:
            # Children of the service that ignored SIGTERM must not outlive it. (Skipped for a
            # child that was already dead: its group id may since belong to someone else.)
            _signal_group(self._popen.pid, signal.SIGKILL)
        self._forget()
        return code

    def kill(self) -> None:
        """SIGKILL the whole group at once, like a crash (chaos tests); the child is reaped.

        Not marked as intended, so a supervisor sees `exited_unexpectedly()` and restarts it.
        """
        if self._popen is None:
            return
        _signal_group(self._popen.pid, signal.SIGKILL)
        self._popen.wait()
        self._forget(keep_live=True)

    def restart(self, wait: bool = True, timeout: float | None = None) -> ManagedProcess:
        """Stop (if running), start again on the same ports, and by default wait until ready."""
        if self.is_running():
            self.stop()
        self.start()
        if wait:
            self.wait_ready(timeout)
        return self

    def _forget(self, keep_live: bool = False) -> None:
        if self._popen is not None:
            _guardian.unwatch(self._popen.pid)
        if not keep_live:
            with _live_lock:
                _live.discard(self)

    def __enter__(self) -> ManagedProcess:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_all(processes: Iterable[ManagedProcess], timeout: float = 10.0) -> None:
    """Stop several children in parallel: SIGTERM to all, then one shared deadline."""
    procs = list(processes)
    for p in procs:
        p.send_stop_signal()
    deadline = time.monotonic() + timeout
    for p in procs:
        p.wait_stopped(max(0.0, deadline - time.monotonic()))


@atexit.register
def _stop_leftovers() -> None:
    """Finalizer: a parent that exits normally never leaves a child behind."""
    with _live_lock:
        leftovers = list(_live)
    if leftovers:
        log.debug("stopping leftover processes at exit: %s", leftovers)
        stop_all(leftovers, timeout=5.0)
