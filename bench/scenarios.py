"""Scenarios S1-S4 of docs/benchmarks.md, for the compiled and the reference matcher.

Two levels:

* **matcher**: the matcher interface used directly (add_worker, set_idle,
  add_request, match). Every farm request is handed over as *ready*: a
  ValidAfter is a scheduler timer, the matcher only ever sees requests whose
  time has come, so here all of them have (R in the matcher is exactly the R
  of the size).
* **scheduler**: the whole `Scheduler` (new_request, set_state,
  worker_prepared, close_request, drain_effects) with a ManualClock, i.e.
  what the server pays per call. Here the ~10% of requests with a ValidAfter
  stay in the timer heap (the clock does not reach them) and are not
  assigned.

Each run of the plain-Python reference matcher has a time budget (60 s by
default): past it the run is interrupted (SIGALRM) and reported as "did not
finish", with whatever it completed (its assignments so far are still checked
against the compiled matcher's, as a prefix).

`python -m bench` prints the table; the functions here return plain dicts.
"""
from __future__ import annotations

import gc
import random
import resource
import signal
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from bench.farm import farm, more_requests
from boruta.core import effects
from boruta.core.clock import ManualClock
from boruta.core.matching import make_matcher
from boruta.core.reference import caps_satisfied, groups_satisfied
from boruta.core.scheduler import Scheduler
from boruta.core.types import UserInfo, WorkerState

KINDS = ("compiled", "reference")
DEFAULT_BUDGET = 60.0
SEED = 0
JOB_KEY = b"bench-key"
JOB_USER = "bench"

# At the scheduler level, sizes with W*R above this are not run with the
# reference matcher: setting up the state alone (O(R*W) match passes) would
# exceed the budget many times over.
SCHED_REFERENCE_MAX_WR = 1000 * 10000


# ----------------------------------------------------------------------------- helpers
class OutOfTime(Exception):
    """The run's time budget is spent."""


@contextmanager
def time_budget(seconds: float | None):
    """Raise OutOfTime after `seconds` of wall time (SIGALRM in the main thread).

    Yields the perf_counter() deadline, for loops that want to check it
    themselves (outside the main thread there is no alarm). None: no budget.
    """
    if seconds is None:
        yield float("inf")
        return
    deadline = time.perf_counter() + seconds
    armed = (threading.current_thread() is threading.main_thread()
             and hasattr(signal, "setitimer"))
    if armed:
        def _ring(signum, frame):
            raise OutOfTime()
        previous = signal.signal(signal.SIGALRM, _ring)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield deadline
    finally:
        if armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def compiled_available() -> bool:
    try:
        make_matcher("compiled")
    except ImportError:
        return False
    return True


def switches() -> int:
    """Involuntary context switches of this process so far (preemptions)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


def _median_p99(values: list[int]) -> tuple[float | None, float | None]:
    n = len(values)
    if not n:
        return None, None
    ordered = sorted(values)
    median = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2
    p99 = ordered[min(n - 1, max(0, -(-99 * n // 100) - 1))]
    return median / 1e3, p99 / 1e3


def latency_stats(lat_ns: list[int], preempted: list[bool] | None = None) -> dict[str, Any]:
    """Median and p99 (nearest rank) in microseconds, calls per second of timed work.

    `preempted[i]` says that the process was preempted (an involuntary
    context switch) around event i: on a shared machine those events carry
    the wait for the CPU. The `quiet_*` figures leave them out.
    """
    if preempted is not None and len(preempted) != len(lat_ns):   # interrupted mid-event
        k = min(len(preempted), len(lat_ns))
        lat_ns, preempted = lat_ns[:k], preempted[:k]
    n = len(lat_ns)
    median, p99 = _median_p99(lat_ns)
    out = {"n": n, "median_us": median, "p99_us": p99,
           "per_s": n / (sum(lat_ns) / 1e9) if sum(lat_ns) else None,
           "preempted": None, "quiet_median_us": None, "quiet_p99_us": None}
    if preempted is not None:
        quiet = [x for x, p in zip(lat_ns, preempted) if not p]
        out["preempted"] = n - len(quiet)
        out["quiet_median_us"], out["quiet_p99_us"] = _median_p99(quiet)
    return out


def prefix_check(compiled: list, reference: list, reference_finished: bool) -> dict[str, Any]:
    """Do the assignments agree? (All of them, or the reference's prefix if it stopped.)"""
    if reference_finished:
        return {"equal": compiled == reference, "compared": len(reference), "complete": True}
    return {"equal": compiled[:len(reference)] == reference, "compared": len(reference),
            "complete": False}


def load_matcher(kind: str, workers: list[dict], requests: Iterable[dict],
                 idle: Iterable[str] = ()):
    """A matcher holding all `workers` (busy unless in `idle`) and `requests`, ready."""
    m = make_matcher(kind)
    for w in workers:
        m.add_worker(w["uuid"], w["caps"], w["groups"])
    for uuid in idle:
        m.set_idle(uuid, True)
    add = m.add_request
    for r in requests:
        add(r["id"], r["caps"], r["groups"], r["priority"], r["id"])
    return m


def split_by_idle_service(requests: list[dict], workers: list[dict],
                          idle_index: Iterable[int]) -> list[dict]:
    """The requests that no worker of `idle_index` serves (a valid waiting backlog)."""
    by_type: dict[str, list[dict]] = defaultdict(list)
    for i in idle_index:
        by_type[workers[i]["caps"]["device_type"]].append(workers[i])
    backlog = []
    for r in requests:
        served = any(caps_satisfied(r["caps"], w["caps"]) and groups_satisfied(r["groups"], w["groups"])
                     for w in by_type.get(r["caps"]["device_type"], ()))
        if not served:
            backlog.append(r)
    return backlog


def _collect() -> None:
    gc.collect()


# ----------------------------------------------------------------------------- S1 matcher
def s1_matcher(kind: str, W: int, R: int, seed: int = SEED,
               budget: float = DEFAULT_BUDGET) -> dict[str, Any]:
    """All R requests ready, all W workers busy; then each worker in turn set_idle + match."""
    f = farm(W, R, seed)
    m = load_matcher(kind, f.workers, f.requests)
    uuids = [w["uuid"] for w in f.workers]
    made: list[tuple[int, str]] = []
    done = 0
    finished = False
    _collect()
    set_idle, match = m.set_idle, m.match
    cpu0, sw0 = time.process_time(), switches()
    t0 = time.perf_counter()
    try:
        with time_budget(budget):
            for uuid in uuids:
                set_idle(uuid, True)
                made.extend(match())
                done += 1
            finished = True
    except OutOfTime:
        pass
    elapsed = time.perf_counter() - t0
    cpu, preemptions = time.process_time() - cpu0, switches() - sw0
    return {"kind": kind, "W": W, "R": R, "finished": finished, "seconds": elapsed,
            "cpu_seconds": cpu, "preemptions": preemptions,
            "workers_done": done, "assignments": made, "ready_left": m.ready_count()}


# ----------------------------------------------------------------------------- S2 matcher
def s2_matcher(kind: str, W: int, R: int, events: int, seed: int = SEED,
               budget: float = DEFAULT_BUDGET) -> dict[str, Any]:
    """W busy, R ready; one worker at a time turns idle and takes its next request.

    Timed per event: set_idle(uuid, True) + match(). Untimed: a fresh request
    refills the queue (add_request; no worker is idle then, so no match() is
    due) and a worker that got nothing is marked busy again.
    """
    f = farm(W, R, seed)
    refill = more_requests(f.workers, events, seed, R + 1)
    m = load_matcher(kind, f.workers, f.requests)
    rng = random.Random(f"s2:{seed}")
    picks = [f.workers[rng.randrange(W)]["uuid"] for _ in range(events)]
    lat: list[int] = []
    outcome: list[list] = []
    k = 0
    finished = False
    set_idle, match, add = m.set_idle, m.match, m.add_request
    ns = time.perf_counter_ns
    sw = switches
    pre: list[bool] = []
    _collect()
    t_start = time.perf_counter()
    try:
        with time_budget(budget):
            for uuid in picks:
                c0 = sw()
                t0 = ns()
                set_idle(uuid, True)
                made = match()
                t1 = ns()
                lat.append(t1 - t0)
                pre.append(sw() != c0)
                outcome.append(made)
                if made:
                    r = refill[k]
                    k += 1
                    add(r["id"], r["caps"], r["groups"], r["priority"], r["id"])
                else:
                    set_idle(uuid, False)
            finished = True
    except OutOfTime:
        outcome = outcome[:len(lat)]
    wall = time.perf_counter() - t_start
    stats = latency_stats(lat, pre)
    return {"kind": kind, "W": W, "R": R, "events": events, "finished": finished,
            "wall": wall, "assignments": outcome, "empty_events": sum(1 for o in outcome if not o),
            "ready_left": m.ready_count(), **stats}


# ----------------------------------------------------------------------------- S3 matcher
def s3_matcher(kind: str, W: int, R: int, calls: int, seed: int = SEED,
               budget: float = DEFAULT_BUDGET, idle_share: float = 0.10) -> dict[str, Any]:
    """W workers, 10% idle; a backlog nobody idle can serve; a stream of arrivals.

    The backlog is the part of farm(W, R)'s requests that no idle worker
    serves (what a queue looks like when 10% of the farm is idle). Timed per
    call: add_request + match(). Untimed: a worker that took the new request
    goes back to idle at once (set_idle(True); no match() is due: nothing
    waiting can use it, by construction), so the idle share stays put.
    """
    f = farm(W, R, seed)
    rng = random.Random(f"s3:{seed}")
    idle_index = sorted(rng.sample(range(W), int(W * idle_share)))
    backlog = split_by_idle_service(f.requests, f.workers, idle_index)
    stream = more_requests(f.workers, calls, seed, R + 1)
    m = load_matcher(kind, f.workers, backlog, idle=[f.workers[i]["uuid"] for i in idle_index])
    if getattr(m, "compiled", False):
        first = m.match()
        if first:
            raise RuntimeError(f"S3 setup: the backlog should match no idle worker, got {first[:3]}")
    lat: list[int] = []
    outcome: list[list] = []
    finished = False
    set_idle, match, add = m.set_idle, m.match, m.add_request
    ns = time.perf_counter_ns
    sw = switches
    pre: list[bool] = []
    _collect()
    try:
        with time_budget(budget):
            for r in stream:
                c0 = sw()
                t0 = ns()
                add(r["id"], r["caps"], r["groups"], r["priority"], r["id"])
                made = match()
                t1 = ns()
                lat.append(t1 - t0)
                pre.append(sw() != c0)
                outcome.append(made)
                for _, uuid in made:
                    set_idle(uuid, True)
            finished = True
    except OutOfTime:
        outcome = outcome[:len(lat)]
    stats = latency_stats(lat, pre)
    return {"kind": kind, "W": W, "R": R, "idle": len(idle_index), "backlog": len(backlog),
            "calls": calls, "finished": finished, "assignments": outcome,
            "assigned_calls": sum(1 for o in outcome if o), "ready_left": m.ready_count(), **stats}


# ----------------------------------------------------------------------------- scheduler glue
def _addr(i: int, port: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}:{port}"


def utc_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def sched_with_workers(kind: str, workers: list[dict]) -> tuple[Scheduler, ManualClock]:
    """A Scheduler with every worker registered (MAINTENANCE) and its groups set."""
    clock = ManualClock()
    s = Scheduler(clock=clock, matcher=kind)
    for i, w in enumerate(workers):
        s.register(w["caps"], _addr(i, 7175), _addr(i, 22))
        s.set_groups(w["uuid"], list(w["groups"]))
    s.drain_effects()
    drain_changes(s)
    return s, clock


def drain_changes(s: Scheduler) -> None:
    """What the shell does after a call besides the effects: hand changed records to
    the store (dropped here). Schedulers without durability have nothing to drain."""
    drain = getattr(s, "drain_changes", None)
    if drain is not None:
        drain()


def _prepare_op(drained: list, uuid: str) -> int:
    for e in reversed(drained):
        if isinstance(e, effects.PrepareWorker) and e.worker_uuid == uuid:
            return e.op
    raise RuntimeError(f"no PrepareWorker effect for {uuid}")


def _starts(drained: list) -> list[tuple[int, str]]:
    return [(e.req_id, e.worker_uuid) for e in drained if isinstance(e, effects.StartJob)]


def sched_bring_idle(s: Scheduler, uuid: str) -> list:
    """MAINTENANCE -> PREPARE -> IDLE, answering the PrepareWorker effect; returns effects."""
    s.set_state(uuid, WorkerState.IDLE)
    drained = s.drain_effects()
    s.worker_prepared(uuid, _prepare_op(drained, uuid), JOB_KEY, JOB_USER)
    return drained + s.drain_effects()


def with_expressions(requests: Iterable[dict], share: float, seed: int) -> list[dict]:
    """The requests with `share` of them asking for their device type as a capability
    expression (`device_type in X`) instead of an exact cap: the same candidates, so the
    same assignments; what differs is what expressions cost."""
    requests = list(requests)
    if not share:
        return requests
    rng = random.Random(f"expr:{seed}")
    out = []
    for r in requests:
        if "device_type" in r["caps"] and rng.random() < share:
            caps = dict(r["caps"])
            r = {**r, "caps": caps, "expr": [f"device_type in {caps.pop('device_type')}"]}
        out.append(r)
    return out


def sched_queue(s: Scheduler, clock: ManualClock, requests: Iterable[dict]) -> list:
    """Queue requests in bulk; those without a ValidAfter become ready together 1 s later.

    Giving them a ValidAfter 1 s ahead makes the scheduler hand them to the
    matcher in one timer instant followed by one match(), instead of one
    match() per new_request: the same final state (same IDs, same FIFO
    order), reached without the plain matcher's O(R*W) pass per request.
    Requests with their own ValidAfter keep it (60 s to 1 h ahead). The
    satisfiability check is skipped: farm requests are satisfiable by
    construction.
    """
    now = clock.now()
    ready_at = utc_datetime(now + 1.0)
    new = s.new_request
    for n, r in enumerate(requests, 1):
        va = ready_at if r["valid_after"] is None else utc_datetime(now + r["valid_after"])
        new(r["caps"], r["priority"], UserInfo(r["groups"]) if r["groups"] else None, va,
            utc_datetime(now + r["deadline"]), queue_unsatisfiable=True, expr=r.get("expr"))
        if not n & 4095:
            s.drain_effects()
            drain_changes(s)
    clock.advance(1.0)
    s.advance()
    drain_changes(s)
    return s.drain_effects()


def _give_jobs(s: Scheduler, workers: list[dict], deadline: datetime) -> dict[str, int]:
    """Each (idle) worker takes a request pinned to it; returns uuid -> job request id."""
    jobs = {}
    for w in workers:
        s.new_request({"UUID": w["uuid"], "device_type": w["caps"]["device_type"]}, 1,
                      UserInfo(w["groups"]), None, deadline)
        for req_id, uuid in _starts(s.drain_effects()):
            jobs[uuid] = req_id
    return jobs


# ----------------------------------------------------------------------------- S1 scheduler
def s1_scheduler(kind: str, W: int, R: int, seed: int = SEED,
                 budget: float = DEFAULT_BUDGET, expr_share: float = 0.0) -> dict[str, Any]:
    """R requests queued, all workers in MAINTENANCE; then each worker: set IDLE, prepared.

    Timed: set_state(IDLE) + drain_effects + worker_prepared + drain_effects
    for every worker in turn; the assignments are the StartJob effects.
    """
    f = farm(W, R, seed)
    s, clock = sched_with_workers(kind, f.workers)
    sched_queue(s, clock, with_expressions(f.requests, expr_share, seed))
    made: list[tuple[int, str]] = []
    done = 0
    finished = False
    _collect()
    cpu0, sw0 = time.process_time(), switches()
    t0 = time.perf_counter()
    try:
        with time_budget(budget):
            for w in f.workers:
                uuid = w["uuid"]
                s.set_state(uuid, WorkerState.IDLE)
                op = _prepare_op(s.drain_effects(), uuid)
                s.worker_prepared(uuid, op, JOB_KEY, JOB_USER)
                made.extend(_starts(s.drain_effects()))
                done += 1
            finished = True
    except OutOfTime:
        pass
    elapsed = time.perf_counter() - t0
    cpu, preemptions = time.process_time() - cpu0, switches() - sw0
    return {"kind": kind, "W": W, "R": R, "finished": finished, "seconds": elapsed,
            "cpu_seconds": cpu, "preemptions": preemptions,
            "workers_done": done, "assignments": made, "ready_left": s.counts()["ready"]}


# ----------------------------------------------------------------------------- S2 scheduler
def s2_scheduler(kind: str, W: int, R: int, events: int, seed: int = SEED,
                 budget: float = DEFAULT_BUDGET, expr_share: float = 0.0) -> dict[str, Any]:
    """All workers RUNNING a job, R waiting; job completions one at a time.

    Untimed: close_request(job) (the worker goes to PREPARE). Timed:
    worker_prepared + drain_effects (the worker turns IDLE and takes its next
    request). Untimed: a fresh ready request refills the queue.
    """
    f = farm(W, R, seed)
    refill = with_expressions(more_requests(f.workers, events, seed, R + 1), expr_share, seed)
    s, clock = sched_with_workers(kind, f.workers)
    for w in f.workers:
        sched_bring_idle(s, w["uuid"])
    deadline = utc_datetime(clock.now() + 14 * 86400.0)
    jobs = _give_jobs(s, f.workers, deadline)
    sched_queue(s, clock, with_expressions(f.requests, expr_share, seed))
    rng = random.Random(f"s2:{seed}")
    uuids = [w["uuid"] for w in f.workers]
    lat: list[int] = []
    outcome: list[list] = []
    k = 0
    finished = False
    ns = time.perf_counter_ns
    sw = switches
    pre: list[bool] = []
    now = clock.now()
    _collect()
    try:
        with time_budget(budget):
            while len(lat) < events:
                uuid = uuids[rng.randrange(W)]
                job = jobs.pop(uuid, None)
                if job is None:           # idle with nothing to do: not a completion
                    continue
                s.close_request(job)
                op = _prepare_op(s.drain_effects(), uuid)
                c0 = sw()
                t0 = ns()
                s.worker_prepared(uuid, op, JOB_KEY, JOB_USER)
                effects = s.drain_effects()
                t1 = ns()
                lat.append(t1 - t0)
                pre.append(sw() != c0)
                made = _starts(effects)
                outcome.append(made)
                for req_id, who in made:
                    jobs[who] = req_id
                if made:
                    r = refill[k]
                    k += 1
                    s.new_request(r["caps"], r["priority"],
                                  UserInfo(r["groups"]) if r["groups"] else None, None,
                                  utc_datetime(now + r["deadline"]), queue_unsatisfiable=True,
                                  expr=r.get("expr"))
                    for req_id, who in _starts(s.drain_effects()):
                        jobs[who] = req_id
                drain_changes(s)
            finished = True
    except OutOfTime:
        outcome = outcome[:len(lat)]
    stats = latency_stats(lat, pre)
    return {"kind": kind, "W": W, "R": R, "events": events, "finished": finished,
            "assignments": outcome, "empty_events": sum(1 for o in outcome if not o),
            "ready_left": s.counts()["ready"], **stats}


# ----------------------------------------------------------------------------- S3 scheduler
def s3_scheduler_state(kind: str, W: int, R: int, seed: int = SEED, idle_share: float = 0.10):
    """S3's starting point: 90% of workers RUNNING, 10% IDLE, a backlog no idle worker serves.

    Returns (scheduler, clock, farm, idle_index, backlog).
    """
    f = farm(W, R, seed)
    rng = random.Random(f"s3:{seed}")
    idle_index = sorted(rng.sample(range(W), int(W * idle_share)))
    idle_set = set(idle_index)
    backlog = split_by_idle_service(f.requests, f.workers, idle_index)
    s, clock = sched_with_workers(kind, f.workers)
    for w in f.workers:
        sched_bring_idle(s, w["uuid"])
    deadline = utc_datetime(clock.now() + 14 * 86400.0)
    _give_jobs(s, [w for i, w in enumerate(f.workers) if i not in idle_set], deadline)
    first = _starts(sched_queue(s, clock, backlog))
    if first:
        raise RuntimeError(f"S3 setup: the backlog should match no idle worker, got {first[:3]}")
    return s, clock, f, idle_index, backlog


def s3_scheduler(kind: str, W: int, R: int, calls: int, seed: int = SEED,
                 budget: float = DEFAULT_BUDGET, idle_share: float = 0.10,
                 expr_share: float = 0.0) -> dict[str, Any]:
    """90% of workers RUNNING, 10% IDLE, a backlog no idle worker serves; arrivals.

    Timed: new_request (with its satisfiability check, as the server does) +
    drain_effects. Untimed: a worker that took the new request finishes at
    once (close_request, worker_prepared) and is IDLE again.
    """
    s, clock, f, idle_index, backlog = s3_scheduler_state(kind, W, R, seed, idle_share)
    stream = more_requests(f.workers, calls, seed, R + 1)
    lat: list[int] = []
    outcome: list[list] = []
    finished = False
    ns = time.perf_counter_ns
    sw = switches
    pre: list[bool] = []
    now = clock.now()
    stream = with_expressions(stream, expr_share, seed)
    args = [(r["caps"], r["priority"], UserInfo(r["groups"]) if r["groups"] else None,
             None if r["valid_after"] is None else utc_datetime(now + r["valid_after"]),
             utc_datetime(now + r["deadline"]), r.get("expr")) for r in stream]
    new = s.new_request
    _collect()
    try:
        with time_budget(budget):
            for caps, prio, owner, va, dl, expr in args:
                c0 = sw()
                t0 = ns()
                new(caps, prio, owner, va, dl, expr=expr)
                effects = s.drain_effects()
                t1 = ns()
                lat.append(t1 - t0)
                pre.append(sw() != c0)
                made = _starts(effects)
                outcome.append(made)
                for req_id, uuid in made:
                    s.close_request(req_id)
                    op = _prepare_op(s.drain_effects(), uuid)
                    s.worker_prepared(uuid, op, JOB_KEY, JOB_USER)
                    again = _starts(s.drain_effects())
                    if again:
                        raise RuntimeError(f"S3: a freed worker took a waiting request {again}")
                drain_changes(s)
            finished = True
    except OutOfTime:
        outcome = outcome[:len(lat)]
    stats = latency_stats(lat, pre)
    return {"kind": kind, "W": W, "R": R, "idle": len(idle_index), "backlog": len(backlog),
            "calls": calls, "finished": finished, "assignments": outcome,
            "assigned_calls": sum(1 for o in outcome if o), "ready_left": s.counts()["ready"],
            **stats}


# ----------------------------------------------------------------------------- registry
SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {
    "s1_matcher": s1_matcher, "s2_matcher": s2_matcher, "s3_matcher": s3_matcher,
    "s1_scheduler": s1_scheduler, "s2_scheduler": s2_scheduler, "s3_scheduler": s3_scheduler,
}
