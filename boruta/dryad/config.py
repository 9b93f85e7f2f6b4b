"""The dryad's configuration file (TOML).

`write_default_config` writes a commented file for an operator to edit (the
text below, with a fresh UUID); `load_config` reads one back, checks every
field and raises ConfigError naming the field and the problem. Unknown keys
are errors too: a misspelt key must not silently fall back to a default.

Defaults run anywhere (simulated board, embedded SSH server listening on
127.0.0.1 with a free port); a MuxPi install uses `board.backend = "stm"`
and `session.backend = "system"`. `server_key` and `key_file` (the dryad's
CURVE identity, made by `boruta admin dryad enroll`) go together; without
them the dryad speaks plain text (to a server run with `insecure = true`).
"""
from __future__ import annotations

import os
import re
import tomllib
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from boruta.core.addresses import AddressError, split_host_port
from boruta.core.errors import ConfigError
from boruta.dryad.accounts import USER_NAME_RULE, is_user_name
from boruta.dryad.stm import DEFAULT_STM_PATH, DEFAULT_STM_TIMEOUT, tcp_address
from boruta.transport.addresses import DRYAD_ENDPOINT, parse_endpoint
from boruta.transport.credentials import (Credentials, check_public_key, read_key_file,
                                          toml_string)

if TYPE_CHECKING:
    from boruta.dryad.board import Board
    from boruta.dryad.operations import DryadOperations
    from boruta.dryad.session import SessionBackend

__all__ = [
    "BoardConfig",
    "ConfigError",
    "ConfigExistsError",
    "DEFAULT_CONFIG_PATH",
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
DEFAULT_USER = "boruta-user"
DEFAULT_SSH_LISTEN = "127.0.0.1:0"
DEFAULT_SYSTEM_SSH_PORT = 22
BOARD_BACKENDS = ("simulated", "stm")
SESSION_BACKENDS = ("embedded", "system")
#: How a dryad can reach its server (inproc:// lives inside one process only).
SERVER_TRANSPORTS = ("tcp", "ipc")


class ConfigExistsError(ConfigError, FileExistsError):
    """write_default_config refuses to overwrite a file."""


@dataclass(frozen=True)
class BoardConfig:
    backend: str = "simulated"
    stm_path: str = DEFAULT_STM_PATH
    stm_timeout: float = DEFAULT_STM_TIMEOUT


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
    server: str = DRYAD_ENDPOINT
    heartbeat_interval: float = 5.0
    groups: tuple[str, ...] = ()
    user: str = DEFAULT_USER
    user_groups: tuple[str, ...] = ()
    board: BoardConfig = field(default_factory=BoardConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    blink_period: float = 1.0
    healthcheck: HealthcheckConfig = field(default_factory=HealthcheckConfig)
    source: str | None = None
    server_key: str = ""           # the server's public key; "" = plain text
    key_file: str = ""             # this dryad's key file (resolved against the config's dir)

    @property
    def uuid(self) -> str:
        return self.caps["UUID"]

    def credentials(self) -> Credentials | None:
        """The dryad's CURVE credentials (reads the key file: ConfigError naming it)."""
        if not self.server_key:
            return None
        return Credentials(self.server_key, read_key_file(self.key_file))

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
            from boruta.dryad.system_session import SystemSessionBackend
            return SystemSessionBackend(self.user_groups, user=self.user,
                                        address=self.ssh_advertised())
        from boruta.dryad.embedded_ssh import EmbeddedSSHServer
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
        raise ConfigError("no such file; `boruta dryad init` writes one", source=source) from None
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror or e}", source=source) from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8: {e}", source=source) from None
    return parse_config(text, source)


def parse_config(text: str, source: str | None = None) -> DryadConfig:
    """Check a configuration given as TOML text."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}", source=source) from None
    try:
        return _from_doc(doc, source)
    except ConfigError as e:
        if e.source is None and source is not None:
            raise ConfigError(e.problem, field=e.field, source=source) from None
        raise


_TOP = {"server", "server_key", "key_file", "heartbeat_interval", "groups", "caps", "user", "board", "session",
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
            raise ConfigError(f"must be a table ([{name}]), not {_kind(table)}", field=name)
        _no_unknown(table, keys, name + ".")
        tables[name] = table

    server = _endpoint("server", _get(doc, "server", "server", str, DRYAD_ENDPOINT))
    server_key, key_file = _identity(_get(doc, "server_key", "server_key", str, "").strip(),
                                     _get(doc, "key_file", "key_file", str, "").strip(), source)
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
    stm_path = _stm_path(_get(b, "stm_path", "board.stm_path", str, DEFAULT_STM_PATH),
                         board_backend)
    stm_timeout = _positive("board.stm_timeout", _get(b, "stm_timeout", "board.stm_timeout",
                                                      float, DEFAULT_STM_TIMEOUT))

    s = tables["session"]
    session_backend = _choice("session.backend", _get(s, "backend", "session.backend", str,
                                                       "embedded"), SESSION_BACKENDS)
    listen_host, listen_port = _host_port(
        "session.listen", _get(s, "listen", "session.listen", str, DEFAULT_SSH_LISTEN),
        empty_host=False)
    advertise = _get(s, "advertise", "session.advertise", str, "")
    adv_host: str | None = None
    adv_port: int | None = None
    if advertise:
        adv_host, adv_port = _host_port("session.advertise", advertise, empty_host=True)
    workdir_base = _get(s, "workdir_base", "session.workdir_base", str, "")
    if workdir_base and not os.path.isabs(workdir_base):
        raise ConfigError("must be an absolute path", field="session.workdir_base")
    host_key = _get(s, "host_key", "session.host_key", str, "")
    if host_key and not os.path.isabs(host_key):
        raise ConfigError("must be an absolute path", field="session.host_key")

    blink = _positive("maintenance.blink_period",
                      _get(tables["maintenance"], "blink_period",
                           "maintenance.blink_period", float, 1.0))

    h = tables["healthcheck"]
    power_tick = _get(h, "power_tick", "healthcheck.power_tick", bool, False)
    tick_s = _positive("healthcheck.power_tick_seconds",
                       _get(h, "power_tick_seconds", "healthcheck.power_tick_seconds",
                            float, 1.0))
    if tick_s > 60:
        raise ConfigError(f"at most 60, not {tick_s:g}",
                          field="healthcheck.power_tick_seconds")
    cmin = _get(h, "current_min", "healthcheck.current_min", float, 0.0)
    cmax = _get(h, "current_max", "healthcheck.current_max", float, 5.0)
    if not cmin < cmax:
        raise ConfigError(f"must be greater than current_min ({cmin:g}), not {cmax:g}",
                          field="healthcheck.current_max")

    return DryadConfig(
        caps=caps, server=server, heartbeat_interval=heartbeat, groups=groups,
        user=user, user_groups=user_groups,
        board=BoardConfig(board_backend, stm_path, stm_timeout),
        session=SessionConfig(session_backend, listen_host, listen_port, adv_host,
                              adv_port, workdir_base, host_key),
        blink_period=blink,
        healthcheck=HealthcheckConfig(power_tick, tick_s, cmin, cmax),
        source=source, server_key=server_key, key_file=key_file,
    )


def _identity(server_key: str, key_file: str, source: str | None) -> tuple[str, str]:
    """server_key and key_file, both or neither; a relative key_file is relative to the
    configuration file's directory."""
    if server_key and not key_file:
        raise ConfigError("missing: a server_key needs this dryad's key file too "
                          "(`boruta admin dryad enroll` writes it)", field="key_file")
    if key_file and not server_key:
        raise ConfigError("missing: a key_file needs the server's public key too",
                          field="server_key")
    if not server_key:
        return "", ""
    check_public_key(server_key, "server_key")
    base = os.path.dirname(os.path.abspath(source)) if source else os.getcwd()
    return server_key, os.path.join(base, os.path.expanduser(key_file))


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


def _no_unknown(table: dict[str, Any], known: set[str], prefix: str) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(f"unknown key; known: {', '.join(sorted(known))}",
                              field=f"{prefix}{key}")


def _get(table: dict[str, Any], key: str, name: str, kind: type, default: Any) -> Any:
    if key not in table:
        return default
    value = table[key]
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"must be a number, not {_kind(value)}", field=name)
        return float(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"must be true or false, not {_kind(value)}", field=name)
        return value
    if not isinstance(value, kind):
        raise ConfigError(f"must be {_kind(kind())}, not {_kind(value)}", field=name)
    return value


def _positive(name: str, value: float) -> float:
    if not value > 0 or value != value or value == float("inf"):
        raise ConfigError(f"must be a positive number of seconds, not {value:g}", field=name)
    return value


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"unknown backend {value!r}; one of {', '.join(choices)}", field=name)
    return value


def _names(name: str, values: list[Any]) -> tuple[str, ...]:
    for i, v in enumerate(values):
        if not isinstance(v, str) or not v.strip():
            raise ConfigError(f"must be a non-empty string, not {v!r}", field=f"{name}[{i}]")
    return tuple(values)


def _username(name: str, value: str) -> str:
    if not is_user_name(value):
        raise ConfigError(f"{value!r} is not a valid user name ({USER_NAME_RULE})", field=name)
    return value


def _caps(caps: Any) -> dict[str, str]:
    if caps is None:
        raise ConfigError("missing: the [caps] table needs this dryad's UUID", field="caps.UUID")
    if not isinstance(caps, dict):
        raise ConfigError(f"must be a table ([caps]), not {_kind(caps)}", field="caps")
    out: dict[str, str] = {}
    for key, value in caps.items():
        if not key:
            raise ConfigError("a capability name is empty", field="caps")
        if not isinstance(value, str):
            raise ConfigError(f"must be a string (quote it), not {_kind(value)}",
                              field=f"caps.{key}")
        out[key] = value
    if "UUID" not in out:
        raise ConfigError("missing: the [caps] table needs this dryad's UUID", field="caps.UUID")
    try:
        canonical = str(uuid.UUID(out["UUID"]))
    except ValueError:
        canonical = None
    if canonical != out["UUID"]:
        hint = f" (write it as {canonical!r})" if canonical else ""
        raise ConfigError(f"{out['UUID']!r} is not a UUID in canonical form{hint}",
                          field="caps.UUID")
    return out


def _host_port(name: str, text: str, *, empty_host: bool) -> tuple[str, int]:
    """`HOST:PORT` (port 0: any free port) with the one parser; errors name the field."""
    try:
        return split_host_port(text, allow_empty_host=empty_host, allow_zero_port=True)
    except AddressError as e:
        hint = " (use 0.0.0.0 for every interface)" if text.startswith(":") else ""
        raise ConfigError(f"{e}{hint}", field=name) from None


def _endpoint(name: str, text: str) -> str:
    """The server's dryad endpoint, tcp://HOST:PORT or ipc://PATH."""
    try:
        endpoint = parse_endpoint(text)
    except AddressError as e:
        raise ConfigError(str(e), field=name) from None
    if endpoint.partition("://")[0] not in SERVER_TRANSPORTS:
        raise ConfigError(f"{text!r}: a dryad reaches its server over tcp://HOST:PORT or "
                          "ipc://PATH", field=name)
    return endpoint


def _stm_path(path: str, backend: str) -> str:
    """Where the STM is; a tcp:// one is checked now rather than at the first connect."""
    if backend == "stm" and not path.strip():
        raise ConfigError("must not be empty with the stm backend", field="board.stm_path")
    try:
        tcp_address(path)
    except AddressError as e:
        raise ConfigError(str(e), field="board.stm_path") from None
    return path


# --- writing -------------------------------------------------------------------------


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else toml_string(k)


def _toml_list(items: Iterable[str]) -> str:
    return "[" + ", ".join(toml_string(i) for i in items) + "]"


_TEMPLATE = """\
# Boruta dryad configuration.
# Edit it, then start the dryad:  boruta dryad --config {path}

# The server's dryad endpoint: tcp://HOST:PORT (or ipc://PATH).
server = {server}

# The server's public key (`boruta server` prints it) and this dryad's key
# file (`boruta admin dryad enroll UUID` writes it; a relative path is
# relative to this file's directory). Both empty: plain text, for a server
# run with insecure = true.
server_key = {server_key}
key_file = {key_file}

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
    server: str = DRYAD_ENDPOINT,
    board: str = "simulated",
    session: str = "embedded",
    ssh_listen: str | None = None,
    user: str = DEFAULT_USER,
    stm_path: str = DEFAULT_STM_PATH,
    groups: Iterable[str] = (),
    user_groups: Iterable[str] = (),
    advertise: str = "",
    server_key: str = "",
    key_file: str = "",
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
                        ("board.stm_path", stm_path), ("server_key", server_key),
                        ("key_file", key_file)):
        if not isinstance(value, str):
            raise ConfigError(f"must be a string, not {_kind(value)}", field=name)
    groups, user_groups = list(groups), list(user_groups)
    for name, values in (("groups", groups), ("user.groups", user_groups)):
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise ConfigError(f"must be a string, not {_kind(v)}", field=f"{name}[{i}]")
    caps = dict(caps or {})
    caps.setdefault("UUID", str(uuid.uuid4()))
    if not isinstance(caps["UUID"], str):
        raise ConfigError(f"must be a string, not {_kind(caps['UUID'])}", field="caps.UUID")
    lines = [f"UUID = {toml_string(caps.pop('UUID'))}"]
    for k, v in caps.items():
        if not isinstance(k, str) or not k:
            raise ConfigError(f"capability names are non-empty strings, not {k!r}", field="caps")
        if not isinstance(v, str):
            raise ConfigError(f"must be a string, not {_kind(v)}", field=f"caps.{k}")
    lines += [f"{_toml_key(k)} = {toml_string(v)}" for k, v in sorted(caps.items())]
    text = _TEMPLATE.format(
        path=target,
        server=toml_string(server),
        server_key=toml_string(server_key),
        key_file=toml_string(key_file),
        groups=_toml_list(groups),
        caps="\n".join(lines),
        user=toml_string(user),
        user_groups=_toml_list(user_groups),
        board=toml_string(board),
        stm_path=toml_string(stm_path),
        session=toml_string(session),
        listen=toml_string(listen),
        advertise=toml_string(advertise),
    )
    config = parse_config(text, target)  # never write what load_config would refuse
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise ConfigExistsError("already exists; not overwriting it "
                                "(remove it first to start afresh)", source=target) from None
    except OSError as e:
        raise ConfigError(f"cannot write: {e.strerror or e}", source=target) from e
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return config
