"""Differential test: the Scheduler over the compiled matcher behaves exactly as over
the reference matcher (same answers, different cost).

Hypothesis drives two Schedulers, each with its own ManualClock moved in step,
through long random sequences of every call a client, an admin, a dryad or the
shell can make. After every step both must have produced the same outcome
(return value, or exception class and message), the same effects, and the same
request and worker lists. Each step also checks invariants that hold whatever
the matcher: no ready request is servable by an idle worker, and RUNNING
workers and IN PROGRESS requests pair up one to one.
"""
from __future__ import annotations

from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, invariant, precondition, rule)

from boruta.core import effects
from boruta.core.capexpr import parse_term
from boruta.core.clock import ManualClock
from boruta.core.config import SchedulerConfig
from boruta.core.errors import BorutaError
from boruta.core.reference import caps_satisfied, groups_satisfied
from boruta.core.scheduler import Scheduler
from boruta.core.types import ReqState, RequestFilter, UserInfo, WorkerState
from boruta.testing import START, at, wuuid

pytest.importorskip("boruta._matcher", reason="compiled matcher boruta._matcher is not built")

RS, WS = ReqState, WorkerState
UUIDS = [wuuid(n) for n in range(1, 5)]
WORKER_CAPS = [{}, {"arch": "arm"}, {"arch": "x86"}, {"arch": "arm", "board": "rpi"},
               {"board": "rpi", "usb": "yes"}, {"arch": "arm", "usb": "yes", "ram": "2G"},
               {"arch": "arm,x86", "ram": "2"}, {"ram": "4", "usb": "no"}]
# Capability expressions (boruta.core.capexpr): the workers' term caps come and go
# with the requests that use them, in both schedulers alike.
REQUEST_EXPRS = [None] * 6 + [["arch in arm,mips"], ["ram 1..3"], ["usb != yes"], ["usb?"],
                              ["!board"], ["arch in x86", "ram 2..8"], ["ram ..1"]]
# Weighted towards requests that many workers serve, so that workers compete.
REQUEST_CAPS = [{}, {}, {}, {"arch": "arm"}, {"arch": "arm"}, {"arch": "x86"}, {"board": "rpi"},
                {"usb": "yes"}, {"arch": "arm", "usb": "yes"}, {"arch": "mips"},
                {"arch": "arm", "board": "rpi"}]
GROUPS = [(), ("a",), ("b",), ("a", "b"), ("c",)]
REQUEST_GROUPS = [(), (), (), ("a",), ("b",), ("a", "c")]
ADDRESSES = [("10.0.0.1:7175", "10.0.0.1:22"), ("10.0.0.2:7175", "10.0.0.2:22"),  # IP change
             ("10.0.0.1:7176", "10.0.0.1:22"), ("10.0.0.1:7175", "10.0.0.1:2222"),
             (":7175", "10.0.0.1:22"), ("10.0.0.1:7175", "10.0.0.1")]           # invalid
PRIORITIES = st.sampled_from(list(range(1, 17)) + [0, 17])
OFFSETS = st.one_of(st.none(), st.none(), st.sampled_from([-600.0, -1.0, 0.0, 1.0, 59.0, 60.0, 600.0,
                                                3600.0, 7200.0, 40 * 86400.0]))
STEPS = st.one_of(st.sampled_from([0.0, 0.5, 1.0, 30.0, 59.0, 60.0, 600.0, 3599.0, 3600.0]),
                  st.sampled_from([0.5, 30.0, 60.0, 3600.0, 86400.0, 31 * 86400.0]))
CONFIG = SchedulerConfig(prolong_limit=3, retention=7 * 86400.0)


def outcome(call: Callable[[], Any]) -> tuple:
    try:
        return ("ok", call())
    except BorutaError as exc:
        return ("error", type(exc).__name__, str(exc))
    # Anything else (KeyError from a matcher, AssertionError...) propagates: a bug either way.


class SchedulerPair(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clocks = [ManualClock(START), ManualClock(START)]
        self.scheds = [Scheduler(clock, config=CONFIG, matcher=kind)
                       for clock, kind in zip(self.clocks, ("reference", "compiled"))]
        assert [s.matcher_kind for s in self.scheds] == ["reference", "compiled"]
        self.pending: dict[str, Any] = {}        # uuid -> awaited Prepare/PutInMaintenance
        self.answered: list[Any] = []            # every such effect ever issued (stale answers)
        self.max_req = 0
        self.keys = 0

    # ------------------------------------------------------------------ plumbing
    def both(self, call: Callable[[Scheduler], Any]) -> tuple:
        results = [outcome(lambda s=s: call(s)) for s in self.scheds]
        assert results[0] == results[1], results
        drained = [s.drain_effects() for s in self.scheds]
        assert drained[0] == drained[1], drained
        for effect in drained[0]:
            if isinstance(effect, (effects.PrepareWorker, effects.PutInMaintenance)):
                self.pending[effect.worker_uuid] = effect
                self.answered.append(effect)
            elif isinstance(effect, effects.WorkerRemoved):
                self.pending.pop(effect.worker_uuid, None)
        return results[0]

    def when(self, offset: float | None):
        return None if offset is None else at(self.clocks[0].now() + offset)

    def req_id(self, data: st.DataObject) -> int:
        return data.draw(st.integers(0, self.max_req + 1), label="request")

    # ------------------------------------------------------------------ superviser / dryad
    @rule(uuid=st.sampled_from(UUIDS), caps=st.sampled_from(WORKER_CAPS),
          addresses=st.sampled_from(ADDRESSES), missing_uuid=st.sampled_from([False] * 7 + [True]))
    def register(self, uuid, caps, addresses, missing_uuid):
        full = dict(caps) if missing_uuid else {"UUID": uuid, **caps}
        self.both(lambda s: s.register(dict(full), *addresses))

    @rule(uuid=st.sampled_from(UUIDS), reason=st.sampled_from(["", "power", "sd card"]))
    def set_fail(self, uuid, reason):
        self.both(lambda s: s.set_fail(uuid, reason))

    @precondition(lambda self: self.pending)
    @rule(data=st.data(), ok=st.booleans(), username=st.sampled_from(["boruta-user", "alice"]))
    def answer(self, data, ok, username):
        uuid = data.draw(st.sampled_from(sorted(self.pending)), label="worker")
        effect = self.pending.pop(uuid)
        self.answer_effect(effect, ok, username)

    @precondition(lambda self: self.answered)
    @rule(data=st.data(), ok=st.booleans())
    def answer_stale(self, data, ok):
        effect = data.draw(st.sampled_from(self.answered), label="old effect")
        self.answer_effect(effect, ok, "late")

    def answer_effect(self, effect, ok, username):
        uuid, op = effect.worker_uuid, effect.op
        if isinstance(effect, effects.PrepareWorker):
            if ok:
                self.keys += 1
                key = f"key-{self.keys}"
                self.both(lambda s: s.worker_prepared(uuid, op, key, username))
            else:
                self.both(lambda s: s.worker_prepare_failed(uuid, op, "no ssh"))
        elif ok:
            self.both(lambda s: s.worker_in_maintenance(uuid, op))
        else:
            self.both(lambda s: s.worker_maintenance_failed(uuid, op, "no oled"))

    def worker(self, uuid):
        """The worker as the reference side sees it (both are caught up between steps)."""
        if uuid not in self.scheds[0].worker_ids():
            return None
        return self.scheds[0].get_worker_info(uuid)

    def make_idle(self, uuid, caps, groups):
        """The productive path, in one step: register, set groups, IDLE, prepared."""
        if self.worker(uuid) is None:
            self.both(lambda s: s.register({"UUID": uuid, **caps}, *ADDRESSES[0]))
            self.both(lambda s: s.set_groups(uuid, list(groups)))
        info = self.worker(uuid)
        if info.state is WS.BUSY:
            self.answer_effect(self.pending.pop(uuid), True, "boruta-user")
        elif info.state is WS.FAIL:                  # re-register: FAIL -> PREPARE
            self.both(lambda s: s.register(dict(info.caps), info.dryad_address,
                                           info.ssh_address))
        if self.worker(uuid).state is WS.MAINTENANCE:
            self.both(lambda s: s.set_state(uuid, WS.IDLE))
        if self.worker(uuid).state is WS.PREPARE:
            self.answer_effect(self.pending.pop(uuid), True, "boruta-user")

    @rule(uuid=st.sampled_from(UUIDS), caps=st.sampled_from(WORKER_CAPS),
          groups=st.sampled_from(GROUPS))
    def make_idle_1(self, uuid, caps, groups):
        self.make_idle(uuid, caps, groups)

    @rule(specs=st.lists(st.tuples(st.sampled_from(UUIDS), st.sampled_from(WORKER_CAPS),
                                   st.sampled_from(GROUPS)),
                         min_size=2, max_size=4, unique_by=lambda spec: spec[0]))
    def make_idle_many(self, specs):
        """Several idle workers at once, so that requests have a choice (penalty, UUID)."""
        for uuid, caps, groups in specs:
            self.make_idle(uuid, caps, groups)

    @rule(data=st.data(), reason=st.sampled_from(["no tunnel", "refused"]))
    def job_start_failed(self, data, reason):
        req_id = self.req_id(data)
        self.both(lambda s: s.job_start_failed(req_id, reason))

    # ------------------------------------------------------------------ admin
    @rule(uuid=st.sampled_from(UUIDS + ["nobody"]),
          state=st.sampled_from([WS.IDLE, WS.IDLE, WS.MAINTENANCE, WS.RUN, "bogus"]))
    def set_state(self, uuid, state):
        self.both(lambda s: s.set_state(uuid, state))

    @rule(uuid=st.sampled_from(UUIDS), groups=st.sampled_from(GROUPS + [None, ("b", "a", "b")]))
    def set_groups(self, uuid, groups):
        self.both(lambda s: s.set_groups(uuid, None if groups is None else list(groups)))

    @rule(uuid=st.sampled_from(UUIDS))
    def deregister(self, uuid):
        self.both(lambda s: s.deregister(uuid))

    # ------------------------------------------------------------------ requests
    @rule(caps=st.sampled_from(REQUEST_CAPS), pin=st.sampled_from([None] * 4 + UUIDS),
          groups=st.sampled_from(REQUEST_GROUPS), priority=PRIORITIES, valid_after=OFFSETS,
          deadline=OFFSETS, queue=st.booleans(), expr=st.sampled_from(REQUEST_EXPRS))
    def new_request(self, caps, pin, groups, priority, valid_after, deadline, queue, expr):
        self.create(caps, pin, groups, priority, valid_after, deadline, queue, expr)

    @rule(caps=st.sampled_from(REQUEST_CAPS), groups=st.sampled_from(REQUEST_GROUPS),
          priorities=st.lists(st.integers(1, 16), min_size=1, max_size=4),
          valid_after=st.sampled_from([None, None, 30.0, 60.0]),
          expr=st.sampled_from(REQUEST_EXPRS))
    def new_requests(self, caps, groups, priorities, valid_after, expr):
        """A burst of requests alike but for their priorities (they compete)."""
        for priority in priorities:
            self.create(caps, None, groups, priority, valid_after, None, True, expr)

    def create(self, caps, pin, groups, priority, valid_after, deadline, queue, expr=None):
        wanted = dict(caps) if pin is None else {**caps, "UUID": pin}
        va, dl = self.when(valid_after), self.when(deadline)
        result = self.both(lambda s: s.new_request(dict(wanted), priority, UserInfo(groups),
                                                   va, dl, queue_unsatisfiable=queue,
                                                   expr=expr))
        if result[0] == "ok":
            assert result[1] == self.max_req + 1
            self.max_req = result[1]

    @rule(data=st.data(), priority=st.one_of(st.none(), PRIORITIES), valid_after=OFFSETS,
          deadline=OFFSETS)
    def update_request(self, data, priority, valid_after, deadline):
        req_id = self.req_id(data)
        va, dl = self.when(valid_after), self.when(deadline)
        self.both(lambda s: s.update_request(req_id, priority, va, dl))

    @rule(data=st.data())
    def close_request(self, data):
        req_id = self.req_id(data)
        self.both(lambda s: s.close_request(req_id))

    def running(self):
        return self.scheds[0].list_requests(RequestFilter(states=(RS.INPROGRESS,)))[0]

    @precondition(lambda self: self.running())
    @rule(data=st.data())
    def close_running(self, data):
        """Close a job in progress and answer its worker's PrepareWorker."""
        req = data.draw(st.sampled_from(self.running()), label="running request")
        self.both(lambda s: s.close_request(req.id))
        uuid = req.job.worker_uuid
        if data.draw(st.booleans(), label="prepare answered") and uuid in self.pending:
            self.answer_effect(self.pending.pop(uuid), True, "boruta-user")

    @rule(data=st.data())
    def prolong_access(self, data):
        req_id = self.req_id(data)
        self.both(lambda s: s.prolong_access(req_id))

    @rule(data=st.data())
    def acquire_worker(self, data):
        req_id = self.req_id(data)
        self.both(lambda s: s.acquire_worker(req_id))

    # ------------------------------------------------------------------ time
    @rule(step=STEPS)
    def tick(self, step):
        for clock in self.clocks:
            clock.advance(step)
        self.both(lambda s: s.advance())

    @rule()
    def purge_history(self):
        self.both(lambda s: s.purge_history())

    # ------------------------------------------------------------------ checks
    @invariant()
    def same_lists_and_invariants(self):
        requests = self.both(lambda s: s.list_requests())
        workers = self.both(lambda s: s.list_workers())
        self.both(lambda s: s.counts())          # ready / idle / timers alike
        self.both(lambda s: s.next_timer())
        assert requests[0] == workers[0] == "ok"
        reqs, workers = requests[1][0], workers[1][0]
        now = at(self.clocks[0].now())
        idle = [w for w in workers if w.state is WS.IDLE]
        for r in reqs:
            if r.state is RS.WAIT and r.valid_after <= now < r.deadline:
                assert not [w.worker_uuid for w in idle
                            if caps_satisfied(r.caps, w.caps)
                            and groups_satisfied(r.owner.groups, w.groups)
                            and all(parse_term(e).holds(w.caps) for e in r.expr)], r
        running = {w.worker_uuid for w in workers if w.state is WS.RUN}
        jobs = [r.job.worker_uuid for r in reqs if r.state is RS.INPROGRESS]
        assert sorted(jobs) == sorted(running)


SchedulerPair.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_scheduler_pair = SchedulerPair.TestCase
