"""Time through the scheduler: ValidAfter, Deadline, job timeout."""
from __future__ import annotations

import pytest

from boruta.core import effects
from boruta.core.config import SchedulerConfig
from boruta.core.timers import RequestTimers, TimerKind
from boruta.core.types import ReqState, WorkerState
from boruta.testing import START, wuuid

RS, WS = ReqState, WorkerState
W1, W2 = wuuid(1), wuuid(2)
HOUR = 3600.0


# ---------------------------------------------------------------- the heap itself
class TestRequestTimers:
    def test_one_instant_at_a_time_deadlines_first(self):
        t = RequestTimers()
        t.push(20.0, TimerKind.VALID_AFTER, 1)
        t.push(10.0, TimerKind.VALID_AFTER, 2)
        t.push(10.0, TimerKind.JOB_TIMEOUT, 3)
        t.push(10.0, TimerKind.DEADLINE, 4)
        t.push(10.0, TimerKind.DEADLINE, 2)
        assert t.next_time() == 10.0 and len(t) == 5
        assert t.pop_instant(9.99) is None
        assert t.pop_instant(25.0) == (10.0, [(TimerKind.DEADLINE, 2), (TimerKind.DEADLINE, 4),
                                              (TimerKind.JOB_TIMEOUT, 3),
                                              (TimerKind.VALID_AFTER, 2)])
        assert t.pop_instant(19.0) is None
        assert t.pop_instant(20.0) == (20.0, [(TimerKind.VALID_AFTER, 1)])
        assert t.pop_instant(1e12) is None and t.next_time() is None and len(t) == 0

    def test_duplicates_kept(self):
        t = RequestTimers()
        t.push(5.0, TimerKind.DEADLINE, 1)
        t.push(5.0, TimerKind.DEADLINE, 1)
        assert t.pop_instant(5.0) == (5.0, [(TimerKind.DEADLINE, 1)] * 2)


# ---------------------------------------------------------------- ValidAfter
class TestValidAfter:
    def test_future_valid_after_joins_when_due(self, farm):
        farm.idle(W1)
        req_id = farm.request(valid_after=farm.later(HOUR))
        assert farm.scheduler.next_timer() == START + HOUR
        farm.tick(HOUR - 0.001)
        assert farm.request_state(req_id) is RS.WAIT and farm.worker_state(W1) is WS.IDLE
        out = farm.tick(0.001)                        # ValidAfter == now is ready
        assert effects.StartJob(req_id, W1) in out
        assert farm.scheduler.get_request_info(req_id).job.timeout == farm.later(HOUR)

    def test_any_call_catches_up_with_the_clock(self, farm):
        farm.idle(W1)
        req_id = farm.request(valid_after=farm.later(60))
        farm.clock.advance(61)                        # no explicit advance()
        assert farm.request_state(req_id) is RS.INPROGRESS

    def test_ready_at_the_same_instant_served_in_priority_order(self, farm):
        farm.idle(W1)
        when = farm.later(600)
        low = farm.request(priority=9, valid_after=when)
        high = farm.request(priority=2, valid_after=when)
        mid = farm.request(priority=5, valid_after=when)
        farm.tick(600)
        assert farm.worker_of(high) == W1
        assert (farm.request_state(low), farm.request_state(mid)) == (RS.WAIT, RS.WAIT)
        farm.done(high)
        assert farm.worker_of(mid) == W1

    def test_timers_fire_in_chronological_order(self, farm):
        # One big clock jump: the request due first gets the worker, at its own instant.
        farm.idle(W1)
        early = farm.request(priority=9, valid_after=farm.later(100))
        late = farm.request(priority=1, valid_after=farm.later(200))
        farm.tick(1000)
        assert farm.worker_of(early) == W1 and farm.request_state(late) is RS.WAIT
        job = farm.scheduler.get_request_info(early).job
        assert job.timeout.timestamp() == START + 100 + HOUR

    def test_waiting_request_joins_when_worker_turns_idle(self, farm):
        farm.register(W1)
        req_id = farm.request(valid_after=farm.later(10))
        farm.tick(20)
        assert farm.request_state(req_id) is RS.WAIT
        farm.idle(W1)
        assert farm.worker_of(req_id) == W1

    def test_not_yet_valid_request_not_matched_by_idle_worker(self, farm):
        farm.register(W1)
        req_id = farm.request(valid_after=farm.later(10))
        farm.idle(W1)
        assert farm.request_state(req_id) is RS.WAIT
        farm.tick(10)
        assert farm.worker_of(req_id) == W1


# ---------------------------------------------------------------- Deadline
class TestDeadline:
    def test_deadline_times_out_waiting_request_exactly(self, farm):
        farm.register(W1)
        req_id = farm.request(deadline=farm.later(60))
        farm.tick(59.999)
        assert farm.request_state(req_id) is RS.WAIT
        out = farm.tick(0.001)
        assert out == [effects.RequestChanged(req_id, RS.TIMEOUT, "deadline passed")]
        farm.idle(W1)                                  # never served afterwards
        assert farm.request_state(req_id) is RS.TIMEOUT and farm.worker_state(W1) is WS.IDLE

    def test_deadline_equal_valid_after_times_out(self, farm):
        farm.idle(W1)
        when = farm.later(30)
        req_id = farm.request(valid_after=when, deadline=when)
        out = farm.tick(30)
        assert farm.request_state(req_id) is RS.TIMEOUT
        assert not [e for e in out if isinstance(e, effects.StartJob)]
        assert farm.worker_state(W1) is WS.IDLE

    def test_deadline_passing_in_progress_changes_nothing(self, farm):
        farm.idle(W1)
        req_id = farm.request(deadline=farm.later(60))
        assert farm.request_state(req_id) is RS.INPROGRESS
        out = farm.tick(120)
        assert out == []
        assert farm.request_state(req_id) is RS.INPROGRESS and farm.worker_state(W1) is WS.RUN
        farm.scheduler.close_request(req_id)
        assert farm.request_state(req_id) is RS.DONE

    def test_valid_but_unserved_times_out(self, farm):
        farm.register(W1)
        req_id = farm.request(valid_after=farm.later(100), deadline=farm.later(150))
        farm.tick(120)
        assert farm.request_state(req_id) is RS.WAIT
        farm.tick(30)
        assert farm.request_state(req_id) is RS.TIMEOUT
        farm.idle(W1)
        assert farm.worker_state(W1) is WS.IDLE

    def test_cancelled_request_deadline_is_harmless(self, farm):
        farm.register(W1)
        req_id = farm.request(deadline=farm.later(10))
        farm.scheduler.close_request(req_id)
        farm.drain()
        assert farm.tick(20) == []
        assert farm.request_state(req_id) is RS.CANCEL


# ---------------------------------------------------------------- job timeout
class TestJobTimeout:
    def test_job_timeout_done_and_worker_prepared(self, farm):
        farm.idle(W1)
        req_id = farm.request()
        farm.tick(HOUR - 1)
        assert farm.request_state(req_id) is RS.INPROGRESS
        out = farm.tick(1)
        assert effects.RequestChanged(req_id, RS.DONE, "job timeout", W1) in out
        assert effects.FinishJob(req_id, W1) in out
        assert [e.worker_uuid for e in out if isinstance(e, effects.PrepareWorker)] == [W1]
        assert farm.worker_state(W1) is WS.PREPARE
        assert farm.prepared(W1)
        assert farm.worker_state(W1) is WS.IDLE

    @pytest.mark.parametrize("config", [SchedulerConfig(job_timeout=90.0)])
    def test_job_timeout_from_config(self, farm):
        farm.idle(W1)
        req_id = farm.request()
        farm.tick(89)
        assert farm.request_state(req_id) is RS.INPROGRESS
        farm.tick(1)
        assert farm.request_state(req_id) is RS.DONE

    def test_prolonged_job_not_closed_at_old_timeout(self, farm):
        farm.idle(W1)
        req_id = farm.request()
        farm.tick(HOUR / 2)
        farm.scheduler.prolong_access(req_id)              # new timeout: 1.5 h from start
        assert farm.tick(HOUR / 2) == []               # the old timeout passes
        assert farm.request_state(req_id) is RS.INPROGRESS
        farm.tick(HOUR / 2 - 1)
        assert farm.request_state(req_id) is RS.INPROGRESS
        farm.tick(1)
        assert farm.request_state(req_id) is RS.DONE

    def test_next_waiting_request_gets_worker_after_timeout(self, farm):
        farm.idle(W1)
        first = farm.request()
        second = farm.request()
        farm.tick(HOUR)
        assert farm.request_state(first) is RS.DONE and farm.request_state(second) is RS.WAIT
        assert farm.prepared(W1)
        assert farm.worker_of(second) == W1
        assert farm.scheduler.get_request_info(second).job.timeout == farm.later(HOUR)

    def test_closed_job_timeout_is_harmless(self, farm):
        farm.idle(W1)
        first = farm.request()
        farm.tick(100)
        farm.done(first)
        second = farm.request()
        assert farm.worker_of(second) == W1
        farm.tick(HOUR - 100)                # first's stale timeout is at exactly this instant
        assert farm.request_state(second) is RS.INPROGRESS
        farm.tick(99)
        assert farm.request_state(second) is RS.INPROGRESS
        farm.tick(1)
        assert farm.request_state(second) is RS.DONE

    def test_failed_job_timeout_is_harmless(self, farm):
        farm.idle(W1)
        req_id = farm.request()
        farm.scheduler.set_fail(W1, "x")
        farm.drain()
        assert farm.tick(2 * HOUR) == []
        assert farm.request_state(req_id) is RS.FAILED and farm.worker_state(W1) is WS.FAIL


# ---------------------------------------------------------------- job start failure and time
class TestJobStartFailedTime:
    def test_back_in_queue_keeps_valid_after_and_deadline(self, farm):
        farm.idle(W1)
        req_id = farm.request(deadline=farm.later(HOUR))
        before = farm.scheduler.get_request_info(req_id)
        farm.scheduler.job_start_failed(req_id, "tunnel")
        info = farm.scheduler.get_request_info(req_id)
        assert (info.valid_after, info.deadline, info.state) == (
            before.valid_after, before.deadline, RS.WAIT)
        farm.tick(HOUR)                         # the stale job timeout fires harmlessly too
        assert farm.request_state(req_id) is RS.TIMEOUT
