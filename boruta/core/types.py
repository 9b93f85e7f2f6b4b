"""Upstream Boruta's vocabulary (requests, workers, their states and infos) in Python spelling.

States carry upstream's wire strings exactly. Times are timezone-aware UTC
datetimes at the API; the core keeps them as float seconds since the epoch,
and only times inside a window (EARLIEST_TIME .. LATEST_TIME) that every
conversion survives: datetime -> seconds -> datetime, ISO 8601 text, a REAL
column of the store, and a display in any time zone (offsets reach +-14 h, so
the window stops a day short of year 10000).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

HI_PRIO = 1
LO_PRIO = 16
MAX_PAGE_LIMIT = 65535
UUID_KEY = "UUID"

# The times the core keeps. A float keeps microseconds exactly up to about
# year 2255; later ones come back within 16 microseconds, still inside the window.
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST_TIME = datetime(9999, 12, 30, tzinfo=timezone.utc)
EARLIEST_TIMESTAMP = EARLIEST_TIME.timestamp()
LATEST_TIMESTAMP = LATEST_TIME.timestamp()


class ReqState(enum.StrEnum):
    WAIT = "WAITING"
    INPROGRESS = "IN PROGRESS"
    CANCEL = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    INVALID = "INVALID"
    DONE = "DONE"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        return self not in (ReqState.WAIT, ReqState.INPROGRESS)


class WorkerState(enum.StrEnum):
    MAINTENANCE = "MAINTENANCE"
    IDLE = "IDLE"
    RUN = "RUNNING"
    FAIL = "FAILED"
    PREPARE = "PREPARE"
    BUSY = "BUSY"


REQ_STATE_SHORT = {
    "wait": ReqState.WAIT, "waiting": ReqState.WAIT,
    "inprogress": ReqState.INPROGRESS, "in progress": ReqState.INPROGRESS,
    "cancel": ReqState.CANCEL, "cancelled": ReqState.CANCEL,
    "timeout": ReqState.TIMEOUT, "invalid": ReqState.INVALID,
    "done": ReqState.DONE, "failed": ReqState.FAILED,
}
WORKER_STATE_SHORT = {
    "maintenance": WorkerState.MAINTENANCE, "idle": WorkerState.IDLE,
    "running": WorkerState.RUN, "run": WorkerState.RUN,
    "fail": WorkerState.FAIL, "failed": WorkerState.FAIL,
    "prepare": WorkerState.PREPARE, "busy": WorkerState.BUSY,
}


def parse_req_state(text: str) -> ReqState:
    """Wire string or short name, case- and whitespace-insensitive."""
    key = " ".join(str(text).split()).lower()
    if key in REQ_STATE_SHORT:
        return REQ_STATE_SHORT[key]
    raise ValueError(f"unknown request state {text!r}")


def parse_worker_state(text: str) -> WorkerState:
    key = " ".join(str(text).split()).lower()
    if key in WORKER_STATE_SHORT:
        return WORKER_STATE_SHORT[key]
    raise ValueError(f"unknown worker state {text!r}")


def to_datetime(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc)


def to_timestamp(value: datetime) -> float:
    """Aware datetimes keep their zone; naive ones are taken as UTC.

    Seconds since the epoch are computed without converting to UTC first, so a
    time whose UTC date would fall outside years 1..9999 still gets a number
    (which the caller then refuses) instead of an OverflowError.
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


@dataclass(frozen=True)
class UserInfo:
    """A request's owner: the groups their requests carry and their name (our addition:
    the authenticated user who filed it; "" for requests filed before users existed)."""

    groups: tuple[str, ...] = ()
    name: str = ""


@dataclass(frozen=True)
class JobInfo:
    worker_uuid: str
    timeout: datetime


@dataclass(frozen=True)
class ReqInfo:
    id: int
    priority: int
    owner: UserInfo
    deadline: datetime
    valid_after: datetime
    state: ReqState
    job: JobInfo | None
    caps: Mapping[str, str]
    lease: float | None = None       # the lease's grace in seconds; None: no lease
    expr: tuple[str, ...] = ()       # capability expressions, canonical (boruta.core.capexpr)

    def to_dict(self) -> dict[str, Any]:
        """The document the CLI prints with --json: ISO 8601 UTC times with a Z."""
        return {
            "id": self.id,
            "priority": self.priority,
            "state": str(self.state),
            "caps": dict(self.caps),
            "owner": {"name": self.owner.name, "groups": list(self.owner.groups)},
            "valid_after": iso(self.valid_after),
            "deadline": iso(self.deadline),
            "job": None if self.job is None else {
                "worker_uuid": self.job.worker_uuid, "timeout": iso(self.job.timeout)},
            "lease": self.lease,
            "expr": list(self.expr),
        }


@dataclass(frozen=True)
class WorkerInfo:
    worker_uuid: str
    state: WorkerState
    groups: tuple[str, ...]
    caps: Mapping[str, str]
    fail_reason: str | None = None
    dryad_address: str | None = None
    ssh_address: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "uuid": self.worker_uuid,
            "state": str(self.state),
            "groups": list(self.groups),
            "caps": dict(self.caps),
            "fail_reason": self.fail_reason,
        }


@dataclass(frozen=True)
class AccessInfo:
    """What the owner needs to log in. `addr` is filled by the shell (tunnel)."""

    username: str
    key: Any = field(repr=False)  # the job's private key: never in a repr, so never in a log
    worker_uuid: str
    ssh_address: str | None = None
    addr: tuple[str, int] | None = None
    key_type: str = ""            # "ssh-rsa" | "ssh-ed25519", filled by the shell


@dataclass(frozen=True)
class ListInfo:
    total_items: int
    remaining_items: int


@dataclass(frozen=True)
class SortInfo:
    item: str = ""
    descending: bool = False


@dataclass(frozen=True)
class Paginator:
    """`id` is a request ID (int, 0 = none) or a worker UUID ("" = none)."""

    id: int | str = 0
    backward: bool = False
    limit: int = 0


@dataclass(frozen=True)
class RequestFilter:
    """AND over non-empty fields, OR within a field, as upstream's filters."""

    ids: tuple[int, ...] = ()
    priorities: tuple[int, ...] = ()
    states: tuple[ReqState, ...] = ()
    owners: tuple[str, ...] = ()         # owners' names (our addition: `request list --mine`)

    def match(self, req: ReqInfo) -> bool:
        return ((not self.ids or req.id in self.ids)
                and (not self.priorities or req.priority in self.priorities)
                and (not self.states or req.state in self.states)
                and (not self.owners or req.owner.name in self.owners))


@dataclass(frozen=True)
class WorkerFilter:
    """Caps and groups, matched as the matcher does (every cap equal, one group
    shared unless none is given); plus states."""

    groups: tuple[str, ...] = ()
    caps: Mapping[str, str] = field(default_factory=dict)
    states: tuple[WorkerState, ...] = ()

    def match(self, worker: WorkerInfo) -> bool:
        if self.states and worker.state not in self.states:
            return False
        if any(worker.caps.get(k) != v for k, v in self.caps.items()):
            return False
        return not self.groups or bool(set(self.groups) & set(worker.groups))


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z; naive datetimes are taken as UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    text = value.astimezone(timezone.utc).isoformat()
    return text.replace("+00:00", "Z")
