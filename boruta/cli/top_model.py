"""What `boruta top` knows about the farm: built from lists and event documents, no I/O.

The server's lists give a starting point and the event stream the changes
since. An event names a request's new state but not its caps, priority or
owner, so a request (or worker) the model has not seen, or whose priority
and times may have changed (a WAITING event), is *pending*: the shell looks
it up and hands the answer to `learn_request` / `learn_worker`. A look-up
also corrects an event that crossed a list (a list and the stream are not
one snapshot).

A long queue is loaded only as far as its head (the shell's choice); the
model keeps the count of the requests beyond it and follows it from the
events: a request it does not know that leaves WAITING was one of them.

Events are numbered; a gap (events lost by a slow reader) or a number that
goes back (a restarted server) sets `needs_sync`, and the shell lists again.

Queue waits are measured as the dashboard and /metrics measure them: from
a request's valid-after time (its creation, unless it asked to start later)
to the IN PROGRESS event, both on the server's clock.
"""
from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from boruta.core.errors import BorutaError
from boruta.core.types import ReqInfo, ReqState, WorkerInfo, WorkerState, iso, to_timestamp
from boruta.transport.arguments import as_time

#: Worker states in the order the counts show them.
WORKER_STATES: tuple[str, ...] = tuple(str(s) for s in (
    WorkerState.IDLE, WorkerState.RUN, WorkerState.PREPARE, WorkerState.MAINTENANCE,
    WorkerState.FAIL, WorkerState.BUSY))
REQUEST_STATES: tuple[str, ...] = (str(ReqState.WAIT), str(ReqState.INPROGRESS))
REMOVED = "REMOVED"              # a worker event's state after deregistration
CREATED = "created"              # a new request's WAITING event
#: States a request reaches only from WAITING: an unknown request that reaches one was
#: in the part of the queue beyond the loaded head.
LEAVES_WAITING = frozenset({ReqState.INPROGRESS, ReqState.CANCEL, ReqState.TIMEOUT,
                            ReqState.INVALID})
NO_DEVICE_TYPE = "(none)"        # the dashboard's label for caps without a device_type

SORTS: tuple[str, ...] = ("priority", "age", "device type")
TRANSITIONS_KEPT = 200
WAITS_KEPT = 200                 # recent queue waits kept per device type
ALL_WAITS_KEPT = 500             # and over all device types


def device_type_of(caps: Mapping[str, str]) -> str:
    return caps.get("device_type") or NO_DEVICE_TYPE


def percentile(ordered: list[float], fraction: float) -> float:
    """The nearest-rank percentile of sorted values (at least one)."""
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _epoch(value: Any) -> float | None:
    """An event's `at` as epoch seconds; None when it cannot be read."""
    if value is None:
        return None
    try:
        return to_timestamp(as_time("at", value))
    except BorutaError:
        return None


def _req_state(value: Any) -> ReqState | None:
    try:
        return ReqState(value)
    except ValueError:
        return None


# ---------------------------------------------------------------------- rows
@dataclass(slots=True)
class OpenRequest:
    """A WAITING or IN PROGRESS request; `info` is None until it has been looked up."""
    id: int
    state: ReqState
    info: ReqInfo | None = None
    measured: bool = False           # its last start's wait is counted (or on its way)

    @property
    def device_type(self) -> str | None:
        return None if self.info is None else device_type_of(self.info.caps)


@dataclass(slots=True)
class KnownWorker:
    state: str
    device_type: str | None          # None until looked up


@dataclass(slots=True)
class Transition:
    """One state change from the stream, as `top` lists it."""
    at: str
    kind: str                        # "request" or "worker"
    subject: str                     # the request's ID or the worker's UUID
    state: str
    reason: str
    worker: str | None = None        # a request's worker
    device_type: str | None = None   # None: not known (yet)

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "kind": self.kind, "subject": self.subject, "state": self.state,
                "reason": self.reason, "worker": self.worker, "device_type": self.device_type}


@dataclass(frozen=True)
class QueueRow:
    id: int
    priority: int
    device_type: str
    caps: Mapping[str, str]
    owner: str
    valid_after: float
    waited: float                    # seconds since valid_after (negative: not yet valid)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "priority": self.priority, "device_type": self.device_type,
                "caps": dict(self.caps), "owner": self.owner,
                "valid_after": iso(_utc(self.valid_after)), "waited": round(self.waited, 3)}


@dataclass(frozen=True)
class QueueView:
    """The head of the queue as shown, and what it leaves out."""
    rows: list[QueueRow]
    waiting: int                     # known WAITING requests that pass the filter
    beyond: int                      # WAITING requests past the loaded head (not filtered)
    unresolved: int                  # WAITING requests not looked up yet (not filtered)

    def to_dict(self) -> dict[str, Any]:
        return {"items": [r.to_dict() for r in self.rows], "waiting": self.waiting,
                "beyond": self.beyond, "unresolved": self.unresolved}


@dataclass(frozen=True)
class WaitRow:
    """Queue waits of one device type (or all): the queue now, and recent starts."""
    device_type: str | None          # None: all device types
    waiting: int
    oldest: float | None             # seconds the longest-waiting request has waited
    started: int                     # recent starts measured
    p50: float | None
    p90: float | None
    max: float | None

    def to_dict(self) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 3)
        return {"device_type": self.device_type, "waiting": self.waiting,
                "oldest": r(self.oldest), "started": self.started, "p50": r(self.p50),
                "p90": r(self.p90), "max": r(self.max)}


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


# ---------------------------------------------------------------------- the model
@dataclass
class FarmModel:
    """Workers, open requests, recent transitions and queue waits, as `top` shows them."""

    workers: dict[str, KnownWorker] = field(default_factory=dict)
    requests: dict[int, OpenRequest] = field(default_factory=dict)
    waiting_beyond: int = 0          # WAITING requests past the loaded head
    last_seq: int | None = None
    needs_sync: bool = True          # nothing loaded yet, or events were lost
    transitions: deque[Transition] = field(
        default_factory=lambda: deque(maxlen=TRANSITIONS_KEPT))
    waits: dict[str, deque[float]] = field(default_factory=dict)
    all_waits: deque[float] = field(default_factory=lambda: deque(maxlen=ALL_WAITS_KEPT))
    # ids / UUIDs to look up, oldest first (dicts as ordered sets)
    _pending_requests: dict[int, None] = field(default_factory=dict)
    _pending_workers: dict[str, None] = field(default_factory=dict)
    _unmeasured_starts: dict[int, float] = field(default_factory=dict)   # id -> start

    # ------------------------------------------------------------ input
    def load(self, workers: Iterable[WorkerInfo], requests: Iterable[ReqInfo],
             waiting_total: int | None = None) -> None:
        """A fresh list replaces what the events built (transitions and waits stay).
        `waiting_total`: how many WAITING requests the server holds, when `requests`
        carries only the head of the queue."""
        self.workers = {w.worker_uuid: KnownWorker(str(w.state), device_type_of(w.caps))
                        for w in workers}
        self.requests = {r.id: OpenRequest(r.id, r.state, r) for r in requests
                         if not r.state.terminal}
        loaded = sum(1 for r in self.requests.values() if r.state is ReqState.WAIT)
        self.waiting_beyond = max(0, (waiting_total or 0) - loaded)
        self._pending_requests = dict.fromkeys(self._unmeasured_starts)
        self._pending_workers = {}
        self.needs_sync = False

    def apply(self, event: Mapping[str, Any]) -> None:
        """One document from the event stream (anything it does not know is skipped)."""
        seq = event.get("seq")
        if isinstance(seq, int) and not isinstance(seq, bool):
            if self.last_seq is not None and seq != self.last_seq + 1:
                self.needs_sync = True       # lost events, or a restarted server
            self.last_seq = seq
        kind = event.get("kind")
        if kind == "request":
            self._request_event(event)
        elif kind == "worker":
            self._worker_event(event)

    def _request_event(self, event: Mapping[str, Any]) -> None:
        req_id, state = event.get("id"), _req_state(event.get("state"))
        if isinstance(req_id, bool) or not isinstance(req_id, int) or state is None:
            return
        at = _epoch(event.get("at"))
        row = self.requests.get(req_id)
        worker = event.get("worker_uuid")
        self._note(Transition(str(event.get("at") or ""), "request", str(req_id), str(state),
                              str(event.get("reason") or ""),
                              worker if isinstance(worker, str) else None,
                              row.device_type if row is not None else None))
        if row is None:
            self._unknown_request(req_id, state, event.get("reason"), at)
            return
        if state.terminal:
            del self.requests[req_id]
            if req_id not in self._unmeasured_starts:     # else its wait needs the look-up
                self._pending_requests.pop(req_id, None)
            return
        # A look-up may have seen the start before its event came: the event measures it.
        if state is ReqState.INPROGRESS and not row.measured and at is not None:
            self._started(req_id, row.info, at)
            row.measured = True
        row.state = state
        if state is ReqState.WAIT:           # updated, or back from a failed start
            row.measured = False
            self._pending_requests[req_id] = None

    def _unknown_request(self, req_id: int, state: ReqState, reason: Any,
                         at: float | None) -> None:
        if (state in LEAVES_WAITING or (state is ReqState.WAIT and reason != CREATED)) \
                and self.waiting_beyond:
            self.waiting_beyond -= 1         # it was in the queue past the loaded head
        if state.terminal:
            return                           # over before we knew it
        started = state is ReqState.INPROGRESS
        self.requests[req_id] = OpenRequest(req_id, state, measured=started)
        self._pending_requests[req_id] = None
        if started and at is not None:
            self._unmeasured_starts[req_id] = at     # measured once its caps are known

    def _worker_event(self, event: Mapping[str, Any]) -> None:
        uuid, state = event.get("uuid"), event.get("state")
        if not isinstance(uuid, str) or not isinstance(state, str):
            return
        if state != REMOVED and state not in WORKER_STATES:
            return
        row = self.workers.get(uuid)
        self._note(Transition(str(event.get("at") or ""), "worker", uuid, state,
                              str(event.get("reason") or ""), None,
                              row.device_type if row is not None else None))
        if state == REMOVED:
            self.workers.pop(uuid, None)
            self._pending_workers.pop(uuid, None)
        elif row is None:
            self.workers[uuid] = KnownWorker(state, None)
            self._pending_workers[uuid] = None
        else:
            row.state = state

    def _note(self, transition: Transition) -> None:
        self.transitions.append(transition)

    def _started(self, req_id: int, info: ReqInfo | None, at: float) -> None:
        if info is None:
            self._unmeasured_starts[req_id] = at
            self._pending_requests[req_id] = None
            return
        wait = max(0.0, at - to_timestamp(info.valid_after))
        device_type = device_type_of(info.caps)
        self.waits.setdefault(device_type, deque(maxlen=WAITS_KEPT)).append(wait)
        self.all_waits.append(wait)

    def lookups(self, limit: int) -> tuple[list[int], list[str]]:
        """Up to `limit` request IDs and worker UUIDs to look up, oldest first."""
        return (list(_first(self._pending_requests, limit)),
                list(_first(self._pending_workers, limit)))

    def learn_request(self, req_id: int, info: ReqInfo | None) -> None:
        """A looked-up request (None: the server no longer has it)."""
        self._pending_requests.pop(req_id, None)
        started = self._unmeasured_starts.pop(req_id, None)
        if started is not None and info is not None:
            self._started(req_id, info, started)
        row = self.requests.get(req_id)
        if row is None:
            return
        if info is None or info.state.terminal:
            del self.requests[req_id]
            return
        row.info, row.state = info, info.state
        self._fill_device_type("request", str(req_id), device_type_of(info.caps))

    def learn_worker(self, uuid: str, info: WorkerInfo | None) -> None:
        """A looked-up worker (None: the server no longer has it)."""
        self._pending_workers.pop(uuid, None)
        if info is None:
            self.workers.pop(uuid, None)
            return
        device_type = device_type_of(info.caps)
        self.workers[uuid] = KnownWorker(str(info.state), device_type)
        self._fill_device_type("worker", uuid, device_type)

    def _fill_device_type(self, kind: str, subject: str, device_type: str) -> None:
        for transition in self.transitions:
            if transition.device_type is None and transition.kind == kind \
                    and transition.subject == subject:
                transition.device_type = device_type

    # ------------------------------------------------------------ output
    def device_types(self) -> list[str]:
        """Every device type seen: of workers, open requests and recent waits."""
        found = {w.device_type for w in self.workers.values() if w.device_type is not None}
        found.update(r.device_type for r in self.requests.values() if r.info is not None)
        found.update(self.waits)
        return sorted(found)  # type: ignore[arg-type]

    def worker_counts(self, device_type: str | None = None) -> dict[str, int]:
        counts = dict.fromkeys(WORKER_STATES, 0)
        for worker in self.workers.values():
            if device_type is None or worker.device_type == device_type:
                counts[worker.state] = counts.get(worker.state, 0) + 1
        return counts

    def request_counts(self, device_type: str | None = None) -> dict[str, int]:
        """Open requests by state; with a device type, only those looked up."""
        counts = dict.fromkeys(REQUEST_STATES, 0)
        for req in self.requests.values():
            if device_type is None or req.device_type == device_type:
                counts[str(req.state)] += 1
        if device_type is None:
            counts[str(ReqState.WAIT)] += self.waiting_beyond
        return counts

    def _waiting(self, device_type: str | None) -> list[ReqInfo]:
        return [r.info for r in self.requests.values()
                if r.state is ReqState.WAIT and r.info is not None
                and (device_type is None or device_type_of(r.info.caps) == device_type)]

    def queue(self, now: float, sort: str = SORTS[0], device_type: str | None = None,
              limit: int = 20) -> QueueView:
        """The first `limit` WAITING requests: by priority then ID (the scheduler's
        order), by age (oldest first) or by device type (then priority and ID)."""
        waiting = self._waiting(device_type)
        if sort == "age":
            def key(r: ReqInfo) -> tuple[Any, ...]:
                return (to_timestamp(r.valid_after), r.id)
        elif sort == "device type":
            def key(r: ReqInfo) -> tuple[Any, ...]:
                return (device_type_of(r.caps), r.priority, r.id)
        else:
            def key(r: ReqInfo) -> tuple[Any, ...]:
                return (r.priority, r.id)
        rows = []
        for r in heapq.nsmallest(max(0, limit), waiting, key=key):
            valid_after = to_timestamp(r.valid_after)
            rows.append(QueueRow(r.id, r.priority, device_type_of(r.caps), dict(r.caps),
                                 r.owner.name, valid_after, now - valid_after))
        unresolved = sum(1 for r in self.requests.values()
                         if r.state is ReqState.WAIT and r.info is None)
        return QueueView(rows, len(waiting), self.waiting_beyond, unresolved)

    def wait_rows(self, now: float, device_type: str | None = None) -> list[WaitRow]:
        """All device types first (unless filtered), then each device type."""
        types = [device_type] if device_type is not None else [None, *self.device_types()]
        rows = []
        for kind in types:
            waiting = self._waiting(kind)
            recent = sorted(self.all_waits if kind is None else self.waits.get(kind, ()))
            oldest = max((now - to_timestamp(r.valid_after) for r in waiting), default=None)
            count = self.request_counts()[str(ReqState.WAIT)] if kind is None else len(waiting)
            rows.append(WaitRow(
                kind, count, None if oldest is None else max(0.0, oldest), len(recent),
                percentile(recent, 0.5) if recent else None,
                percentile(recent, 0.9) if recent else None,
                recent[-1] if recent else None))
        return rows

    def recent_transitions(self, device_type: str | None = None,
                           limit: int = 10) -> list[Transition]:
        """The newest `limit` transitions, newest first."""
        found: list[Transition] = []
        for transition in reversed(self.transitions):
            if len(found) >= limit:
                break
            if device_type is None or transition.device_type == device_type:
                found.append(transition)
        return found

    def snapshot(self, now: float, sort: str = SORTS[0], device_type: str | None = None,
                 queue_limit: int = 20, transitions_limit: int = 10) -> dict[str, Any]:
        """Everything `top` shows, as one JSON-ready document."""
        return {
            "at": iso(_utc(now)), "sort": sort, "device_type": device_type,
            "device_types": self.device_types(),
            "workers": self.worker_counts(device_type),
            "requests": self.request_counts(device_type),
            "queue": self.queue(now, sort, device_type, queue_limit).to_dict(),
            "waits": [w.to_dict() for w in self.wait_rows(now, device_type)],
            "transitions": [t.to_dict() for t in
                            self.recent_transitions(device_type, transitions_limit)],
        }


def _first(ordered: dict[Any, None], limit: int) -> Iterable[Any]:
    for index, key in enumerate(ordered):
        if index >= limit:
            return
        yield key
