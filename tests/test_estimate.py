"""Start-time estimates: the queue model (boruta.core.estimate) and its feed.

The model is checked on numbers worked out by hand; the feed on a real
scheduler (in-process farm, manual clock): jobs that end normally record
their durations per device type, and a waiting request's estimate follows
from the jobs running on its candidates and the requests ahead of it.
"""
from __future__ import annotations

import math

import pytest

from boruta.core.estimate import (FEW_SLOTS, MEDIAN_SHIFT, Arrivals, DurationStats, JobDurations,
                                  Slot, competing_rate, expected_start, first_free, kth_free,
                                  passed_share, passes)
from boruta.testing import InProcessFarm
from boruta.testing.farm import wuuid


def test_known_ends_are_counted_in_order_then_once_a_period():
    # ends known for sure (no durations to doubt them): the k-th free is the k-th end,
    # then each slot again every period
    slots = [Slot(10.0, 100.0), Slot(0.0, 100.0), Slot(5.0, 100.0)]
    got = [kth_free(0.0, slots, k) for k in range(5)]
    assert got[0] == 0.0
    assert got[1:] == [pytest.approx(x, abs=1.0) for x in (5.0, 10.0, 100.0, 105.0)]


def test_uncertain_ends_count_each_jobs_chances():
    # two running jobs of 2 s elapsed; recent jobs lasted 10, 20, 30 or 40 s
    stats = DurationStats([10.0, 20.0, 30.0, 40.0])
    assert stats.freed_within(elapsed=2.0, span=8.0) == 0.25        # the 10 s one
    assert stats.freed_within(elapsed=25.0, span=10.0) == 0.5       # of 30, 40: the 30
    assert stats.remaining(25.0) == pytest.approx(10.0)              # (5 + 15) / 2
    slots = [Slot(first_free(0.0, 3600.0, -2.0, stats), 25.0, -2.0, stats, 3600.0)] * 2
    # by t = 8 each is over with chance 1/4: 1/2 free expected, less than 2/3;
    # by t = 18 (the 20 s job) with chance 1/2 each: one, enough (to the second)
    assert 18.0 <= kth_free(0.0, slots, 0) <= 19.0


def test_many_slots_free_at_their_summed_rates():
    now = 0.0
    slots = [Slot(100.0, 100.0)] * (FEW_SLOTS + 8)
    c = len(slots)
    # the first of c jobs, each expected in 100 s, after 100/c s on average
    assert kth_free(now, slots, 0) == pytest.approx(100.0 / c)
    # once all first jobs are over, c per period
    far = kth_free(now, slots, 10 * c)
    assert kth_free(now, slots, 11 * c) - far == pytest.approx(100.0)


def test_expected_start_respects_valid_after_and_warns_past_the_deadline():
    slots = [Slot(100.0, 50.0)]
    on_time = expected_start(now=0.0, ahead=1, slots=slots, valid_after=0.0, deadline=1000.0)
    assert on_time.start == pytest.approx(150.0, abs=1.0) and not on_time.late
    assert "1 ahead on 1 worker in service" in on_time.basis
    later = expected_start(now=0.0, ahead=0, slots=slots, valid_after=500.0, deadline=1000.0)
    assert later.start == 500.0
    late = expected_start(now=0.0, ahead=30, slots=slots, valid_after=0.0, deadline=1000.0)
    assert late.late and late.start == pytest.approx(1600.0, abs=1.0)
    none = expected_start(now=0.0, ahead=0, slots=[], valid_after=0.0, deadline=1000.0)
    assert none.start is None and none.basis == "no candidate worker is in service"


def test_first_free():
    stats = DurationStats([30.0])
    assert first_free(now=50.0, job_timeout=None, job_start=None, stats=stats) == 50.0
    assert first_free(50.0, job_timeout=3600.0, job_start=40.0, stats=stats) == 70.0
    assert first_free(50.0, job_timeout=60.0, job_start=40.0, stats=stats) == 60.0
    # overdue (ran longer than every recent job): half a mean job more
    assert first_free(50.0, job_timeout=3600.0, job_start=0.0, stats=stats) == 65.0
    # prolonged: its start is unknown, someone holds it: its timeout
    assert first_free(50.0, job_timeout=900.0, job_start=None, stats=stats) == 900.0


def test_job_durations_per_type_then_overall():
    books = JobDurations(size=3)
    assert books.stats("rpi4") is None
    for seconds in (10.0, 20.0, 30.0, 1000.0):         # the ring keeps the last 3
        books.record("rpi4", seconds)
    books.record("rpi3", 5.0)
    assert books.stats("rpi4").sorted == [20.0, 30.0, 1000.0]
    assert books.stats("odroid").sorted == [5.0, 20.0, 30.0, 1000.0]   # every type's
    assert books.types() == {"rpi4": 350.0, "rpi3": 5.0}
    books.record("rpi4", 40.0)                                          # the cache follows
    assert books.stats("rpi4").sorted == [30.0, 40.0, 1000.0]


def _run(farm: InProcessFarm, caps: dict, seconds: float, n: int) -> None:
    jobs = [farm.request(caps) for _ in range(n)]
    farm.tick(seconds)
    for job in jobs:
        farm.done(job)


def test_scheduler_records_durations_and_estimates_a_waiting_request():
    farm = InProcessFarm()
    for n in range(2):
        farm.idle(wuuid(n), {"device_type": "rpi4"})
    farm.idle(wuuid(5), {"device_type": "rpi3"})
    _run(farm, {"device_type": "rpi4"}, 100.0, 2)
    _run(farm, {"device_type": "rpi3"}, 40.0, 1)
    sched = farm.scheduler
    assert sched.job_durations.types() == {"rpi4": 100.0, "rpi3": 40.0}
    t0 = farm.clock.now()
    running = [farm.request({"device_type": "rpi4"}) for _ in range(2)]
    assert all(farm.worker_of(r) for r in running)
    farm.tick(30.0)
    waiting = [farm.request({"device_type": "rpi4"}) for _ in range(3)]
    # rpi4 jobs last 100 s: both boards free at t0 + 100, then every 100 s, so the
    # third waits for the second round
    got = [sched.expected_start(r).start for r in waiting]
    assert got == [pytest.approx(t, abs=1.0) for t in (t0 + 100, t0 + 100, t0 + 200)]
    assert sched.expected_start(running[0]) is None
    tight = farm.request({"device_type": "rpi4"}, deadline=farm.later(150.0))
    estimate = sched.expected_start(tight)
    assert estimate.start == pytest.approx(t0 + 200, abs=1.0) and estimate.late


def test_a_job_cut_short_by_failure_is_not_a_duration():
    farm = InProcessFarm()
    farm.idle(wuuid(1), {"device_type": "rpi4"})
    farm.request({"device_type": "rpi4"})
    farm.tick(10.0)
    farm.scheduler.set_fail(wuuid(1), "smoke")
    farm.drain()
    assert farm.scheduler.job_durations.types() == {}


RPI4 = ((("device_type", "rpi4"),), ())
ARMV7 = ((("arch", "armv7"),), ())


def test_arrivals_count_better_priorities_per_ask_over_the_ring_span():
    books = Arrivals(size=4)
    assert books.better_rates(now=10.0, priority=9) == {}
    for req_id, (at, priority, wants) in enumerate([(0.0, 2, RPI4), (100.0, 3, RPI4),
                                                     (200.0, 2, ARMV7), (300.0, 9, RPI4)]):
        books.record(req_id, at, priority, wants)
    # over 400 s since the oldest kept: two better rpi4 asks, one armv7; the 9 is not better
    assert books.better_rates(now=400.0, priority=9) == {RPI4: 2 / 400, ARMV7: 1 / 400}
    assert books.better_rates(now=400.0, priority=2) == {}             # none better than 2
    books.record(3, 350.0, 1, RPI4)                   # the same request again: once only
    assert books.better_rates(now=400.0, priority=9) == {RPI4: 2 / 400, ARMV7: 1 / 400}
    books.record(4, 400.0, 1, ARMV7)                  # the ring drops the oldest (t=0)
    assert books.better_rates(now=500.0, priority=9) == {RPI4: 1 / 400, ARMV7: 2 / 400}


def test_competing_rate_takes_each_asks_share_of_our_workers():
    asked = []

    def candidates_of(wants):
        asked.append(wants)
        return {RPI4: ["r1", "r2"], ARMV7: ["o1", "o2", "a1", "a2"]}[wants]

    odroid = ((("device_type", "odroid"),), ())
    ours = {"o1", "o2"}                              # an odroid request's candidates
    rates = {RPI4: 0.5, ARMV7: 0.2, odroid: 0.1}
    # armv7 asks take an odroid half the time; rpi4 asks never (their caps say so: no look)
    got = competing_rate(rates, lambda w: candidates_of(w) if w != odroid else ["o1", "o2"],
                         ours, our_caps=(("device_type", "odroid"),))
    assert got == pytest.approx(0.2 * 2 / 4 + 0.1)
    assert RPI4 not in asked


def test_passes_are_counted_at_a_low_median_of_the_expected():
    ln2 = math.log(2)
    assert passes(ahead=0, share=0.9) == 0.0           # 0.6 expected: most often none
    assert passes(ahead=1, share=0.6) == pytest.approx(0.6 * (1 + MEDIAN_SHIFT) - ln2)
    assert passes(ahead=10, share=0.0) == 0.0


def test_better_requests_filed_later_stretch_the_wait_one_free_a_pass():
    slots = [Slot(100.0, 100.0), Slot(100.0, 100.0)]           # frees 2 per 100 s
    alone = expected_start(0.0, ahead=4, slots=slots, valid_after=0.0, deadline=1e9)
    assert alone.start == pytest.approx(300.0, abs=1.0)
    assert passed_share(slots, competing=0.01) == pytest.approx(0.5)
    passed = expected_start(0.0, ahead=4, slots=slots, valid_after=0.0, deadline=1e9,
                            competing=0.01)
    # half of 4 + 2/3 frees expected to go to them: 2.33 - ln 2 = 1.64 passes counted
    n = 0.5 * (4 + MEDIAN_SHIFT) - math.log(2)
    assert passed.start == pytest.approx(300.0 * (1 + n / (4 + MEDIAN_SHIFT)))
    assert "later, better requests take 50% of their frees: 1.6 expected to pass" in passed.basis
    assert "later, better" not in alone.basis
    assert passed_share(slots, competing=1.0) == 1.0       # more than they free: all of them


def _file(farm: InProcessFarm, caps: dict, priority: int) -> int:
    """farm.request, and the filing hook it feeds (a no-op once new_request calls it)."""
    req_id = farm.request(caps, priority)
    farm.scheduler._request_filed(farm.scheduler._requests[req_id])
    return req_id


def _estimate_after_a_history(history_priority: int) -> float:
    """Two rpi4 boards; jobs of 100 s filed at `history_priority`; then a priority 9
    request waits behind two running jobs and two queued requests: its estimate, from now."""
    farm = InProcessFarm()
    for n in range(2):
        farm.idle(wuuid(n), {"device_type": "rpi4"})
    for _ in range(4):
        jobs = [_file(farm, {"device_type": "rpi4"}, history_priority) for _ in range(2)]
        farm.tick(100.0)
        for job in jobs:
            farm.done(job)
    for _ in range(4):
        _file(farm, {"device_type": "rpi4"}, 9)
    waiting = _file(farm, {"device_type": "rpi4"}, 9)
    return farm.scheduler.expected_start(waiting).start - farm.clock.now()


def test_a_history_of_better_filings_makes_a_waiting_request_expect_to_be_passed():
    # the same day twice; only the history's priority differs: 9 (not better) or 2
    plain = _estimate_after_a_history(9)
    passed = _estimate_after_a_history(2)
    assert plain == pytest.approx(200.0, abs=1.0)     # two queued ahead: the second round
    # 8 better filings in the 400 s since the first: 2 per 100 s, as fast as the two
    # boards free, so all of their frees: 2 + 2/3 - ln 2 passes, a free each
    n = 2 + MEDIAN_SHIFT - math.log(2)
    assert passed == pytest.approx(plain * (1 + n / (2 + MEDIAN_SHIFT)), abs=2.0)
