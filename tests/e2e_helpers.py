"""End-to-end test helpers: a real server process on loopback and simulated dryads.

`ServerProcess` runs `boruta server` on free loopback
ports (ZeroMQ's `tcp://127.0.0.1:*`; the real endpoints are read from the
server's ready line, waited for with a deadline), logs to a file, and is
killed on teardown whatever happens. `SimFarm` (boruta.sim.dryads)
runs N simulated dryads in a background thread.

Test modules import the fixtures they use:

    from e2e_helpers import ServerProcess, wait_until, server_factory  # noqa: F401
"""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from boruta.transport.client import Client
from boruta.sim.dryads import SimFarm

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 20.0

# Settings that keep end-to-end runs quick and quiet.
FAST = {
    "listen": "tcp://127.0.0.1:*",
    "dryad_listen": "tcp://127.0.0.1:*",
    "events": "tcp://127.0.0.1:*",
    "tunnel_host": "127.0.0.1",
    "public_host": "127.0.0.1",
    "tunnel_ports": "0",
    "key_type": "ed25519",
    "key_pool_size": 2,
    "heartbeat_interval": 0.5,
    "heartbeat_liveness": 4,
    "dryad_reply_timeout": 3.0,
    "shutdown_grace": 0.5,
    "log_level": "info",
}


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02,
               what: str = "condition") -> Any:
    """Poll `predicate` until it returns a truthy value; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def child_env() -> dict[str, str]:
    """The environment of a child process that imports this checkout's boruta."""
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def spawn_until_ready(cmd: list[str], log: Any, prefix: str, log_path: Path,
                      timeout: float = READY_TIMEOUT) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """Start `cmd` (stderr to `log`) and read its stdout until a line starting with
    `prefix`; return the process and that line's `key=value` fields. A process
    that exits or stays silent past `timeout` is killed and reported with its log."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT,
                            env=child_env())
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            line = ""
        if line is None or (not line and time.monotonic() >= deadline):
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            text = log_path.read_text(encoding="utf-8") if log_path.exists() else ""
            raise RuntimeError(f"{prefix!r} not seen within {timeout}s:\n{text}")
        if line.startswith(prefix):
            return proc, dict(kv.split("=", 1) for kv in line.split()[3:])


class ServerProcess:
    def __init__(self, log_path: Path, **settings: Any) -> None:
        self.settings = {**FAST, **settings}
        self.log_path = log_path
        self.proc: subprocess.Popen[str] | None = None
        self.endpoints: dict[str, str] = {}
        self._clients: list[Client] = []
        self._farms: list[SimFarm] = []

    def start(self) -> "ServerProcess":
        cmd = [sys.executable, "-m", "boruta.cli", "server", "--state-dir", ":memory:"]
        for key, value in self.settings.items():
            cmd += ["--set", f"{key}={value}"]
        self._log = open(self.log_path, "w", encoding="utf-8")
        self.proc, self.endpoints = spawn_until_ready(cmd, self._log, "boruta server ready",
                                                      self.log_path)
        return self

    # ------------------------------------------------------------------ helpers
    @property
    def listen(self) -> str:
        return self.endpoints["listen"]

    @property
    def dryad(self) -> str:
        return self.endpoints["dryad"]

    @property
    def events(self) -> str:
        return self.endpoints["events"]

    def client(self, timeout: float = 5.0, retries: int = 2, **kw: Any) -> Client:
        c = Client(self.listen, timeout=timeout, retries=retries, events_endpoint=self.events, **kw)
        self._clients.append(c)
        return c

    def farm(self, count: int = 0, **kw: Any) -> SimFarm:
        farm = SimFarm(self.dryad, count, **kw)
        self._farms.append(farm)
        if count:
            farm.wait_registered(10.0)
        return farm

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal the server and wait for its exit code (killed at the deadline)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"server did not stop within {timeout}s")
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def close(self) -> None:
        for farm in self._farms:
            farm.close()
        self._farms.clear()
        for c in self._clients:
            c.close()
        self._clients.clear()
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.stop(timeout=5)
            except AssertionError:
                pass
        self.kill()
        if getattr(self, "_log", None) is not None:
            self._log.close()


def unique_caps(**extra: str) -> dict[str, str]:
    """Caps no other test uses, so tests can share one server."""
    return {"device_type": f"t-{uuidlib.uuid4().hex[:10]}", **extra}


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers with extra settings; every one is stopped (or killed) at teardown."""
    started: list[ServerProcess] = []

    def start(**settings: Any) -> ServerProcess:
        server = ServerProcess(tmp_path / f"server{len(started)}.log", **settings)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.close()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for a whole test module (tests isolate themselves with unique caps)."""
    server = ServerProcess(tmp_path_factory.mktemp("server") / "server.log")
    server.start()
    yield server
    server.close()
