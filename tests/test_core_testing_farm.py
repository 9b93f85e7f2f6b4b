"""boruta.testing.InProcessFarm: the core driven without a server, as users and our tests do.

(Most scheduler tests run on it in its held mode, through the `farm` fixture;
here: its own promises, in both modes.)
"""
from __future__ import annotations

import doctest

import pytest

import boruta.testing
import boruta.testing.farm
from boruta.core import effects
from boruta.core.clock import ManualClock, SystemClock
from boruta.core.config import SchedulerConfig
from boruta.core.scheduler import Scheduler
from boruta.core.types import ReqState, WorkerState
from boruta.testing import START, InProcessFarm, at, wuuid

W1, W2 = wuuid(1), wuuid(2)
HOUR = 3600.0


def test_public_names():
    assert set(boruta.testing.__all__) >= {"InProcessFarm", "START", "at", "wuuid"}
    assert at(START).isoformat() == "2027-01-15T08:00:00+00:00"
    assert sorted([wuuid(10), wuuid(9)]) == [wuuid(9), wuuid(10)]


def test_the_docstring_example_runs():
    result = doctest.testmod(boruta.testing.farm)
    assert result.attempted >= 8 and result.failed == 0


@pytest.mark.parametrize("matcher", ["reference", "compiled"])
def test_auto_mode_answers_preparations_and_maintenance(matcher):
    if matcher == "compiled":
        pytest.importorskip("boruta._matcher")
    farm = InProcessFarm(matcher=matcher, config=SchedulerConfig(job_timeout=HOUR))
    assert farm.scheduler.matcher_kind == matcher and farm.now() == at(START)
    farm.idle(W1, {"arch": "arm"}, groups=["lab"])
    assert farm.worker_state(W1) is WorkerState.IDLE and farm.pending == {}
    req_id = farm.request({"arch": "arm"})
    assert farm.started() == [(req_id, W1)]
    # The job times out; the worker is prepared afresh, by itself, with a new key.
    out = farm.tick(HOUR)
    assert effects.FinishJob(req_id, W1) in out
    assert [type(e) for e in out if isinstance(e, effects.PrepareWorker)] == [effects.PrepareWorker]
    assert farm.request_state(req_id) is ReqState.DONE
    assert farm.worker_state(W1) is WorkerState.IDLE
    second = farm.request({"arch": "arm"})
    assert farm.scheduler.acquire_worker(second).key == "key-2"
    farm.done(second)
    farm.scheduler.set_state(W1, "MAINTENANCE")
    farm.drain()
    assert farm.worker_state(W1) is WorkerState.MAINTENANCE and farm.pending == {}
    # Every effect is in the log, in order.
    assert farm.log[0] == effects.WorkerChanged(W1, WorkerState.MAINTENANCE, "registered")
    assert farm.log[-1] == effects.WorkerChanged(W1, WorkerState.MAINTENANCE, "in maintenance")


def test_holding_lets_the_test_answer_with_a_failure():
    farm = InProcessFarm()
    farm.register(W1)
    with farm.holding():
        farm.scheduler.set_state(W1, WorkerState.IDLE)
    assert farm.worker_state(W1) is WorkerState.PREPARE
    op = farm.op(W1)
    assert farm.pending[W1] == effects.PrepareWorker(W1, op)
    assert farm.prepare_failed(W1, "no route") is True
    info = farm.scheduler.get_worker_info(W1)
    assert (info.state, info.fail_reason) == (WorkerState.FAIL, "prepare failed: no route")
    # Outside the block answers are automatic again: re-registering prepares it.
    farm.register(W1)
    assert farm.worker_state(W1) is WorkerState.IDLE


def test_held_mode_keeps_every_transition_for_the_test():
    farm = InProcessFarm(auto_complete=False)
    farm.bring(W1, WorkerState.BUSY)
    farm.bring(W2, WorkerState.PREPARE)
    assert sorted(farm.pending) == [W1, W2]
    with pytest.raises(AssertionError, match="not a PrepareWorker"):
        farm.op(W1)
    assert farm.maintenance_failed(W1, "oled") is True
    assert farm.worker_state(W1) is WorkerState.FAIL
    stale = farm.op(W2)
    farm.scheduler.set_state(W2, WorkerState.MAINTENANCE)           # interrupts the PREPARE
    assert farm.scheduler.worker_prepared(W2, stale, "k", "u") is False
    assert farm.in_maintenance(W2) is True
    assert farm.pending == {}


@pytest.mark.parametrize("state", list(WorkerState))
@pytest.mark.parametrize("auto", [True, False])
def test_bring_reaches_every_state_in_both_modes(state, auto):
    farm = InProcessFarm(auto_complete=auto)
    req_id = farm.bring(W1, state)
    assert farm.worker_state(W1) is state
    assert (req_id is not None) == (state is WorkerState.RUN)


def test_a_given_scheduler_must_run_on_a_manual_clock():
    clock = ManualClock(START + 5)
    farm = InProcessFarm(Scheduler(clock))
    assert farm.clock is clock and farm.now() == at(START + 5)
    with pytest.raises(TypeError, match="ManualClock"):
        InProcessFarm(Scheduler(SystemClock()))
    with pytest.raises(ValueError, match="config and matcher"):
        InProcessFarm(Scheduler(clock), matcher="reference")
