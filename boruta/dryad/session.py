"""SSH session backends: who may log in to the board during the current job.

Every job gets one public key (the server generates the pair and hands the
private half to the request's owner only). A backend lets in the job user
with that key and nothing else, and forgets it when the job's key is
revoked or replaced. Two backends share the `SessionBackend` protocol:

* `EmbeddedSSHServer`: an SSH server inside the dryad (paramiko, threads),
  for development, tests, the demo, and boards without their own sshd.
  It gives exec, an interactive shell (with or without a pty) and SFTP,
  in a fresh working directory per job. Commands run with the dryad's own
  privileges: the SFTP root is enforced, a shell is not sandboxed.
* `SystemSessionBackend`: recreates a real local account for each job and
  installs the key in its `~/.ssh/authorized_keys`, for the board's own
  OpenSSH server (upstream Rusalka's behaviour, SPEC B6.3). Needs root.

Every method is blocking; the asyncio side calls them in a worker thread.
"""
from __future__ import annotations

import base64
import binascii
import fcntl
import io
import logging
import os
import pwd
import re
import select
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

import paramiko
from paramiko.common import MSG_CHANNEL_REQUEST

from boruta.core.errors import BorutaError
from boruta.dryad.sftp import RootedSFTPServer

__all__ = [
    "EmbeddedSSHServer",
    "PublicKey",
    "SessionBackend",
    "SessionError",
    "SystemSessionBackend",
    "check_username",
    "command_error",
    "parse_public_key",
]

log = logging.getLogger(__name__)


class SessionError(BorutaError):
    """A session backend could not do what it was asked (or a bad key or name)."""

    code = "session_failed"


@runtime_checkable
class SessionBackend(Protocol):
    def start(self) -> None:
        """Get ready (bind, check tools). Called once before anything else."""

    def set_job_key(self, user: str, public_key_openssh: str) -> str:
        """Let `user` in with this key only, revoking any previous job; return the username."""

    def revoke(self) -> None:
        """Nobody gets in any more; the previous job's sessions are ended."""

    def stop(self) -> None:
        """Revoke, release everything. Idempotent."""

    def address(self) -> tuple[str, int]:
        """Where the SSH server listens: (host, port)."""


# --- keys and names ------------------------------------------------------------

_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
)
MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class PublicKey:
    """An SSH public key: its type and wire blob (the comment is kept for logs)."""

    type: str
    blob: bytes
    comment: str = ""

    @property
    def openssh(self) -> str:
        """`type base64`, the authorized_keys line without options or comment."""
        return f"{self.type} {base64.b64encode(self.blob).decode('ascii')}"

    def matches(self, key: paramiko.PKey) -> bool:
        return key.asbytes() == self.blob

    def fingerprint(self) -> str:
        return paramiko.PKey.from_type_string(self.type, self.blob).fingerprint


def parse_public_key(text: str) -> PublicKey:
    """Parse one OpenSSH public key line: `TYPE BASE64 [COMMENT]`.

    Refuses options, several lines, unknown or weak types (DSA, RSA under
    2048 bits) and blobs that do not decode to the key they claim to be.
    """
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    if not isinstance(text, str) or not text.strip():
        raise SessionError("empty public key")
    text = text.strip()
    if "\n" in text or "\r" in text or "\0" in text:
        raise SessionError("a public key is one line")
    fields = text.split(None, 2)
    if len(fields) < 2:
        raise SessionError("public key must be 'TYPE BASE64 [COMMENT]'")
    ktype, b64 = fields[0], fields[1]
    if ktype not in _KEY_TYPES:
        raise SessionError(f"unsupported public key type {ktype[:40]!r}; one of {_KEY_TYPES}")
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise SessionError("public key is not valid base64") from None
    try:
        key = paramiko.PKey.from_type_string(ktype, blob)
    except Exception as e:  # paramiko raises several kinds on bad blobs
        raise SessionError(f"public key does not decode: {e}") from None
    if key.asbytes() != blob:
        raise SessionError("public key blob is not canonical")
    if ktype == "ssh-rsa" and key.get_bits() < MIN_RSA_BITS:
        raise SessionError(f"RSA key of {key.get_bits()} bits; at least {MIN_RSA_BITS} needed")
    return PublicKey(ktype, blob, fields[2] if len(fields) > 2 else "")


_USERNAME = re.compile(r"[a-z_][a-z0-9_-]{0,30}\Z")


def check_username(name: str) -> str:
    """A portable Unix user name: lower case, starts with a letter or '_', <= 31 chars."""
    if not isinstance(name, str) or not _USERNAME.match(name):
        raise SessionError(f"invalid user name {name!r}")
    return name


# --- embedded SSH server ---------------------------------------------------------

# Run argv[1:] with stdin as the controlling terminal (a new session has none).
_CTTY_HELPER = ("import fcntl,os,sys,termios;"
                "fcntl.ioctl(0,termios.TIOCSCTTY,0);"
                "os.execvp(sys.argv[1],sys.argv[1:])")


@dataclass(eq=False)
class _Job:
    user: str
    key: PublicKey
    workdir: str
    conns: set = field(default_factory=set)
    procs: set = field(default_factory=set)


@dataclass(eq=False)
class _ChanState:
    term: str | None = None
    size: tuple[int, int, int, int] = (80, 24, 0, 0)  # cols, rows, px w, px h
    env: dict[str, str] = field(default_factory=dict)
    master: int | None = None
    busy: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


def _generate_host_key(kind: str) -> tuple[paramiko.PKey, str]:
    """A new host key and its private half in OpenSSH format."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if kind == "ed25519":
        private, cls = ed25519.Ed25519PrivateKey.generate(), paramiko.Ed25519Key
    elif kind == "rsa":
        private, cls = rsa.generate_private_key(65537, 2048), paramiko.RSAKey
    else:
        raise SessionError(f"unknown host key type {kind!r}; ed25519 or rsa")
    text = private.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.OpenSSH,
                                 serialization.NoEncryption()).decode("ascii")
    return cls(file_obj=io.StringIO(text)), text


def _load_or_make_host_key(path: str | None, kind: str) -> paramiko.PKey:
    if path and os.path.exists(path):
        try:
            return paramiko.PKey.from_path(path)
        except Exception as e:
            raise SessionError(f"cannot load SSH host key {path}: {e}") from e
    key, text = _generate_host_key(kind)
    if path:  # first start: keep the identity across restarts
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
        except OSError as e:
            raise SessionError(f"cannot save SSH host key {path}: {e}") from e
    return key


class EmbeddedSSHServer:
    """An SSH server that lets in only the current job's user and key.

    `host`, `port`: where to listen (port 0 picks a free one; `address()`
    then tells which). `workdir_base`: where per-job working directories are
    made (default: a private temporary directory, removed at stop).
    `host_key_path`: load the host key from there, or generate one and save
    it there on first start; None: a new key each start (`host_key` tells
    which, for known_hosts). `shell`: runs every command (`shell -c CMD`) and
    the interactive shell.

    Each `set_job_key` makes a fresh empty working directory; `revoke` (also
    called `clear`) or the next `set_job_key` closes every connection of the
    old job, kills its processes and removes its directory.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 workdir_base: str | None = None, host_key_path: str | None = None,
                 host_key_type: str = "ed25519", shell: str = "/bin/sh",
                 auth_timeout: float = 30.0, max_connections: int = 64) -> None:
        self._host = host
        self._port = port
        self._workdir_base = workdir_base
        self._host_key_path = host_key_path
        self._host_key_type = host_key_type
        self.shell = shell
        self.auth_timeout = auth_timeout
        self.max_connections = max_connections
        self.host_key: paramiko.PKey | None = None
        self._lock = threading.Lock()
        self._job: _Job | None = None
        self._transports: set[paramiko.Transport] = set()
        self._listener: socket.socket | None = None
        self._wake: tuple[int, int] | None = None
        self._accept_thread: threading.Thread | None = None
        self._own_base: str | None = None
        self._state = "new"  # new -> running -> stopped

    # --- SessionBackend --------------------------------------------------------

    def start(self) -> None:
        if self._state != "new":
            raise SessionError(f"embedded SSH server already {self._state}")
        self.host_key = _load_or_make_host_key(self._host_key_path, self._host_key_type)
        if self._workdir_base:
            os.makedirs(self._workdir_base, mode=0o700, exist_ok=True)
        else:
            self._own_base = tempfile.mkdtemp(prefix="boruta-dryad-")
            self._workdir_base = self._own_base
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        try:
            self._listener = socket.create_server((self._host, self._port), family=family,
                                                  backlog=16)
        except OSError as e:
            if self._own_base:
                shutil.rmtree(self._own_base, ignore_errors=True)
                self._own_base = self._workdir_base = None
            raise SessionError(f"cannot listen on {self._host}:{self._port}: {e}") from e
        self._listener.setblocking(False)
        self._port = self._listener.getsockname()[1]
        self._wake = os.pipe()
        self._state = "running"
        self._accept_thread = threading.Thread(target=self._accept_loop,
                                               name="dryad-ssh-accept", daemon=True)
        self._accept_thread.start()
        log.info("embedded SSH server on %s:%d, host key %s %s", self._host, self._port,
                 self.host_key.get_name(), self.host_key.fingerprint)

    def set_job_key(self, user: str, public_key_openssh: str) -> str:
        user = check_username(user)
        key = parse_public_key(public_key_openssh)
        if self._state != "running":
            raise SessionError("embedded SSH server is not running")
        workdir = tempfile.mkdtemp(prefix=f"job-{user}-", dir=self._workdir_base)
        with self._lock:
            old, self._job = self._job, _Job(user, key, workdir)
        if old is not None:
            self._dispose(old)
        log.info("session for %s with key %s in %s", user, key.fingerprint(), workdir)
        return user

    def revoke(self) -> None:
        with self._lock:
            old, self._job = self._job, None
        if old is not None:
            self._dispose(old)

    clear = revoke

    def stop(self) -> None:
        if self._state != "running":
            self._state = "stopped"
            return
        with self._lock:
            self._state = "stopped"
            old, self._job = self._job, None
            transports = list(self._transports)
        os.write(self._wake[1], b"x")
        self._accept_thread.join(timeout=5)
        self._listener.close()
        for fd in self._wake:
            os.close(fd)
        if old is not None:
            self._dispose(old)
        for t in transports:
            t.close()
        if self._own_base:
            shutil.rmtree(self._own_base, ignore_errors=True)

    def address(self) -> tuple[str, int]:
        return (self._host, self._port)

    # --- inspection ---------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def user(self) -> str | None:
        job = self._job
        return job.user if job else None

    @property
    def workdir(self) -> str | None:
        job = self._job
        return job.workdir if job else None

    def session_count(self) -> int:
        """Authenticated connections of the current job."""
        with self._lock:
            return len(self._job.conns) if self._job else 0

    # --- internals -----------------------------------------------------------------

    def _dispose(self, job: _Job) -> None:
        """End a job: close its connections, kill its processes, remove its directory."""
        with self._lock:
            conns, procs = list(job.conns), list(job.procs)
        for conn in conns:
            conn.transport.close()
        for proc in procs:
            _kill_group(proc, signal.SIGKILL)
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.warning("job process %d did not die", proc.pid)
        shutil.rmtree(job.workdir, ignore_errors=True)
        log.info("session for %s revoked", job.user)

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._listener, selectors.EVENT_READ, "listen")
            sel.register(self._wake[0], selectors.EVENT_READ, "wake")
            while True:
                for key, _ in sel.select():
                    if key.data == "wake":
                        return
                    try:
                        sock, peer = self._listener.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as e:  # EMFILE and friends: back off, stay stoppable
                        log.warning("accept failed: %s", e)
                        select.select([self._wake[0]], [], [], 0.1)
                        continue
                    with self._lock:
                        full = len(self._transports) >= self.max_connections
                    if full:
                        log.warning("refusing SSH connection from %s: too many", peer)
                        sock.close()
                        continue
                    threading.Thread(target=self._serve, args=(sock, peer),
                                     name=f"dryad-ssh-{peer}", daemon=True).start()

    def _serve(self, sock: socket.socket, peer) -> None:
        sock.setblocking(True)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # SSH is request/answer: Nagle + delayed ACKs would add ~40 ms per round trip.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = _Transport(sock)
        transport.add_server_key(self.host_key)
        transport.set_subsystem_handler("sftp", paramiko.SFTPServer, RootedSFTPServer)
        conn = _Connection(self, transport)
        with self._lock:
            if self._state != "running":
                transport.close()
                return
            self._transports.add(transport)
        try:
            try:
                transport.start_server(server=conn)
            except (paramiko.SSHException, EOFError, OSError) as e:
                log.info("SSH negotiation with %s failed: %s", peer, e)
                return
            started = time.monotonic()
            while transport.is_active():
                # Channels are served from the request callbacks. Accepting
                # keeps paramiko's queue short, and the references matter:
                # a Channel that is garbage collected closes itself.
                chan = transport.accept(timeout=0.5)
                if chan is not None:
                    conn.channels.add(chan)
                conn.channels = {c for c in conn.channels if not c.closed}
                if (not transport.is_authenticated()
                        and time.monotonic() - started > self.auth_timeout):
                    log.info("SSH client %s did not authenticate in time", peer)
                    break
        finally:
            transport.close()
            with self._lock:
                self._transports.discard(transport)
                if conn.job is not None:
                    conn.job.conns.discard(conn)


def _handle_request_then_start(channel: paramiko.Channel, m: paramiko.Message) -> None:
    paramiko.Channel._handle_request(channel, m)        # answers the request if asked to
    conn = channel.transport.server_object
    if isinstance(conn, _Connection):
        conn._start_pending(channel)


class _Transport(paramiko.Transport):
    """paramiko's Transport, but an exec or shell command starts only after the reply to
    its request has been sent. Started from the request callback, as paramiko suggests,
    a quick command's exit status and channel close can overtake that reply, and a
    paramiko client then fails the exec with "Channel closed."."""

    _channel_handler_table = {**paramiko.Transport._channel_handler_table,
                              MSG_CHANNEL_REQUEST: _handle_request_then_start}


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class _Connection(paramiko.ServerInterface):
    """One SSH connection: authentication and channel requests."""

    def __init__(self, server: EmbeddedSSHServer, transport: paramiko.Transport) -> None:
        self.server = server
        self.transport = transport
        self.job: _Job | None = None
        self.channels: set[paramiko.Channel] = set()
        self._chans: dict[int, _ChanState] = {}
        self._pending: dict[int, threading.Thread] = {}  # commands to start (see _Transport)

    @property
    def workdir(self) -> str | None:  # for RootedSFTPServer
        job = self._current()
        return job.workdir if job else None

    def _current(self) -> _Job | None:
        """This connection's job, if it is authenticated and still the current one."""
        if not self.transport.is_authenticated():
            return None
        with self.server._lock:
            job = self.job
            return job if job is not None and job is self.server._job else None

    def _chan(self, channel: paramiko.Channel) -> _ChanState:
        return self._chans.setdefault(channel.get_id(), _ChanState())

    # authentication

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        # paramiko asks this before checking the signature (to answer a
        # client's "would this key do?"), so remembering the job here does
        # not mean the client proved anything: every later use also checks
        # transport.is_authenticated().
        server = self.server
        with server._lock:
            job = server._job
            if (server._state == "running" and job is not None and username == job.user
                    and job.key.matches(key)):
                self.job = job
                job.conns.add(self)
                return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    # channels

    def check_channel_request(self, kind, chanid):
        if kind == "session" and self._current() is not None:
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_pty_request(self, channel, term, width, height, pixelwidth,
                                  pixelheight, modes):
        state = self._chan(channel)
        state.term = term.decode() if isinstance(term, bytes) else term
        state.size = (width or 80, height or 24, pixelwidth, pixelheight)
        return True

    def check_channel_window_change_request(self, channel, width, height, pixelwidth,
                                            pixelheight):
        state = self._chan(channel)
        with state.lock:
            state.size = (width, height, pixelwidth, pixelheight)
            if state.master is not None:
                _set_winsize(state.master, state.size)
        return True

    def check_channel_env_request(self, channel, name, value):
        name = name.decode() if isinstance(name, bytes) else name
        value = value.decode() if isinstance(value, bytes) else value
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or name.startswith("LD_"):
            return False
        self._chan(channel).env[name] = value
        return True

    def check_channel_exec_request(self, channel, command):
        if isinstance(command, bytes):
            command = command.decode("utf-8", "surrogateescape")
        return self._launch(channel, command)

    def check_channel_shell_request(self, channel):
        return self._launch(channel, None)

    def check_channel_subsystem_request(self, channel, name):
        if self._current() is None:
            return False
        return super().check_channel_subsystem_request(channel, name)

    def _launch(self, channel: paramiko.Channel, command: str | None) -> bool:
        state = self._chan(channel)
        if state.busy or self._current() is None:
            return False
        state.busy = True
        # Started by _Transport once the reply to this request has gone out.
        self._pending[channel.get_id()] = threading.Thread(
            target=self._run, args=(channel, state, command), name="dryad-ssh-exec",
            daemon=True)
        return True

    def _start_pending(self, channel: paramiko.Channel) -> None:
        thread = self._pending.pop(channel.get_id(), None)
        if thread is not None:
            thread.start()

    # running commands

    def _spawn(self, argv: list[str], env: dict[str, str], **io) -> subprocess.Popen | None:
        """Start a process for the current job, or None if the job is gone."""
        server = self.server
        with server._lock:  # a revoke cannot slip between the check and the start
            job = self.job
            if job is None or job is not server._job or not self.transport.is_authenticated():
                return None
            proc = subprocess.Popen(argv, cwd=job.workdir, env=env, start_new_session=True,
                                    close_fds=True, **io)
            job.procs.add(proc)
            return proc

    def _forget(self, proc: subprocess.Popen) -> None:
        """Stop tracking a process that has exited; one still running stays
        tracked, so that revoking the job kills it."""
        if proc.poll() is None:
            return
        with self.server._lock:
            if self.job is not None:
                self.job.procs.discard(proc)

    def _environment(self, state: _ChanState) -> dict[str, str]:
        job = self.job
        env = dict(state.env)
        env.update(
            PATH=os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            HOME=job.workdir, PWD=job.workdir, USER=job.user, LOGNAME=job.user,
            SHELL=self.server.shell,
        )
        if state.term:
            env["TERM"] = state.term
        return env

    def _run(self, chan: paramiko.Channel, state: _ChanState, command: str | None) -> None:
        """Serve one exec or shell request; the exit status goes before the close."""
        shell = self.server.shell
        argv = [shell] if command is None else [shell, "-c", command]
        try:
            env = self._environment(state)
            try:
                if state.term is not None:
                    self._run_pty(chan, state, argv, env)
                else:
                    self._run_pipes(chan, argv, env)
            except OSError as e:  # the shell could not be started
                chan.sendall_stderr(f"dryad: cannot run {shell}: {e}\r\n".encode())
                chan.send_exit_status(127)
        except Exception as e:  # a dying connection: nothing more to tell anyone
            log.debug("session channel ended: %s", e)
        finally:
            _close_quietly(chan)
            self._chans.pop(chan.get_id(), None)

    def _run_pipes(self, chan: paramiko.Channel, argv, env) -> None:
        proc = self._spawn(argv, env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
        if proc is None:
            return
        try:
            feeder = threading.Thread(target=_feed_stdin, args=(chan, proc), daemon=True)
            err = threading.Thread(target=_pump, args=(proc.stderr, chan.sendall_stderr),
                                   daemon=True)
            feeder.start()
            err.start()
            _pump(proc.stdout, chan.sendall)
            err.join()
            status = _exit_status(proc.wait())
        finally:
            self._forget(proc)
        chan.send_exit_status(status)

    def _run_pty(self, chan: paramiko.Channel, state: _ChanState, argv, env) -> None:
        master, slave = os.openpty()
        try:
            _set_winsize(master, state.size)
            proc = self._spawn([sys.executable, "-I", "-c", _CTTY_HELPER, *argv], env,
                               stdin=slave, stdout=slave, stderr=slave)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        if proc is None:
            os.close(master)
            return
        with state.lock:
            state.master = master
        writer = threading.Thread(target=_feed_pty, args=(chan, proc, master), daemon=True)
        writer.start()
        try:
            while True:
                try:
                    data = os.read(master, 32768)
                except OSError:  # EIO: every copy of the slave side is closed
                    break
                if not data:
                    break
                chan.sendall(data)
            chan.send_exit_status(_exit_status(proc.wait()))
        finally:
            self._forget(proc)
            _close_quietly(chan)  # wakes the writer before its fd goes away
            writer.join(timeout=5)
            with state.lock:
                state.master = None
                os.close(master)


def _close_quietly(chan: paramiko.Channel) -> None:
    """Close a channel whose client may have hung up already (paramiko raises EOFError)."""
    try:
        chan.close()
    except Exception as e:
        log.debug("closing a session channel: %s", e or type(e).__name__)


def _exit_status(code: int) -> int:
    return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as shells say


def _pump(src, send: Callable[[bytes], None]) -> None:
    """Copy a process's output to the channel; keep draining if the channel died."""
    alive = True
    fd = src.fileno()
    try:
        while True:
            data = os.read(fd, 32768)
            if not data:
                return
            if alive:
                try:
                    send(data)
                except Exception:
                    alive = False
    finally:
        src.close()


def _feed_stdin(chan: paramiko.Channel, proc: subprocess.Popen) -> None:
    try:
        while True:
            data = chan.recv(32768)
            if not data:
                break
            proc.stdin.write(data)
            proc.stdin.flush()
    except (OSError, ValueError):
        pass
    finally:
        try:
            proc.stdin.close()
        except OSError:
            pass
    if chan.closed:  # the client went away: hang up, as sshd does
        _kill_group(proc, signal.SIGHUP)


def _feed_pty(chan: paramiko.Channel, proc: subprocess.Popen, master: int) -> None:
    try:
        while True:
            data = chan.recv(32768)
            if not data:
                break
            while data:
                data = data[os.write(master, data):]
    except OSError:
        pass
    if chan.closed:
        _kill_group(proc, signal.SIGHUP)


def _set_winsize(fd: int, size: tuple[int, int, int, int]) -> None:
    cols, rows, pw, ph = size
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, pw, ph))


# --- system backend: a real user for the board's OpenSSH --------------------------

# SPEC B6.3: exit codes of useradd and userdel, as upstream words them.
_USERADD_ERRORS = {
    1: "can't update password file",
    2: "invalid command syntax",
    3: "invalid argument to option",
    4: "UID already in use (and no -o)",
    6: "specified group doesn't exist",
    9: "username already in use",
    10: "can't update group file",
    12: "can't create home directory",
    14: "can't update SELinux user mapping",
}
_USERDEL_ERRORS = {
    1: "can't update password file",
    2: "invalid command syntax",
    6: "specified user doesn't exist",
    8: "user currently logged in",
    10: "can't update group file",
    12: "can't remove home directory",
}


def command_error(tool: str, returncode: int, output: str) -> str:
    """`command failed: <text>` for a useradd/userdel exit code (SPEC B6.3)."""
    table = {"useradd": _USERADD_ERRORS, "userdel": _USERDEL_ERRORS}.get(tool, {})
    if returncode in table:
        return f"command failed: {table[returncode]}"
    return f"command failed: exit status {returncode}, {output.strip()}"


class SystemSessionBackend:
    """Recreates a local account per job for the board's own sshd (root only).

    `set_job_key(user, key)`: `userdel -r -f USER` if it exists, then
    `useradd -p '*' -m [-G GROUPS] USER` (password locked, fresh home), then
    `~/.ssh` (0700) and `~/.ssh/authorized_keys` (0600) owned by the user,
    holding the key. `revoke()` kills the user's processes (its SSH sessions)
    and removes the account. The key is checked before anything is touched.
    As a safeguard it never removes an account with a UID below `min_uid`.

    `user`: the configured session user; `start()` removes it if a previous
    run left it behind (a crash during a job must not leave a key valid).
    `address`: the board's sshd, as reported to the server.
    """

    def __init__(self, groups: tuple[str, ...] | list[str] = (), *, user: str | None = None,
                 address: tuple[str, int] = ("", 22), min_uid: int = 1000,
                 runner: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> None:
        self.groups = tuple(groups)
        self._configured_user = check_username(user) if user is not None else None
        self._address = address
        self.min_uid = min_uid
        self._run = runner
        self._user: str | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        for tool in ("useradd", "userdel"):
            if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
                raise SessionError(f"{tool} not found: the system session backend needs it")
        if self._configured_user is not None:
            with self._lock:
                self._remove(self._configured_user)

    def set_job_key(self, user: str, public_key_openssh: str) -> str:
        user = check_username(user)
        key = parse_public_key(public_key_openssh)
        with self._lock:
            if self._user is not None and self._user != user:
                self._remove(self._user)
            self._user = user
            self._remove(user)
            self._create(user)
            self._install(user, key)
        return user

    def revoke(self) -> None:
        with self._lock:
            if self._user is not None:
                self._remove(self._user)
                self._user = None

    def stop(self) -> None:
        self.revoke()

    def address(self) -> tuple[str, int]:
        return self._address

    # internals

    def _tool(self, name: str) -> str:
        return shutil.which(name) or f"/usr/sbin/{name}"

    def _remove(self, user: str) -> None:
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            return
        if pw.pw_uid < self.min_uid:
            raise SessionError(f"user removal failed: {user} has UID {pw.pw_uid} "
                               f"< {self.min_uid}; refusing to delete a system account")
        _kill_uid(pw.pw_uid)
        done = self._run([self._tool("userdel"), "-r", "-f", user],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode == 0 or (done.returncode in (6, 12) and not _user_exists(user)):
            return  # gone (12: the home was already missing)
        raise SessionError("user removal failed: "
                           + command_error("userdel", done.returncode, done.stdout or ""))

    def _create(self, user: str) -> None:
        argv = [self._tool("useradd"), "-p", "*", "-m"]
        if self.groups:
            argv += ["-G", ",".join(self.groups)]
        done = self._run(argv + [user], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
        if done.returncode != 0:
            raise SessionError("user creation failed: "
                               + command_error("useradd", done.returncode, done.stdout or ""))

    def _install(self, user: str, key: PublicKey) -> None:
        try:
            pw = pwd.getpwnam(user)
            ssh_dir = os.path.join(pw.pw_dir, ".ssh")
            os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
            os.chmod(ssh_dir, 0o700)
            os.chown(ssh_dir, pw.pw_uid, pw.pw_gid)
            path = os.path.join(ssh_dir, "authorized_keys")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as f:
                os.fchmod(fd, 0o600)
                os.fchown(fd, pw.pw_uid, pw.pw_gid)
                f.write(key.openssh + " boruta-job\n")
        except (KeyError, OSError) as e:
            raise SessionError(f"user information update failed: {e}") from e


def _user_exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
        return True
    except KeyError:
        return False


def _kill_uid(uid: int) -> None:
    """SIGKILL every process whose real UID is `uid` (the leaving user's sessions)."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            os.kill(int(name), signal.SIGKILL)
                        break
        except (OSError, ValueError):
            continue
