"""Real processes for end-to-end tests and benches: a child with a line reader, the server, polling.

Every end-to-end test, bench and demo starts its processes here, so that
starting one, waiting for its ready line (always with a deadline), reading
its log, measuring its CPU and memory and stopping it have one
implementation. Nothing here imports pytest: benches, the demo and users'
own harnesses use it too.

    server = ServerProcess(Path("server.log"), key_type="ed25519").start()
    client = server.client()                 # the bootstrap admin
    alice = server.user("alice", priorities=[4, 16])
    farm = server.farm(3, caps={"device_type": "rpi4"})     # each dryad enrolled
    ...
    server.close()          # farms, clients, then the process (SIGTERM, then SIGKILL)

The server is secure, as in production: it keeps its keys in a fresh
identity directory beside its log (or in its durable state directory), and
everything handed out here speaks CURVE with the bootstrap admin's
credentials, read from the client config the server writes there. The
setting `insecure=True` keeps plain text.
"""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Mapping, TypeVar

import boruta

if TYPE_CHECKING:
    import zmq

    from boruta.sim.dryads import SimFarm
    from boruta.transport.client import Client
    from boruta.transport.credentials import Credentials, KeyPair

__all__ = [
    "IDENTITY_ENV", "LOOPBACK", "READY_TIMEOUT", "ROOT", "Child", "ChildError", "ServerProcess",
    "child_env", "cpu_seconds", "credentials_from", "parse_fields", "rss_bytes", "server_command",
    "start_sim_dryads", "wait_until",
]

#: The checkout (or site-packages directory) that holds the imported boruta package:
#: child processes import the same code as their parent.
ROOT = Path(boruta.__file__).resolve().parent.parent
READY_TIMEOUT = 30.0            # seconds a child gets to print its ready line
SERVER_READY = "boruta server ready"
SIM_READY = "simdryad ready"

#: A server that binds only loopback, on ports the system picks (read from its ready line),
#: so that concurrent runs on one machine never collide.
LOOPBACK: dict[str, Any] = {
    "listen": "tcp://127.0.0.1:*",
    "dryad_listen": "tcp://127.0.0.1:*",
    "events": "tcp://127.0.0.1:*",
    "tunnel_host": "127.0.0.1",
    "public_host": "127.0.0.1",
    "tunnel_ports": "0",
    "http_listen": "127.0.0.1:0",
}

#: Variables that would point a child at the developer's own client config or identity.
IDENTITY_ENV = ("BORUTA_SERVER", "BORUTA_SERVER_KEY", "BORUTA_KEY_FILE", "BORUTA_CLIENT_CONFIG")
ADMIN_CLIENT_CONFIG = "client.toml"      # what a secure server writes in its identity directory
MEMORY = ":memory:"

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
T = TypeVar("T")


class ChildError(RuntimeError):
    """A child process exited, stayed silent past its deadline, or would not stop."""


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process that imports the same boruta as this one.

    It is this process's environment (so a test session's private XDG
    directories reach the child too) without the variables that name a client
    identity (IDENTITY_ENV): a child talks to the harness's server with the
    harness's keys, never with the developer's. `extra` goes over it.
    """
    path = os.environ.get("PYTHONPATH")
    env = {name: value for name, value in os.environ.items() if name not in IDENTITY_ENV}
    return {**env, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else ""), **extra}


def credentials_from(client_config: str | os.PathLike[str] | None) -> Credentials | None:
    """The credentials in the client config at `client_config` (None: no path, or a config
    without keys), the environment ignored: how a child process handed a harness server's
    `client_config` path calls as its admin."""
    if client_config is None:
        return None
    from boruta.transport.credentials import load_client_config
    return load_client_config(client_config, env={}).credentials


def _flag(value: Any) -> bool:
    """A boolean setting as the server reads it (`True`, "true", "yes", "1", ...)."""
    return value is True or (isinstance(value, str) and value.strip().lower() in
                             ("1", "true", "yes", "on"))


def wait_until(predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.02,
               what: str = "condition") -> T:
    """Poll `predicate` until it returns a truthy value (returned); TimeoutError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def parse_fields(line: str) -> dict[str, str]:
    """The `key=value` words of a ready line (`boruta server ready listen=... dryad=...`)."""
    return dict(word.split("=", 1) for word in line.split() if "=" in word)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def rss_bytes(pid: int) -> int:
    """Resident memory of a process in bytes; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


class Child:
    """A child process whose stdout lines are read on a thread; stderr goes to a log file.

    `log` is a path (the file is created, or appended to with `append`, and
    closed by `close`) or an open text file the caller keeps.
    """

    def __init__(self, argv: list[str], log: Path | str | IO[str], *, stdin: bool = False,
                 env: Mapping[str, str] | None = None, cwd: Path | str = ROOT,
                 append: bool = False) -> None:
        self.argv = list(argv)
        if isinstance(log, (str, os.PathLike)):
            self.log_path = Path(log)
            self._log_file: IO[str] = open(self.log_path, "a" if append else "w",
                                           encoding="utf-8")
            self._owns_log = True
        else:
            self.log_path = Path(log.name)
            self._log_file = log
            self._owns_log = False
        self.started = time.perf_counter()          # for time-to-ready figures
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=self._log_file, text=True, cwd=cwd,
            env=dict(env) if env is not None else child_env(),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, name=f"child-{self.proc.pid}-stdout",
                         daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def name(self) -> str:
        """The command, short: `python -m boruta.cli server`."""
        words = [Path(self.argv[0]).name, *self.argv[1:4]]
        return " ".join(words)

    def expect(self, prefix: str, timeout: float = READY_TIMEOUT) -> str:
        """The next stdout line that starts with `prefix` (earlier lines are skipped).

        A child that exits, or prints no such line within `timeout` seconds, is
        killed and reported with the end of its log (ChildError).
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise ChildError(f"{self.name} printed no {prefix!r} line within {timeout:g}s"
                                 f"{self._log_tail()}") from None
            if line is None:
                self._lines.put(None)              # the next expect sees the end too
                code = self.proc.poll()
                self.kill()
                raise ChildError(f"{self.name} ended (exit status {code}) before printing "
                                 f"{prefix!r}{self._log_tail()}")
            if line.startswith(prefix):
                return line

    def send(self, text: str) -> None:
        """One line to the child's stdin (started with `stdin=True`)."""
        assert self.proc.stdin is not None, "started without stdin=True"
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def rss(self) -> int:
        return rss_bytes(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        """What the child wrote to stderr so far."""
        if not self._log_file.closed:
            self._log_file.flush()
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def _log_tail(self, lines: int = 40) -> str:
        tail = self.log().splitlines()[-lines:]
        return f"; the end of {self.log_path}:\n" + "\n".join(tail) if tail else \
            f" (nothing in {self.log_path})"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal the child and return its exit status; killed and ChildError past the deadline."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise ChildError(f"{self.name} did not stop within {timeout:g}s of signal "
                                 f"{signal.Signals(sig).name}") from None
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the child (SIGTERM, SIGKILL at the deadline), close its log; never raises."""
        try:
            self.stop(timeout=timeout)
        except ChildError:
            pass
        self.kill()
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        if self._owns_log and not self._log_file.closed:
            self._log_file.close()

    def __enter__(self) -> "Child":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def server_command(settings: Mapping[str, Any]) -> list[str]:
    """`python -m boruta.cli server --set key=value ...`: every setting on the command line."""
    cmd = [sys.executable, "-m", "boruta.cli", "server"]
    for key, value in settings.items():
        cmd += ["--set", f"{key}={value}"]
    return cmd


class ServerProcess:
    """`boruta server` in a child process, with the Clients and SimFarms talking to it.

    Settings are the configuration file's keys (`key_type="ed25519"`); the
    class's `defaults` come first (loopback on free ports), `state_dir` is
    ":memory:" unless given. A secure server (the default) keeps its keys in
    `identity_dir`: a fresh directory beside the log unless given (or, with a
    durable `state_dir`, the state directory, so that a restarted server keeps
    its identity); the local client config it writes is its own admin's, never
    the developer's. `start` waits for the ready line, reads the endpoints from
    it and the admin's credentials from `<identity_dir>/client.toml`; `close`
    closes every farm and client handed out, then stops the process.
    """

    defaults: Mapping[str, Any] = LOOPBACK
    client_timeout = 5.0            # seconds, for `client()` without a timeout

    def __init__(self, log_path: Path, **settings: Any) -> None:
        self.settings: dict[str, Any] = {"state_dir": MEMORY, **self.defaults, **settings}
        self.log_path = Path(log_path)
        self.insecure = _flag(self.settings.get("insecure", False))
        if not self.insecure:
            state_dir = self.settings.get("state_dir")
            if not self.settings.get("identity_dir") and state_dir in (None, MEMORY):
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                self.settings["identity_dir"] = tempfile.mkdtemp(
                    prefix=f"{self.log_path.stem}-identity-", dir=self.log_path.parent)
            # The admin's own file again: never the developer's ~/.config/boruta/client.toml.
            self.settings.setdefault("client_config", str(self._admin_config_path()))
        self.child: Child | None = None
        self.endpoints: dict[str, str] = {}
        self._credentials: Credentials | None = None
        self._admin: Client | None = None
        self._admin_lock = threading.Lock()
        self._clients: list[Client] = []
        self._farms: list[SimFarm] = []

    def _admin_config_path(self) -> Path:
        directory = self.settings.get("identity_dir") or self.settings["state_dir"]
        return Path(directory) / ADMIN_CLIENT_CONFIG

    def start(self, timeout: float = READY_TIMEOUT) -> "ServerProcess":
        """Start the process, wait for `boruta server ready listen=... dryad=... events=...`
        and read the bootstrap admin's credentials (a secure server)."""
        self.child = Child(server_command(self.settings), self.log_path)
        self.endpoints = parse_fields(self.child.expect(SERVER_READY, timeout))
        if not self.insecure:
            self._credentials = credentials_from(self._admin_config_path())
            if self._credentials is None:
                self.child.kill()
                raise ChildError(f"{self.child.name} wrote no server key in "
                                 f"{self._admin_config_path()}")
        return self

    # ------------------------------------------------------------------ what it is
    @property
    def proc(self) -> subprocess.Popen[str]:
        assert self.child is not None, "the server was not started"
        return self.child.proc

    @property
    def started(self) -> float:
        """time.perf_counter() when the process was started."""
        assert self.child is not None, "the server was not started"
        return self.child.started

    @property
    def listen(self) -> str:
        return self.endpoints["listen"]

    @property
    def dryad(self) -> str:
        return self.endpoints["dryad"]

    @property
    def events(self) -> str:
        return self.endpoints["events"]

    @property
    def http(self) -> str:
        """The base URL of the server's HTTP face (`http://127.0.0.1:PORT`), from its
        ready line; KeyError when it serves no HTTP (`http_listen = ""`)."""
        return self.endpoints["http"]

    @property
    def credentials(self) -> Credentials | None:
        """The bootstrap admin's credentials (None: an insecure server)."""
        return self._credentials

    @property
    def client_config(self) -> Path | None:
        """The admin's client config the server wrote (None: an insecure server); give it
        to a `boruta` command as $BORUTA_CLIENT_CONFIG."""
        return None if self.insecure else self._admin_config_path()

    def alive(self) -> bool:
        return self.child is not None and self.child.alive()

    def cpu(self) -> float:
        return self.child.cpu() if self.child is not None else 0.0

    def rss(self) -> int:
        return self.child.rss() if self.child is not None else 0

    def log(self) -> str:
        if self.child is not None:
            return self.child.log()
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    # ------------------------------------------------------------------ what talks to it
    def client(self, timeout: float | None = None, retries: int = 2, **kw: Any) -> Client:
        """A Client of this server as the bootstrap admin unless `credentials=` says
        otherwise (closed by `close`)."""
        from boruta.transport.client import Client
        kw.setdefault("credentials", self._credentials)
        client = Client(self.listen, timeout=self.client_timeout if timeout is None else timeout,
                        retries=retries, events_endpoint=self.events, **kw)
        self._clients.append(client)
        return client

    def user(self, name: str, timeout: float | None = None, **fields: Any) -> Client:
        """Add user `name` (`fields`: groups, role, priorities, max_open) with a fresh
        keypair; a Client that holds their key (closed by `close`)."""
        from boruta.transport.credentials import Credentials, new_keypair
        if self._credentials is None:
            raise RuntimeError("an insecure server has no users: every peer is an admin")
        pair = new_keypair()
        self._as_admin(lambda admin: admin.user_add(name=name, keys=[pair.public], **fields))
        return self.client(timeout, credentials=Credentials(self._credentials.server_key, pair))

    def enrol(self, uuid: str, pair: KeyPair | None = None) -> Credentials | None:
        """Enrol worker `uuid` with a fresh keypair (or `pair`); the credentials its dryad
        connects with (None: an insecure server, where any dryad registers)."""
        if self._credentials is None:
            return None
        from boruta.sim.dryads import enrol
        server_key = self._credentials.server_key
        return self._as_admin(lambda admin: enrol(admin, server_key, uuid, pair))

    def _as_admin(self, call: Callable[[Client], T]) -> T:
        """`call` with the harness's own admin client (one at a time: clients are not
        thread-safe, and farms enrol from whichever thread adds a dryad)."""
        with self._admin_lock:
            if self._admin is None:
                self._admin = self.client()
            return call(self._admin)

    def farm(self, count: int = 0, registered_within: float = 10.0, **kw: Any) -> SimFarm:
        """A SimFarm of `count` simulated dryads on this server, each enrolled, registered
        (closed by `close`)."""
        from boruta.sim.dryads import SimFarm
        kw.setdefault("credentials_for", self.enrol)
        farm = SimFarm(self.dryad, count, **kw)
        self._farms.append(farm)
        if count:
            farm.wait_registered(registered_within)
        return farm

    def secure(self, sock: zmq.Socket, dryad: str | None = None) -> zmq.Socket:
        """A raw socket made a CURVE client (before it connects): with the admin's
        credentials, or for the dryad endpoint with a key enrolled for worker `dryad`.
        Unchanged for an insecure server."""
        credentials = self.enrol(dryad) if dryad is not None else self._credentials
        if credentials is not None:
            credentials.apply(sock)
        return sock

    def cli_env(self, **extra: str) -> dict[str, str]:
        """The environment of a `boruta` command that talks to this server as its admin
        ($BORUTA_CLIENT_CONFIG: the admin's client config); `extra` over it."""
        config = self.client_config
        identity = {"BORUTA_CLIENT_CONFIG": str(config)} if config is not None else {}
        return child_env(**identity, **extra)

    def sim_dryads(self, count: int, caps: Mapping[str, str], log: Path, **kw: Any
                   ) -> tuple[Child, list[str]]:
        """`python -m boruta.sim.dryads` for this server, enrolling through its admin."""
        return start_sim_dryads(self.dryad, count, caps, log, client_config=self.client_config,
                                insecure=self.insecure, **kw)

    # ------------------------------------------------------------------ the end
    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal the server, return its exit status (killed and ChildError past the deadline)."""
        assert self.child is not None, "the server was not started"
        return self.child.stop(sig, timeout)

    def kill(self) -> None:
        if self.child is not None:
            self.child.kill()

    def close(self, timeout: float = 5.0) -> None:
        """Close every farm and client handed out, then stop the process; never raises."""
        for farm in self._farms:
            farm.close()
        self._farms.clear()
        for client in self._clients:
            client.close()
        self._clients.clear()
        self._admin = None
        if self.child is not None:
            self.child.close(timeout)

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def start_sim_dryads(server_dryad: str, count: int, caps: Mapping[str, str], log: Path, *,
                     echo: bool = False, ssh: bool = False, timeout: float = 60.0,
                     client_config: Path | str | None = None,
                     insecure: bool = False) -> tuple[Child, list[str]]:
    """`python -m boruta.sim.dryads` with `count` dryads, once all registered: (child, UUIDs).

    The sim enrols its dryads through the admin's `client_config` (None: the
    client config reader's default); `insecure`: plain text.
    """
    cmd = [sys.executable, "-m", "boruta.sim.dryads", "--count", str(count),
           "--server", server_dryad]
    cmd += ["--echo"] * echo + ["--ssh"] * ssh + ["--insecure"] * insecure
    if client_config is not None and not insecure:
        cmd += ["--client-config", str(client_config)]
    for key, value in caps.items():
        cmd += ["--caps", f"{key}={value}"]
    child = Child(cmd, log)
    child.expect(SIM_READY, timeout)
    uuids = [child.expect("dryad ", 10).split()[1] for _ in range(count)]
    return child, uuids
