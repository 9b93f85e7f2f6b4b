"""The embedded SSH server: an SSH server inside the dryad that lets in one job.

For development, tests, the demo, and boards without their own sshd. It
gives exec, an interactive shell (with or without a pty) and SFTP, in a
fresh working directory per job. Commands run with the dryad's own
privileges: the SFTP root is enforced, a shell is not sandboxed.

Threads, not asyncio: paramiko is threaded. One thread accepts, one serves
each connection, and each command gets its own (see `channel_io`).
"""
from __future__ import annotations

import io
import logging
import os
import re
import select
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field

import paramiko
from paramiko.common import MSG_CHANNEL_REQUEST

from boruta.core.addresses import join_host_port
from boruta.dryad import channel_io
from boruta.dryad.accounts import PublicKey, check_username, parse_public_key
from boruta.dryad.session import SessionError
from boruta.dryad.sftp import RootedSFTPServer

__all__ = ["EmbeddedSSHServer"]

log = logging.getLogger(__name__)

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

    Each `set_job_key` makes a fresh empty working directory; `revoke` or the
    next `set_job_key` closes every connection of the old job, kills its
    processes and removes its directory.
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
            where = join_host_port(self._host, self._port)
            raise SessionError(f"cannot listen on {where}: {e}") from e
        self._listener.setblocking(False)
        self._port = self._listener.getsockname()[1]
        self._wake = os.pipe()
        self._state = "running"
        self._accept_thread = threading.Thread(target=self._accept_loop,
                                               name="dryad-ssh-accept", daemon=True)
        self._accept_thread.start()
        log.info("embedded SSH server on %s, host key %s %s", join_host_port(*self.address()),
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
            channel_io.kill_group(proc, signal.SIGKILL)
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
                channel_io.set_winsize(state.master, state.size)
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
            channel_io.close_quietly(chan)
            self._chans.pop(chan.get_id(), None)

    def _run_pipes(self, chan: paramiko.Channel, argv, env) -> None:
        proc = self._spawn(argv, env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
        if proc is None:
            return
        try:
            feeder = threading.Thread(target=channel_io.feed_stdin, args=(chan, proc),
                                      daemon=True)
            err = threading.Thread(target=channel_io.pump,
                                   args=(proc.stderr, chan.sendall_stderr), daemon=True)
            feeder.start()
            err.start()
            channel_io.pump(proc.stdout, chan.sendall)
            err.join()
            status = channel_io.exit_status(proc.wait())
        finally:
            self._forget(proc)
        chan.send_exit_status(status)

    def _run_pty(self, chan: paramiko.Channel, state: _ChanState, argv, env) -> None:
        master, slave = os.openpty()
        try:
            channel_io.set_winsize(master, state.size)
            proc = self._spawn(channel_io.with_controlling_tty(argv), env,
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
        writer = threading.Thread(target=channel_io.feed_pty, args=(chan, proc, master),
                                  daemon=True)
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
            chan.send_exit_status(channel_io.exit_status(proc.wait()))
        finally:
            self._forget(proc)
            channel_io.close_quietly(chan)  # wakes the writer before its fd goes away
            writer.join(timeout=5)
            with state.lock:
                state.master = None
                os.close(master)


