"""End to end with real processes and real SSH: a server process, dryad processes
(`python -m boruta.cli dryad --config ...`: simulated board, embedded SSH server on
127.0.0.1), paramiko logging in through the server's tunnel with the job's key.
"""
from __future__ import annotations

import io
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any, Callable, Iterator

import paramiko
import pytest

from boruta.core.types import ReqState, WorkerState
from boruta.dryad.config import load_config
from e2e_helpers import (ROOT, ServerProcess, child_env, server_factory,  # noqa: F401
                         spawn_until_ready, unique_caps, wait_until)

pytestmark = pytest.mark.slow

INTERVAL = 0.2
LIVENESS = 5
QUICK = {"heartbeat_interval": INTERVAL, "heartbeat_liveness": LIVENESS,
         "dryad_reply_timeout": 5.0}
READY_TIMEOUT = 20.0


def boruta(*args: str, timeout: float = 30.0,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "boruta.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env or child_env(), timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


class DryadProcess:
    """`boruta dryad --config FILE` as a child process; waits for its ready line."""

    def __init__(self, config: Path, log_path: Path, ignoring: tuple[str, ...] = ()) -> None:
        self.config = config
        self.log_path = log_path
        self.ignoring = ignoring           # signals it starts ignoring, as under nohup
        self.proc: subprocess.Popen[str] | None = None
        self.ready: dict[str, str] = {}

    def start(self) -> "DryadProcess":
        self._log = open(self.log_path, "a", encoding="utf-8")
        cmd = [sys.executable, "-m", "boruta.cli", "dryad", "--config", str(self.config),
               "--log-level", "debug"]
        if self.ignoring:
            cmd = [sys.executable, "-c",
                   "import os, signal, sys\n"
                   f"for name in {list(self.ignoring)!r}:\n"
                   "    signal.signal(getattr(signal, name), signal.SIG_IGN)\n"
                   "os.execv(sys.argv[1], sys.argv[1:])", *cmd]
        self.proc, self.ready = spawn_until_ready(cmd, self._log, "boruta dryad ready",
                                                  self.log_path, READY_TIMEOUT)
        return self

    @property
    def uuid(self) -> str:
        return self.ready["uuid"]

    @property
    def ssh(self) -> tuple[str, int]:
        host, _, port = self.ready["ssh"].rpartition(":")
        return host, int(port)

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8")
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "_log", None) is not None:
            self._log.close()


@pytest.fixture
def dryads(tmp_path: Path) -> Iterator[Callable[..., DryadProcess]]:
    started: list[DryadProcess] = []

    def start(config: Path, ignoring: tuple[str, ...] = ()) -> DryadProcess:
        d = DryadProcess(config, tmp_path / f"dryad{len(started)}.log", ignoring)
        started.append(d)
        return d.start()

    yield start
    for d in started:
        d.close()


def init_config(path: Path, server: ServerProcess, caps: dict[str, str],
                *extra: str) -> Path:
    """`boruta dryad init` (the real command) for this server's dryad endpoint, then
    `boruta admin dryad enroll` as the server's admin: the dryad's key file beside it,
    as an operator sets up a board."""
    args = ["dryad", "init", "--config", str(path), "--server", server.dryad]
    if server.credentials is not None:
        args += ["--server-key", server.credentials.server_key, "--key-file", "dryad.key"]
    for k, v in caps.items():
        args += ["--caps", f"{k}={v}"]
    r = boruta(*args, *extra)
    assert r.returncode == 0, r.stderr
    if server.credentials is not None:
        r = boruta("admin", "dryad", "enroll", load_config(path).uuid,
                   "--out", str(path.parent / "dryad.key"), env=server.cli_env())
        assert r.returncode == 0, r.stderr
    # job directories under the test's tmp_path, so that a SIGKILLed dryad leaves nothing in /tmp
    work = path.parent / "work"
    path.write_text(path.read_text().replace('workdir_base = ""', f'workdir_base = "{work}"'))
    return path


def private_key(access: Any) -> paramiko.PKey:
    text = access.key
    if access.key_type == "ssh-rsa":
        assert text.startswith("-----BEGIN RSA PRIVATE KEY-----")          # PKCS#1 PEM
        return paramiko.RSAKey.from_private_key(io.StringIO(text))
    assert text.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    return paramiko.Ed25519Key.from_private_key(io.StringIO(text))


def ssh_connect(host: str, port: int, user: str, key: paramiko.PKey) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(host, port, username=user, pkey=key, allow_agent=False, look_for_keys=False,
                   timeout=10, auth_timeout=10, banner_timeout=10)
    return client


def ssh_run(client: paramiko.SSHClient, command: str) -> tuple[int, str, str]:
    _, out, err = client.exec_command(command, timeout=10)
    status = out.channel.recv_exit_status()
    return status, out.read().decode(), err.read().decode()


def idle(client: Any, uuid: str, timeout: float = 10.0) -> None:
    client.set_state(uuid, "IDLE")
    wait_until(lambda: client.get_worker_info(uuid).state is WorkerState.IDLE, timeout,
               what=f"worker {uuid} IDLE")


# --------------------------------------------------------------------------- the job cycle

@pytest.mark.parametrize("key_type", ["ed25519", "rsa"])
def test_job_cycle_over_real_ssh(server_factory, dryads, tmp_path: Path, key_type: str) -> None:
    server = server_factory(key_type=key_type, **QUICK)
    caps = unique_caps()
    dryad = dryads(init_config(tmp_path / "dryad.toml", server, caps))
    client = server.client()
    uuid = dryad.uuid
    assert uuid == load_config(tmp_path / "dryad.toml").uuid
    info = client.get_worker_info(uuid)
    assert info.state is WorkerState.MAINTENANCE and info.ssh_address == f"127.0.0.1:{dryad.ssh[1]}"
    idle(client, uuid)

    req_id = client.new_request(caps, 4)
    access = client.acquire_worker(req_id, timeout=10)
    assert access.worker_uuid == uuid and access.username == "boruta-user"
    assert access.key_type == f"ssh-{key_type}"
    host, tunnel_port = access.addr
    assert host == "127.0.0.1" and tunnel_port != dryad.ssh[1]
    key = private_key(access)

    ssh = ssh_connect(host, tunnel_port, access.username, key)
    try:
        status, out, err = ssh_run(ssh, "echo hello from $USER; pwd")
        assert status == 0, err
        assert out.splitlines()[0] == "hello from boruta-user"
        workdir = out.splitlines()[1]
        assert ssh_run(ssh, "exit 7")[0] == 7
        payload = secrets.token_bytes(300_000)
        sftp = ssh.open_sftp()
        with sftp.open("image.bin", "wb") as f:
            f.write(payload)
        assert sftp.stat("image.bin").st_size == len(payload)
        with sftp.open("image.bin", "rb") as f:
            assert f.read() == payload
        sftp.close()
        status, out, _ = ssh_run(ssh, "wc -c < image.bin")
        assert status == 0 and int(out) == len(payload)
        assert os.path.getsize(os.path.join(workdir, "image.bin")) == len(payload)
    finally:
        ssh.close()

    client.close_request(req_id)
    assert client.wait_request(req_id, timeout=5).state is ReqState.DONE
    wait_until(lambda: client.get_worker_info(uuid).state is WorkerState.IDLE, 10,
               what="worker IDLE again")
    # the tunnel is gone, the old key is refused (directly at the dryad too)
    wait_until(lambda: not port_open(tunnel_port), 5, what="tunnel port closed")
    with pytest.raises(paramiko.AuthenticationException):
        ssh_connect(*dryad.ssh, access.username, key).close()
    assert not os.path.exists(workdir)                      # the job's directory went with it

    # the next job gets a new key, which works
    req2 = client.new_request(caps, 4)
    access2 = client.acquire_worker(req2, timeout=10)
    assert access2.key != access.key
    ssh = ssh_connect(*access2.addr, access2.username, private_key(access2))
    try:
        assert ssh_run(ssh, "test -e image.bin")[0] == 1   # a fresh, empty directory
    finally:
        ssh.close()
    client.close_request(req2)

    # SIGTERM: clean stop, exit 0, SSH server gone
    dryad.signal(signal.SIGTERM)
    assert dryad.wait(10) == 0
    assert "Traceback" not in dryad.log()
    assert not port_open(dryad.ssh[1])


def test_sigkill_mid_job_then_restart(server_factory, dryads, tmp_path: Path) -> None:
    server = server_factory(**QUICK)
    caps = unique_caps()
    ssh_port = free_port()                        # fixed: a restart keeps the same config
    config = init_config(tmp_path / "dryad.toml", server, caps,
                         "--ssh-listen", f"127.0.0.1:{ssh_port}")
    dryad = dryads(config)
    client = server.client()
    uuid = dryad.uuid
    idle(client, uuid)
    req_id = client.new_request(caps, 4)
    access = client.acquire_worker(req_id, timeout=10)
    ssh = ssh_connect(*access.addr, access.username, private_key(access))
    assert ssh_run(ssh, "true")[0] == 0

    events = client.events(worker_uuid=uuid)
    window = INTERVAL * LIVENESS
    killed = time.monotonic()
    dryad.signal(signal.SIGKILL)
    assert dryad.wait(5) == -signal.SIGKILL
    final = client.wait_request(req_id, [ReqState.FAILED], timeout=window + 5)
    elapsed = time.monotonic() - killed
    ssh.close()
    assert final.state is ReqState.FAILED
    info = client.get_worker_info(uuid)
    assert info.state is WorkerState.FAIL and info.fail_reason.startswith("dryad lost")
    # silent for `window` seconds -> lost; the server checks every interval/2
    assert elapsed <= window + INTERVAL + 0.5, f"FAILED after {elapsed:.2f}s (window {window}s)"
    wait_until(lambda: not port_open(access.addr[1]), 5, what="tunnel closed")

    again = dryads(config)                        # same config: same UUID, caps and ports
    assert again.uuid == uuid and again.ssh == ("127.0.0.1", ssh_port)
    seen = worker_states_until_idle(events)
    # FAIL -> PREPARE -> IDLE (a fresh process also reports that its sessions are gone,
    # which may add a FAILED -> PREPARE round before the IDLE)
    assert seen[0] == "FAILED" and seen[-2:] == ["PREPARE", "IDLE"], seen
    assert set(seen) == {"FAILED", "PREPARE", "IDLE"}, seen
    assert client.get_worker_info(uuid).fail_reason is None
    job_works(client, caps)


def test_quick_restart_gets_a_fresh_session(server_factory, dryads, tmp_path: Path) -> None:
    """Restarted before the server noticed (worker still IDLE): the new process has no
    session, so it has the worker prepared again rather than leave a dead key."""
    server = server_factory(heartbeat_interval=0.5, heartbeat_liveness=30)
    caps = unique_caps()
    config = init_config(tmp_path / "dryad.toml", server, caps,
                         "--ssh-listen", f"127.0.0.1:{free_port()}")
    dryad = dryads(config)
    client = server.client()
    idle(client, dryad.uuid)
    events = client.events(worker_uuid=dryad.uuid)
    dryad.signal(signal.SIGKILL)
    dryad.wait(5)
    assert client.get_worker_info(dryad.uuid).state is WorkerState.IDLE    # the server has not noticed
    dryads(config)
    assert worker_states_until_idle(events) == ["FAILED", "PREPARE", "IDLE"]
    events.close()
    job_works(client, caps)


def test_commands_start_with_default_signals_when_the_dryad_ignores_them(
        server_factory, dryads, tmp_path: Path) -> None:
    """Started ignoring SIGHUP, SIGINT and SIGQUIT (nohup, a script's background job),
    the dryad keeps ignoring them, but a job's commands start with the defaults, as
    sshd's sessions do: a client's hang-up must end them."""
    server = server_factory(**QUICK)
    caps = unique_caps()
    ignoring = ("SIGHUP", "SIGINT", "SIGQUIT")
    dryad = dryads(init_config(tmp_path / "dryad.toml", server, caps), ignoring)
    client = server.client()
    idle(client, dryad.uuid)
    req_id = client.new_request(caps, 4)
    access = client.acquire_worker(req_id, timeout=10)
    ssh = ssh_connect(*access.addr, access.username, private_key(access))
    try:
        status, out, err = ssh_run(ssh, "grep SigIgn /proc/self/status")
    finally:
        ssh.close()
    assert status == 0, err
    ignored_mask = int(out.split()[1], 16)
    for name in ignoring:
        number = getattr(signal, name)
        assert not ignored_mask & (1 << (number - 1)), f"{name} ignored in a job's command"
    dryad.signal(signal.SIGHUP)                  # still ignored by the agent itself
    client.close_request(req_id)
    wait_until(lambda: client.get_worker_info(dryad.uuid).state is WorkerState.IDLE, 10,
               what="the agent to prepare the worker again")
    assert dryad.proc is not None and dryad.proc.poll() is None
    assert "signal ignored" in dryad.log()
    dryad.signal(signal.SIGTERM)
    assert dryad.wait(10) == 0


def worker_states_until_idle(events: Any, timeout: float = 10.0) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while "IDLE" not in seen:
        event = events.next(timeout=max(0.1, deadline - time.monotonic()))
        if event.get("kind") == "worker":
            seen.append(event["state"])
    return seen


def job_works(client: Any, caps: dict[str, str]) -> None:
    req_id = client.new_request(caps, 4)
    access = client.acquire_worker(req_id, timeout=10)
    ssh = ssh_connect(*access.addr, access.username, private_key(access))
    try:
        assert ssh_run(ssh, "echo back")[1] == "back\n"
    finally:
        ssh.close()
    client.close_request(req_id)


def test_config_errors_from_the_real_command(tmp_path: Path) -> None:
    bad = tmp_path / "dryad.toml"
    bad.write_text('server = "tcp://127.0.0.1:7176"\nheartbeat_interval = 0\n'
                   f'[caps]\nUUID = "{uuidlib.uuid4()}"\n')
    r = boruta("dryad", "--config", str(bad))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "heartbeat_interval" in r.stderr
    assert "Traceback" not in r.stderr
    good = tmp_path / "good.toml"
    assert boruta("dryad", "init", "--config", str(good)).returncode == 0
    text = good.read_text()
    r = boruta("dryad", "init", "--config", str(good))
    assert r.returncode == 2 and "already exists" in r.stderr and good.read_text() == text


# --------------------------------------------------------------------------- system backend

SSHD = os.environ.get("BORUTA_TEST_SSHD", "/usr/sbin/sshd")    # an OpenSSH server binary


@pytest.mark.system
@pytest.mark.skipif(os.geteuid() != 0, reason="creates a real local user: needs root")
@pytest.mark.skipif(not os.path.exists(SSHD),
                    reason=f"{SSHD} is missing: the system session backend needs an OpenSSH "
                           "server (apt-get install openssh-server)")
def test_system_session_backend_with_a_real_sshd(server_factory, dryads, tmp_path: Path) -> None:
    user = f"boruta-e2e-{secrets.token_hex(3)}"
    port = free_port()
    host_key = tmp_path / "ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)],
                   check=True)
    os.makedirs("/run/sshd", exist_ok=True)
    sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", "/dev/null", "-p", str(port),
                             "-o", "ListenAddress=127.0.0.1", "-o", f"HostKey={host_key}",
                             "-o", "PasswordAuthentication=no", "-o", "UsePAM=no",
                             "-o", "StrictModes=yes", "-o", "PidFile=none"],
                            stderr=open(tmp_path / "sshd.log", "w"))
    try:
        wait_until(lambda: port_open(port), 10, what="sshd listening")
        server = server_factory(**QUICK)
        caps = unique_caps()
        config = init_config(tmp_path / "dryad.toml", server, caps, "--session", "system",
                             "--user", user)
        text = config.read_text().replace('advertise = ""', f'advertise = "127.0.0.1:{port}"')
        config.write_text(text)
        dryad = dryads(config)
        client = server.client()
        idle(client, dryad.uuid)
        import pwd
        home = pwd.getpwnam(user).pw_dir
        req_id = client.new_request(caps, 4)
        access = client.acquire_worker(req_id, timeout=10)
        assert access.username == user
        ssh = ssh_connect(*access.addr, user, private_key(access))
        try:
            assert ssh_run(ssh, "id -un; pwd")[1].split() == [user, home]
        finally:
            ssh.close()
        client.close_request(req_id)
        wait_until(lambda: client.get_worker_info(dryad.uuid).state is WorkerState.IDLE, 10,
                   what="IDLE again")
        with pytest.raises(paramiko.AuthenticationException):
            ssh_connect("127.0.0.1", port, user, private_key(access)).close()
        dryad.signal(signal.SIGTERM)
        assert dryad.wait(10) == 0
        with pytest.raises(KeyError):                      # the stop removed the account
            pwd.getpwnam(user)
    finally:
        sshd.terminate()
        sshd.wait(5)
        if shutil.which("userdel"):
            subprocess.run(["userdel", "-r", "-f", user], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
