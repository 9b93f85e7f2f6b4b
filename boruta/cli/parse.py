"""Parsing of what people type on the `boruta` command line (pure functions).

Every parser raises `ValueError` with a message fit to show to a person;
boruta/cli/app.py turns that into a usage error (exit status 2).
"""
from __future__ import annotations

import os
import re
import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Mapping

from boruta.core.types import (
    SortInfo,
    ReqState,
    WorkerState,
    parse_req_state as _core_parse_req_state,
    parse_worker_state as _core_parse_worker_state,
)

DEFAULT_SERVER = "tcp://127.0.0.1:7175"
SERVER_ENV = "BORUTA_SERVER"

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RELATIVE_RE = re.compile(r"^\+((?:\d+[smhd])+)$")
_RELATIVE_PART_RE = re.compile(r"(\d+)([smhd])")
_DURATION_RE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)([smhd]?)$")
_ENDPOINT_RE = re.compile(r"^(tcp|ipc|inproc)://(.+)$")

REQ_STATE_NAMES = "WAITING, 'IN PROGRESS', CANCELLED, TIMEOUT, INVALID, DONE, FAILED"
WORKER_STATE_NAMES = "MAINTENANCE, IDLE, RUNNING, FAILED, PREPARE, BUSY"


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """ISO 8601 (`2026-12-01T10:00:00Z`) or relative to now (`+90s`, `+10m`, `+2h`, `+1d`).

    Relative parts may be combined (`+1h30m`). A time without a zone is UTC.
    The result is an aware UTC datetime.
    """
    raw = str(text).strip()
    if not raw:
        raise ValueError("empty time; use ISO 8601 (2026-12-01T10:00:00Z) or +90s, +10m, +2h, +1d")
    m = _RELATIVE_RE.match(raw)
    if m:
        seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in _RELATIVE_PART_RE.findall(m.group(1)))
        base = now if now is not None else datetime.now(timezone.utc)
        if base.tzinfo is None:
            base = base.replace(tzinfo=timezone.utc)
        try:
            return (base + timedelta(seconds=seconds)).astimezone(timezone.utc)
        except OverflowError:
            raise ValueError(f"time {raw!r} is too far in the future") from None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(
            f"invalid time {raw!r}; use ISO 8601 (2026-12-01T10:00:00Z) "
            "or relative to now (+90s, +10m, +2h, +1d)") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError(f"time {raw!r} is out of range") from None


def parse_duration(text: str) -> float:
    """Seconds, as a number (`90`, `0.5`) or with a unit (`90s`, `10m`, `2h`, `1d`); > 0."""
    raw = str(text).strip().lower()
    m = _DURATION_RE.match(raw)
    if not m:
        raise ValueError(f"invalid duration {text!r}; use seconds (30, 0.5) or 90s, 10m, 2h, 1d")
    value = float(m.group(1)) * _UNIT_SECONDS[m.group(2) or "s"]
    if value <= 0:
        raise ValueError(f"duration {text!r} must be more than zero")
    return value


def parse_req_state(text: str) -> ReqState:
    """A request state by wire string or short name, case-insensitive."""
    try:
        return _core_parse_req_state(text)
    except ValueError:
        raise ValueError(f"unknown request state {text!r}; use one of {REQ_STATE_NAMES} "
                         "or their short names (wait, inprogress, cancel, ...)") from None


def parse_worker_state(text: str) -> WorkerState:
    """A worker state by wire string or short name, case-insensitive."""
    try:
        return _core_parse_worker_state(text)
    except ValueError:
        raise ValueError(f"unknown worker state {text!r}; use one of {WORKER_STATE_NAMES} "
                         "or their short names (idle, maintenance, running, fail, ...)") from None


def parse_settable_worker_state(text: str) -> WorkerState:
    """The two states a person may put a worker in: IDLE or MAINTENANCE."""
    state = parse_worker_state(text)
    if state not in (WorkerState.IDLE, WorkerState.MAINTENANCE):
        raise ValueError(f"a worker can only be set to IDLE or MAINTENANCE, not {str(state)}")
    return state


def parse_cap(text: str) -> tuple[str, str]:
    """One `KEY=VALUE`; the value may itself contain `=`."""
    raw = str(text)
    key, sep, value = raw.partition("=")
    if not sep:
        raise ValueError(f"invalid capability {raw!r}; use KEY=VALUE, e.g. device_type=rpi4")
    key = key.strip()
    if not key:
        raise ValueError(f"invalid capability {raw!r}: the key is empty")
    return key, value


def parse_caps(items: Iterable[str]) -> dict[str, str]:
    """Several `KEY=VALUE`s into a dict; one key given twice with different values is an error."""
    caps: dict[str, str] = {}
    for item in items:
        key, value = parse_cap(item)
        if key in caps and caps[key] != value:
            raise ValueError(f"capability {key!r} given twice ({caps[key]!r} and {value!r})")
        caps[key] = value
    return caps


def parse_sort(text: str) -> SortInfo:
    """`ITEM[:asc|:desc]` into a SortInfo; the server decides which items exist."""
    raw = str(text).strip()
    item, sep, order = raw.partition(":")
    item = item.strip()
    if not item:
        raise ValueError(f"invalid sort {text!r}; use ITEM[:asc|:desc], e.g. priority:desc")
    order = order.strip().lower()
    if not sep or order in ("asc", "ascending"):
        return SortInfo(item=item, descending=False)
    if order in ("desc", "descending"):
        return SortInfo(item=item, descending=True)
    raise ValueError(f"invalid sort order {order!r} in {text!r}; use :asc or :desc")


def normalize_endpoint(text: str) -> str:
    """A ZeroMQ endpoint; `HOST:PORT` alone means `tcp://HOST:PORT`."""
    raw = str(text).strip()
    if not raw:
        raise ValueError("empty server endpoint; use e.g. tcp://boruta.example.com:7175")
    if "://" not in raw:
        raw = "tcp://" + raw
    m = _ENDPOINT_RE.match(raw)
    if not m:
        raise ValueError(f"invalid server endpoint {text!r}; use tcp://HOST:PORT or ipc://PATH")
    if m.group(1) == "tcp":
        host, sep, port = m.group(2).rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"invalid server endpoint {text!r}; use tcp://HOST:PORT")
    return raw


def client_config_path(home: str | os.PathLike[str] | None = None) -> Path:
    base = Path(home) if home is not None else Path.home()
    return base / ".config" / "boruta" / "client.toml"


def read_client_config_server(path: str | os.PathLike[str]) -> str | None:
    """The `server` key of the client config file; None when the file or the key is absent."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return None
    except (IsADirectoryError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ValueError(f"cannot read {p}: {exc.strerror or exc}") from None
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"invalid client config {p}: {exc}") from None
    server = doc.get("server")
    if server is None:
        return None
    if not isinstance(server, str):
        raise ValueError(f"invalid client config {p}: 'server' must be a string")
    return server


def resolve_server(option: str | None, env: Mapping[str, str] | None = None,
                   config_path: str | os.PathLike[str] | None = None) -> str:
    """--server, then $BORUTA_SERVER, then the client config file, then the default."""
    if option is not None and str(option).strip():
        return normalize_endpoint(option)
    environ = os.environ if env is None else env
    value = environ.get(SERVER_ENV, "")
    if value.strip():
        return normalize_endpoint(value)
    if config_path is not None:
        path = Path(config_path)
    else:
        try:
            path = client_config_path()
        except (RuntimeError, KeyError):     # no home directory to look in
            return DEFAULT_SERVER
    from_file = read_client_config_server(path)
    if from_file is not None and from_file.strip():
        return normalize_endpoint(from_file)
    return DEFAULT_SERVER
