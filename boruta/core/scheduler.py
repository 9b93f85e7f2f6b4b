"""The scheduler: requests, workers, timers and the matcher in one object.

It is the functional core of Boruta. Calls (from clients, dryads and the
shell's completions) go in; state changes happen synchronously; what must
happen in the world comes out as effects (`drain_effects()`), which the
shell carries out. No I/O, no threads, no wall clock: time comes from the
injected clock, and `advance()` fires the timers that are due.

Every public call first catches up with the clock (fires due timers in
chronological order), then validates its arguments completely before it
changes anything, so a refused call leaves no trace.

The rules are upstream Boruta's, with these departures: a request no
registered worker could ever serve is refused (or, if queued anyway, turns
INVALID when the last worker that could serve it leaves); a request may
be held by a lease its client renews, and is closed when the renewals stop
for the lease's grace (a killed CI job frees its board); upstream's
defects are not reproduced; the shell answers an acquire as soon as the
request is assigned. Times outside the window of `boruta.core.types`
(EARLIEST_TIME .. LATEST_TIME) are refused; times the core computes itself
(default deadlines, job timeouts) stop at its end.
"""
from __future__ import annotations

import functools
import itertools
import sys
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator, Mapping

from boruta.core import effects
from boruta.core.capexpr import Term, TermBook, parse_terms, term_caps
from boruta.core.clock import Clock, SystemClock
from boruta.core.config import SchedulerConfig
from boruta.core.estimate import Arrivals, Estimate, JobDurations
from boruta.core.explain import Explanation, explain
from boruta.core.errors import (BadArgumentError, DeadlineInThePastError,
                                ForbiddenStateChangeError, InMaintenanceError,
                                InvalidTimeRangeError, ModificationForbiddenError,
                                NoMatchingWorkerError, NotFoundError,
                                NotInFailOrMaintenanceError, PriorityError, ProlongLimitError,
                                WorkerNotAssignedError, WrongStateArgumentError)
from boruta.core.listing import (REQUEST_SORT_KEYS, WORKER_SORT_KEYS, page_limit, paginate,
                                 sort_key)
from boruta.core.matching import make_matcher
from boruta.core.reference import caps_satisfied, groups_satisfied
from boruta.core.timers import RequestTimers, TimerKind
from boruta.core.records import Changes, Snapshot
from boruta.core.types import (HI_PRIO, LATEST_TIMESTAMP, LO_PRIO, AccessInfo, JobInfo,
                               ListInfo, Paginator, ReqInfo, ReqState, RequestFilter, SortInfo,
                               UserInfo, WorkerFilter, WorkerInfo, WorkerState, to_datetime)
from boruta.core.validation import (address_port, check_address, check_caps, check_caps_size,
                                    check_groups, check_int, check_time, check_worker_caps)

SECONDS_PER_DAY = 86_400
_DEADLINE, _VALID_AFTER = int(TimerKind.DEADLINE), int(TimerKind.VALID_AFTER)
_LEASE = int(TimerKind.LEASE)


def add_months(ts: float, months: int) -> float:
    """Go's AddDate(0, months, 0): the day overflows into the next month (Jan 31 -> Mar 3).

    UTC days are all 86,400 s long (POSIX time), so the shift depends on the
    day alone: it is computed once per day, not once per NewRequest. A result
    past LATEST_TIMESTAMP (or past year 9999) is LATEST_TIMESTAMP.
    """
    try:
        shift = _month_shift_days(int(ts // SECONDS_PER_DAY), months)
    except (ValueError, OverflowError):           # the date lands past year 9999
        return LATEST_TIMESTAMP
    return min(ts + SECONDS_PER_DAY * shift, LATEST_TIMESTAMP)


@functools.lru_cache(maxsize=64)
def _month_shift_days(day: int, months: int) -> int:
    """Days from UTC day number `day` (since 1970-01-01) to the same date `months` later."""
    moment = datetime.fromtimestamp(day * SECONDS_PER_DAY, timezone.utc)
    month0 = moment.month - 1 + months
    first = moment.replace(year=moment.year + month0 // 12, month=month0 % 12 + 1, day=1)
    return (first + timedelta(days=moment.day - 1) - moment).days


OPEN_STATES = frozenset({ReqState.WAIT, ReqState.INPROGRESS})


class _Request:
    __slots__ = ("id", "priority", "groups", "caps", "valid_after", "deadline", "state",
                 "job_worker", "job_timeout", "seq", "handle", "prolongs", "ended_at", "owner",
                 "lease", "lease_until", "terms", "match_caps")

    def __init__(self, req_id: int, priority: int, groups: tuple[str, ...],
                 caps: tuple[tuple[str, str], ...], valid_after: float, deadline: float,
                 seq: int, owner: str = "") -> None:
        self.id = req_id
        self.owner = owner                   # the owner's name, interned (shared)
        self.priority = priority
        self.groups = groups
        self.caps = caps                     # interned sorted items, shared: never mutate
        self.terms: tuple[Term, ...] = ()    # capability expressions beyond exact caps
        self.match_caps = caps               # what the matcher sees: caps + term caps
        self.valid_after = valid_after
        self.deadline = deadline
        self.state = ReqState.WAIT
        self.job_worker: str | None = None
        self.job_timeout: float | None = None
        self.seq = seq                       # place in its priority's FIFO
        self.handle: int | None = None       # in the matcher while not None
        self.prolongs = 0
        self.ended_at: float | None = None
        self.lease: float | None = None      # grace in seconds while held by a lease
        self.lease_until = 0.0               # closed at this time unless renewed

    def info(self) -> ReqInfo:
        job = None
        if self.job_worker is not None and self.job_timeout is not None:
            job = JobInfo(self.job_worker, to_datetime(self.job_timeout))
        return ReqInfo(self.id, self.priority, UserInfo(self.groups, self.owner),
                       to_datetime(self.deadline), to_datetime(self.valid_after),
                       self.state, job, dict(self.caps), self.lease,
                       tuple(t.text for t in self.terms))


class _Worker:
    __slots__ = ("uuid", "caps", "groups", "state", "dryad_address", "ssh_address", "key",
                 "username", "fail_reason", "op", "job")

    def __init__(self, uuid: str, caps: dict[str, str], dryad_address: str,
                 ssh_address: str) -> None:
        self.uuid = uuid
        self.caps = caps
        self.groups: tuple[str, ...] = ()
        self.state = WorkerState.MAINTENANCE
        self.dryad_address = dryad_address
        self.ssh_address = ssh_address
        self.key: Any = None
        self.username: str | None = None
        self.fail_reason: str | None = None
        self.op = 0                          # number of the transition in flight
        self.job: int | None = None

    def info(self) -> WorkerInfo:
        return WorkerInfo(self.uuid, self.state, self.groups, dict(self.caps),
                          self.fail_reason, self.dryad_address, self.ssh_address)


class Scheduler:
    """Upstream's Requests, Workers and Superviser interfaces, in one state machine."""

    def __init__(self, clock: Clock | None = None, config: SchedulerConfig | None = None,
                 matcher: str | None = None) -> None:
        self.clock = clock or SystemClock()
        self.config = config or SchedulerConfig()
        self._matcher = make_matcher(matcher)
        self._requests: dict[int, _Request] = {}
        self._workers: dict[str, _Worker] = {}
        self._timers = RequestTimers(self._timer_is_live)
        self._effects: list[effects.Effect] = []
        self._last_id = 0
        self._seq = itertools.count(1)
        # Op numbers are unique across workers and registrations, so a late answer
        # to a deregistered worker's operation never matches its successor's.
        self._ops = itertools.count(1)
        # Requests share their caps and owner-groups tuples: a million requests
        # have a few thousand distinct ones (memory: S4).
        self._caps_pool: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] = {}
        self._groups_pool: dict[tuple[str, ...], tuple[str, ...]] = {}
        # Open (waiting or running) requests per owner's name, for per-user caps.
        self._open_by_owner: dict[str, int] = {}
        self._now = self.clock.now()
        # What changed since the last drain_changes(), for the durable store.
        self._dirty_requests: set[int] = set()
        self._dirty_workers: set[str] = set()
        self._removed_workers: list[str] = []
        self._purged: list[int] = []
        self._drained_counters = (0, 0)          # (last ID, last seq) the store has
        # Workers restored from the store whose dryad has not registered since.
        self._awaiting_dryad: set[str] = set()
        # The requests in the matcher (ready to start), for their places in the queue.
        self._ready: dict[int, _Request] = {}
        # Capability expressions in use; workers earn a term cap per term they satisfy.
        self._terms = TermBook(self.config.max_terms)
        # What the start-time estimates learn from: recent job durations per device
        # type (fed by _job_ended) and recent filings (fed by _request_filed).
        self.job_durations = JobDurations()
        self.arrivals = Arrivals()

    @property
    def matcher_kind(self) -> str:
        return "compiled" if getattr(self._matcher, "compiled", False) else "reference"

    # ------------------------------------------------------------------ effects, time
    def drain_effects(self) -> list[effects.Effect]:
        """Everything the shell must do since the last drain, in order."""
        out, self._effects = self._effects, []
        return out

    def next_timer(self) -> float | None:
        """When `advance()` has something to do next (None: nothing scheduled)."""
        return self._timers.next_time()

    def advance(self) -> None:
        """Fire every timer that is due by the clock, in chronological order."""
        now = self.clock.now()
        while (due := self._timers.pop_instant(now)) is not None:
            instant, fired = due
            self._now = max(self._now, instant)
            became_ready = False
            for kind, req_id in fired:
                req = self._requests.get(req_id)
                if req is None:
                    continue
                if kind is TimerKind.DEADLINE:
                    self._deadline_passed(req)
                elif kind is TimerKind.LEASE:
                    self._lease_check(req)
                elif kind is TimerKind.JOB_TIMEOUT:
                    self._job_timed_out(req)
                else:
                    became_ready |= self._maybe_ready(req)
            if became_ready:
                self._match()
        self._now = max(self._now, now)

    def _timer_is_live(self, when: float, kind: int, req_id: int) -> bool:
        """Could this timer entry still act when it fires? False lets the heap drop it.

        An entry acts only at its request's current time of that kind, and only
        while the request is not finished (an IN PROGRESS request keeps its
        deadline: a job that fails to start sends it back to WAIT).
        """
        req = self._requests.get(req_id)
        if req is None or (req.state is not ReqState.WAIT
                           and req.state is not ReqState.INPROGRESS):
            return False
        if kind == _DEADLINE:
            return req.deadline == when
        if kind == _VALID_AFTER:
            return req.valid_after == when
        if kind == _LEASE:
            return req.lease is not None       # its one entry, moved on when it fires early
        return req.job_timeout == when

    def _deadline_passed(self, req: _Request) -> None:
        if req.state is ReqState.WAIT and req.deadline <= self._now:
            self._leave_matcher(req)
            self._end_request(req, ReqState.TIMEOUT, "deadline passed")

    def _lease_check(self, req: _Request) -> None:
        """A lease's entry is due: close the request unless it was renewed meanwhile."""
        if req.state is not ReqState.WAIT and req.state is not ReqState.INPROGRESS:
            return
        if req.lease is None:
            return
        if req.lease_until > self._now:
            self._timers.push(req.lease_until, TimerKind.LEASE, req.id)
            return
        reason = f"lease expired (no renewal for {req.lease:g} s)"
        if req.state is ReqState.WAIT:
            self._leave_matcher(req)
            self._end_request(req, ReqState.CANCEL, reason)
        else:
            self._finish_job(req, ReqState.DONE, reason)

    def _job_timed_out(self, req: _Request) -> None:
        if (req.state is ReqState.INPROGRESS and req.job_timeout is not None
                and req.job_timeout <= self._now):
            self._finish_job(req, ReqState.DONE, "job timeout")

    def _maybe_ready(self, req: _Request) -> bool:
        if (req.state is ReqState.WAIT and req.handle is None
                and req.valid_after <= self._now < req.deadline):
            self._enter_matcher(req)
            return True
        return False

    # ------------------------------------------------------------------ matcher glue
    def _enter_matcher(self, req: _Request) -> None:
        # The interned (key, value) pairs as they are: both matchers take dict()'s input.
        req.handle = self._matcher.add_request(req.id, req.match_caps, req.groups,
                                               req.priority, req.seq)
        self._ready[req.id] = req

    def _leave_matcher(self, req: _Request) -> None:
        if req.handle is not None:
            self._matcher.remove_request(req.handle)
            req.handle = None
            del self._ready[req.id]

    def _match(self) -> None:
        for req_id, uuid in self._matcher.match():
            req = self._requests[req_id]
            worker = self._workers[uuid]
            req.handle = None
            del self._ready[req_id]
            req.state = ReqState.INPROGRESS
            req.job_worker = uuid
            req.job_timeout = self._job_timeout()
            self._timers.push(req.job_timeout, TimerKind.JOB_TIMEOUT, req.id)
            worker.state = WorkerState.RUN             # the matcher already took it off the idle set
            worker.op = next(self._ops)
            worker.job = req.id
            self._dirty_requests.add(req.id)
            self._dirty_workers.add(uuid)
            self._effects.append(effects.WorkerChanged(uuid, WorkerState.RUN, f"request {req.id}"))
            self._effects.append(effects.RequestChanged(req.id, ReqState.INPROGRESS, "assigned", uuid))
            self._effects.append(effects.StartJob(req.id, uuid))

    def _job_timeout(self) -> float:
        """When a job started or prolonged now ends: never past the last time the core keeps."""
        return min(self._now + self.config.job_timeout, LATEST_TIMESTAMP)

    # ------------------------------------------------------------------ request helpers
    def _get_request(self, req_id: Any) -> _Request:
        check_int(req_id, "request ID")
        req = self._requests.get(req_id)
        if req is None:
            raise NotFoundError("Request")
        return req

    def _end_request(self, req: _Request, state: ReqState, reason: str) -> None:
        if req.state in OPEN_STATES:
            self._closed_one(req.owner)
            if req.terms:
                self._release_terms(req.terms)
        req.state = state
        req.ended_at = self._now
        self._timers.superseded()             # its deadline, at least, means nothing now
        self._dirty_requests.add(req.id)
        self._effects.append(effects.RequestChanged(req.id, state, reason, req.job_worker))

    def _closed_one(self, owner: str) -> None:
        left = self._open_by_owner.get(owner, 0) - 1
        if left > 0:
            self._open_by_owner[owner] = left
        else:
            self._open_by_owner.pop(owner, None)

    def _finish_job(self, req: _Request, state: ReqState, reason: str) -> None:
        """Normal end of a job: DONE, tunnel closed, worker prepared afresh."""
        uuid = req.job_worker
        self._end_request(req, state, reason)
        self._job_ended(req)
        if uuid is None:
            return
        worker = self._workers.get(uuid)
        self._effects.append(effects.FinishJob(req.id, uuid))
        if worker is not None and worker.job == req.id:
            worker.job = None
            self._dirty_workers.add(uuid)
            if worker.state is WorkerState.RUN:
                self._set_worker_state(worker, WorkerState.PREPARE, "job finished")

    def _intern_caps(self, caps: dict[str, str]) -> tuple[tuple[str, str], ...]:
        items = tuple(sorted(caps.items()))
        return self._caps_pool.setdefault(items, items)

    def _check_priority(self, priority: int) -> None:
        if not HI_PRIO <= priority <= LO_PRIO:
            raise PriorityError()

    # ------------------------------------------------------------------ Requests
    def new_request(self, caps: Mapping[str, str], priority: int,
                    owner: UserInfo | None = None, valid_after: datetime | None = None,
                    deadline: datetime | None = None, *,
                    queue_unsatisfiable: bool = False, lease: float | None = None,
                    expr: Any = None) -> int:
        """Queue a request; returns its ID.

        Checked in upstream's order; caps no registered worker could serve are
        refused unless `queue_unsatisfiable`. Without a deadline, the request
        must start within `default_deadline_months` calendar months. With a
        `lease` (its grace in seconds), the request is closed once `lease`
        seconds pass without a renewal (`renew_leases`). `expr`: capability
        expressions (boruta.core.capexpr) the worker must satisfy too.
        """
        self.advance()
        now = self._now
        wanted = check_caps(caps, limits=self.config)
        terms = parse_terms(expr, self.config) if expr else ()
        if terms and len(wanted) + len(terms) > self.config.max_caps_entries:
            raise BadArgumentError(f"caps and expressions have {len(wanted) + len(terms)} "
                                   f"entries; at most {self.config.max_caps_entries}")
        check_int(priority, "priority")
        groups = self._owner_groups(owner)
        groups = self._groups_pool.setdefault(groups, groups)
        owner_name = self._owner_name(owner)
        valid_ts = check_time(valid_after, "valid_after")
        deadline_ts = check_time(deadline, "deadline")
        if deadline_ts is not None and deadline_ts < now:
            raise DeadlineInThePastError()
        if deadline_ts is not None and valid_ts is not None and valid_ts > deadline_ts:
            raise InvalidTimeRangeError()
        valid_ts = now if valid_ts is None else valid_ts
        if deadline_ts is None:
            deadline_ts = add_months(now, self.config.default_deadline_months)
            if valid_ts > deadline_ts:
                raise InvalidTimeRangeError()
        self._check_priority(priority)
        if lease is not None:
            self._check_lease(lease)
        fresh = self._terms.new_terms(terms)
        if not queue_unsatisfiable and not self._satisfiable(wanted, terms, fresh, groups):
            raise NoMatchingWorkerError(
                "No matching worker: no registered worker has these capabilities and groups")
        self._last_id += 1
        req = _Request(self._last_id, priority, groups, self._intern_caps(wanted),
                       valid_ts, deadline_ts, next(self._seq), owner_name)
        if terms:
            self._use_terms(req, terms)
        self._requests[req.id] = req
        self._request_filed(req)
        self._open_by_owner[owner_name] = self._open_by_owner.get(owner_name, 0) + 1
        self._dirty_requests.add(req.id)
        self._effects.append(effects.RequestChanged(req.id, ReqState.WAIT, "created"))
        self._timers.push(deadline_ts, TimerKind.DEADLINE, req.id)
        if lease is not None:
            req.lease = float(lease)
            req.lease_until = now + req.lease
            self._timers.push(req.lease_until, TimerKind.LEASE, req.id)
        if self._maybe_ready(req):
            self._match()
        else:
            self._timers.push(valid_ts, TimerKind.VALID_AFTER, req.id)
        return req.id

    # ------------------------------------------------------------------ expressions
    def _satisfiable(self, wanted: dict[str, str], terms: tuple[Term, ...],
                     fresh: list[Term], groups: tuple[str, ...]) -> bool:
        """Could a registered worker ever serve these? Terms already in use are term caps
        the matcher knows; a term new to the farm is checked against each worker once."""
        if not fresh:
            return self._matcher.satisfiable({**wanted, **term_caps(terms)} if terms else wanted,
                                             groups)
        return any(caps_satisfied(wanted, w.caps) and groups_satisfied(groups, w.groups)
                   and all(t.holds(w.caps) for t in terms) for w in self._workers.values())

    def _use_terms(self, req: _Request, terms: tuple[Term, ...]) -> None:
        req.terms = terms
        req.match_caps = self._intern_caps({**dict(req.caps), **term_caps(terms)})
        fresh = self._terms.use(terms)
        if fresh:
            self._refresh_term_caps(fresh)

    def _release_terms(self, terms: tuple[Term, ...]) -> None:
        gone = self._terms.release(terms)
        if gone:
            self._refresh_term_caps(gone)

    def _refresh_term_caps(self, changed: list[Term]) -> None:
        """Terms came into use or went: the workers they hold for get their term caps anew."""
        for worker in self._workers.values():
            if any(t.holds(worker.caps) for t in changed):
                self._matcher.update_worker(worker.uuid, self._terms.caps_for(worker.caps),
                                            worker.groups)

    def _check_lease(self, lease: Any) -> None:
        low, high = self.config.lease_min, self.config.lease_max
        if isinstance(lease, bool) or not isinstance(lease, (int, float)) \
                or not low <= lease <= high:
            raise BadArgumentError(f"lease must be a number of seconds from {low:g} to {high:g}, "
                                   f"not {lease!r}")

    def renew_leases(self, req_ids: Any, owner: str | None = None) -> tuple[list[int], list[int]]:
        """Renew the leases of these requests: each is held for its grace from now.

        Returns (held, lost): lost are the IDs the server holds no lease for on the
        caller's behalf (unknown, ended, without a lease, or, when `owner` is given,
        someone else's: whose they are is not said). Renewals write nothing durable:
        after a restart every lease gets its whole grace again.
        """
        self.advance()
        if not isinstance(req_ids, (list, tuple)):
            raise BadArgumentError("request IDs must be a list")
        for req_id in req_ids:
            check_int(req_id, "request ID")
        held: list[int] = []
        lost: list[int] = []
        books, now = self._requests, self._now
        for req_id in req_ids:
            req = books.get(req_id)
            if (req is None or req.lease is None or (owner is not None and req.owner != owner)
                    or (req.state is not ReqState.WAIT and req.state is not ReqState.INPROGRESS)):
                lost.append(req_id)
                continue
            req.lease_until = now + req.lease
            held.append(req_id)
        return held, lost

    def queue_position(self, req_id: int) -> tuple[ReqState, int | None, int]:
        """(state, ahead, ready): how many ready requests the matcher considers before
        this one (higher priority, or the same and filed earlier), and how many are
        ready in all. `ahead` is None when the request is not ready (not WAITING, or
        its ValidAfter is to come). One pass over the ready requests."""
        self.advance()
        req = self._get_request(req_id)
        if req.handle is None:
            return req.state, None, len(self._ready)
        key = (req.priority, req.seq)
        ahead = sum(1 for r in self._ready.values() if (r.priority, r.seq) < key)
        return req.state, ahead, len(self._ready)

    @staticmethod
    def _owner_name(owner: Any) -> str:
        if owner is None:
            return ""
        if not isinstance(owner.name, str):
            raise BadArgumentError("owner name must be a string")
        return sys.intern(owner.name)

    def open_requests(self, owner: str) -> int:
        """How many requests of `owner` (a name) are waiting or running."""
        return self._open_by_owner.get(owner, 0)

    def request_owner(self, req_id: int) -> str:
        """The name of a request's owner ("" if filed before users existed); not_found."""
        return self._get_request(req_id).owner

    def _owner_groups(self, owner: Any) -> tuple[str, ...]:
        """The owner's groups, checked; a tuple already in the pool was checked before
        (a user's groups come the same every call: no sorting each time)."""
        if owner is None:
            return ()
        if not isinstance(owner, UserInfo):
            raise BadArgumentError("owner must be a UserInfo")
        groups = owner.groups
        if type(groups) is tuple:
            pooled = self._groups_pool.get(groups)
            if pooled is not None:
                return pooled
        return check_groups(groups, "owner groups")

    def update_request(self, req_id: int, priority: int | None = None,
                       valid_after: datetime | None = None,
                       deadline: datetime | None = None) -> None:
        """Change priority, ValidAfter or Deadline of a waiting request.

        None (or priority 0) means "do not change". An unchanged priority keeps
        the request's place in its queue.
        """
        self.advance()
        now = self._now
        req = self._get_request(req_id)
        if priority is not None:
            check_int(priority, "priority")
            if priority == 0:
                priority = None
        valid_ts = check_time(valid_after, "valid_after")
        deadline_ts = check_time(deadline, "deadline")
        if priority is None and valid_ts is None and deadline_ts is None:
            return
        if req.state is not ReqState.WAIT:
            raise ModificationForbiddenError(
                f"request {req.id} is {req.state}: only a WAITING request can be updated")
        new_priority = req.priority if priority is None else priority
        new_valid = req.valid_after if valid_ts is None else valid_ts
        new_deadline = req.deadline if deadline_ts is None else deadline_ts
        if (new_priority, new_valid, new_deadline) == (req.priority, req.valid_after, req.deadline):
            return
        self._check_priority(new_priority)
        if deadline_ts is not None and deadline_ts < now:
            raise DeadlineInThePastError()
        if new_valid > new_deadline:
            raise InvalidTimeRangeError()
        # Validated: apply.
        self._leave_matcher(req)
        if new_priority != req.priority:
            req.priority = new_priority
            req.seq = next(self._seq)
        if new_valid != req.valid_after:
            req.valid_after = new_valid
            self._timers.push(new_valid, TimerKind.VALID_AFTER, req.id, replaces=True)
        if new_deadline != req.deadline:
            req.deadline = new_deadline
            self._timers.push(new_deadline, TimerKind.DEADLINE, req.id, replaces=True)
        self._dirty_requests.add(req.id)
        self._effects.append(effects.RequestChanged(req.id, ReqState.WAIT, "updated"))
        if req.deadline <= now:
            self._end_request(req, ReqState.TIMEOUT, "deadline passed")
        elif self._maybe_ready(req):
            self._match()

    def close_request(self, req_id: int) -> None:
        """WAIT -> CANCELLED; IN PROGRESS -> DONE with the worker prepared afresh."""
        self.advance()
        req = self._get_request(req_id)
        if req.state is ReqState.WAIT:
            self._leave_matcher(req)
            self._end_request(req, ReqState.CANCEL, "closed by owner")
        elif req.state is ReqState.INPROGRESS:
            self._finish_job(req, ReqState.DONE, "closed by owner")
        else:
            raise ModificationForbiddenError(f"request {req.id} is {req.state}: "
                                             "it cannot be closed")

    def get_request_info(self, req_id: int) -> ReqInfo:
        self.advance()
        return self._get_request(req_id).info()

    def request_state(self, req_id: int) -> ReqState:
        """State lookup for the shell (parked acquires, waits), after due timers fire."""
        self.advance()
        return self._get_request(req_id).state

    def acquire_worker(self, req_id: int) -> AccessInfo:
        """Access to the job's worker. The shell parks callers while the request waits."""
        self.advance()
        req = self._get_request(req_id)
        if req.state is not ReqState.INPROGRESS or req.job_worker is None:
            raise WorkerNotAssignedError()
        worker = self._workers.get(req.job_worker)
        if worker is None or worker.job != req.id:
            raise NotFoundError("Job")
        return AccessInfo(worker.username or "", worker.key, worker.uuid, worker.ssh_address)

    def prolong_access(self, req_id: int) -> None:
        """Job timeout becomes now + job_timeout, up to `prolong_limit` times."""
        self.advance()
        req = self._get_request(req_id)
        if req.state is not ReqState.INPROGRESS or req.job_worker is None:
            raise WorkerNotAssignedError()
        limit = self.config.prolong_limit
        if limit is not None and req.prolongs >= limit:
            raise ProlongLimitError(f"access cannot be prolonged more than {limit} times")
        req.prolongs += 1
        req.job_timeout = self._job_timeout()
        self._dirty_requests.add(req.id)
        self._timers.push(req.job_timeout, TimerKind.JOB_TIMEOUT, req.id, replaces=True)

    def list_requests(self, filter: RequestFilter | None = None, sorter: SortInfo | None = None,
                      paginator: Paginator | None = None) -> tuple[list[ReqInfo], ListInfo]:
        """Upstream's ListRequests: filter, sort, page."""
        self.advance()
        border_id = 0 if paginator is None else paginator.id
        check_int(border_id, "paginator ID")
        return self._list(self._requests, border_id, "request", filter, sorter, paginator,
                          REQUEST_SORT_KEYS)

    def _list(self, book: Mapping[Any, Any], border_id: Any, kind: str, filter: Any,
              sorter: SortInfo | None, paginator: Paginator | None,
              table: dict[str, Any]) -> tuple[list[Any], ListInfo]:
        """One listing algorithm for both books; the border joins the candidates."""
        key, descending = sort_key(sorter, table)
        limit = page_limit(paginator)
        border = None
        if border_id:
            found = book.get(border_id)
            if found is None:
                raise NotFoundError(kind)          # "request not found": lowercase, as upstream
            border = found.info()
        infos = self._filtered(book.values(), filter)
        border_matches = border is None or filter is None or filter.match(border)
        return paginate(infos, border, border_matches, filter is not None, key, descending,
                        paginator is not None and paginator.backward, limit)

    @staticmethod
    def _filtered(records: Any, filter: Any) -> list[Any]:
        if filter is not None and not callable(getattr(filter, "match", None)):
            raise BadArgumentError("filter must have a match() method")
        infos = (record.info() for record in records)
        return [i for i in infos if filter is None or filter.match(i)]

    def purge_history(self) -> int:
        """Forget terminal requests that ended longer than `retention` ago. IDs are not reused."""
        self.advance()
        if self.config.retention is None:
            return 0
        horizon = self._now - self.config.retention
        old = [r.id for r in self._requests.values()
               if r.ended_at is not None and r.ended_at < horizon]
        for req_id in old:
            del self._requests[req_id]
            self._dirty_requests.discard(req_id)
        if old:     # the pool keeps only caps some request still has
            self._caps_pool = {r.caps: r.caps for r in self._requests.values()}
        self._purged.extend(old)
        return len(old)

    # ------------------------------------------------------------------ Superviser
    def register(self, caps: Mapping[str, str], dryad_address: str, ssh_address: str) -> str:
        """Add a worker in MAINTENANCE, or refresh a known one. Returns its UUID.

        A known worker in FAIL goes to PREPARE; one whose caps or ports changed
        goes to BUSY, on its way to MAINTENANCE.
        """
        self.advance()
        uuid, checked = check_worker_caps(caps, self.config)
        check_address(dryad_address, "dryad")
        check_address(ssh_address, "sshd")
        worker = self._workers.get(uuid)
        if worker is None:
            worker = _Worker(uuid, checked, dryad_address, ssh_address)
            self._workers[uuid] = worker
            self._dirty_workers.add(uuid)
            self._matcher.add_worker(uuid, self._terms.caps_for(checked), worker.groups)
            self._effects.append(effects.WorkerChanged(uuid, WorkerState.MAINTENANCE, "registered"))
            return uuid
        target = WorkerState.PREPARE if worker.state is WorkerState.FAIL else worker.state
        if (address_port(ssh_address) != address_port(worker.ssh_address)
                or address_port(dryad_address) != address_port(worker.dryad_address)
                or checked != worker.caps):
            target = WorkerState.BUSY
        worker.caps, worker.dryad_address, worker.ssh_address = checked, dryad_address, ssh_address
        self._dirty_workers.add(uuid)
        self._matcher.update_worker(uuid, self._terms.caps_for(checked), worker.groups)
        if target is not worker.state:
            self._awaiting_dryad.discard(uuid)
            self._set_worker_state(worker, target, "registered again")
        elif uuid in self._awaiting_dryad:
            self._resume(worker)
        self._match()
        return uuid

    def set_fail(self, uuid: str, reason: str = "") -> None:
        """The dryad (or the shell) reports a failure; the reason is kept and shown."""
        self.advance()
        worker = self._get_worker(uuid)
        if not isinstance(reason, str):
            raise BadArgumentError("reason must be a string")
        if worker.state in (WorkerState.MAINTENANCE, WorkerState.BUSY):
            raise InMaintenanceError()
        worker.fail_reason = reason or None
        self._set_worker_state(worker, WorkerState.FAIL, reason or "failure reported")

    # ------------------------------------------------------------------ Workers
    def _get_worker(self, uuid: Any) -> _Worker:
        if not isinstance(uuid, str):
            raise BadArgumentError("worker UUID must be a string")
        worker = self._workers.get(uuid)
        if worker is None:
            raise NotFoundError("Worker")
        return worker

    def get_worker_info(self, uuid: str) -> WorkerInfo:
        self.advance()
        return self._get_worker(uuid).info()

    def list_workers(self, filter: WorkerFilter | None = None, sorter: SortInfo | None = None,
                     paginator: Paginator | None = None) -> tuple[list[WorkerInfo], ListInfo]:
        """Upstream's ListWorkers: filter, sort, page."""
        self.advance()
        border_uuid = "" if paginator is None or paginator.id == 0 else paginator.id
        if not isinstance(border_uuid, str):
            raise BadArgumentError("paginator ID must be a worker UUID")
        if isinstance(filter, WorkerFilter) and isinstance(filter.caps, Mapping):
            # compared with every worker's caps: bounded as a worker's are
            check_caps_size(filter.caps, "filter caps", self.config)
        return self._list(self._workers, border_uuid, "worker", filter, sorter, paginator,
                          WORKER_SORT_KEYS)

    def set_state(self, uuid: str, state: WorkerState | str) -> None:
        """Admin: IDLE (from MAINTENANCE, via PREPARE) or MAINTENANCE (via BUSY)."""
        self.advance()
        try:
            target = WorkerState(state)
        except ValueError:
            raise WrongStateArgumentError() from None
        if target not in (WorkerState.IDLE, WorkerState.MAINTENANCE):
            raise WrongStateArgumentError()
        worker = self._get_worker(uuid)
        if (target, worker.state) in ((WorkerState.MAINTENANCE, WorkerState.BUSY), (WorkerState.IDLE, WorkerState.PREPARE)):
            return
        if target is WorkerState.IDLE:
            if worker.state is not WorkerState.MAINTENANCE:
                raise ForbiddenStateChangeError()
            self._set_worker_state(worker, WorkerState.PREPARE, "set IDLE by admin")
        else:
            self._set_worker_state(worker, WorkerState.BUSY, "set MAINTENANCE by admin")
        self._match()

    def set_groups(self, uuid: str, groups: list[str] | tuple[str, ...] | None) -> None:
        self.advance()
        worker = self._get_worker(uuid)
        worker.groups = check_groups(groups)
        self._dirty_workers.add(uuid)
        self._matcher.update_worker(uuid, self._terms.caps_for(worker.caps), worker.groups)
        self._match()

    def deregister(self, uuid: str) -> None:
        """Remove a worker in MAINTENANCE or FAIL; requests only it could serve become INVALID."""
        self.advance()
        worker = self._get_worker(uuid)
        if worker.state not in (WorkerState.MAINTENANCE, WorkerState.FAIL):
            raise NotInFailOrMaintenanceError()
        worker.op = next(self._ops)
        del self._workers[uuid]
        self._awaiting_dryad.discard(uuid)
        self._dirty_workers.discard(uuid)
        self._removed_workers.append(uuid)
        self._matcher.remove_worker(uuid)
        self._effects.append(effects.WorkerRemoved(uuid))
        self._invalidate_orphans(worker)

    def _invalidate_orphans(self, gone: _Worker) -> None:
        verdicts: dict[tuple[Any, Any], bool] = {}
        gone_caps = self._terms.caps_for(gone.caps)
        for req in self._waiting():
            caps = dict(req.match_caps)
            if not (caps_satisfied(caps, gone_caps) and groups_satisfied(req.groups, gone.groups)):
                continue
            key = (req.match_caps, req.groups)
            if key not in verdicts:
                verdicts[key] = self._matcher.satisfiable(caps, req.groups)
            if not verdicts[key]:
                self._leave_matcher(req)
                self._end_request(req, ReqState.INVALID, f"no registered worker can serve it ({gone.uuid} deregistered)")

    def _waiting(self) -> Iterator[_Request]:
        return (r for r in list(self._requests.values()) if r.state is ReqState.WAIT)

    # ------------------------------------------------------------------ worker state machine
    def _set_worker_state(self, worker: _Worker, new: WorkerState, reason: str) -> None:
        """The one place where a worker's state changes (and its effects are issued)."""
        old = worker.state
        self._dirty_workers.add(worker.uuid)
        self._awaiting_dryad.discard(worker.uuid)
        if old is WorkerState.IDLE and new is not WorkerState.IDLE:
            self._matcher.set_idle(worker.uuid, False)
        if old is WorkerState.RUN and new not in (WorkerState.IDLE, WorkerState.PREPARE):
            self._fail_job_of(worker, reason)
        worker.state = new
        worker.op = next(self._ops)
        if new is WorkerState.PREPARE:
            self._effects.append(effects.PrepareWorker(worker.uuid, worker.op))
        elif new is WorkerState.BUSY:
            self._effects.append(effects.PutInMaintenance(worker.uuid, worker.op,
                                                     self.config.maintenance_message))
        elif new is WorkerState.IDLE:
            self._matcher.set_idle(worker.uuid, True)
        self._effects.append(effects.WorkerChanged(worker.uuid, new, reason))

    def _fail_job_of(self, worker: _Worker, reason: str) -> None:
        """The worker left RUN abnormally: its request FAILED, tunnel closed, no re-prepare."""
        if worker.job is None:
            return
        req = self._requests.get(worker.job)
        worker.job = None
        if req is None or req.state is not ReqState.INPROGRESS:
            return
        self._effects.append(effects.FinishJob(req.id, worker.uuid))
        self._end_request(req, ReqState.FAILED, f"worker {worker.uuid} left RUNNING: {reason}")

    def _transition(self, uuid: str, op: int, expected: WorkerState) -> _Worker | None:
        """The worker if answer `op` is still the one awaited, else None (stale: ignore)."""
        self.advance()
        worker = self._workers.get(uuid)
        if worker is None or worker.op != op or worker.state is not expected:
            return None
        return worker

    # ------------------------------------------------------------------ completions from the shell
    def worker_prepared(self, uuid: str, op: int, key: Any, username: str) -> bool:
        """PREPARE succeeded: the worker holds `key` for user `username` and turns IDLE."""
        worker = self._transition(uuid, op, WorkerState.PREPARE)
        if worker is None:
            return False
        worker.key, worker.username, worker.fail_reason = key, username, None
        self._set_worker_state(worker, WorkerState.IDLE, "prepared")
        self._match()
        return True

    def worker_prepare_failed(self, uuid: str, op: int, reason: str) -> bool:
        worker = self._transition(uuid, op, WorkerState.PREPARE)
        if worker is None:
            return False
        worker.fail_reason = f"prepare failed: {reason}"
        self._set_worker_state(worker, WorkerState.FAIL, worker.fail_reason)
        return True

    def worker_in_maintenance(self, uuid: str, op: int) -> bool:
        worker = self._transition(uuid, op, WorkerState.BUSY)
        if worker is None:
            return False
        self._set_worker_state(worker, WorkerState.MAINTENANCE, "in maintenance")
        return True

    def worker_maintenance_failed(self, uuid: str, op: int, reason: str) -> bool:
        worker = self._transition(uuid, op, WorkerState.BUSY)
        if worker is None:
            return False
        worker.fail_reason = f"maintenance failed: {reason}"
        self._set_worker_state(worker, WorkerState.FAIL, worker.fail_reason)
        return True

    def job_start_failed(self, req_id: int, reason: str) -> bool:
        """The shell could not start the job (e.g. no tunnel): nothing is left behind.

        The request goes back to WAIT at its old place; the worker, whose route
        is broken, goes to FAIL with the reason, so no retry loop follows
        (upstream retried such a start forever).
        """
        self.advance()
        req = self._requests.get(req_id)
        if req is None or req.state is not ReqState.INPROGRESS or req.job_worker is None:
            return False
        worker = self._workers.get(req.job_worker)
        self._effects.append(effects.FinishJob(req.id, req.job_worker))
        req.state, req.job_worker, req.job_timeout = ReqState.WAIT, None, None
        self._timers.superseded()             # the job's timeout
        req.prolongs = 0                     # the job never started: its prolongs do not count
        self._dirty_requests.add(req.id)
        self._effects.append(effects.RequestChanged(req.id, ReqState.WAIT, f"job start failed: {reason}"))
        if worker is not None and worker.job == req.id:
            worker.job = None
            worker.fail_reason = f"job start failed: {reason}"
            self._set_worker_state(worker, WorkerState.FAIL, worker.fail_reason)
        if req.deadline <= self._now:
            self._end_request(req, ReqState.TIMEOUT, "deadline passed")
        elif self._maybe_ready(req):
            self._match()
        return True

    # ------------------------------------------------------------------ durability
    def drain_changes(self) -> Changes:
        """The records changed since the last drain, for the store to commit."""
        changes = Changes(
            requests=[self._request_record(self._requests[i]) for i in sorted(self._dirty_requests)
                      if i in self._requests],
            workers=[self._worker_record(self._workers[u]) for u in sorted(self._dirty_workers)
                     if u in self._workers],
            removed_workers=self._removed_workers, purged_requests=self._purged)
        counters = (self._last_id, self._peek_seq())
        if counters != self._drained_counters:
            changes.last_id, changes.last_seq = counters
            self._drained_counters = counters
        self.forget_changes()
        return changes

    def changes_pending(self) -> int:
        """How many records and deletions wait for the next drain."""
        return (len(self._dirty_requests) + len(self._dirty_workers)
                + len(self._removed_workers) + len(self._purged))

    def forget_changes(self) -> None:
        """Drop what changed since the last drain, for a server without a store: nobody
        drains there, and the IDs of purged requests would pile up for the process's life."""
        self._dirty_requests, self._dirty_workers = set(), set()
        self._removed_workers, self._purged = [], []

    def _peek_seq(self) -> int:
        # itertools.count cannot be read without taking a number; take it and put it back.
        value = next(self._seq)
        self._seq = itertools.count(value)
        return value - 1

    @staticmethod
    def _request_record(req: _Request) -> dict[str, Any]:
        return {"id": req.id, "priority": req.priority, "groups": req.groups,
                "caps": dict(req.caps), "valid_after": req.valid_after,
                "deadline": req.deadline, "state": str(req.state), "job_worker": req.job_worker,
                "job_timeout": req.job_timeout, "seq": req.seq, "prolongs": req.prolongs,
                "ended_at": req.ended_at, "owner": req.owner, "lease": req.lease,
                "expr": [t.text for t in req.terms] or None}

    @staticmethod
    def _worker_record(worker: _Worker) -> dict[str, Any]:
        return {"uuid": worker.uuid, "caps": worker.caps, "groups": worker.groups,
                "state": str(worker.state), "dryad_address": worker.dryad_address,
                "ssh_address": worker.ssh_address, "key": worker.key,
                "username": worker.username, "fail_reason": worker.fail_reason,
                "job": worker.job}

    def snapshot(self) -> Snapshot:
        """Every record, as the store keeps them (for dumps and tests)."""
        return Snapshot(self._last_id, self._peek_seq(),
                        [self._request_record(r) for r in self._requests.values()],
                        [self._worker_record(w) for w in self._workers.values()])

    @classmethod
    def restore(cls, snapshot: Snapshot, clock: Clock | None = None,
                config: SchedulerConfig | None = None, matcher: str | None = None) -> "Scheduler":
        """Rebuild the books after a restart.

        Requests keep their IDs, fields and queue places; timers are re-armed
        (those that passed fire at the next call). Workers keep their state
        but wait for their dryads: none is offered work, and no transition
        resumes, until its dryad registers again (`register`); the shell
        fails those that stay away (`overdue_dryads`).
        """
        sched = cls(clock, config, matcher)
        sched._last_id = max(snapshot.last_id, max((r["id"] for r in snapshot.requests), default=0))
        top_seq = max(snapshot.last_seq, max((r["seq"] for r in snapshot.requests), default=0))
        sched._seq = itertools.count(top_seq + 1)
        sched._drained_counters = (sched._last_id, top_seq)
        for rec in snapshot.workers:
            worker = _Worker(rec["uuid"], dict(rec["caps"]), rec["dryad_address"],
                             rec["ssh_address"])
            worker.groups = tuple(rec["groups"])
            worker.state = WorkerState(rec["state"])
            worker.key, worker.username = rec["key"], rec["username"]
            worker.fail_reason, worker.job = rec["fail_reason"], rec["job"]
            worker.op = next(sched._ops)
            sched._workers[worker.uuid] = worker
            sched._matcher.add_worker(worker.uuid, worker.caps, worker.groups)
            if worker.state not in (WorkerState.MAINTENANCE, WorkerState.FAIL):
                sched._awaiting_dryad.add(worker.uuid)
        sched._restore_requests(snapshot.requests)
        if len(sched._terms):
            sched._refresh_term_caps(list(sched._terms.terms()))
        return sched

    def _restore_requests(self, records: Any) -> int:
        """Requests from the store into the books, with their timers and matcher places.

        A restart may bring back a million requests: this loop is kept lean. The
        store hands out one decoded object per distinct caps/groups text, so the
        interned forms are cached by object identity (the records keep them alive).
        Requests already in the books are skipped. Returns how many were added.
        """
        timers: list[tuple[float, TimerKind, int]] = []
        now = self._now
        states = {str(s): s for s in ReqState}
        caps_of: dict[int, tuple[tuple[str, str], ...]] = {}
        groups_of: dict[int, tuple[str, ...]] = {}
        pool, books = self._caps_pool, self._requests
        open_by_owner, intern = self._open_by_owner, sys.intern
        added = 0
        for rec in records:
            if rec["id"] in books:
                continue
            caps, groups = rec["caps"], rec["groups"]
            interned = caps_of.get(id(caps))
            if interned is None:
                items = tuple(sorted(caps.items()))
                interned = caps_of[id(caps)] = pool.setdefault(items, items)
            group_tuple = groups_of.get(id(groups))
            if group_tuple is None:
                group_tuple = tuple(groups)
                group_tuple = groups_of[id(groups)] = self._groups_pool.setdefault(group_tuple,
                                                                                   group_tuple)
            req = _Request(rec["id"], rec["priority"], group_tuple, interned,
                           rec["valid_after"], rec["deadline"], rec["seq"],
                           intern(rec.get("owner") or ""))
            req.state = states[rec["state"]]
            expr = rec.get("expr")
            if expr:
                self._restore_terms(req, expr)
            if req.state in OPEN_STATES:
                open_by_owner[req.owner] = open_by_owner.get(req.owner, 0) + 1
            req.job_worker, req.job_timeout = rec["job_worker"], rec["job_timeout"]
            req.prolongs, req.ended_at = rec["prolongs"], rec["ended_at"]
            books[req.id] = req
            added += 1
            lease = rec.get("lease")
            if lease is not None:
                lease = self._restored_lease(lease)
            if lease is not None and req.state in OPEN_STATES:
                # The grace restarts with the server: its holder gets the whole of it
                # to reconnect and renew.
                req.lease, req.lease_until = lease, now + lease
                timers.append((req.lease_until, TimerKind.LEASE, req.id))
            elif lease is not None:
                req.lease = lease
            if req.state is ReqState.WAIT:
                timers.append((req.deadline, TimerKind.DEADLINE, req.id))
                if req.valid_after <= now < req.deadline:
                    self._enter_matcher(req)
                else:
                    timers.append((req.valid_after, TimerKind.VALID_AFTER, req.id))
            elif req.state is ReqState.INPROGRESS:
                # The deadline too: a job that fails to start sends the request back to WAIT.
                timers.append((req.deadline, TimerKind.DEADLINE, req.id))
                if req.job_timeout is not None:
                    timers.append((req.job_timeout, TimerKind.JOB_TIMEOUT, req.id))
        if timers:
            self._timers.extend(timers)
        return added

    def _restore_terms(self, req: _Request, expr: Any) -> None:
        """A stored request's expressions; an open one whose expressions no longer parse
        (a file edited by hand) cannot be matched as it was asked: it becomes INVALID."""
        try:
            terms = parse_terms(expr)
        except BadArgumentError:
            if req.state in OPEN_STATES:
                req.state, req.ended_at = ReqState.INVALID, self._now
                self._dirty_requests.add(req.id)
            return
        req.terms = terms
        req.match_caps = self._intern_caps({**dict(req.caps), **term_caps(terms)})
        if req.state in OPEN_STATES:
            self._terms.use(terms)           # the workers get their term caps after the load

    def _restored_lease(self, lease: Any) -> float:
        """A stored grace, within today's bounds (a file edited by hand, or bounds changed
        since: a NaN or out-of-range grace must not keep a request forever)."""
        low, high = self.config.lease_min, self.config.lease_max
        if isinstance(lease, bool) or not isinstance(lease, (int, float)) or lease != lease:
            return high
        return float(min(max(lease, low), high))

    def add_history(self, records: Any) -> int:
        """Finished requests from the store, after `restore` (the shell loads a long
        history in the background once it serves again). IDs already known are
        skipped; the ID counter never goes back. Returns how many were added."""
        records = list(records)
        top = max((rec["id"] for rec in records), default=0)
        if top > self._last_id:              # only a store without its counter lags behind
            self._last_id = top
        return self._restore_requests(records)

    def has_request(self, req_id: int) -> bool:
        return req_id in self._requests

    def _resume(self, worker: _Worker) -> None:
        """The dryad of a restored worker is back: pick up where the old server stopped."""
        self._awaiting_dryad.discard(worker.uuid)
        if worker.state is WorkerState.IDLE:
            self._matcher.set_idle(worker.uuid, True)
        elif worker.state is WorkerState.PREPARE:
            worker.op = next(self._ops)
            self._effects.append(effects.PrepareWorker(worker.uuid, worker.op))
        elif worker.state is WorkerState.BUSY:
            worker.op = next(self._ops)
            self._effects.append(effects.PutInMaintenance(worker.uuid, worker.op,
                                                     self.config.maintenance_message))
        elif worker.state is WorkerState.RUN and worker.job is not None:
            self._effects.append(effects.ResumeJob(worker.job, worker.uuid))

    def overdue_dryads(self) -> list[str]:
        """Restored workers whose dryads have not come back yet."""
        return sorted(self._awaiting_dryad)

    # ------------------------------------------------------------------ introspection
    def worker_ids(self) -> list[str]:
        return list(self._workers)

    def counts(self) -> dict[str, int]:
        return {"requests": len(self._requests), "workers": len(self._workers),
                "ready": self._matcher.ready_count(), "idle": self._matcher.idle_count(),
                "timers": len(self._timers)}

    # ------------------------------------------------------------------ explain and estimate
    def explain(self, req_id: int) -> Explanation:
        """Why request `req_id` waits (or not), and when it is expected to start."""
        self.advance()
        return explain(self, self._get_request(req_id))

    def expected_start(self, req_id: int) -> Estimate | None:
        """A WAITING request's expected start (boruta.core.estimate); None otherwise."""
        return self.explain(req_id).estimate

    def _request_filed(self, req: _Request) -> None:
        """Hook, where a request is filed: the rate of better-priority filings that pass
        a waiting request feeds its estimate."""
        self.arrivals.record(req.id, self._now, req.priority, (req.match_caps, req.groups))

    def _job_start(self, req: _Request) -> float | None:
        """When req's job started, if its timeout says so (never prolonged, not clamped)."""
        if req.job_timeout is None or req.prolongs or req.job_timeout >= LATEST_TIMESTAMP:
            return None
        return req.job_timeout - self.config.job_timeout

    def _job_ended(self, req: _Request) -> None:
        """Hook, where a job ends normally (DONE): its duration feeds the estimates."""
        start = self._job_start(req)
        worker = self._workers.get(req.job_worker) if req.job_worker is not None else None
        if start is not None and worker is not None and req.state is ReqState.DONE:
            self.job_durations.record(worker.caps.get("device_type", ""), self._now - start)
