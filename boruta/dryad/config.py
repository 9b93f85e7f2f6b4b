"""The dryad's configuration file (TOML).

`write_default_config` writes a commented file for an operator to edit (the
text below, with a fresh UUID); `load_config` reads one back, checks every
field and raises ConfigError naming the field and the problem. Unknown keys
are errors too: a misspelt key must not silently fall back to a default.

Defaults run anywhere (simulated board, embedded SSH server listening on
127.0.0.1 with a free port); a MuxPi install uses `board.backend = "stm"`
and `session.backend = "system"`.
"""
from __future__ import annotations

import os
import re
import tomllib
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping

if TYPE_CHECKING:
    from boruta.dryad.board import Board
    from boruta.dryad.operations import DryadOperations
    from boruta.dryad.session import SessionBackend

__all__ = [
    "BoardConfig",
    "ConfigError",
    "ConfigExistsError",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_SERVER",
    "DEFAULT_SSH_LISTEN",
    "DEFAULT_USER",
    "DryadConfig",
    "HealthcheckConfig",
    "SessionConfig",
    "load_config",
    "parse_config",
    "write_default_config",
]

DEFAULT_CONFIG_PATH = "/etc/boruta/dryad.conf"
DEFAULT_SERVER = "tcp://127.0.0.1:7176"
DEFAULT_USER = "boruta-user"
DEFAULT_SSH_LISTEN = "127.0.0.1:0"
DEFAULT_STM_PATH = "/dev/ttyS2"
DEFAULT_SYSTEM_SSH_PORT = 22
BOARD_BACKENDS = ("simulated", "stm")
SESSION_BACKENDS = ("embedded", "system")


class ConfigError(ValueError):
    """A configuration problem: `field` (dotted, e.g. "caps.UUID") and `problem`."""

    def __init__(self, field: str, problem: str, source: str | None = None) -> None:
        self.field = field
        self.problem = problem
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{field}: {problem}")


class ConfigExistsError(ConfigError, FileExistsError):
    """write_default_config refuses to overwrite a file."""


@dataclass(frozen=True)
class BoardConfig:
    backend: str = "simulated"
    stm_path: str = DEFAULT_STM_PATH
    stm_timeout: float = 2.0


@dataclass(frozen=True)
class SessionConfig:
    backend: str = "embedded"
    listen_host: str = "127.0.0.1"
    listen_port: int = 0
    # None: derive from the backend (see DryadConfig.ssh_advertised)
    advertise_host: str | None = None
    advertise_port: int | None = None
    workdir_base: str = ""
    host_key: str = ""


@dataclass(frozen=True)
class HealthcheckConfig:
    power_tick: bool = False
    power_tick_seconds: float = 1.0
    current_min: float = 0.0
    current_max: float = 5.0


@dataclass(frozen=True)
class DryadConfig:
    caps: Mapping[str, str]
    server: str = DEFAULT_SERVER
    heartbeat_interval: float = 5.0
    groups: tuple[str, ...] = ()
    user: str = DEFAULT_USER
    user_groups: tuple[str, ...] = ()
    board: BoardConfig = field(default_factory=BoardConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    blink_period: float = 1.0
    healthcheck: HealthcheckConfig = field(default_factory=HealthcheckConfig)
    source: str | None = None

    @property
    def uuid(self) -> str:
        return self.caps["UUID"]

    def ssh_advertised(self, bound: tuple[str, int] | None = None) -> tuple[str, int]:
        """The SSH address to send to the server.

        `bound` is the session backend's `address()`. An empty host means
        "the address the server sees this dryad connect from".
        """
        s = self.session
        if s.backend == "system":
            default = ("", DEFAULT_SYSTEM_SSH_PORT)
        else:
            default = bound if bound is not None else (s.listen_host, s.listen_port)
        host = s.advertise_host if s.advertise_host is not None else default[0]
        port = s.advertise_port if s.advertise_port else default[1]
        if host in ("0.0.0.0", "::"):
            host = ""  # a wildcard is no address; let the server fill in ours
        return host, port

    # --- building the parts ---------------------------------------------------

    def make_board(self) -> "Board":
        if self.board.backend == "stm":
            from boruta.dryad.stm import StmBoard
            return StmBoard(self.board.stm_path, timeout=self.board.stm_timeout)
        from boruta.dryad.board import SimulatedBoard
        return SimulatedBoard()

    def make_session_backend(self) -> "SessionBackend":
        s = self.session
        if s.backend == "system":
            from boruta.dryad.session import SystemSessionBackend
            return SystemSessionBackend(self.user_groups, user=self.user,
                                        address=self.ssh_advertised())
        from boruta.dryad.session import EmbeddedSSHServer
        return EmbeddedSSHServer(s.listen_host, s.listen_port,
                                 workdir_base=s.workdir_base or None,
                                 host_key_path=s.host_key or None)

    def make_operations(self, board: "Board", session: "SessionBackend") -> "DryadOperations":
        from boruta.dryad.operations import DryadOperations
        h = self.healthcheck
        return DryadOperations(board, session, self.user, blink_period=self.blink_period,
                               healthcheck_power_tick=h.power_tick,
                               power_tick_seconds=h.power_tick_seconds,
                               current_range=(h.current_min, h.current_max))


# --- reading -----------------------------------------------------------------


def load_config(path: str | os.PathLike) -> DryadConfig:
    """Read and check a dryad configuration file."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ConfigError("(file)", "no such file; `boruta dryad init` writes one",
                          source) from None
    except OSError as e:
        raise ConfigError("(file)", f"cannot read: {e.strerror or e}", source) from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError("(file)", f"not UTF-8: {e}", source) from None
    return parse_config(text, source)


def parse_config(text: str, source: str | None = None) -> DryadConfig:
    """Check a configuration given as TOML text."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("(file)", f"not valid TOML: {e}", source) from None
    try:
        return _from_doc(doc, source)
    except ConfigError as e:
        if e.source is None and source is not None:
            raise ConfigError(e.field, e.problem, source) from None
        raise


_TOP = {"server", "heartbeat_interval", "groups", "caps", "user", "board", "session",
        "maintenance", "healthcheck"}
_TABLES = {
    "user": {"name", "groups"},
    "board": {"backend", "stm_path", "stm_timeout"},
    "session": {"backend", "listen", "advertise", "workdir_base", "host_key"},
    "maintenance": {"blink_period"},
    "healthcheck": {"power_tick", "power_tick_seconds", "current_min", "current_max"},
}


def _from_doc(doc: dict[str, Any], source: str | None) -> DryadConfig:
    _no_unknown(doc, _TOP, "")
    tables: dict[str, dict[str, Any]] = {}
    for name, keys in _TABLES.items():
        table = doc.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(name, f"must be a table ([{name}]), not {_kind(table)}")
        _no_unknown(table, keys, name + ".")
        tables[name] = table

    server = _endpoint("server", _get(doc, "server", "server", str, DEFAULT_SERVER))
    heartbeat = _positive("heartbeat_interval",
                          _get(doc, "heartbeat_interval", "heartbeat_interval", float, 5.0))
    groups = _names("groups", _get(doc, "groups", "groups", list, []))
    caps = _caps(doc.get("caps"))

    u = tables["user"]
    user = _username("user.name", _get(u, "name", "user.name", str, DEFAULT_USER))
    user_groups = _names("user.groups", _get(u, "groups", "user.groups", list, []))

    b = tables["board"]
    board_backend = _choice("board.backend", _get(b, "backend", "board.backend", str,
                                                   "simulated"), BOARD_BACKENDS)
    stm_path = _get(b, "stm_path", "board.stm_path", str, DEFAULT_STM_PATH)
    if board_backend == "stm" and not stm_path.strip():
        raise ConfigError("board.stm_path", "must not be empty with the stm backend")
    stm_timeout = _positive("board.stm_timeout",
                            _get(b, "stm_timeout", "board.stm_timeout", float, 2.0))

    s = tables["session"]
    session_backend = _choice("session.backend", _get(s, "backend", "session.backend", str,
                                                       "embedded"), SESSION_BACKENDS)
    listen_host, listen_port = _hostport(
        "session.listen", _get(s, "listen", "session.listen", str, DEFAULT_SSH_LISTEN),
        empty_host=False, zero_port=True)
    advertise = _get(s, "advertise", "session.advertise", str, "")
    adv_host: str | None = None
    adv_port: int | None = None
    if advertise:
        adv_host, adv_port = _hostport("session.advertise", advertise,
                                       empty_host=True, zero_port=True)
    workdir_base = _get(s, "workdir_base", "session.workdir_base", str, "")
    if workdir_base and not os.path.isabs(workdir_base):
        raise ConfigError("session.workdir_base", "must be an absolute path")
    host_key = _get(s, "host_key", "session.host_key", str, "")
    if host_key and not os.path.isabs(host_key):
        raise ConfigError("session.host_key", "must be an absolute path")

    blink = _positive("maintenance.blink_period",
                      _get(tables["maintenance"], "blink_period",
                           "maintenance.blink_period", float, 1.0))

    h = tables["healthcheck"]
    power_tick = _get(h, "power_tick", "healthcheck.power_tick", bool, False)
    tick_s = _positive("healthcheck.power_tick_seconds",
                       _get(h, "power_tick_seconds", "healthcheck.power_tick_seconds",
                            float, 1.0))
    if tick_s > 60:
        raise ConfigError("healthcheck.power_tick_seconds", f"at most 60, not {tick_s:g}")
    cmin = _get(h, "current_min", "healthcheck.current_min", float, 0.0)
    cmax = _get(h, "current_max", "healthcheck.current_max", float, 5.0)
    if not cmin < cmax:
        raise ConfigError("healthcheck.current_max",
                          f"must be greater than current_min ({cmin:g}), not {cmax:g}")

    return DryadConfig(
        caps=caps, server=server, heartbeat_interval=heartbeat, groups=groups,
        user=user, user_groups=user_groups,
        board=BoardConfig(board_backend, stm_path, stm_timeout),
        session=SessionConfig(session_backend, listen_host, listen_port, adv_host,
                              adv_port, workdir_base, host_key),
        blink_period=blink,
        healthcheck=HealthcheckConfig(power_tick, tick_s, cmin, cmax),
        source=source,
    )


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


def _no_unknown(table: dict[str, Any], known: set[str], prefix: str) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(f"{prefix}{key}", f"unknown key; known: {', '.join(sorted(known))}")


def _get(table: dict[str, Any], key: str, name: str, kind: type, default: Any) -> Any:
    if key not in table:
        return default
    value = table[key]
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(name, f"must be a number, not {_kind(value)}")
        return float(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(name, f"must be true or false, not {_kind(value)}")
        return value
    if not isinstance(value, kind):
        raise ConfigError(name, f"must be {_kind(kind())}, not {_kind(value)}")
    return value


def _positive(name: str, value: float) -> float:
    if not value > 0 or value != value or value == float("inf"):
        raise ConfigError(name, f"must be a positive number of seconds, not {value:g}")
    return value


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(name, f"unknown backend {value!r}; one of {', '.join(choices)}")
    return value


def _names(name: str, values: list[Any]) -> tuple[str, ...]:
    for i, v in enumerate(values):
        if not isinstance(v, str) or not v.strip():
            raise ConfigError(f"{name}[{i}]", f"must be a non-empty string, not {v!r}")
    return tuple(values)


_USERNAME = re.compile(r"[a-z_][a-z0-9_-]{0,30}\Z")


def _username(name: str, value: str) -> str:
    if not _USERNAME.match(value):
        raise ConfigError(name, f"{value!r} is not a valid user name (lower case letters, "
                                "digits, '_' or '-', starting with a letter or '_', "
                                "at most 31 characters)")
    return value


def _caps(caps: Any) -> dict[str, str]:
    if caps is None:
        raise ConfigError("caps.UUID", "missing: the [caps] table needs this dryad's UUID")
    if not isinstance(caps, dict):
        raise ConfigError("caps", f"must be a table ([caps]), not {_kind(caps)}")
    out: dict[str, str] = {}
    for key, value in caps.items():
        if not key:
            raise ConfigError("caps", "a capability name is empty")
        if not isinstance(value, str):
            raise ConfigError(f"caps.{key}", f"must be a string (quote it), not {_kind(value)}")
        out[key] = value
    if "UUID" not in out:
        raise ConfigError("caps.UUID", "missing: the [caps] table needs this dryad's UUID")
    try:
        canonical = str(uuid.UUID(out["UUID"]))
    except ValueError:
        canonical = None
    if canonical != out["UUID"]:
        hint = f" (write it as {canonical!r})" if canonical else ""
        raise ConfigError("caps.UUID", f"{out['UUID']!r} is not a UUID in canonical form{hint}")
    return out


def _hostport(name: str, text: str, *, empty_host: bool, zero_port: bool) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ConfigError(name, f"{text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host:
            raise ConfigError(name, "empty IPv6 address in brackets")
    elif ":" in host:
        raise ConfigError(name, f"write an IPv6 address in brackets: [{host}]:{port}")
    if not host and not empty_host:
        raise ConfigError(name, f"{text!r} has no host (use 0.0.0.0 for every interface)")
    if not port.isdigit() or not (0 if zero_port else 1) <= int(port) <= 65535:
        lo = 0 if zero_port else 1
        raise ConfigError(name, f"port must be {lo}..65535, not {port!r}")
    return host, int(port)


def _endpoint(name: str, text: str) -> str:
    if text.startswith("tcp://"):
        _hostport(name, text[len("tcp://"):], empty_host=False, zero_port=False)
        return text
    if text.startswith("ipc://") and len(text) > len("ipc://"):
        return text
    raise ConfigError(name, f"{text!r} is not an endpoint like tcp://HOST:PORT or ipc://PATH")


# --- writing -------------------------------------------------------------------------


def _toml_str(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else _toml_str(k)


def _toml_list(items: Iterable[str]) -> str:
    return "[" + ", ".join(_toml_str(i) for i in items) + "]"


_TEMPLATE = """\
# Boruta dryad configuration.
# Edit it, then start the dryad:  boruta dryad --config {path}

# The server's dryad endpoint: tcp://HOST:PORT (or ipc://PATH).
server = {server}

# Seconds between heartbeats; the server declares a silent dryad failed.
heartbeat_interval = 5.0

# Boruta groups this dryad asks to be in when it registers (only users in a
# shared group, or in none, get it); an administrator's SetGroups decides.
groups = {groups}

# What this worker offers, matched against requests' caps (string values).
# UUID identifies this dryad: keep it, and enrol it on the server.
[caps]
{caps}

# The account a job's owner logs in as, recreated for every job.
[user]
name = {user}
# Supplementary Unix groups of that account (session backend "system");
# on MuxPi: ["disk", "dialout", "stm", "uucp"].
groups = {user_groups}

[board]
# "simulated": a MuxPi in memory (development, tests, demo);
# "stm": the MuxPi's STM microcontroller.
backend = {board}
# Where the STM is: a serial device (/dev/ttyS2 on MuxPi), unix:PATH or
# tcp://HOST:PORT carrying the STM's text protocol.
stm_path = {stm_path}
# Seconds to wait for the STM to answer one command.
stm_timeout = 2.0

[session]
# "embedded": an SSH server inside the dryad (exec, shell, SFTP in a fresh
# directory per job; commands run with the dryad's privileges);
# "system": a real local account for the board's own sshd (needs root).
backend = {session}
# embedded: HOST:PORT to listen on; port 0 takes a free port. 127.0.0.1 is
# reachable from this machine only: use 0.0.0.0:2222 (say) when the server
# runs elsewhere.
listen = {listen}
# HOST:PORT sent to the server as this worker's SSH address. Empty: the
# listen address and its bound port (embedded), or :22 (system). An empty
# HOST (":22") lets the server use the address this dryad connects from;
# port 0 means the bound port.
advertise = {advertise}
# embedded: directory for the per-job working directories (absolute);
# empty: a private temporary directory.
workdir_base = ""
# embedded: SSH host key file (absolute), created on first start; empty: a
# new host key at every start.
host_key = ""

[maintenance]
# Seconds each LED stays lit while the worker is in maintenance.
blink_period = 1.0

[healthcheck]
# true: every health check also cuts the DUT's power for power_tick_seconds to
# test the power switch (upstream's Healthcheck). The server checks IDLE
# workers every few minutes, so this is off by default.
power_tick = false
power_tick_seconds = 1.0
# A DUT current draw (amperes) outside this range is reported as a problem.
current_min = 0.0
current_max = 5.0
"""


def write_default_config(
    path: str | os.PathLike,
    *,
    caps: Mapping[str, str] | None = None,
    server: str = DEFAULT_SERVER,
    board: str = "simulated",
    session: str = "embedded",
    ssh_listen: str | None = None,
    user: str = DEFAULT_USER,
    stm_path: str = DEFAULT_STM_PATH,
    groups: Iterable[str] = (),
    user_groups: Iterable[str] = (),
    advertise: str = "",
) -> DryadConfig:
    """Write a commented configuration with a fresh UUID; return it, checked.

    `caps` adds capabilities (a UUID in it is kept, if valid). Nothing is
    written when an argument is invalid (ConfigError) or the file exists
    (ConfigExistsError).
    """
    target = os.fspath(path)
    listen = ssh_listen if ssh_listen is not None else DEFAULT_SSH_LISTEN
    for name, value in (("server", server), ("board.backend", board),
                        ("session.backend", session), ("session.listen", listen),
                        ("session.advertise", advertise), ("user.name", user),
                        ("board.stm_path", stm_path)):
        if not isinstance(value, str):
            raise ConfigError(name, f"must be a string, not {_kind(value)}")
    groups, user_groups = list(groups), list(user_groups)
    for name, values in (("groups", groups), ("user.groups", user_groups)):
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise ConfigError(f"{name}[{i}]", f"must be a string, not {_kind(v)}")
    caps = dict(caps or {})
    caps.setdefault("UUID", str(uuid.uuid4()))
    if not isinstance(caps["UUID"], str):
        raise ConfigError("caps.UUID", f"must be a string, not {_kind(caps['UUID'])}")
    lines = [f"UUID = {_toml_str(caps.pop('UUID'))}"]
    for k, v in caps.items():
        if not isinstance(k, str) or not k:
            raise ConfigError("caps", f"capability names are non-empty strings, not {k!r}")
        if not isinstance(v, str):
            raise ConfigError(f"caps.{k}", f"must be a string, not {_kind(v)}")
    lines += [f"{_toml_key(k)} = {_toml_str(v)}" for k, v in sorted(caps.items())]
    text = _TEMPLATE.format(
        path=target,
        server=_toml_str(server),
        groups=_toml_list(groups),
        caps="\n".join(lines),
        user=_toml_str(user),
        user_groups=_toml_list(user_groups),
        board=_toml_str(board),
        stm_path=_toml_str(stm_path),
        session=_toml_str(session),
        listen=_toml_str(listen),
        advertise=_toml_str(advertise),
    )
    config = parse_config(text, target)  # never write what load_config would refuse
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise ConfigExistsError("(file)", "already exists; not overwriting it "
                                "(remove it first to start afresh)", target) from None
    except OSError as e:
        raise ConfigError("(file)", f"cannot write: {e.strerror or e}", target) from e
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return config
