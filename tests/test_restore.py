"""Restart at the core: changes committed to a real SQLite file, books restored from it.

Each test plays a server that commits `drain_changes()` after every call,
"crashes" (drops the scheduler), and restores a new one from the same file.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from boruta.core import effects
from boruta.core.clock import ManualClock
from boruta.core.errors import InMaintenanceError
from boruta.core.scheduler import Scheduler
from boruta.core.types import ReqState, UserInfo, WorkerState
from boruta.server.store import Store
from boruta.testing import InProcessFarm


class Durable:
    """A farm whose every change goes to a Store, as the server's group commit does."""

    def __init__(self, path: Path, clock: ManualClock, matcher: str) -> None:
        self.path, self.clock, self.matcher = path, clock, matcher
        self.store = Store(path, synchronous="OFF")
        self.farm = InProcessFarm(Scheduler(clock, matcher=matcher), auto_complete=False)

    def commit(self) -> None:
        self.store.commit(self.farm.scheduler.drain_changes())

    def crash_and_restart(self) -> InProcessFarm:
        self.commit()
        self.store.close()
        self.store = Store(self.path, synchronous="OFF")
        self.farm = InProcessFarm(
            Scheduler.restore(self.store.load(), self.clock, matcher=self.matcher),
            auto_complete=False)
        return self.farm


@pytest.fixture
def durable(tmp_path: Path, clock: ManualClock, matcher_kind: str) -> Durable:
    return Durable(tmp_path, clock, matcher_kind)


def test_requests_keep_ids_fields_and_queue_order(durable: Durable) -> None:
    farm = durable.farm
    farm.register("w1", {"device_type": "rpi4"})
    ids = [farm.request({"device_type": "rpi4"}, priority=p) for p in (5, 3, 5, 3)]
    before = [farm.scheduler.get_request_info(i) for i in ids]
    farm = durable.crash_and_restart()
    assert [farm.scheduler.get_request_info(i) for i in ids] == before
    # The worker's dryad comes back; bring it IDLE four times: priority, then FIFO.
    farm.scheduler.register({"UUID": "w1", "device_type": "rpi4"}, "10.0.0.1:7175", "10.0.0.1:22")
    farm.idle("w1")
    served = []
    for _ in ids:
        (req,) = [r for r in ids if farm.request_state(r) is ReqState.INPROGRESS]
        served.append(req)
        farm.done(req)
    assert served == [ids[1], ids[3], ids[0], ids[2]]


def test_id_counter_never_goes_back(durable: Durable) -> None:
    farm = durable.farm
    farm.register("w1")
    first = farm.request({}, queue_unsatisfiable=True)
    farm.scheduler.close_request(first)
    farm = durable.crash_and_restart()
    second = farm.request({})
    assert second == first + 1


def test_id_counter_survives_purge_of_every_request(durable: Durable) -> None:
    farm = durable.farm
    farm.register("w1")
    ids = [farm.request({}) for _ in range(3)]
    for req_id in ids:
        farm.scheduler.close_request(req_id)
    farm.tick(farm.scheduler.config.retention + 1)
    assert farm.scheduler.purge_history() == 3
    farm = durable.crash_and_restart()
    assert farm.scheduler.list_requests()[0] == []
    assert farm.request({}) == ids[-1] + 1


def test_timers_that_passed_while_down_fire_at_once(durable: Durable) -> None:
    farm = durable.farm
    farm.register("w1", {"device_type": "a"})
    waiting = farm.request({"device_type": "a"}, deadline=farm.later(60))
    running = farm.bring("w2", WorkerState.RUN)
    assert running is not None
    durable.commit()
    durable.clock.advance(2 * 3600)               # the server was down for two hours
    farm = durable.crash_and_restart()
    assert farm.request_state(waiting) is ReqState.TIMEOUT
    assert farm.request_state(running) is ReqState.DONE   # job timeout passed while down


def test_restored_workers_get_no_work_until_their_dryad_registers(durable: Durable) -> None:
    farm = durable.farm
    farm.idle("w1", {"device_type": "rpi4"})
    farm = durable.crash_and_restart()
    assert farm.scheduler.overdue_dryads() == ["w1"]
    assert farm.worker_state("w1") is WorkerState.IDLE
    req = farm.request({"device_type": "rpi4"})
    assert farm.request_state(req) is ReqState.WAIT       # w1's dryad has not come back yet
    farm.scheduler.register({"UUID": "w1", "device_type": "rpi4"}, "10.0.0.1:7175", "10.0.0.1:22")
    farm.drain()
    assert farm.scheduler.overdue_dryads() == []
    assert farm.worker_of(req) == "w1"


def test_running_job_keeps_request_and_key_and_resumes(durable: Durable) -> None:
    farm = durable.farm
    farm.idle("w1", key="the-job-key", username="alice")
    req = farm.request({"UUID": "w1"})
    farm = durable.crash_and_restart()
    assert farm.request_state(req) is ReqState.INPROGRESS
    access = farm.scheduler.acquire_worker(req)
    assert (access.key, access.username) == ("the-job-key", "alice")
    farm.scheduler.register({"UUID": "w1"}, "10.0.0.1:7175", "10.0.0.1:22")
    assert effects.ResumeJob(req, "w1") in farm.drain()


def test_interrupted_prepare_is_issued_again_when_the_dryad_returns(durable: Durable) -> None:
    farm = durable.farm
    farm.register("w1")
    farm.scheduler.set_state("w1", WorkerState.IDLE)   # PREPARE in flight when the server dies
    old_op = farm.op("w1")
    farm = durable.crash_and_restart()
    farm.scheduler.register({"UUID": "w1"}, "10.0.0.1:7175", "10.0.0.1:22")
    new_op = farm.op("w1")
    assert new_op != old_op
    assert not farm.scheduler.worker_prepared("w1", old_op, "stale", "u")
    assert farm.prepared("w1")
    assert farm.worker_state("w1") is WorkerState.IDLE


def test_dryads_that_stay_away_fail_their_jobs(durable: Durable) -> None:
    farm = durable.farm
    req = farm.bring("w1", WorkerState.RUN)
    farm.register("w2")                           # MAINTENANCE: nothing to wait for
    farm = durable.crash_and_restart()
    assert farm.scheduler.overdue_dryads() == ["w1"]
    for uuid in farm.scheduler.overdue_dryads():
        try:
            farm.scheduler.set_fail(uuid, "dryad did not come back after restart")
        except InMaintenanceError:
            pass
    farm.drain()
    assert farm.worker_state("w1") is WorkerState.FAIL
    assert farm.request_state(req) is ReqState.FAILED
    assert farm.scheduler.get_worker_info("w1").fail_reason == "dryad did not come back after restart"


def test_deregistered_worker_stays_gone(durable: Durable) -> None:
    farm = durable.farm
    farm.register("w1")
    farm.register("w2")
    farm.scheduler.deregister("w1")
    farm = durable.crash_and_restart()
    assert farm.scheduler.worker_ids() == ["w2"]


def test_snapshot_round_trip_is_exact(durable: Durable) -> None:
    farm = durable.farm
    farm.idle("w1", {"device_type": "rpi4"}, groups=["lab"])
    farm.request({"device_type": "rpi4"}, priority=2)
    farm.request({"device_type": "x"}, priority=9, queue_unsatisfiable=True,
                 valid_after=farm.later(30))
    snap = farm.scheduler.snapshot()
    farm = durable.crash_and_restart()
    again = farm.scheduler.snapshot()
    assert again.last_id == snap.last_id
    assert sorted(map(_norm, again.requests), key=str) == sorted(map(_norm, snap.requests), key=str)
    assert sorted(map(_norm, again.workers), key=str) == sorted(map(_norm, snap.workers), key=str)


def _norm(record: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in record.items()}


def test_a_requests_owner_survives_a_restart(durable: Durable) -> None:
    farm = durable.farm
    farm.register("w1", {"device_type": "rpi4"})
    mine = farm.request({"device_type": "rpi4"}, owner=UserInfo(("lab",), "alice"),
                        queue_unsatisfiable=True)
    anonymous = farm.request({"device_type": "rpi4"})
    farm = durable.crash_and_restart()
    assert farm.scheduler.get_request_info(mine).owner == UserInfo(("lab",), "alice")
    assert farm.scheduler.get_request_info(anonymous).owner.name == ""
    assert farm.scheduler.open_requests("alice") == 1
    farm.scheduler.close_request(mine)
    farm = durable.crash_and_restart()
    assert farm.scheduler.request_owner(mine) == "alice"
    assert farm.scheduler.open_requests("alice") == 0
