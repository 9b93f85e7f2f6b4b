"""Calls that replace earlier ones do not grow memory: the timer heap is compacted.

Every deadline update, ValidAfter update or prolong pushes a timer entry and
leaves the one it replaces in the heap. Before compaction, 100,000
`update_request(id, deadline=...)` calls on one request left 100,000 entries
(about 10 MB) until their times came. Now the heap stays within a small
multiple of the live timers, and what fires, and when, is unchanged.
"""
from __future__ import annotations

import random

import pytest

from boruta.core.config import SchedulerConfig
from boruta.core.scheduler import Scheduler
from boruta.core.timers import COMPACT_FLOOR, RequestTimers, TimerKind
from boruta.core.types import ReqState, WorkerState
from boruta.testing import wuuid

HOUR = 3600.0
CALLS = 20_000          # far above COMPACT_FLOOR: without compaction, CALLS entries remain


def heap_size(farm) -> int:
    return farm.scheduler.counts()["timers"]


def test_deadline_updates_keep_the_heap_small(farm):
    farm.register(wuuid(1))
    req_id = farm.request(deadline=farm.later(HOUR))
    for n in range(CALLS):
        farm.scheduler.update_request(req_id, deadline=farm.later(2 * HOUR + n))
    assert heap_size(farm) <= 1 + COMPACT_FLOOR + 1          # the live deadline, the stale
    # The last deadline is the one that fires, at its time.
    farm.tick(2 * HOUR + CALLS - 1.5)
    assert farm.request_state(req_id) is ReqState.WAIT
    farm.tick(1)
    assert farm.request_state(req_id) is ReqState.TIMEOUT


def test_valid_after_flipping_between_two_times_keeps_the_heap_small(farm):
    # Entries equal to a live one are duplicates: dropped too.
    farm.idle(wuuid(1))
    req_id = farm.request(valid_after=farm.later(HOUR), deadline=farm.later(9 * HOUR))
    for n in range(CALLS):
        farm.scheduler.update_request(req_id, valid_after=farm.later(HOUR * (1 + n % 2)))
    assert heap_size(farm) <= 2 + COMPACT_FLOOR + 1
    farm.tick(HOUR)           # the last update (n odd) asked for two hours
    assert farm.request_state(req_id) is ReqState.WAIT
    farm.tick(HOUR)
    assert farm.worker_of(req_id) == wuuid(1)


@pytest.mark.parametrize("config", [SchedulerConfig(prolong_limit=None)])
def test_prolongs_keep_the_heap_small(farm):
    farm.idle(wuuid(1))
    req_id = farm.request()
    for _ in range(CALLS):
        farm.clock.advance(0.01)
        farm.scheduler.prolong_access(req_id)
    assert heap_size(farm) <= 2 + COMPACT_FLOOR + 1
    farm.tick(HOUR - 0.5)
    assert farm.request_state(req_id) is ReqState.INPROGRESS
    farm.tick(0.5)
    assert farm.request_state(req_id) is ReqState.DONE


def test_many_live_timers_are_all_kept(farm):
    farm.register(wuuid(1))
    ids = [farm.request(valid_after=farm.later(HOUR + i), deadline=farm.later(2 * HOUR))
           for i in range(2 * COMPACT_FLOOR)]
    # Each request has a live ValidAfter and a live deadline; churn on one of them.
    for n in range(CALLS):
        farm.scheduler.update_request(ids[0], deadline=farm.later(3 * HOUR + n))
    live = 2 * len(ids)
    assert live <= heap_size(farm) <= 2 * (live + 2)
    farm.idle(wuuid(1))
    farm.tick(HOUR)
    assert farm.worker_of(ids[0]) == wuuid(1)


def test_finished_requests_leave_the_heap(farm):
    # Requests that ended long before their deadline no longer hold entries for a month.
    farm.register(wuuid(1))
    for _ in range(CALLS // 10):
        farm.scheduler.close_request(farm.request())
    assert heap_size(farm) <= COMPACT_FLOOR + 1


def test_a_restored_job_that_fails_to_start_still_times_out(farm):
    # The deadline of an IN PROGRESS request is kept (and, after a restart, armed):
    # a job that cannot start sends the request back to WAIT, and its deadline holds.
    farm.idle(wuuid(1))
    req_id = farm.request(deadline=farm.later(HOUR))
    restored = Scheduler.restore(farm.scheduler.snapshot(), farm.clock,
                                 matcher=farm.scheduler.matcher_kind)
    for sched in (farm.scheduler, restored):
        sched.register({"UUID": wuuid(1)}, "10.0.0.1:7175", "10.0.0.1:22")
        sched.job_start_failed(req_id, "no tunnel")
        assert sched.request_state(req_id) is ReqState.WAIT
    farm.clock.advance(HOUR)
    for sched in (farm.scheduler, restored):
        assert sched.request_state(req_id) is ReqState.TIMEOUT
        assert sched.get_worker_info(wuuid(1)).state is WorkerState.FAIL


# ---------------------------------------------------------------- the heap alone
def test_compaction_keeps_every_live_entry_in_order():
    rng = random.Random(7)
    live: dict[tuple[int, int], float] = {}

    def is_live(when: float, kind: int, req_id: int) -> bool:
        return live.get((kind, req_id)) == when

    timers = RequestTimers(is_live)
    for _ in range(50_000):
        key = (rng.randrange(3), rng.randrange(200))
        replaces = key in live
        live[key] = float(rng.randrange(1_000_000))
        timers.push(live[key], TimerKind(key[0]), key[1], replaces=replaces)
    assert len(timers) <= len(live) + max(COMPACT_FLOOR, len(live)) + 1
    expected = sorted((when, kind, req_id) for (kind, req_id), when in live.items())
    fired = []
    while (due := timers.pop_instant(1e12)) is not None:
        instant, entries = due
        fired.extend((instant, int(kind), req_id) for kind, req_id in entries
                     if is_live(instant, int(kind), req_id))
    # Every live entry fires, in time order, deadlines first within an instant.
    assert fired == sorted(fired) and sorted(set(fired)) == expected


def test_live_entries_alone_are_never_scanned():
    def is_live(when: float, kind: int, req_id: int) -> bool:
        raise AssertionError("scanned")

    timers = RequestTimers(is_live)
    for n in range(100 * COMPACT_FLOOR):
        timers.push(float(n), TimerKind.DEADLINE, n)
    assert len(timers) == 100 * COMPACT_FLOOR


def test_without_a_liveness_check_nothing_is_dropped():
    timers = RequestTimers()
    for n in range(3 * COMPACT_FLOOR):
        timers.push(float(n % 7), TimerKind.DEADLINE, 1, replaces=True)
    assert len(timers) == 3 * COMPACT_FLOOR
    assert timers.pop_instant(0.0) == (0.0, [(TimerKind.DEADLINE, 1)] * len(range(0, 768, 7)))
