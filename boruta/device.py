"""A board handed out by Boruta, over SSH: run commands, copy files.

What a test needs once it holds a job's access (the key, user name and
address a request's `acquire_worker` answers): one SSH connection, commands
with their exit status and output, and SFTP both ways. It knows nothing of
requests or pytest, so it serves a script as well as the pytest plugin:

    with boruta.Client() as client:
        req_id = client.new_request({"device_type": "rpi4"}, 4)
        with Device.connect(client.acquire_worker(req_id, timeout=600)) as dev:
            print(dev.run("uname -a").stdout)
        client.close_request(req_id)

The board's host key is taken on first use and never stored: the address
comes from the server over an authenticated channel, and each job gets a
fresh tunnel port, so there is nothing to remember it against.
"""
from __future__ import annotations

import io
import os
import select
import time
from dataclasses import dataclass
from typing import Any

import paramiko

from boruta.core.addresses import access_address
from boruta.core.durations import format_duration

__all__ = ["CommandTimeout", "Device", "Result", "access_address", "private_key"]

CONNECT_TIMEOUT = 30.0          # seconds for the TCP connect, the banner and the login each
_CHUNK = 65536
_KEY_CLASSES: dict[str, type[paramiko.PKey]] = {
    "ssh-ed25519": paramiko.Ed25519Key,
    "ssh-rsa": paramiko.RSAKey,
}


@dataclass(frozen=True)
class Result:
    """What a command left: its exit status (-1: it ended without one, e.g. by a signal)
    and its output, decoded as UTF-8 (undecodable bytes replaced)."""

    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


class CommandTimeout(TimeoutError):
    """A command outran its `timeout`; the output so far is kept for the failure report."""

    def __init__(self, command: str, timeout: float, stdout: str, stderr: str) -> None:
        super().__init__(f"command {command!r} did not finish within {format_duration(timeout)}")
        self.command = command
        self.timeout = timeout
        self.stdout = stdout
        self.stderr = stderr


def private_key(access: Any) -> paramiko.PKey:
    """The job's private key (PEM text, as the server sends it) for paramiko.

    `key_type` says which kind it is; without it each kind is tried."""
    key = access.key
    text = key.decode("utf-8") if isinstance(key, bytes) else key
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the access holds no private key")
    known = _KEY_CLASSES.get(getattr(access, "key_type", "") or "")
    errors = []
    for cls in [known] if known is not None else _KEY_CLASSES.values():
        try:
            return cls.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError) as exc:
            errors.append(f"{cls.__name__}: {exc}")
    raise ValueError("the access's private key cannot be read: " + "; ".join(errors))


class Device:
    """One SSH connection to a board: `run`, `put`, `get`; `ssh` is the paramiko
    SSHClient for anything else. Close it (or use `with`) to hang up."""

    def __init__(self, ssh: paramiko.SSHClient, access: Any,
                 request_id: int | None = None) -> None:
        self.ssh = ssh
        self.access = access
        self.request_id = request_id
        self._sftp: paramiko.SFTPClient | None = None

    @classmethod
    def connect(cls, access: Any, *, request_id: int | None = None,
                timeout: float = CONNECT_TIMEOUT) -> "Device":
        """Log in to the board the access names, with its key and nothing else."""
        host, port = access_address(access)
        key = private_key(access)
        ssh = paramiko.SSHClient()
        ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            ssh.connect(host, port, username=access.username, pkey=key, allow_agent=False,
                        look_for_keys=False, timeout=timeout, banner_timeout=timeout,
                        auth_timeout=timeout)
        except BaseException:
            ssh.close()
            raise
        return cls(ssh, access, request_id)

    @property
    def sftp(self) -> paramiko.SFTPClient:
        """The SFTP session, opened on first use."""
        if self._sftp is None:
            self._sftp = self.ssh.open_sftp()
        return self._sftp

    def run(self, command: str, timeout: float | None = None) -> Result:
        """Run `command` in the board's shell; its exit status and output. Stdin is closed.

        `timeout` (seconds, None: no limit) bounds the whole command: past it
        the channel is closed and CommandTimeout raised with the output so far.
        """
        transport = self.ssh.get_transport()
        if transport is None or not transport.is_active():
            raise paramiko.SSHException("the SSH connection to the board is closed")
        chan = transport.open_session(timeout=CONNECT_TIMEOUT)
        try:
            chan.exec_command(command)
            chan.shutdown_write()
            out, err = _collect(chan, command, timeout)
            return Result(chan.recv_exit_status(), out, err)
        finally:
            chan.close()

    def put(self, local: str | os.PathLike[str], remote: str) -> None:
        """Copy the local file to `remote` on the board."""
        self.sftp.put(os.fspath(local), remote)

    def get(self, remote: str, local: str | os.PathLike[str]) -> None:
        """Copy `remote` on the board to the local file."""
        self.sftp.get(remote, os.fspath(local))

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
            self._sftp = None
        self.ssh.close()

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        where = "%s:%d" % access_address(self.access)
        return (f"<Device request={self.request_id} worker={self.access.worker_uuid} "
                f"{self.access.username}@{where}>")


def _collect(chan: paramiko.Channel, command: str, timeout: float | None) -> tuple[str, str]:
    """Both output streams until the command's exit status (or the channel's close).

    The server sends a command's output before its end of file and its exit
    status, so once the status is in, what is buffered is all there is.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    out: list[bytes] = []
    err: list[bytes] = []
    while True:
        while chan.recv_ready():
            out.append(chan.recv(_CHUNK))
        while chan.recv_stderr_ready():
            err.append(chan.recv_stderr(_CHUNK))
        if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
            return _text(out), _text(err)
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            assert timeout is not None
            raise CommandTimeout(command, timeout, _text(out), _text(err))
        if chan.eof_received:
            # No more output can come, and the channel's fileno stays readable from
            # now on: wait for the status itself.
            chan.status_event.wait(left)
        else:
            # Readable while either stream holds data, and at the end of file.
            select.select([chan], [], [], left)


def _text(chunks: list[bytes]) -> str:
    return b"".join(chunks).decode("utf-8", "replace")
