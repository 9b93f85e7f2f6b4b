"""Requests with capability expressions, in the core, over both matchers."""
from __future__ import annotations

from pathlib import Path

import pytest

from boruta.core.clock import ManualClock
from boruta.core.config import SchedulerConfig
from boruta.core.errors import BadArgumentError, NoMatchingWorkerError
from boruta.core.scheduler import Scheduler
from boruta.core.types import ReqState
from boruta.server.store import Store
from boruta.testing import InProcessFarm
from boruta.testing.farm import START, wuuid

SERIAL_FAST = {"device_type": "rpi4", "serial": "115200"}
SERIAL_BOTH = {"device_type": "rpi4", "serial": "57600,115200", "voltage": "3.3"}
PLAIN = {"device_type": "rpi4"}


def new(farm: InProcessFarm, *expr: str, caps=None, **kw) -> int:
    req_id = farm.scheduler.new_request(dict(caps or {}), 8, None, expr=list(expr), **kw)
    farm.drain()
    return req_id


def test_any_of_and_ranges_match_a_board_offering_one_of_its_values(farm: InProcessFarm) -> None:
    farm.idle(wuuid(1), SERIAL_BOTH)
    req_id = new(farm, "serial in 9600,57600", "voltage 2.9..3.6", caps=PLAIN)
    assert farm.worker_of(req_id) == wuuid(1)
    info = farm.scheduler.get_request_info(req_id)
    assert info.expr == ("serial in 57600,9600", "voltage 2.9..3.6")
    assert dict(info.caps) == PLAIN


def test_not_presence_and_absence(farm: InProcessFarm) -> None:
    farm.idle(wuuid(1), {**PLAIN, "hdmi": "yes", "sdmux": "1"})
    farm.idle(wuuid(2), {**PLAIN, "hdmi": "no"})
    assert farm.worker_of(new(farm, "hdmi != yes")) == wuuid(2)
    farm.idle(wuuid(3), {**PLAIN, "sdmux": "2"})
    assert farm.worker_of(new(farm, "sdmux?")) in (wuuid(1), wuuid(3))
    farm.idle(wuuid(4), PLAIN)
    assert farm.worker_of(new(farm, "!sdmux", "!hdmi")) == wuuid(4)


def test_the_least_capable_worker_still_wins_term_caps_do_not_count(farm: InProcessFarm) -> None:
    # With the terms in use, wuuid(1) earns three term caps and wuuid(2) one: counted,
    # wuuid(2) would be the leaner (3 < 4); by their own caps wuuid(1) is (1 < 2).
    farm.idle(wuuid(1), {"serial": "9600,57600"})
    farm.idle(wuuid(2), {"serial": "57600", "extra": "x"})
    for expr in ("serial in 9600", "serial 0..10000"):       # in use, not ready for an hour
        new(farm, expr, valid_after=farm.later(3600))
    assert farm.worker_of(new(farm, "serial in 57600")) == wuuid(1)


def test_an_expression_no_worker_satisfies_is_refused_at_submit(farm: InProcessFarm) -> None:
    farm.idle(wuuid(1), SERIAL_FAST)
    with pytest.raises(NoMatchingWorkerError):
        new(farm, "serial in 57600")
    assert len(farm.scheduler._terms) == 0                   # a refused request leaves no term
    queued = new(farm, "serial in 57600", queue_unsatisfiable=True)
    assert farm.request_state(queued) is ReqState.WAIT
    farm.idle(wuuid(2), SERIAL_BOTH)                          # a board that has it registers
    assert farm.worker_of(queued) == wuuid(2)


def test_the_exact_form_is_unchanged(farm: InProcessFarm) -> None:
    farm.idle(wuuid(1), SERIAL_BOTH)
    with pytest.raises(NoMatchingWorkerError):               # the whole text, as always
        farm.scheduler.new_request({"serial": "57600"}, 8)
    assert farm.worker_of(farm.request({"serial": "57600,115200"})) == wuuid(1)


def test_terms_leave_with_their_last_request(farm: InProcessFarm) -> None:
    farm.register(wuuid(1), SERIAL_BOTH)
    first = new(farm, "serial in 57600", "!sdmux")
    second = new(farm, "serial in 57600")
    assert sorted(t.text for t in farm.scheduler._terms.terms()) == ["!sdmux", "serial in 57600"]
    farm.scheduler.close_request(first)
    assert [t.text for t in farm.scheduler._terms.terms()] == ["serial in 57600"]
    farm.scheduler.close_request(second)
    assert len(farm.scheduler._terms) == 0


def test_the_last_worker_that_satisfies_it_leaving_invalidates_it(farm: InProcessFarm) -> None:
    farm.register(wuuid(1), SERIAL_BOTH)
    farm.register(wuuid(2), SERIAL_FAST)
    req_id = new(farm, "serial in 57600")
    farm.scheduler.deregister(wuuid(2))                      # not a candidate: nothing changes
    assert farm.request_state(req_id) is ReqState.WAIT
    farm.scheduler.deregister(wuuid(1))
    assert farm.request_state(req_id) is ReqState.INVALID


@pytest.mark.parametrize("config", [SchedulerConfig(max_terms=2)])
def test_the_terms_in_use_are_bounded(farm: InProcessFarm) -> None:
    farm.register(wuuid(1), SERIAL_BOTH)
    new(farm, "serial?", "voltage?")
    with pytest.raises(BadArgumentError, match="2 distinct capability expressions are in use"):
        new(farm, "!usb")
    new(farm, "serial?")                                      # one in use is always fine
    with pytest.raises(BadArgumentError, match="entries; at most"):
        farm.scheduler.new_request({f"k{n}": "v" for n in range(64)}, 8, expr=["serial?"])


def test_a_worker_cap_key_cannot_pose_as_a_term(farm: InProcessFarm) -> None:
    with pytest.raises(BadArgumentError, match="not start with a NUL"):
        farm.register(wuuid(1), {"\x00serial?": "1"})


def test_expressions_survive_a_restart(tmp_path: Path, matcher_kind: str) -> None:
    clock = ManualClock(START)
    store = Store(tmp_path, synchronous="OFF")
    farm = InProcessFarm(Scheduler(clock, matcher=matcher_kind), auto_complete=False)
    farm.register(wuuid(1), SERIAL_BOTH)
    req_id = new(farm, "serial in 57600", caps=PLAIN)
    store.commit(farm.scheduler.drain_changes())
    store.close()
    store = Store(tmp_path, synchronous="OFF")
    restored = Scheduler.restore(store.load(), clock, matcher=matcher_kind)
    farm = InProcessFarm(restored)
    assert restored.get_request_info(req_id).expr == ("serial in 57600",)
    restored.register({"UUID": wuuid(1), **SERIAL_BOTH}, "10.0.0.1:7175", "10.0.0.1:22")
    farm.drain()
    restored.set_state(wuuid(1), "IDLE")
    farm.drain()
    assert farm.worker_of(req_id) == wuuid(1)                # its term cap came back
    store.close()
