"""Leases in the core: a request whose renewals stop is closed after its grace.

Time is the farm's manual clock; the durable part restarts from a real SQLite file.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from boruta.core import effects
from boruta.core.clock import ManualClock
from boruta.core.errors import BadArgumentError
from boruta.core.scheduler import Scheduler
from boruta.core.types import ReqState, UserInfo, WorkerState
from boruta.server.store import Store
from boruta.testing import InProcessFarm
from boruta.testing.farm import START, wuuid

RPI = {"device_type": "rpi4"}
ALICE, BOB = UserInfo((), "alice"), UserInfo((), "bob")


def reasons(effs: list[effects.Effect], req_id: int) -> list[str]:
    return [e.reason for e in effs if isinstance(e, effects.RequestChanged) and e.req_id == req_id]


def test_a_waiting_request_whose_lease_lapses_is_cancelled(farm: InProcessFarm) -> None:
    farm.register(wuuid(1), RPI)                      # in MAINTENANCE: the request waits
    req_id = farm.request(RPI, lease=30)
    assert farm.scheduler.get_request_info(req_id).lease == 30
    farm.clock.advance(29.9)
    assert farm.request_state(req_id) is ReqState.WAIT
    effs = farm.tick(0.1)
    assert farm.request_state(req_id) is ReqState.CANCEL
    assert reasons(effs, req_id) == ["lease expired (no renewal for 30 s)"]
    assert farm.scheduler.open_requests("") == 0


def test_renewals_keep_a_job_and_their_end_frees_the_worker(farm: InProcessFarm) -> None:
    farm.idle(wuuid(1), RPI)
    req_id = farm.request(RPI, lease=30)
    assert farm.request_state(req_id) is ReqState.INPROGRESS
    for _ in range(20):                               # 20 x 20 s: far past one grace
        farm.clock.advance(20)
        assert farm.scheduler.renew_leases([req_id]) == ([req_id], [])
    farm.clock.advance(29)
    assert farm.request_state(req_id) is ReqState.INPROGRESS
    effs = farm.tick(1)
    assert farm.request_state(req_id) is ReqState.DONE
    assert reasons(effs, req_id) == ["lease expired (no renewal for 30 s)"]
    assert any(isinstance(e, effects.FinishJob) and e.req_id == req_id for e in effs)
    assert farm.worker_state(wuuid(1)) is WorkerState.PREPARE     # prepared for the next job
    farm.prepared(wuuid(1))
    assert farm.worker_state(wuuid(1)) is WorkerState.IDLE


def test_renewals_do_not_grow_the_timer_heap(farm: InProcessFarm) -> None:
    farm.idle(wuuid(1), RPI)
    req_ids = [farm.request(RPI, lease=60, queue_unsatisfiable=True) for _ in range(50)]
    before = farm.scheduler.counts()["timers"]
    for _ in range(1000):
        farm.clock.advance(1)
        farm.scheduler.renew_leases(req_ids)
    # One lease entry per request, pushed again once per grace: not one per renewal.
    assert farm.scheduler.counts()["timers"] <= before + 50
    assert all(farm.request_state(r) in (ReqState.WAIT, ReqState.INPROGRESS) for r in req_ids)


def test_what_a_renewal_cannot_hold_is_lost(farm: InProcessFarm) -> None:
    farm.register(wuuid(1), RPI)
    mine = farm.request(RPI, owner=ALICE, lease=30)
    theirs = farm.request(RPI, owner=BOB, lease=30)
    unleased = farm.request(RPI, owner=ALICE)
    closed = farm.request(RPI, owner=ALICE, lease=30)
    farm.scheduler.close_request(closed)
    ids = [mine, theirs, unleased, closed, 999]
    assert farm.scheduler.renew_leases(ids, "alice") == ([mine], [theirs, unleased, closed, 999])
    assert farm.scheduler.renew_leases(ids) == ([mine, theirs], [unleased, closed, 999])   # admin
    with pytest.raises(BadArgumentError):
        farm.scheduler.renew_leases([mine, "x"])
    with pytest.raises(BadArgumentError):
        farm.scheduler.renew_leases(mine)


@pytest.mark.parametrize("lease", [0, 4.99, 86400.5, math.nan, math.inf, -1, True, "30"])
def test_a_grace_out_of_bounds_is_refused_and_files_nothing(farm: InProcessFarm, lease) -> None:
    farm.register(wuuid(1), RPI)
    with pytest.raises(BadArgumentError, match="lease must be a number of seconds from 5 to 86400"):
        farm.request(RPI, lease=lease)
    assert farm.scheduler.counts()["requests"] == 0


def test_the_queue_position_counts_the_ready_requests_before_it(farm: InProcessFarm) -> None:
    farm.register(wuuid(1), RPI)
    low = farm.request(RPI, 9)
    high = farm.request(RPI, 2)
    same = farm.request(RPI, 9)
    later = farm.request(RPI, 1, valid_after=farm.later(60))
    pos = farm.scheduler.queue_position
    assert pos(high) == (ReqState.WAIT, 0, 3)
    assert pos(low) == (ReqState.WAIT, 1, 3)
    assert pos(same) == (ReqState.WAIT, 2, 3)
    assert pos(later) == (ReqState.WAIT, None, 3)          # not ready: its ValidAfter is to come
    farm.scheduler.close_request(high)
    assert pos(same) == (ReqState.WAIT, 1, 2)
    farm.clock.advance(60)
    assert pos(same) == (ReqState.WAIT, 2, 3)              # `later` is ready, and first


# --------------------------------------------------------------------------- across a restart
def durable(tmp_path: Path, clock: ManualClock, matcher_kind: str) -> tuple[Store, InProcessFarm]:
    store = Store(tmp_path, synchronous="OFF")
    return store, InProcessFarm(Scheduler(clock, matcher=matcher_kind), auto_complete=False)


def restart(tmp_path: Path, store: Store, farm: InProcessFarm, matcher_kind: str
            ) -> tuple[Store, InProcessFarm]:
    store.commit(farm.scheduler.drain_changes())
    store.close()
    store = Store(tmp_path, synchronous="OFF")
    return store, InProcessFarm(Scheduler.restore(store.load(), farm.clock, matcher=matcher_kind),
                                auto_complete=False)


def test_a_restart_gives_every_lease_its_whole_grace_again(tmp_path: Path, matcher_kind: str
                                                           ) -> None:
    clock = ManualClock(START)
    store, farm = durable(tmp_path, clock, matcher_kind)
    farm.register(wuuid(1), RPI)
    leased = farm.request(RPI, lease=30)
    plain = farm.request(RPI)
    clock.advance(25)                                 # 5 s of grace left when the server stops
    store, farm = restart(tmp_path, store, farm, matcher_kind)
    assert farm.scheduler.get_request_info(leased).lease == 30
    assert farm.scheduler.get_request_info(plain).lease is None
    clock.advance(25)
    assert farm.request_state(leased) is ReqState.WAIT        # the grace restarted
    assert farm.scheduler.renew_leases([leased]) == ([leased], [])
    clock.advance(29)
    assert farm.request_state(leased) is ReqState.WAIT
    clock.advance(1)
    assert farm.request_state(leased) is ReqState.CANCEL
    assert farm.request_state(plain) is ReqState.WAIT
    store.close()


def test_a_stored_grace_out_of_bounds_is_read_within_them(tmp_path: Path, matcher_kind: str
                                                          ) -> None:
    clock = ManualClock(START)
    store, farm = durable(tmp_path, clock, matcher_kind)
    farm.register(wuuid(1), RPI)
    ids = [farm.request(RPI, lease=30) for _ in range(3)]
    store.commit(farm.scheduler.drain_changes())
    for req_id, bad in zip(ids, ["NaN", 1e300, 0.001]):   # a file edited by hand
        store._conn().execute(f"UPDATE requests SET lease = {bad if bad != 'NaN' else 'NULL'} "
                              f"WHERE id = ?", (req_id,))
    store._conn().commit()
    store, farm = restart(tmp_path, store, farm, matcher_kind)
    leases = [farm.scheduler.get_request_info(r).lease for r in ids]
    assert leases == [None, 86400.0, 5.0]
    store.close()
