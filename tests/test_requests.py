"""The scheduler's Requests interface: NewRequest, UpdateRequest, CloseRequest,
AcquireWorker and ProlongAccess, as upstream with our departures (effective values
checked on update, unsatisfiable requests refused, times in UTC)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from boruta.core import effects
from boruta.core.config import SchedulerConfig
from boruta.core.errors import (BadArgumentError, DeadlineInThePastError,
                                InvalidTimeRangeError, ModificationForbiddenError,
                                NoMatchingWorkerError, NotFoundError, PriorityError,
                                ProlongLimitError, WorkerNotAssignedError)
from boruta.core.types import AccessInfo, ReqState, UserInfo, WorkerState
from boruta.testing import START, at, wuuid

RS, WS = ReqState, WorkerState
HOUR = 3600.0


def ids(sched) -> list[int]:
    return [r.id for r in sched.list_requests()[0]]


# ---------------------------------------------------------------- NewRequest
class TestNewRequestValidationOrder:
    def test_deadline_in_the_past_wins_over_everything(self, farm):
        farm.register(wuuid(1))
        with pytest.raises(DeadlineInThePastError) as err:
            # also an invalid range and an invalid priority: the deadline is checked first
            farm.scheduler.new_request({}, 0, valid_after=farm.later(10), deadline=farm.later(-1))
        assert str(err.value) == "deadline in the past"

    def test_invalid_range_before_priority(self, farm):
        farm.register(wuuid(1))
        with pytest.raises(InvalidTimeRangeError) as err:
            farm.scheduler.new_request({}, 17, valid_after=farm.later(20), deadline=farm.later(10))
        assert str(err.value) == ("requested time range illegal - "
                                  "ValidAfter must be before Deadline")

    def test_priority_checked_after_times(self, farm):
        farm.register(wuuid(1))
        with pytest.raises(PriorityError):
            farm.scheduler.new_request({}, 0, valid_after=farm.later(5), deadline=farm.later(10))

    def test_priority_before_satisfiability(self, farm):
        with pytest.raises(PriorityError):
            farm.scheduler.new_request({"no": "such"}, 17)

    def test_valid_after_equal_to_deadline_is_accepted(self, farm):
        farm.register(wuuid(1))
        when = farm.later(60)
        req_id = farm.scheduler.new_request({}, 8, valid_after=when, deadline=when)
        info = farm.scheduler.get_request_info(req_id)
        assert (info.valid_after, info.deadline, info.state) == (when, when, RS.WAIT)

    def test_deadline_equal_to_now_is_not_in_the_past(self, farm):
        farm.register(wuuid(1))
        req_id = farm.scheduler.new_request({}, 8, deadline=farm.now())
        assert req_id == 1
        # It can never be ready (Deadline == now is not ready): it times out.
        assert farm.request_state(req_id) is RS.TIMEOUT

    def test_valid_after_in_the_past_is_allowed(self, farm):
        farm.register(wuuid(1))
        past = farm.later(-HOUR)
        req_id = farm.scheduler.new_request({}, 8, valid_after=past)
        assert farm.scheduler.get_request_info(req_id).valid_after == past


class TestNewRequestDefaults:
    def test_default_valid_after_is_now_and_deadline_one_month(self, farm):
        farm.register(wuuid(1))
        farm.clock.advance(12.5)
        req_id = farm.scheduler.new_request({}, 8)
        info = farm.scheduler.get_request_info(req_id)
        assert info.valid_after == at(START + 12.5)
        assert info.valid_after.tzinfo is not None
        assert info.valid_after.utcoffset() == timedelta(0)
        # 2027-01-15T08:00:12.5Z + 1 month
        assert info.deadline == datetime(2027, 2, 15, 8, 0, 12, 500000, tzinfo=timezone.utc)
        assert info.state is RS.WAIT and info.job is None
        assert info.owner == UserInfo(())

    @pytest.mark.parametrize("now, expected", [
        ((2027, 1, 31, 10, 0), (2027, 3, 3, 10, 0)),     # Go: Feb 31 -> Mar 3
        ((2028, 1, 31, 10, 0), (2028, 3, 2, 10, 0)),     # leap year: Feb 31 -> Mar 2
        ((2027, 3, 31, 23, 59), (2027, 5, 1, 23, 59)),   # Apr 31 -> May 1
        ((2027, 12, 31, 0, 0), (2028, 1, 31, 0, 0)),     # year wraps
        ((2027, 2, 28, 6, 30), (2027, 3, 28, 6, 30)),
    ])
    def test_default_deadline_go_month_overflow(self, farm, now, expected):
        farm.register(wuuid(1))
        farm.clock.set(datetime(*now, tzinfo=timezone.utc).timestamp())
        req_id = farm.scheduler.new_request({}, 8)
        assert farm.scheduler.get_request_info(req_id).deadline == datetime(*expected,
                                                                         tzinfo=timezone.utc)

    @pytest.mark.parametrize("config", [SchedulerConfig(default_deadline_months=3)])
    def test_default_deadline_months_from_config(self, farm):
        farm.register(wuuid(1))
        farm.clock.set(datetime(2027, 11, 30, tzinfo=timezone.utc).timestamp())
        req_id = farm.scheduler.new_request({}, 8)
        assert farm.scheduler.get_request_info(req_id).deadline == datetime(
            2028, 3, 1, tzinfo=timezone.utc)      # Feb 30 2028 -> Mar 1

    def test_a3_valid_after_beyond_defaulted_deadline_is_invalid_range(self, farm):
        farm.register(wuuid(1))
        with pytest.raises(InvalidTimeRangeError):
            farm.scheduler.new_request({}, 8, valid_after=farm.later(40 * 86400))
        assert ids(farm.scheduler) == []
        # Right at the defaulted deadline is still accepted (not strictly after).
        farm.clock.set(datetime(2027, 1, 31, tzinfo=timezone.utc).timestamp())
        req_id = farm.scheduler.new_request(
            {}, 8, valid_after=datetime(2027, 3, 3, tzinfo=timezone.utc))
        assert req_id == 1

    @pytest.mark.parametrize("priority", [0, 17, 255, -1])
    def test_priority_bounds_rejected(self, farm, priority):
        farm.register(wuuid(1))
        with pytest.raises(PriorityError) as err:
            farm.scheduler.new_request({}, priority)
        assert str(err.value) == "requested priority out of bounds"

    @pytest.mark.parametrize("priority", [1, 16])
    def test_priority_bounds_accepted(self, farm, priority):
        farm.register(wuuid(1))
        req_id = farm.scheduler.new_request({}, priority)
        assert farm.scheduler.get_request_info(req_id).priority == priority


class TestRequestIds:
    def test_ids_sequential_and_rejections_consume_none(self, farm):
        farm.register(wuuid(1), {"arch": "arm"})
        assert farm.scheduler.new_request({}, 8) == 1
        with pytest.raises(PriorityError):
            farm.scheduler.new_request({}, 0)
        with pytest.raises(DeadlineInThePastError):
            farm.scheduler.new_request({}, 8, deadline=farm.later(-1))
        with pytest.raises(InvalidTimeRangeError):
            farm.scheduler.new_request({}, 8, valid_after=farm.later(9), deadline=farm.later(5))
        with pytest.raises(NoMatchingWorkerError):
            farm.scheduler.new_request({"arch": "x86"}, 8)
        with pytest.raises(BadArgumentError):
            farm.scheduler.new_request({"arch": 1}, 8)
        assert farm.scheduler.new_request({"arch": "arm"}, 8) == 2
        farm.scheduler.close_request(1)
        assert farm.scheduler.new_request({}, 8) == 3     # never reused
        assert ids(farm.scheduler) == [1, 2, 3]


class TestNoMatchingWorker:
    def test_caps_no_registered_worker_has(self, farm):
        farm.register(wuuid(1), {"arch": "arm"})
        farm.drain()
        with pytest.raises(NoMatchingWorkerError) as err:
            farm.scheduler.new_request({"arch": "x86"}, 8)
        assert err.value.code == "no_matching_worker"
        assert ids(farm.scheduler) == [] and farm.drain() == []

    def test_empty_farm_refuses_even_empty_caps(self, farm):
        with pytest.raises(NoMatchingWorkerError):
            farm.scheduler.new_request({}, 8)

    def test_groups_no_registered_worker_has(self, farm):
        farm.register(wuuid(1))
        farm.scheduler.set_groups(wuuid(1), ["lab-a"])
        with pytest.raises(NoMatchingWorkerError):
            farm.scheduler.new_request({}, 8, owner=UserInfo(("lab-b",)))
        assert farm.scheduler.new_request({}, 8, owner=UserInfo(("lab-b", "lab-a"))) == 1

    @pytest.mark.parametrize("state", [WS.MAINTENANCE, WS.FAIL, WS.BUSY, WS.PREPARE, WS.RUN])
    def test_worker_in_any_state_counts(self, farm, state):
        farm.bring(wuuid(1), state, {"arch": "arm"})
        req_id = farm.scheduler.new_request({"arch": "arm"}, 8)
        assert farm.request_state(req_id) is RS.WAIT

    def test_queue_unsatisfiable_accepts(self, farm):
        req_id = farm.scheduler.new_request({"arch": "x86"}, 8, queue_unsatisfiable=True)
        assert req_id == 1 and farm.request_state(1) is RS.WAIT
        # ... and a worker registered later serves it.
        farm.idle(wuuid(1), {"arch": "x86"})
        assert farm.request_state(1) is RS.INPROGRESS


class TestBadArguments:
    @pytest.mark.parametrize("args, kwargs", [
        (("arch=arm", 8), {}),
        ((None, 8), {}),
        (({"arch": 1}, 8), {}),
        (({1: "a"}, 8), {}),
        (({"": "a"}, 8), {}),
        (({}, "8"), {}),
        (({}, 8.0), {}),
        (({}, True), {}),
        (({}, None), {}),
        (({}, 8), {"owner": ("lab",)}),
        (({}, 8), {"owner": UserInfo("lab")}),
        (({}, 8), {"valid_after": "2027-01-01T00:00:00Z"}),
        (({}, 8), {"deadline": 1_900_000_000}),
    ])
    def test_bad_argument_types_change_nothing(self, farm, args, kwargs):
        farm.register(wuuid(1))
        farm.drain()
        with pytest.raises(BadArgumentError):
            farm.scheduler.new_request(*args, **kwargs)
        assert ids(farm.scheduler) == []
        assert farm.drain() == []
        assert farm.scheduler.new_request({}, 8) == 1

    def test_caller_inputs_not_mutated_nor_shared(self, farm):
        farm.register(wuuid(1), {"arch": "arm"})
        caps = {"arch": "arm"}
        groups = ["b", "a"]
        farm.scheduler.new_request(caps, 8, owner=UserInfo(tuple(groups)), queue_unsatisfiable=True)
        caps["arch"] = "x86"
        assert farm.scheduler.get_request_info(1).caps == {"arch": "arm"}
        info = farm.scheduler.get_request_info(1)
        info.caps["arch"] = "mips"               # a copy: the scheduler keeps its own
        assert farm.scheduler.get_request_info(1).caps == {"arch": "arm"}

    def test_naive_datetimes_are_utc(self, farm):
        farm.register(wuuid(1))
        naive = datetime(2027, 2, 1, 12, 0)
        req_id = farm.scheduler.new_request({}, 8, valid_after=naive)
        assert farm.scheduler.get_request_info(req_id).valid_after == naive.replace(
            tzinfo=timezone.utc)


# ---------------------------------------------------------------- UpdateRequest
class TestUpdateRequest:
    def test_a3_unknown_id_is_not_found_even_when_empty(self, farm):
        with pytest.raises(NotFoundError) as err:
            farm.scheduler.update_request(7)
        assert str(err.value) == "Request not found"
        with pytest.raises(NotFoundError):
            farm.scheduler.update_request(7, priority=3)
        with pytest.raises(NotFoundError):
            farm.scheduler.update_request(7, priority=0, valid_after=None, deadline=None)

    def test_empty_update_is_a_no_op(self, farm):
        farm.register(wuuid(1))
        req_id = farm.request()
        before = farm.scheduler.get_request_info(req_id)
        farm.scheduler.update_request(req_id)
        farm.scheduler.update_request(req_id, priority=0)
        assert farm.scheduler.get_request_info(req_id) == before
        assert farm.drain() == []

    def test_unchanged_priority_keeps_fifo_place(self, farm):
        farm.register(wuuid(1))
        a = farm.request(priority=8)
        b = farm.request(priority=8)
        farm.scheduler.update_request(a, priority=8)          # same value: keeps its place
        farm.scheduler.update_request(a, priority=8, deadline=farm.scheduler.get_request_info(a).deadline)
        farm.idle(wuuid(1))
        assert farm.worker_of(a) == wuuid(1)
        assert farm.request_state(b) is RS.WAIT

    def test_changed_priority_goes_to_tail(self, farm):
        farm.register(wuuid(1))
        a = farm.request(priority=8)
        b = farm.request(priority=9)
        c = farm.request(priority=9)
        farm.scheduler.update_request(a, priority=9)          # behind b and c
        farm.idle(wuuid(1))
        order = [farm.started()[0][0]]
        for _ in range(2):
            farm.done(order[-1])
            order.append(farm.started()[-1][0])
        assert order == [b, c, a]

    def test_changed_priority_back_and_forth_goes_to_tail(self, farm):
        farm.register(wuuid(1))
        a = farm.request(priority=8)
        b = farm.request(priority=8)
        farm.scheduler.update_request(a, priority=9)
        farm.scheduler.update_request(a, priority=8)          # tail of 8 again: behind b
        farm.idle(wuuid(1))
        assert farm.worker_of(b) == wuuid(1)
        assert farm.request_state(a) is RS.WAIT

    def test_higher_priority_overtakes(self, farm):
        farm.register(wuuid(1))
        a = farm.request(priority=8)
        b = farm.request(priority=8)
        farm.scheduler.update_request(b, priority=2)
        farm.idle(wuuid(1))
        assert farm.worker_of(b) == wuuid(1) and farm.request_state(a) is RS.WAIT

    @pytest.mark.parametrize("end", [RS.INPROGRESS, RS.CANCEL, RS.DONE, RS.TIMEOUT])
    def test_non_waiting_is_modification_forbidden(self, farm, end):
        req_id = reach(farm, end)
        before = farm.scheduler.get_request_info(req_id)
        with pytest.raises(ModificationForbiddenError) as err:
            farm.scheduler.update_request(req_id, priority=3)
        assert str(err.value) == f"request {req_id} is {end}: only a WAITING request can be updated"
        assert err.value.code == "modification_forbidden"
        with pytest.raises(ModificationForbiddenError):
            farm.scheduler.update_request(req_id, deadline=farm.later(HOUR))
        assert farm.scheduler.get_request_info(req_id) == before
        farm.scheduler.update_request(req_id)                  # empty: still a success

    def test_priority_out_of_bounds(self, farm):
        farm.register(wuuid(1))
        req_id = farm.request()
        with pytest.raises(PriorityError):
            farm.scheduler.update_request(req_id, priority=17)
        assert farm.scheduler.get_request_info(req_id).priority == 8

    def test_priority_checked_before_deadline(self, farm):
        farm.register(wuuid(1))
        req_id = farm.request()
        with pytest.raises(PriorityError):
            farm.scheduler.update_request(req_id, priority=17, deadline=farm.later(-5))

    def test_deadline_in_the_past(self, farm):
        farm.register(wuuid(1))
        req_id = farm.request()
        farm.clock.advance(100)
        with pytest.raises(DeadlineInThePastError):
            # also an invalid range: the past deadline is reported first
            farm.scheduler.update_request(req_id, deadline=farm.later(-1),
                                      valid_after=farm.later(50))
        assert farm.request_state(req_id) is RS.WAIT

    def test_range_checked_with_effective_values(self, farm):
        farm.register(wuuid(1))
        req_id = farm.request(valid_after=farm.later(2 * HOUR), deadline=farm.later(5 * HOUR))
        before = farm.scheduler.get_request_info(req_id)
        # Checked with the effective values: a deadline-only update before the stored
        # ValidAfter is refused.
        with pytest.raises(InvalidTimeRangeError):
            farm.scheduler.update_request(req_id, deadline=farm.later(HOUR))
        # A ValidAfter-only update beyond the stored deadline too.
        with pytest.raises(InvalidTimeRangeError):
            farm.scheduler.update_request(req_id, valid_after=farm.later(6 * HOUR))
        # Both moved together consistently: fine.
        assert farm.scheduler.get_request_info(req_id) == before
        farm.scheduler.update_request(req_id, valid_after=farm.later(6 * HOUR),
                                  deadline=farm.later(7 * HOUR))
        info = farm.scheduler.get_request_info(req_id)
        assert (info.valid_after, info.deadline) == (farm.later(6 * HOUR), farm.later(7 * HOUR))

    def test_refused_update_leaves_no_trace(self, farm):
        farm.register(wuuid(1))
        a = farm.request(priority=8)
        b = farm.request(priority=8)
        farm.drain()
        with pytest.raises(InvalidTimeRangeError):
            farm.scheduler.update_request(a, priority=9, deadline=farm.now(),
                                      valid_after=farm.later(10))
        with pytest.raises(BadArgumentError):
            farm.scheduler.update_request(a, priority="9")
        assert farm.drain() == []
        farm.idle(wuuid(1))
        assert farm.worker_of(a) == wuuid(1) and farm.request_state(b) is RS.WAIT

    def test_update_moves_valid_after(self, farm):
        farm.idle(wuuid(1))
        req_id = farm.request(valid_after=farm.later(HOUR))
        assert farm.request_state(req_id) is RS.WAIT
        farm.scheduler.update_request(req_id, valid_after=farm.now())
        assert farm.request_state(req_id) is RS.INPROGRESS

    def test_update_postpones_valid_after(self, farm):
        farm.idle(wuuid(1))
        req_id = farm.request(valid_after=farm.later(HOUR))
        farm.scheduler.update_request(req_id, valid_after=farm.later(2 * HOUR))
        farm.tick(HOUR)                                    # the old entry is stale
        assert farm.request_state(req_id) is RS.WAIT
        farm.tick(HOUR)
        assert farm.request_state(req_id) is RS.INPROGRESS

    def test_update_deadline_later_and_earlier(self, farm):
        farm.register(wuuid(1))
        a = farm.request(deadline=farm.later(HOUR))
        b = farm.request(deadline=farm.later(3 * HOUR))
        farm.scheduler.update_request(a, deadline=farm.later(2 * HOUR))
        farm.scheduler.update_request(b, deadline=farm.later(30))
        farm.tick(30)
        assert (farm.request_state(a), farm.request_state(b)) == (RS.WAIT, RS.TIMEOUT)
        farm.tick(HOUR)                                    # a's old deadline is stale
        assert farm.request_state(a) is RS.WAIT
        farm.tick(HOUR)
        assert farm.request_state(a) is RS.TIMEOUT


def reach(farm, state: ReqState) -> int:
    """A request in `state`, reached legitimately (a worker is registered for it)."""
    uuid = wuuid(99)
    if uuid not in farm.scheduler.worker_ids():
        farm.register(uuid, {"reach": "yes"})
    if state is RS.WAIT:
        return farm.request({"reach": "yes"})
    if state is RS.CANCEL:
        req_id = farm.request({"reach": "yes"})
        farm.scheduler.close_request(req_id)
    elif state is RS.TIMEOUT:
        req_id = farm.request({"reach": "yes"}, deadline=farm.later(1))
        farm.tick(1)
    elif state is RS.INVALID:
        req_id = farm.request({"reach": "yes"})
        farm.scheduler.deregister(uuid)
    else:
        farm.idle(uuid)
        req_id = farm.request({"reach": "yes"})
        assert farm.worker_of(req_id) == uuid
        if state is RS.DONE:
            farm.scheduler.close_request(req_id)
        elif state is RS.FAILED:
            farm.scheduler.set_fail(uuid, "dead")
    farm.drain()
    assert farm.request_state(req_id) is state
    return req_id


# ---------------------------------------------------------------- CloseRequest
class TestCloseRequest:
    def test_wait_becomes_cancelled(self, farm):
        farm.register(wuuid(1))
        req_id = farm.request()
        farm.scheduler.close_request(req_id)
        assert farm.drain() == [effects.RequestChanged(req_id, RS.CANCEL, "closed by owner")]
        assert farm.request_state(req_id) is RS.CANCEL
        farm.idle(wuuid(1))                              # never matched afterwards
        assert farm.started() == []
        assert farm.worker_state(wuuid(1)) is WS.IDLE

    def test_in_progress_becomes_done_and_worker_prepared(self, farm):
        farm.idle(wuuid(1))
        req_id = farm.request()
        assert farm.worker_of(req_id) == wuuid(1)
        farm.scheduler.close_request(req_id)
        out = farm.drain()
        assert effects.FinishJob(req_id, wuuid(1)) in out
        prepares = [e for e in out if isinstance(e, effects.PrepareWorker)]
        assert [p.worker_uuid for p in prepares] == [wuuid(1)]
        assert out.index(effects.FinishJob(req_id, wuuid(1))) < out.index(prepares[0])
        assert farm.request_state(req_id) is RS.DONE
        assert farm.worker_state(wuuid(1)) is WS.PREPARE
        # the job stays recorded on the finished request
        assert farm.scheduler.get_request_info(req_id).job.worker_uuid == wuuid(1)
        assert farm.prepared(wuuid(1))
        assert farm.worker_state(wuuid(1)) is WS.IDLE

    @pytest.mark.parametrize("end", [RS.CANCEL, RS.DONE, RS.TIMEOUT, RS.FAILED, RS.INVALID])
    def test_terminal_states_are_forbidden(self, farm, end):
        req_id = reach(farm, end)
        farm.drain()
        with pytest.raises(ModificationForbiddenError) as err:
            farm.scheduler.close_request(req_id)
        # The message names the request and its state, so the owner knows why.
        assert str(err.value) == f"request {req_id} is {end}: it cannot be closed"
        assert err.value.code == "modification_forbidden"
        assert farm.request_state(req_id) is end
        assert farm.drain() == []

    def test_unknown_and_bad_id(self, farm):
        with pytest.raises(NotFoundError) as err:
            farm.scheduler.close_request(1)
        assert str(err.value) == "Request not found"
        with pytest.raises(BadArgumentError):
            farm.scheduler.close_request("1")


# ---------------------------------------------------------------- AcquireWorker
class TestAcquireWorker:
    def test_unknown_request(self, farm):
        with pytest.raises(NotFoundError):
            farm.scheduler.acquire_worker(3)

    def test_waiting_request_has_no_worker(self, farm):
        farm.register(wuuid(1))
        req_id = farm.request()
        with pytest.raises(WorkerNotAssignedError) as err:
            farm.scheduler.acquire_worker(req_id)
        assert str(err.value) == "worker not assigned"

    def test_access_info_carries_prepared_key_and_username(self, farm):
        farm.idle(wuuid(1), key="KEY-ONE", username="dryad-user")
        req_id = farm.request()
        access = farm.scheduler.acquire_worker(req_id)
        assert isinstance(access, AccessInfo)
        assert (access.key, access.username, access.worker_uuid) == (
            "KEY-ONE", "dryad-user", wuuid(1))
        assert access.ssh_address == "10.0.0.1:22"

    def test_next_job_gets_the_new_key(self, farm):
        farm.idle(wuuid(1), key="KEY-ONE")
        first = farm.request()
        farm.scheduler.close_request(first)
        farm.drain()
        assert farm.prepared(wuuid(1), key="KEY-TWO", username="other")
        second = farm.request()
        access = farm.scheduler.acquire_worker(second)
        assert (access.key, access.username) == ("KEY-TWO", "other")

    @pytest.mark.parametrize("end", [RS.CANCEL, RS.DONE, RS.TIMEOUT, RS.FAILED])
    def test_terminal_request(self, farm, end):
        req_id = reach(farm, end)
        with pytest.raises(WorkerNotAssignedError):
            farm.scheduler.acquire_worker(req_id)


# ---------------------------------------------------------------- ProlongAccess
class TestProlongAccess:
    def test_unknown_and_waiting(self, farm):
        with pytest.raises(NotFoundError):
            farm.scheduler.prolong_access(1)
        farm.register(wuuid(1))
        req_id = farm.request()
        with pytest.raises(WorkerNotAssignedError):
            farm.scheduler.prolong_access(req_id)

    @pytest.mark.parametrize("end", [RS.CANCEL, RS.DONE, RS.FAILED])
    def test_terminal_request(self, farm, end):
        req_id = reach(farm, end)
        with pytest.raises(WorkerNotAssignedError):
            farm.scheduler.prolong_access(req_id)

    def test_prolong_moves_job_timeout(self, farm):
        farm.idle(wuuid(1))
        req_id = farm.request()
        timeout = farm.scheduler.get_request_info(req_id).job.timeout
        assert timeout == farm.later(HOUR) and timeout.utcoffset() == timedelta(0)   # in UTC
        farm.clock.advance(1000)
        farm.scheduler.prolong_access(req_id)
        assert farm.scheduler.get_request_info(req_id).job.timeout == farm.later(HOUR)

    @pytest.mark.parametrize("config", [SchedulerConfig(prolong_limit=2, job_timeout=60.0)])
    def test_prolong_limit_from_config(self, farm):
        farm.idle(wuuid(1))
        req_id = farm.request()
        assert farm.scheduler.get_request_info(req_id).job.timeout == farm.later(60)
        farm.scheduler.prolong_access(req_id)
        farm.scheduler.prolong_access(req_id)
        with pytest.raises(ProlongLimitError):
            farm.scheduler.prolong_access(req_id)
        assert farm.scheduler.get_request_info(req_id).job.timeout == farm.later(60)

    @pytest.mark.parametrize("config", [SchedulerConfig(prolong_limit=0)])
    def test_prolong_limit_zero(self, farm):
        farm.idle(wuuid(1))
        req_id = farm.request()
        with pytest.raises(ProlongLimitError):
            farm.scheduler.prolong_access(req_id)

    @pytest.mark.parametrize("config", [SchedulerConfig(prolong_limit=None, job_timeout=10.0)])
    def test_no_limit(self, farm):
        farm.idle(wuuid(1))
        req_id = farm.request()
        for _ in range(300):
            farm.clock.advance(5)
            farm.scheduler.prolong_access(req_id)
        assert farm.request_state(req_id) is RS.INPROGRESS
        assert farm.scheduler.get_request_info(req_id).job.timeout == farm.later(10)

    def test_default_limit_is_168(self, farm):
        assert farm.scheduler.config.prolong_limit == 168
        farm.idle(wuuid(1))
        req_id = farm.request()
        for _ in range(168):
            farm.scheduler.prolong_access(req_id)
        with pytest.raises(ProlongLimitError):
            farm.scheduler.prolong_access(req_id)
