"""Process lifecycle shared by the test servers: start, wait until ready, stop, kill, restart."""

from __future__ import annotations

import contextlib
import ctypes
import json
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Self, TypeVar

T = TypeVar("T")

__all__ = [
    "INSTALL_HINT",
    "ServerProcess",
    "ServerStartError",
    "ServerUnavailableError",
    "ephemeral_range",
    "free_port",
    "http_get_json",
    "http_ok",
    "log_tail",
    "poll_until",
    "require_executable",
    "stop_process",
    "wait_until",
]

INSTALL_HINT = "run scripts/install-test-deps"


class ServerStartError(RuntimeError):
    """A server did not become ready; the message carries the tail of its log."""


class ServerUnavailableError(ServerStartError):
    """A server cannot even be launched: its binary or jars are not installed."""


#: Lowest port :func:`free_port` hands out (below it: well-known and
#: commonly configured services).
_FIRST_PORT = 10000
#: Ports this process handed out: never given twice (a port stays free until
#: its server binds it, and a test may ask for several before starting any).
_handed_out: set[int] = set()
_random = random.Random()  # its own generator: tests that seed ``random`` do not move it


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range of ports for outgoing connections (Linux's default
    where it cannot be read)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now, for a server to bind.

    Chosen at random *below* the kernel's ephemeral range. A port the kernel
    picks (``bind(0)``) comes from that range, which is also where every
    outgoing connection takes its source port: between the pick and the
    server's bind, a client connecting anywhere (a Kafka client, an HTTP
    poll) could take it, and the server then failed with "address already in
    use" (bench.loop's Alertmanager in CI, 2026-12-07). No outgoing
    connection takes a port outside that range. The port is checked by
    binding it and is never handed out twice by this process; where the
    ephemeral range leaves no room below it, the kernel picks.
    """
    low, _ = ephemeral_range()
    if low - _FIRST_PORT >= 1000:
        for _ in range(200):
            port = _random.randrange(_FIRST_PORT, low)
            if port not in _handed_out and _bindable(port):
                _handed_out.add(port)
                return port
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            chosen: int = sock.getsockname()[1]
        if chosen not in _handed_out:
            _handed_out.add(chosen)
            return chosen


def log_tail(path: Path, lines: int = 40) -> str:
    """Last ``lines`` lines of a log file, or a note that it does not exist."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """True if GET ``url`` answers 2xx; connection errors and 5xx are just "not yet"."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status: int = response.status
            return 200 <= status < 300
    except OSError:  # URLError, HTTPError, ConnectionRefused, timeouts
        return False


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """GET ``url``: its status and body; ``(0, "")`` when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def http_get_json(url: str, timeout: float = 5.0) -> Any:
    """GET ``url`` and decode its JSON body; HTTP errors raise with the body for context."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        raise RuntimeError(f"GET {url} -> {exc.code}: {body}") from exc


def poll_until(
    check: Callable[[], T | None], timeout: float, interval: float = 0.1, what: str = "condition"
) -> T:
    """Call ``check`` until it returns something other than None; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached within {timeout:.0f}s")
        time.sleep(interval)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0,
               interval: float = 0.02) -> bool:
    """Call ``predicate`` until it is true or ``timeout`` has passed; its last answer.

    The tests' one way to wait for something another thread or process does:
    ``assert wait_until(...)``. (:func:`poll_until` returns a value or raises.)
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class FakeClock:
    """A wall clock the test moves: ``clock()`` is ``clock.now``; ``advance(seconds)``."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM ``proc`` (if still running) and return its exit code; if it has
    not exited within ``timeout``, SIGKILL it, reap it and re-raise."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGKILL the child when the test process dies.

    Without it a pytest killed by CI (no teardown) leaves an orphan broker holding
    ports and memory. libc is resolved here, in the parent, so the child between
    fork and exec only makes one foreign call (no dlopen, no imports, no locks).
    """
    if sys.platform != "linux":
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1
    return lambda: prctl(pr_set_pdeathsig, signal.SIGKILL)


class ServerProcess:
    """One server as a child process with a fixed command line, ports and data dir.

    Subclasses set the command in ``_command()`` and readiness in ``_ready()``.
    Ports and directories are chosen in ``__init__`` and never change, so
    ``restart()`` (after ``stop()`` or ``kill()``) comes back at the same address
    with the same data.
    """

    name = "server"
    start_timeout = 30.0
    stop_timeout = 10.0

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        # stdout+stderr of every run, appended, so a restart keeps earlier history.
        self.log_path = workdir / f"{self.name}.out"
        self._proc: subprocess.Popen[bytes] | None = None

    # -- to override ---------------------------------------------------------
    def _command(self) -> Sequence[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _prepare(self) -> None:
        """One-off work before each launch (write configs, format storage)."""

    def _diagnostics(self) -> str:
        """Log text to show when the start fails."""
        return log_tail(self.log_path)

    # -- lifecycle -------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float | None = None) -> Self:
        """Launch the process and block until ``_ready()``; raise ServerStartError otherwise."""
        if self.running():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self._prepare()
        timeout = self.start_timeout if timeout is None else timeout
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                list(self._command()),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: Ctrl-C in pytest reaches pytest only, and the
                # fixtures' teardown stops the servers in order.
                start_new_session=True,
                preexec_fn=_die_with_parent_hook(),
            )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self._proc.poll() is not None:
                self._fail(f"exited with code {self._proc.returncode} before it was ready")
            if time.monotonic() >= deadline:
                self.kill()
                self._fail(f"was not ready within {timeout:.0f}s (killed)")
            time.sleep(0.1)
        return self

    def _fail(self, why: str, command: Sequence[str] | None = None) -> NoReturn:
        command = self._command() if command is None else command
        raise ServerStartError(
            f"{self.name} {why}. Command: {' '.join(command)}\n"
            f"--- tail of its log ({self.workdir}) ---\n{self._diagnostics()}\n"
            f"If the server is not installed, {INSTALL_HINT}."
        )

    def stop(self, timeout: float | None = None) -> None:
        """Graceful stop: SIGTERM, then SIGKILL if still alive after ``timeout``."""
        if not self.running():
            return
        assert self._proc is not None
        self._proc.terminate()
        try:
            self._proc.wait(self.stop_timeout if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """Crash the server (SIGKILL) without letting it clean up, as a fault would."""
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()
        self._proc.wait()

    def restart(self, timeout: float | None = None) -> Self:
        """Stop if running, then start again on the same ports and data dir."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> Self:
        return self.start() if not self.running() else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} pid={self.pid} workdir={self.workdir}>"


def require_executable(name: str, what: str) -> str:
    """Absolute path of ``name`` on PATH, or ServerUnavailableError naming the fix."""
    path = shutil.which(name)
    if path is None:
        raise ServerUnavailableError(
            f"{what} executable {name!r} not found on PATH; {INSTALL_HINT}"
        )
    return path


class ConfiguredHTTPServer(ServerProcess):
    """A server of the Prometheus family: one config file, a data dir, an HTTP
    port on 127.0.0.1 and ``/-/ready``. Subclasses give the command line."""

    default_binary = ""

    def __init__(
        self, workdir: Path, config: Path, port: int | None = None, binary: str | None = None
    ) -> None:
        super().__init__(workdir)
        self.config = config
        self.port = free_port() if port is None else port
        self.binary = binary or self.default_binary
        self.data_dir = workdir / "data"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ready(self) -> bool:
        return http_ok(f"{self.url}/-/ready")

