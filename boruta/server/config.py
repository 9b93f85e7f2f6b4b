"""The server's configuration: a TOML file, then overrides (command-line flags).

    listen = "tcp://*:7175"          # clients (ROUTER); defaults: boruta.transport.addresses
    dryad_listen = "tcp://*:7176"    # dryads (ROUTER; dryads connect as DEALER peers)
    events = "tcp://*:7177"          # event stream (XPUB)
    public_host = "127.0.0.1"        # the host name clients are told to SSH to
    tunnel_host = "0.0.0.0"          # where tunnels listen
    tunnel_ports = "20000-20999"     # "0" = any free port
    key_type = "rsa"                 # or "ed25519"
    state_dir = "/var/lib/boruta"    # durable state (SQLite); unset: in memory
    insecure = false                 # true: plain text, every peer an admin (development only)
    identity_dir = "/var/lib/boruta" # the server's keys and the bootstrap admin's; unset: state_dir
    state_sync = "full"              # fsync policy: "full", "normal" or "off"
    restart_grace = 60.0             # seconds restored workers wait for their dryads
    purge_interval = 3600.0          # how often terminal requests past `retention` go
    ...
    [scheduler]                      # boruta.core.config.SchedulerConfig
    job_timeout = 3600.0

A SchedulerConfig key may also be given at the top level (or as an override
`job_timeout=...` / `scheduler.job_timeout=...`). Unknown keys are refused,
so a typo never goes unnoticed. An endpoint's port may be `*` (any free
port); the server reports the real endpoints on its ready line.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from boruta.core.config import SchedulerConfig
from boruta.core.errors import ConfigError
from boruta.core.addresses import split_host_port
from boruta.transport.addresses import (HTTP_PORT, LISTEN_CLIENTS, LISTEN_DRYADS, LISTEN_EVENTS,
                                        AddressError, parse_endpoint)

KEY_TYPES = {"rsa": "rsa", "ssh-rsa": "rsa", "ed25519": "ed25519", "ssh-ed25519": "ed25519"}
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
STATE_SYNC = ("full", "normal", "off")
MEMORY = ":memory:"               # state_dir for "keep nothing on disk", explicitly


def default_state_dir() -> str:
    """Where `boruta server` keeps its state when not told: $XDG_STATE_HOME/boruta,
    else ~/.local/state/boruta."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                             "state")
    return os.path.join(base, "boruta")


@dataclass(frozen=True)
class ServerConfig:
    listen: str = LISTEN_CLIENTS
    dryad_listen: str = LISTEN_DRYADS
    events: str = LISTEN_EVENTS
    public_host: str = "127.0.0.1"
    tunnel_host: str = "0.0.0.0"
    tunnel_ports: tuple[int, int] = (20000, 20999)
    key_type: str = "rsa"
    rsa_bits: int = 2048
    key_pool_size: int = 4
    dryad_reply_timeout: float = 30.0
    heartbeat_interval: float = 5.0
    heartbeat_liveness: int = 3
    healthcheck_interval: float = 300.0        # healthcheck IDLE workers this often; 0 = never
    max_frame_bytes: int = 1 << 20
    peer_rate: float = 2000.0                  # messages per second per peer (token bucket)
    peer_burst: int = 4000
    max_parked: int = 10000                    # parked acquire/wait calls, all clients
    max_parked_per_peer: int = 256             # parked calls of one peer (beyond: busy)
    max_park_seconds: float = 60.0             # a parked call is answered wait_timeout by then
    max_reply_bytes: int = 4 << 20             # a list reply is cut to fit (remaining says more)
    max_peer_buffer_bytes: int = 16 << 20      # replies buffered for a peer that does not read
    tunnel_connect_timeout: float = 10.0
    shutdown_grace: float = 2.0
    log_level: str = "info"
    log_format: str = "text"
    log_file: str | None = None
    audit: bool = True                         # one line per state-changing call (boruta.audit)
    audit_file: str | None = None              # the audit log's own file; None: with the log
    state_dir: str | None = None               # durable state (SQLite); None: in memory
    insecure: bool = False                     # no CURVE, every peer an admin (development only)
    identity_dir: str | None = None            # server.key, admin.key, client.toml; None: the
                                               # state_dir (in memory: the default state_dir)
    client_config: str | None = None           # the local client config written at start;
                                               # None: ~/.config/boruta/client.toml, "": none
    max_workers_per_dryad_key: int = 1         # workers one dryad key may be enrolled for
    http_listen: str = f"127.0.0.1:{HTTP_PORT}"   # upstream's HTTP API v1, /metrics, the
                                               # dashboard (host:port; port 0: any; "": off)
    http_anonymous: str = ""                   # HTTP calls without credentials act as this
                                               # user (a trusted network only); "": refused
    http_max_body: int = 1 << 20               # bytes of an HTTP request body
    http_cors_origins: str = "*"               # origins allowed by CORS (comma-separated)
    state_sync: str = "full"                   # fsync policy: full | normal | off
    restart_grace: float = 60.0                # restored workers wait this long for dryads
    purge_interval: float = 3600.0             # seconds between purges of old history
    matcher: str | None = None                 # "compiled" | "reference" | None (auto)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)

    def __post_init__(self) -> None:
        for name in ("listen", "dryad_listen", "events"):
            value = getattr(self, name)
            if not isinstance(value, str) or "://" not in value:
                raise ConfigError(f"{name}: {value!r} is not a ZeroMQ endpoint (tcp://HOST:PORT)")
            try:
                parse_endpoint(value, bind=True)
            except AddressError as exc:
                raise ConfigError(f"{name}: {exc}") from None
        lo, hi = self.tunnel_ports
        if not (0 <= lo <= hi <= 65535) or (lo == 0 and hi != 0):
            raise ConfigError(f"tunnel_ports: bad range {lo}-{hi}")
        if self.key_type not in ("rsa", "ed25519"):
            raise ConfigError(f"key_type: {self.key_type!r} (use rsa or ed25519)")
        if self.rsa_bits < 1024:
            raise ConfigError("rsa_bits must be at least 1024")
        if self.key_pool_size < 0:
            raise ConfigError("key_pool_size must not be negative")
        for name in ("dryad_reply_timeout", "heartbeat_interval", "peer_rate",
                     "tunnel_connect_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.heartbeat_liveness < 1:
            raise ConfigError("heartbeat_liveness must be at least 1")
        if self.healthcheck_interval < 0 or self.shutdown_grace < 0:
            raise ConfigError("healthcheck_interval and shutdown_grace must not be negative")
        if self.max_frame_bytes < 1024:
            raise ConfigError("max_frame_bytes must be at least 1024")
        for name in ("peer_burst", "max_parked", "max_parked_per_peer"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if not self.max_park_seconds > 0:
            raise ConfigError("max_park_seconds must be positive")
        for name in ("max_reply_bytes", "max_peer_buffer_bytes"):
            if getattr(self, name) < 1024:
                raise ConfigError(f"{name} must be at least 1024")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level: {self.log_level!r} (use one of {', '.join(LOG_LEVELS)})")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log_format: {self.log_format!r} (use text or json)")
        if self.state_sync not in STATE_SYNC:
            raise ConfigError(f"state_sync: {self.state_sync!r} (use full, normal or off)")
        if self.restart_grace < 0:
            raise ConfigError("restart_grace must not be negative")
        if self.purge_interval <= 0:
            raise ConfigError("purge_interval must be positive")
        if self.state_dir is not None and not self.state_dir.strip():
            raise ConfigError("state_dir must not be blank (leave it unset, or use :memory:)")
        if self.http_listen:
            try:
                split_host_port(self.http_listen, allow_zero_port=True, allow_wildcard=True)
            except AddressError as exc:
                raise ConfigError(f"http_listen: {exc} (host:port, or empty for no HTTP)"
                                  ) from None
        if self.http_max_body < 1024:
            raise ConfigError("http_max_body must be at least 1024")
        if self.max_workers_per_dryad_key < 1:
            raise ConfigError("max_workers_per_dryad_key must be at least 1")
        if self.matcher not in (None, "compiled", "reference"):
            raise ConfigError(f"matcher: {self.matcher!r} (use compiled or reference)")

    @property
    def durable(self) -> bool:
        """True when the server keeps its state in `state_dir`."""
        return self.state_dir is not None and self.state_dir != MEMORY

    @property
    def keys_dir(self) -> str:
        """Where the server's and the bootstrap admin's keys live: `identity_dir`, else the
        state directory; a server that keeps its state in memory keeps its keys where
        `boruta server` keeps state by default, so that its identity outlives it."""
        if self.identity_dir:
            return self.identity_dir
        return self.state_dir if self.durable and self.state_dir else default_state_dir()

    def replace(self, **changes: Any) -> "ServerConfig":
        return dataclasses.replace(self, **changes)


_SERVER_FIELDS = {f.name: f for f in fields(ServerConfig) if f.name != "scheduler"}
_SCHED_FIELDS = {f.name: f for f in fields(SchedulerConfig)}


def parse_port_range(value: Any) -> tuple[int, int]:
    """"20000-20999", "0", 7200, [7200, 7299] -> (lo, hi)."""
    if isinstance(value, bool):
        raise ConfigError(f"tunnel_ports: {value!r} is not a port range")
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2:
        lo, hi = value
        if all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)):
            return lo, hi
    if isinstance(value, str):
        lo, sep, hi = value.strip().partition("-")
        try:
            return (int(lo), int(hi)) if sep else (int(lo), int(lo))
        except ValueError:
            pass
    raise ConfigError(f"tunnel_ports: {value!r} is not a port range (e.g. 20000-20999 or 0)")


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    text = str(annotation)
    if name == "tunnel_ports":
        return parse_port_range(value)
    if name == "key_type":
        key = str(value).strip().lower()
        if key not in KEY_TYPES:
            raise ConfigError(f"key_type: {value!r} (use rsa or ed25519)")
        return KEY_TYPES[key]
    if name in ("log_level", "log_format", "state_sync"):
        return str(value).strip().lower()
    if name == "client_config" and isinstance(value, str) and not value.strip():
        return ""                     # "": write no local client config (unset: the default)
    if "None" in text and isinstance(value, str) and value.strip().lower() in ("", "none", "null"):
        value = None
    if value is None:
        if "None" in text:
            return None
        raise ConfigError(f"{name} must not be empty")
    try:
        if text.startswith("float"):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if text.startswith("int"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if text.startswith("bool"):
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            return bool(value)
        if text.startswith("str"):
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: {value!r} is not a valid {text.split(' ')[0]}") from None
    return value


def _flatten(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """TOML tables to dotted keys: only [scheduler] may be a table."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            if key != "scheduler":
                raise ConfigError(f"{where}: unknown table [{key}]")
            for sub, subval in value.items():
                out[f"scheduler.{sub}"] = subval
        else:
            out[key] = value
    return out


def load_server_config(path: str | Path | None = None,
                       overrides: Mapping[str, Any] | None = None) -> ServerConfig:
    """The file's settings (if any), then `overrides` (None values are ignored).

    Override keys use the config names (`listen`, `log_level`, ...); dashes
    are accepted for underscores, and scheduler settings may be given plainly
    (`job_timeout`) or dotted (`scheduler.job_timeout`).
    """
    settings: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            with p.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {p} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p}: {exc}") from None
        settings.update(_flatten(data, str(p)))
    for key, value in (overrides or {}).items():
        if value is not None:
            settings[key.replace("-", "_")] = value
    server: dict[str, Any] = {}
    sched: dict[str, Any] = {}
    for key, value in settings.items():
        name = key.removeprefix("scheduler.")
        if key.startswith("scheduler.") or (name in _SCHED_FIELDS and name not in _SERVER_FIELDS):
            if name not in _SCHED_FIELDS:
                raise ConfigError(f"unknown scheduler setting {name!r}")
            sched[name] = _coerce(name, value, _SCHED_FIELDS[name].type)
        elif name in _SERVER_FIELDS:
            server[name] = _coerce(name, value, _SERVER_FIELDS[name].type)
        else:
            raise ConfigError(f"unknown setting {key!r}")
    try:
        scheduler = SchedulerConfig(**sched)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"scheduler: {exc}") from None
    return ServerConfig(scheduler=scheduler, **server)
