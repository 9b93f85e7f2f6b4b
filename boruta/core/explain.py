"""Why is a request waiting? The answer, from the scheduler's own state.

For a request it says: how many workers could ever serve it and in which
states they are; which of its terms rule out the nearest misses (workers that
fail on exactly that one term); how many ready requests its candidates serve
first; what holds it (its ValidAfter, no candidate at all, the queue, or
every candidate being busy); and when it is expected to start
(boruta.core.estimate). The matcher answers the set questions on its bitsets
(`candidates`, `count_ahead`), so one explanation stays cheap in a big farm.

A request's terms: each exact `key=value` of its caps (a `UUID` pin too),
each capability expression, and its owner's groups as one term, "groups".
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from boruta.core.estimate import Estimate, Slot, competing_rate, expected_start, first_free
from boruta.core.types import ReqState, WorkerState, iso, to_datetime

if TYPE_CHECKING:
    from boruta.core.scheduler import Scheduler, _Request

#: Example UUIDs kept per nearest miss.
MISS_EXAMPLES = 3
GROUPS_TERM = "groups"

#: What holds a request, in words (the document carries the code too).
HELD_BY = {
    "not_waiting": "it is not waiting",
    "valid_after": "its ValidAfter is still to come",
    "no_candidates": "no registered worker can serve it",
    "queue": "requests ahead of it take its candidate workers first",
    "busy": "every candidate worker is busy or out of service",
    "matching": "a candidate is idle: it is being matched",
}
IN_SERVICE = (WorkerState.IDLE, WorkerState.RUN, WorkerState.PREPARE)


@dataclass(frozen=True)
class Miss:
    """Workers that fail this request on exactly one term."""

    term: str
    workers: int
    examples: tuple[str, ...]


@dataclass(frozen=True)
class Explanation:
    req_id: int
    state: ReqState
    priority: int
    ready: bool                        # in the matcher: WAITING, ValidAfter reached
    held_by: str                       # a key of HELD_BY
    candidates: int
    by_state: dict[str, int]           # candidate workers per worker state
    misses: tuple[Miss, ...]           # most workers first
    ahead: int | None                  # ready requests its candidates serve first
    valid_after: float
    deadline: float
    estimate: Estimate | None          # None unless WAITING


def _terms(req: _Request) -> list[tuple[str, dict[str, str], tuple[str, ...]]]:
    """(label, the matcher caps without it, groups without it) for each term."""
    caps = dict(req.match_caps)
    out = []
    for key, value in req.caps:
        rest = dict(caps)
        del rest[key]
        out.append((f"{key}={value}", rest, req.groups))
    for term in req.terms:
        rest = dict(caps)
        rest.pop(term.cap_key, None)
        out.append((term.text, rest, req.groups))
    if req.groups:
        out.append((GROUPS_TERM, caps, ()))
    return out


def nearest_misses(sched: Scheduler, req: _Request, candidates: list[str]) -> tuple[Miss, ...]:
    """For each term: the workers served by all the other terms but not by this one."""
    serving = set(candidates)
    misses = []
    for label, caps, groups in _terms(req):
        missed = [u for u in sched._matcher.candidates(caps, groups) if u not in serving]
        if missed:
            misses.append(Miss(label, len(missed), tuple(missed[:MISS_EXAMPLES])))
    misses.sort(key=lambda m: -m.workers)
    return tuple(misses)


def _slots(sched: Scheduler, candidates: list[str]) -> list[Slot] | None:
    """The candidates in service as estimate slots; None before any job ended."""
    now, workers, requests = sched._now, sched._workers, sched._requests
    stats_of, job_start, run = sched.job_durations.stats, sched._job_start, WorkerState.RUN
    slots = []
    for uuid in candidates:
        worker = workers[uuid]
        if worker.state not in IN_SERVICE:
            continue
        stats = stats_of(worker.caps.get("device_type", ""))
        if stats is None:
            return None
        job = requests.get(worker.job) if worker.job is not None else None
        if worker.state is run and job is not None:
            started = job_start(job)
            free = first_free(now, job.job_timeout, started, stats)
            slots.append(Slot(free, stats.mean, started, stats, job.job_timeout))
        else:
            slots.append(Slot(now, stats.mean))
    return slots


def estimate(sched: Scheduler, req: _Request, candidates: list[str], ahead: int) -> Estimate:
    """The expected start of a waiting request with `ahead` ready requests before it."""
    slots = _slots(sched, candidates)
    if slots is None:
        return Estimate(None, "no job has ended yet: no durations to go by")
    rates = sched.arrivals.better_rates(sched._now, req.priority)
    competing = competing_rate(rates, lambda wants: sched._matcher.candidates(*wants),
                               set(candidates), req.match_caps) if rates else 0.0
    return expected_start(sched._now, ahead, slots, req.valid_after, req.deadline, competing)


def _held_by(req: _Request, now: float, candidates: int, ahead: int | None,
             by_state: dict[str, int]) -> str:
    if req.state is not ReqState.WAIT:
        return "not_waiting"
    if not candidates:
        return "no_candidates"
    if req.valid_after > now:
        return "valid_after"
    if ahead:
        return "queue"
    if by_state.get(str(WorkerState.IDLE)):
        return "matching"
    return "busy"


def explain(sched: Scheduler, req: _Request) -> Explanation:
    """Read-only: the explanation of one request (any state) as the scheduler sees it now."""
    matcher = sched._matcher
    candidates = matcher.candidates(req.match_caps, req.groups)
    workers = sched._workers
    counts = Counter(workers[uuid].state for uuid in candidates)
    by_state = {str(state): n for state, n in counts.items()}
    waiting = req.state is ReqState.WAIT
    ahead = matcher.count_ahead(req.priority, req.seq, candidates) if waiting else None
    return Explanation(
        req.id, req.state, req.priority, req.handle is not None,
        _held_by(req, sched._now, len(candidates), ahead, by_state),
        len(candidates), by_state,
        nearest_misses(sched, req, candidates) if waiting else (),
        ahead, req.valid_after, req.deadline,
        estimate(sched, req, candidates, ahead) if waiting and ahead is not None else None)


def _time(ts: float | None) -> str | None:
    return iso(to_datetime(ts))


def to_doc(explanation: Explanation) -> dict[str, Any]:
    """The explanation as the protocol's document (plain msgpack/JSON types)."""
    e = explanation
    est = e.estimate
    return {
        "id": e.req_id, "state": str(e.state), "priority": e.priority, "ready": e.ready,
        "held_by": e.held_by, "held_by_text": HELD_BY[e.held_by],
        "candidates": e.candidates, "candidate_states": dict(sorted(e.by_state.items())),
        "misses": [{"term": m.term, "workers": m.workers, "examples": list(m.examples)}
                   for m in e.misses],
        "ahead": e.ahead, "valid_after": _time(e.valid_after), "deadline": _time(e.deadline),
        "expected_start": None if est is None else _time(est.start),
        "estimate_basis": None if est is None else est.basis,
        "late": bool(est is not None and est.late),
    }
