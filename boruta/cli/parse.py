"""Parsing of what people type on the `boruta` command line (pure functions).

Every parser raises `ValueError` with a message fit to show to a person;
the click types of boruta/cli/options.py turn that into a usage error (exit
status 2).
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

from boruta.core.durations import UNIT_SECONDS
from boruta.core.types import (
    ReqState,
    SortInfo,
    WorkerState,
    parse_req_state as _core_parse_req_state,
    parse_worker_state as _core_parse_worker_state,
)

# The longest duration accepted: longer than anyone means to wait, and short enough
# that every clock and socket timeout below can still count it.
MAX_DURATION_DAYS = 3650
_RELATIVE_RE = re.compile(r"^\+((?:\d+[smhd])+)$")
_RELATIVE_PART_RE = re.compile(r"(\d+)([smhd])")
_DURATION_RE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)([smhd]?)$")
_INTEGER_RE = re.compile(r"^[+-]?[0-9]+$")

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
        seconds = sum(int(n) * UNIT_SECONDS[u] for n, u in _RELATIVE_PART_RE.findall(m.group(1)))
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
    """Seconds, as a number (`90`, `0.5`) or with a unit (`90s`, `10m`, `2h`, `1d`);
    more than zero and at most MAX_DURATION_DAYS."""
    raw = str(text).strip().lower()
    m = _DURATION_RE.match(raw)
    if not m:
        raise ValueError(f"invalid duration {text!r}; use seconds (30, 0.5) or 90s, 10m, 2h, 1d")
    value = float(m.group(1)) * UNIT_SECONDS[m.group(2) or "s"]
    if value <= 0:
        raise ValueError(f"duration {text!r} must be more than zero")
    if value > MAX_DURATION_DAYS * UNIT_SECONDS["d"]:
        raise ValueError(f"duration {text!r} is too long; the most is {MAX_DURATION_DAYS}d")
    return value


def parse_integer(text: str, low: int, high: int, what: str) -> int:
    """A whole number in ASCII digits within low..high; `what` names the range for people
    (e.g. "request IDs run from 1 to ...")."""
    raw = str(text).strip()
    if not _INTEGER_RE.match(raw):
        raise ValueError(f"{text!r} is not a whole number")
    value = int(raw)
    if not low <= value <= high:
        raise ValueError(f"{raw} is out of range: {what}")
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


def parse_key_value(text: str, what: str, example: str) -> tuple[str, str]:
    """One `KEY=VALUE` (the key stripped; the value may itself contain `=`)."""
    raw = str(text)
    key, sep, value = raw.partition("=")
    if not sep:
        raise ValueError(f"invalid {what} {raw!r}; use KEY=VALUE, e.g. {example}")
    key = key.strip()
    if not key:
        raise ValueError(f"invalid {what} {raw!r}: the key is empty")
    return key, value


def parse_cap(text: str) -> tuple[str, str]:
    """One capability `KEY=VALUE`; the value is kept as typed."""
    return parse_key_value(text, "capability", "device_type=rpi4")


def parse_requirement(text: str) -> Any:
    """What a request asks of a worker: a capability expression (a Term: `serial in
    57600,115200`, `voltage 2.9..3.6`, `hdmi != yes`, `sdmux?`, `!sdmux`), else one
    capability `KEY=VALUE`."""
    from boruta.core.capexpr import parse_term
    from boruta.core.errors import BadArgumentError
    try:
        return parse_term(text)
    except BadArgumentError as exc:
        if "=" in str(text) and "!=" not in str(text):
            return parse_cap(text)
        raise ValueError(exc.message) from None


def parse_setting(text: str) -> tuple[str, str]:
    """One server setting `KEY=VALUE`, as the configuration file names it."""
    key, value = parse_key_value(text, "setting", "heartbeat_interval=0.5")
    return key, value.strip()


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
