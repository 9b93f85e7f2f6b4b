"""End-to-end test helpers: pytest fixtures over boruta.testing.processes.

The processes themselves (a child with a line reader, `ServerProcess`,
`wait_until`, the child environment) live in boruta.testing.processes,
shared with the benches. Here: the settings that keep test servers quick
and quiet, and the fixtures.

Test modules import the fixtures they use:

    from e2e_helpers import ServerProcess, wait_until, server_factory  # noqa: F401
"""
from __future__ import annotations

import subprocess
import uuid as uuidlib
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import pytest

from boruta.testing import processes
from boruta.testing.processes import (READY_TIMEOUT, ROOT, Child, ChildError,  # noqa: F401
                                      child_env, parse_fields, wait_until)

# Settings that keep end-to-end runs quick and quiet.
FAST: dict[str, Any] = {
    **processes.LOOPBACK,
    "key_type": "ed25519",
    "key_pool_size": 2,
    "heartbeat_interval": 0.5,
    "heartbeat_liveness": 4,
    "dryad_reply_timeout": 3.0,
    "shutdown_grace": 0.5,
    "log_level": "info",
}


class ServerProcess(processes.ServerProcess):
    """A test server: FAST settings unless given."""

    defaults = FAST


def spawn_until_ready(cmd: list[str], log: IO[str], prefix: str, log_path: Path,
                      timeout: float = READY_TIMEOUT
                      ) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """Start `cmd` (stderr to the open file `log` at `log_path`, which the caller keeps)
    and read its stdout until a line starting with `prefix`; return the process and that
    line's `key=value` fields. A process that exits or stays silent is killed (ChildError,
    quoting the end of the log)."""
    child = Child(cmd, log)
    child.log_path = Path(log_path)
    return child.proc, parse_fields(child.expect(prefix, timeout))


def ssh_exec(host: str, port: int, user: str, key_file: Path, command: str) -> str:
    """Log in with the key file (nothing else) and run `command`; its stdout (exit status 0)."""
    import paramiko
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        client.connect(host, port, username=user, pkey=paramiko.PKey.from_path(key_file),
                       allow_agent=False, look_for_keys=False, timeout=20, banner_timeout=20,
                       auth_timeout=20)
        _, out, _ = client.exec_command(command, timeout=20)
        text = out.read().decode()
        assert out.channel.recv_exit_status() == 0, text
        return text
    finally:
        client.close()


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
