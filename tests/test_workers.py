"""Worker lifecycle (register, fail, states, groups, deregister, interrupted transitions)
and matching through the scheduler, on both matchers."""
from __future__ import annotations

import pytest

from boruta.core import effects
from boruta.core.errors import (BadArgumentError, ForbiddenStateChangeError,
                                InMaintenanceError, InvalidAddressError, MissingIPError,
                                MissingPortError, MissingUUIDError, NoMatchingWorkerError,
                                NotFoundError, NotInFailOrMaintenanceError,
                                WrongStateArgumentError)
from boruta.core.types import ReqState, UserInfo, WorkerState
from boruta.testing import wuuid

RS, WS = ReqState, WorkerState
W1, W2, W3, W4 = (wuuid(n) for n in (1, 2, 3, 4))
ALL_STATES = list(WS)


def of_type(drained, kind):
    return [e for e in drained if isinstance(e, kind)]


# ---------------------------------------------------------------- Register
class TestRegisterNew:
    def test_new_worker_is_maintenance_and_no_rpc(self, farm):
        assert farm.scheduler.register({"UUID": W1, "arch": "arm"}, "10.0.0.1:7175",
                                   "10.0.0.1:22") == W1
        out = farm.drain()
        assert out == [effects.WorkerChanged(W1, WS.MAINTENANCE, "registered")]
        info = farm.scheduler.get_worker_info(W1)
        assert (info.state, info.groups, dict(info.caps)) == (
            WS.MAINTENANCE, (), {"UUID": W1, "arch": "arm"})
        assert (info.dryad_address, info.ssh_address) == ("10.0.0.1:7175", "10.0.0.1:22")

    @pytest.mark.parametrize("caps", [{}, {"arch": "arm"}, {"UUID": ""}, {"uuid": W1}])
    def test_missing_uuid(self, farm, caps):
        with pytest.raises(MissingUUIDError) as err:
            farm.scheduler.register(caps, "", "")             # UUID is checked first
        assert str(err.value) == "Capabilities are missing UUID entry"
        assert farm.scheduler.worker_ids() == [] and farm.drain() == []

    @pytest.mark.parametrize("dryad, ssh, error", [
        ("", "10.0.0.1:22", MissingIPError),
        (":7175", "10.0.0.1:22", MissingIPError),
        ("10.0.0.1", "10.0.0.1:22", MissingPortError),
        ("10.0.0.1:", "10.0.0.1:22", MissingPortError),
        ("10.0.0.1:0", "10.0.0.1:22", MissingPortError),
        ("10.0.0.1:7175", "", MissingIPError),
        ("10.0.0.1:7175", ":22", MissingIPError),
        ("10.0.0.1:7175", "10.0.0.1", MissingPortError),
        ("10.0.0.1:7175", "10.0.0.1:0", MissingPortError),
        (":7175", "10.0.0.1", MissingIPError),           # dryad address checked first
        ("10.0.0.1", ":22", MissingPortError),
        ("10.0.0.1:99999", "10.0.0.1:22", InvalidAddressError),
        ("10.0.0.1:ssh", "10.0.0.1:22", InvalidAddressError),
        # Ports are ASCII digits: str.isdigit() also takes these, which int() refuses.
        ("h:\u00b2", "10.0.0.1:22", InvalidAddressError),
        ("10.0.0.1:7175", "h:\u0662\u0662", InvalidAddressError),
        ("10.0.0.1:7175", "h:\uff12\uff12", InvalidAddressError),
        ("h:+22", "10.0.0.1:22", InvalidAddressError),
        ("h: 22", "10.0.0.1:22", InvalidAddressError),
        ("h:000000022", "10.0.0.1:22", InvalidAddressError),
        (":", "10.0.0.1:22", MissingIPError),
        ("fe80::1:7175", "10.0.0.1:22", InvalidAddressError),   # IPv6 needs brackets
        ("[fe80::zz]:7175", "10.0.0.1:22", InvalidAddressError),
        ("[]:7175", "10.0.0.1:22", InvalidAddressError),
        ("[fe80::1]:", "10.0.0.1:22", MissingPortError),
    ])
    def test_address_errors(self, farm, dryad, ssh, error):
        with pytest.raises(error) as err:
            farm.scheduler.register({"UUID": W1}, dryad, ssh)
        assert type(err.value) is error                  # the exact code, never internal
        assert farm.scheduler.worker_ids() == [] and farm.drain() == []

    def test_invalid_address_names_the_address(self, farm):
        with pytest.raises(InvalidAddressError) as err:
            farm.scheduler.register({"UUID": W1}, "10.0.0.1:7175", "h:\u00b2")
        assert err.value.code == "invalid_address"
        assert str(err.value).startswith("invalid sshd address 'h:\u00b2': bad port")

    @pytest.mark.parametrize("dryad, ssh", [
        ("[fe80::1]:7175", "[fe80::1]:22"), ("dryad.lab:7175", "dryad.lab:2222")])
    def test_good_addresses(self, farm, dryad, ssh):
        farm.scheduler.register({"UUID": W1}, dryad, ssh)
        info = farm.scheduler.get_worker_info(W1)
        assert (info.dryad_address, info.ssh_address) == (dryad, ssh)

    def test_bad_argument_types(self, farm):
        for args in [("UUID", "1.2.3.4:1", "1.2.3.4:2"), ({"UUID": 5}, "1.2.3.4:1", "1.2.3.4:2"),
                     ({"UUID": W1}, None, "1.2.3.4:2"), ({"UUID": W1}, "1.2.3.4:1", 22)]:
            with pytest.raises(BadArgumentError):
                farm.scheduler.register(*args)
        assert farm.scheduler.worker_ids() == []

    def test_caps_are_copied(self, farm):
        caps = {"UUID": W1, "arch": "arm"}
        farm.scheduler.register(caps, "10.0.0.1:7175", "10.0.0.1:22")
        caps["arch"] = "x86"
        assert farm.scheduler.get_worker_info(W1).caps["arch"] == "arm"
        farm.scheduler.get_worker_info(W1).caps["arch"] = "mips"
        assert farm.scheduler.get_worker_info(W1).caps["arch"] == "arm"


class TestReRegister:
    def test_fail_becomes_prepare(self, farm):
        farm.bring(W1, WS.FAIL)
        farm.register(W1)
        assert farm.worker_state(W1) is WS.PREPARE
        assert farm.prepared(W1)
        assert farm.worker_state(W1) is WS.IDLE

    @pytest.mark.parametrize("state", [WS.MAINTENANCE, WS.IDLE, WS.FAIL, WS.PREPARE])
    @pytest.mark.parametrize("change", ["caps", "ssh port", "dryad port"])
    def test_changed_caps_or_ports_become_busy(self, farm, state, change):
        farm.bring(W1, state, {"arch": "arm"})
        farm.drain()
        caps, dryad, ssh = {"UUID": W1, "arch": "arm"}, "10.0.0.1:7175", "10.0.0.1:22"
        if change == "caps":
            caps["arch"] = "x86"
        elif change == "ssh port":
            ssh = "10.0.0.1:2222"
        else:
            dryad = "10.0.0.1:7176"
        farm.scheduler.register(caps, dryad, ssh)
        out = farm.drain()
        assert farm.worker_state(W1) is WS.BUSY
        assert [e.worker_uuid for e in of_type(out, effects.PutInMaintenance)] == [W1]
        info = farm.scheduler.get_worker_info(W1)
        assert (dict(info.caps), info.dryad_address, info.ssh_address) == (caps, dryad, ssh)
        assert farm.in_maintenance(W1)
        assert farm.worker_state(W1) is WS.MAINTENANCE

    def test_busy_with_changes_stays_busy_and_keeps_its_operation(self, farm):
        farm.bring(W1, WS.BUSY)
        op = farm.op(W1, effects.PutInMaintenance)
        farm.scheduler.register({"UUID": W1, "new": "cap"}, "10.0.0.1:7175", "10.0.0.1:22")
        assert farm.drain() == []
        assert farm.worker_state(W1) is WS.BUSY
        assert farm.scheduler.worker_in_maintenance(W1, op)

    @pytest.mark.parametrize("state", [WS.MAINTENANCE, WS.IDLE, WS.FAIL, WS.PREPARE, WS.BUSY])
    def test_ip_only_change_keeps_state(self, farm, state):
        farm.bring(W1, state)
        farm.drain()
        farm.scheduler.register({"UUID": W1}, "10.0.0.9:7175", "10.0.0.9:22")
        expected = WS.PREPARE if state is WS.FAIL else state
        assert farm.worker_state(W1) is expected
        info = farm.scheduler.get_worker_info(W1)
        assert (info.dryad_address, info.ssh_address) == ("10.0.0.9:7175", "10.0.0.9:22")
        out = farm.drain()
        if state is not WS.FAIL:
            assert of_type(out, effects.PrepareWorker) == []
            assert of_type(out, effects.PutInMaintenance) == []

    @pytest.mark.parametrize("state", [WS.MAINTENANCE, WS.IDLE, WS.PREPARE, WS.BUSY, WS.RUN])
    def test_unchanged_keeps_state(self, farm, state):
        req_id = farm.bring(W1, state)
        farm.drain()
        farm.scheduler.register({"UUID": W1}, "10.0.0.1:7175", "10.0.0.1:22")
        assert farm.drain() == []
        assert farm.worker_state(W1) is state
        if req_id is not None:
            assert farm.request_state(req_id) is RS.INPROGRESS

    def test_run_to_busy_fails_the_running_request(self, farm):
        req_id = farm.bring(W1, WS.RUN)
        farm.drain()
        farm.scheduler.register({"UUID": W1, "extra": "cap"}, "10.0.0.1:7175", "10.0.0.1:22")
        out = farm.drain()
        assert farm.request_state(req_id) is RS.FAILED
        assert farm.worker_state(W1) is WS.BUSY
        assert effects.FinishJob(req_id, W1) in out
        assert of_type(out, effects.PrepareWorker) == []

    def test_changed_caps_rematch_idle_worker(self, farm):
        farm.idle(W1)
        req_id = farm.request({"arch": "arm"}, queue_unsatisfiable=True)
        farm.register(W1, {"arch": "arm"})          # -> BUSY: not matched now
        assert farm.request_state(req_id) is RS.WAIT
        assert farm.in_maintenance(W1)
        farm.idle(W1)
        assert farm.worker_of(req_id) == W1


# ---------------------------------------------------------------- SetFail
class TestSetFail:
    def test_unknown(self, farm):
        with pytest.raises(NotFoundError) as err:
            farm.scheduler.set_fail(W1, "x")
        assert str(err.value) == "Worker not found"

    @pytest.mark.parametrize("state", [WS.MAINTENANCE, WS.BUSY])
    def test_in_maintenance(self, farm, state):
        farm.bring(W1, state)
        farm.drain()
        with pytest.raises(InMaintenanceError):
            farm.scheduler.set_fail(W1, "x")
        assert farm.worker_state(W1) is state
        assert farm.scheduler.get_worker_info(W1).fail_reason is None
        assert farm.drain() == []

    @pytest.mark.parametrize("state", [WS.IDLE, WS.PREPARE, WS.FAIL])
    def test_reason_stored_and_shown(self, farm, state):
        farm.bring(W1, state)
        farm.scheduler.set_fail(W1, "sd card gone")
        info = farm.scheduler.get_worker_info(W1)
        assert (info.state, info.fail_reason) == (WS.FAIL, "sd card gone")
        assert info.to_dict()["fail_reason"] == "sd card gone"

    def test_idle_worker_failed_is_not_matched(self, farm):
        farm.idle(W1)
        farm.scheduler.set_fail(W1, "x")
        req_id = farm.request()
        assert farm.request_state(req_id) is RS.WAIT

    def test_prepare_failed_then_late_answer_ignored(self, farm):
        farm.bring(W1, WS.PREPARE)
        op = farm.op(W1)
        farm.scheduler.set_fail(W1, "x")
        assert farm.scheduler.worker_prepared(W1, op, "k", "u") is False
        assert farm.worker_state(W1) is WS.FAIL

    def test_run_to_fail_fails_request_without_reprepare(self, farm):
        req_id = farm.bring(W1, WS.RUN)
        farm.drain()
        farm.scheduler.set_fail(W1, "power lost")
        out = farm.drain()
        assert farm.request_state(req_id) is RS.FAILED
        assert effects.FinishJob(req_id, W1) in out
        assert of_type(out, effects.PrepareWorker) == []
        info = farm.scheduler.get_worker_info(W1)
        assert (info.state, info.fail_reason) == (WS.FAIL, "power lost")
        # a new request is not given to it
        other = farm.request()
        assert farm.request_state(other) is RS.WAIT

    def test_reason_cleared_when_prepared_again(self, farm):
        farm.bring(W1, WS.FAIL)
        farm.register(W1)                               # FAIL -> PREPARE
        assert farm.prepared(W1)
        assert farm.scheduler.get_worker_info(W1).fail_reason is None

    def test_bad_reason(self, farm):
        farm.idle(W1)
        with pytest.raises(BadArgumentError):
            farm.scheduler.set_fail(W1, 42)
        assert farm.worker_state(W1) is WS.IDLE


# ---------------------------------------------------------------- SetState
class TestSetState:
    @pytest.mark.parametrize("target", [WS.RUN, WS.FAIL, WS.PREPARE, WS.BUSY, "idle", "bogus", 3])
    def test_wrong_state_argument_even_for_unknown(self, farm, target):
        with pytest.raises(WrongStateArgumentError) as err:
            farm.scheduler.set_state("nobody", target)
        assert str(err.value) == "Only state changes to IDLE and MAINTENANCE are allowed"
        farm.bring(W1, WS.IDLE)
        farm.drain()
        with pytest.raises(WrongStateArgumentError):
            farm.scheduler.set_state(W1, target)
        assert farm.drain() == []

    @pytest.mark.parametrize("target", [WS.IDLE, WS.MAINTENANCE, "IDLE", "MAINTENANCE"])
    def test_unknown_worker(self, farm, target):
        with pytest.raises(NotFoundError):
            farm.scheduler.set_state(W1, target)

    def test_maintenance_while_busy_does_nothing(self, farm):
        farm.bring(W1, WS.BUSY)
        op = farm.op(W1, effects.PutInMaintenance)
        farm.scheduler.set_state(W1, WS.MAINTENANCE)
        assert farm.drain() == []
        assert farm.scheduler.worker_in_maintenance(W1, op)

    def test_idle_while_prepare_does_nothing(self, farm):
        farm.bring(W1, WS.PREPARE)
        op = farm.op(W1)
        farm.scheduler.set_state(W1, "IDLE")
        assert farm.drain() == []
        assert farm.scheduler.worker_prepared(W1, op, "k", "u")

    @pytest.mark.parametrize("state", [WS.RUN, WS.FAIL, WS.BUSY, WS.IDLE])
    def test_idle_from_other_states_forbidden(self, farm, state):
        req_id = farm.bring(W1, state)
        farm.drain()
        with pytest.raises(ForbiddenStateChangeError) as err:
            farm.scheduler.set_state(W1, WS.IDLE)
        assert str(err.value) == "Invalid state transition was requested"
        assert farm.worker_state(W1) is state
        assert farm.drain() == []
        if req_id is not None:
            assert farm.request_state(req_id) is RS.INPROGRESS

    def test_idle_from_maintenance_prepares(self, farm):
        farm.register(W1)
        farm.scheduler.set_state(W1, WS.IDLE)
        out = farm.drain()
        assert farm.worker_state(W1) is WS.PREPARE
        assert [e.worker_uuid for e in of_type(out, effects.PrepareWorker)] == [W1]
        assert effects.WorkerChanged(W1, WS.PREPARE, "set IDLE by admin") in out
        assert farm.prepared(W1)
        assert farm.worker_state(W1) is WS.IDLE

    def test_prepare_failure_goes_to_fail(self, farm):
        farm.bring(W1, WS.PREPARE)
        assert farm.prepare_failed(W1, "ssh refused")
        info = farm.scheduler.get_worker_info(W1)
        assert info.state is WS.FAIL and "ssh refused" in info.fail_reason

    @pytest.mark.parametrize("state", [WS.MAINTENANCE, WS.IDLE, WS.RUN, WS.FAIL, WS.PREPARE])
    def test_maintenance_goes_through_busy(self, farm, state):
        req_id = farm.bring(W1, state)
        farm.drain()
        farm.scheduler.set_state(W1, "MAINTENANCE")
        out = farm.drain()
        assert farm.worker_state(W1) is WS.BUSY
        puts = of_type(out, effects.PutInMaintenance)
        assert [(p.worker_uuid, p.message) for p in puts] == [(W1, "maintenance")]
        if req_id is not None:                       # RUN: the request FAILED
            assert farm.request_state(req_id) is RS.FAILED
            assert effects.FinishJob(req_id, W1) in out
        assert farm.in_maintenance(W1)
        assert farm.worker_state(W1) is WS.MAINTENANCE

    def test_maintenance_failure_goes_to_fail(self, farm):
        farm.bring(W1, WS.BUSY)
        assert farm.maintenance_failed(W1, "oled")
        info = farm.scheduler.get_worker_info(W1)
        assert info.state is WS.FAIL and "oled" in info.fail_reason


# ---------------------------------------------------------------- SetGroups
class TestSetGroups:
    def test_sorted_copy_caller_list_untouched(self, farm):
        farm.register(W1)
        groups = ["zeta", "alpha", "mu"]
        farm.scheduler.set_groups(W1, groups)
        assert groups == ["zeta", "alpha", "mu"]
        assert farm.scheduler.get_worker_info(W1).groups == ("alpha", "mu", "zeta")
        groups.append("beta")
        assert farm.scheduler.get_worker_info(W1).groups == ("alpha", "mu", "zeta")
        farm.scheduler.set_groups(W1, None)
        assert farm.scheduler.get_worker_info(W1).groups == ()

    def test_unknown_and_bad(self, farm):
        with pytest.raises(NotFoundError):
            farm.scheduler.set_groups(W1, ["a"])
        farm.register(W1)
        for bad in ["lab", [1], [""], {"a": 1}]:
            with pytest.raises(BadArgumentError):
                farm.scheduler.set_groups(W1, bad)
        assert farm.scheduler.get_worker_info(W1).groups == ()

    def test_idle_worker_rematched(self, farm):
        farm.idle(W1)
        req_id = farm.request(owner=UserInfo(("lab",)), queue_unsatisfiable=True)
        assert farm.request_state(req_id) is RS.WAIT
        farm.scheduler.set_groups(W1, ["other", "lab"])
        assert farm.worker_of(req_id) == W1

    def test_groups_change_state_of_nothing_else(self, farm):
        farm.bring(W1, WS.BUSY)
        farm.drain()
        farm.scheduler.set_groups(W1, ["x"])
        assert farm.drain() == [] and farm.worker_state(W1) is WS.BUSY


# ---------------------------------------------------------------- Deregister
class TestDeregister:
    @pytest.mark.parametrize("state", [WS.MAINTENANCE, WS.FAIL])
    def test_removes_and_twice_is_not_found(self, farm, state):
        farm.bring(W1, state)
        farm.drain()
        farm.scheduler.deregister(W1)
        assert farm.drain() == [effects.WorkerRemoved(W1)]
        assert farm.scheduler.worker_ids() == []
        with pytest.raises(NotFoundError):
            farm.scheduler.get_worker_info(W1)
        with pytest.raises(NotFoundError):
            farm.scheduler.deregister(W1)

    @pytest.mark.parametrize("state", [WS.IDLE, WS.RUN, WS.PREPARE, WS.BUSY])
    def test_other_states_refused(self, farm, state):
        farm.bring(W1, state)
        farm.drain()
        with pytest.raises(NotInFailOrMaintenanceError) as err:
            farm.scheduler.deregister(W1)
        assert str(err.value) == "Worker is not in FAIL or MAINTENANCE state"
        assert farm.worker_state(W1) is state and farm.drain() == []

    def test_a4_orphaned_waiting_requests_become_invalid(self, farm):
        farm.register(W1, {"arch": "arm", "board": "rpi"})
        farm.register(W2, {"arch": "arm"})
        farm.idle(W3, {"arch": "x86"})
        farm.scheduler.set_state(W3, WS.MAINTENANCE)          # W3 busy elsewhere
        assert farm.in_maintenance(W3)
        only_w1 = farm.request({"board": "rpi"})
        only_w1_later = farm.request({"board": "rpi"}, valid_after=farm.later(3600))
        either = farm.request({"arch": "arm"})
        unrelated = farm.request({"arch": "x86"})
        queued = farm.request({"arch": "mips"}, queue_unsatisfiable=True)
        pinned = farm.request({"UUID": W1})
        farm.drain()
        farm.scheduler.deregister(W1)
        out = farm.drain()
        assert {r: farm.request_state(r) for r in (only_w1, only_w1_later, either, unrelated,
                                            queued, pinned)} == {
            only_w1: RS.INVALID, only_w1_later: RS.INVALID, either: RS.WAIT,
            unrelated: RS.WAIT, queued: RS.WAIT, pinned: RS.INVALID}
        changed = {e.req_id for e in of_type(out, effects.RequestChanged)}
        assert changed == {only_w1, only_w1_later, pinned}
        # INVALID is terminal: a new capable worker does not revive it
        farm.idle(W4, {"board": "rpi"})
        assert farm.request_state(only_w1) is RS.INVALID
        farm.tick(3600)
        assert farm.request_state(only_w1_later) is RS.INVALID

    def test_a4_groups_count_for_invalid(self, farm):
        farm.register(W1)
        farm.scheduler.set_groups(W1, ["lab"])
        farm.register(W2)
        farm.scheduler.set_groups(W2, ["other"])
        lab = farm.request(owner=UserInfo(("lab",)))
        anyone = farm.request()
        farm.scheduler.deregister(W1)
        assert (farm.request_state(lab), farm.request_state(anyone)) == (RS.INVALID, RS.WAIT)

    def test_late_answer_for_removed_worker_ignored(self, farm):
        farm.bring(W1, WS.BUSY)
        op = farm.op(W1, effects.PutInMaintenance)
        farm.scheduler.set_state(W1, WS.MAINTENANCE)          # no-op, BUSY
        assert farm.in_maintenance(W1)
        farm.scheduler.deregister(W1)
        assert farm.scheduler.worker_in_maintenance(W1, op) is False
        assert farm.scheduler.worker_ids() == []

    def test_stale_answer_of_previous_registration_ignored(self, farm):
        # First life: PREPARE (op A) interrupted by MAINTENANCE, then removed.
        farm.register(W1)
        farm.scheduler.set_state(W1, WS.IDLE)
        stale = farm.op(W1)
        farm.scheduler.set_state(W1, WS.MAINTENANCE)
        assert farm.in_maintenance(W1)
        farm.scheduler.deregister(W1)
        # Second life: the same dryad registers again and is being prepared.
        farm.register(W1)
        farm.scheduler.set_state(W1, WS.IDLE)
        current = farm.op(W1)
        assert farm.scheduler.worker_prepared(W1, stale, "old key", "u") is False
        assert farm.worker_state(W1) is WS.PREPARE
        assert farm.scheduler.worker_prepared(W1, current, "new key", "u") is True
        req_id = farm.request()
        assert farm.scheduler.acquire_worker(req_id).key == "new key"


# ---------------------------------------------------------------- interruption
class TestInterruption:
    def test_prepare_interrupted_by_maintenance(self, farm):
        farm.register(W1)
        farm.scheduler.set_state(W1, WS.IDLE)
        prep_op = farm.op(W1, effects.PrepareWorker)
        farm.scheduler.set_state(W1, WS.MAINTENANCE)
        put_op = farm.op(W1, effects.PutInMaintenance)
        assert put_op != prep_op
        farm.drain()
        assert farm.scheduler.worker_prepared(W1, prep_op, "k", "u") is False
        assert farm.scheduler.worker_prepare_failed(W1, prep_op, "late") is False
        assert farm.worker_state(W1) is WS.BUSY and farm.drain() == []
        assert farm.scheduler.get_worker_info(W1).fail_reason is None
        assert farm.scheduler.worker_in_maintenance(W1, put_op) is True
        assert farm.worker_state(W1) is WS.MAINTENANCE

    def test_busy_not_restarted_by_register_or_maintenance(self, farm):
        farm.idle(W1)
        farm.scheduler.set_fail(W1, "x")
        farm.scheduler.set_state(W1, WS.MAINTENANCE)
        put_op = farm.op(W1, effects.PutInMaintenance)
        farm.register(W1, {"changed": "yes"})                # BUSY stays BUSY
        farm.scheduler.set_state(W1, WS.MAINTENANCE)
        assert farm.scheduler.worker_in_maintenance(W1, put_op)

    def test_answer_with_wrong_kind_or_op_ignored(self, farm):
        farm.bring(W1, WS.PREPARE)
        op = farm.op(W1)
        assert farm.scheduler.worker_in_maintenance(W1, op) is False
        assert farm.scheduler.worker_maintenance_failed(W1, op, "x") is False
        assert farm.scheduler.worker_prepared(W1, op + 1000, "k", "u") is False
        assert farm.scheduler.worker_prepared("nobody", op, "k", "u") is False
        assert farm.worker_state(W1) is WS.PREPARE
        assert farm.scheduler.worker_prepared(W1, op, "k", "u") is True
        assert farm.scheduler.worker_prepared(W1, op, "k", "u") is False     # answered once

    def test_prepare_after_job_interrupted_by_maintenance(self, farm):
        req_id = farm.bring(W1, WS.RUN)
        farm.scheduler.close_request(req_id)
        prep_op = farm.op(W1)
        farm.scheduler.set_state(W1, WS.MAINTENANCE)
        assert farm.scheduler.worker_prepared(W1, prep_op, "k", "u") is False
        assert farm.in_maintenance(W1)


# ---------------------------------------------------------------- matching
class TestMatching:
    def test_priority_then_fifo(self, farm):
        farm.register(W1)
        a = farm.request(priority=5)
        b = farm.request(priority=3)
        c = farm.request(priority=3)
        d = farm.request(priority=5)
        e = farm.request(priority=1)
        farm.idle(W1)
        for _ in range(4):
            farm.done(farm.started()[-1][0])
        assert [r for r, _ in farm.started()] == [e, b, c, a, d]

    def test_unservable_request_does_not_block_lower_ones(self, farm):
        farm.register(W1, {"arch": "arm"})            # registered, not idle
        high = farm.request({"arch": "arm"}, priority=1)
        low = farm.request({}, priority=16)
        farm.idle(W2)
        assert farm.worker_of(low) == W2
        assert farm.request_state(high) is RS.WAIT
        farm.idle(W1)
        assert farm.worker_of(high) == W1

    def test_b43_penalty_example(self, farm):
        # (5 groups, 5+1 caps), (1 group, 7+1 caps), (5 groups, 1+1 caps):
        # requested with 1 group / 1 cap they go in penalty order 7, 9, 11.
        extra = lambda n: {f"cap{i}": "v" for i in range(n)}  # noqa: E731
        five = ["g", "g2", "g3", "g4", "g5"]
        farm.idle(W1, {"c": "1", **extra(4)}, five)        # 6 caps + 5 groups = 11
        farm.idle(W2, {"c": "1", **extra(6)}, ["g"])       # 8 caps + 1 group = 9
        farm.idle(W3, {"c": "1"}, five)                    # 2 caps + 5 groups = 7
        reqs = [farm.request({"c": "1"}, owner=UserInfo(("g",))) for _ in range(4)]
        assert [farm.worker_of(r) for r in reqs] == [W3, W2, W1, None]
        assert farm.request_state(reqs[3]) is RS.WAIT

    def test_penalty_ties_to_smallest_uuid(self, farm):
        for uuid in (W4, W2, W3):                          # registered out of order
            farm.idle(uuid, {"c": "1"})
        farm.idle(W1, {"c": "1", "more": "x"})            # smallest UUID, higher penalty
        reqs = [farm.request({"c": "1"}) for _ in range(4)]
        assert [farm.worker_of(r) for r in reqs] == [W2, W3, W4, W1]

    def test_best_worker_chosen_for_new_idle_worker(self, farm):
        # A worker becoming idle takes the best waiting request, not the newest.
        farm.register(W1)
        a = farm.request(priority=9)
        b = farm.request(priority=4)
        farm.idle(W1)
        assert farm.worker_of(b) == W1 and farm.request_state(a) is RS.WAIT

    def test_groups_rule(self, farm):
        farm.idle(W1)                                      # no groups
        farm.idle(W2, groups=["y"])
        farm.idle(W3, groups=["x", "z"])
        grouped = farm.request(owner=UserInfo(("x",)))
        assert farm.worker_of(grouped) == W3
        nogroup = farm.request(owner=UserInfo(()))
        assert farm.worker_of(nogroup) == W1               # fewest caps + groups
        none_left = farm.request(owner=UserInfo(("x",)))
        assert farm.request_state(none_left) is RS.WAIT           # W2 (y) does not serve x
        either = farm.request(owner=UserInfo(("q", "y")))
        assert farm.worker_of(either) == W2

    def test_no_groups_request_uses_grouped_worker(self, farm):
        farm.idle(W1, groups=["lab"])
        req_id = farm.request()
        assert farm.worker_of(req_id) == W1

    def test_caps_rule(self, farm):
        farm.idle(W1, {"arch": "arm", "ram": "2G", "usb": "yes"})
        assert farm.request_state(farm.request({"arch": "ARM"}, queue_unsatisfiable=True)) is RS.WAIT
        assert farm.request_state(farm.request({"gpu": "yes"}, queue_unsatisfiable=True)) is RS.WAIT
        assert farm.request_state(farm.request({"arch": ""}, queue_unsatisfiable=True)) is RS.WAIT
        ok = farm.request({"arch": "arm", "usb": "yes"})
        assert farm.worker_of(ok) == W1

    def test_pinned_uuid(self, farm):
        farm.idle(W1)
        farm.idle(W2, {"big": "caps", "more": "caps"})
        pinned = farm.request({"UUID": W2})
        assert farm.worker_of(pinned) == W2
        with pytest.raises(NoMatchingWorkerError):
            farm.scheduler.new_request({"UUID": "nobody"}, 8)

    def test_request_matched_at_creation_when_worker_idle(self, farm):
        farm.idle(W1)
        farm.drain()
        req_id = farm.scheduler.new_request({}, 8)
        out = farm.drain()
        assert out == [effects.RequestChanged(req_id, RS.WAIT, "created"),
                       effects.WorkerChanged(W1, WS.RUN, f"request {req_id}"),
                       effects.RequestChanged(req_id, RS.INPROGRESS, "assigned", W1),
                       effects.StartJob(req_id, W1)]
        info = farm.scheduler.get_request_info(req_id)
        assert info.state is RS.INPROGRESS and info.job.worker_uuid == W1

    def test_worker_serves_one_request_at_a_time(self, farm):
        farm.idle(W1)
        a = farm.request()
        b = farm.request()
        assert farm.worker_of(a) == W1 and farm.request_state(b) is RS.WAIT
        farm.done(a)
        assert farm.worker_of(b) == W1


# ---------------------------------------------------------------- job_start_failed
class TestJobStartFailed:
    def test_request_back_to_wait_at_old_place_worker_fail(self, farm):
        farm.idle(W1)
        first = farm.request(priority=5)
        second = farm.request(priority=5)
        assert farm.worker_of(first) == W1
        farm.drain()
        assert farm.scheduler.job_start_failed(first, "no tunnel") is True
        out = farm.drain()
        assert effects.FinishJob(first, W1) in out
        assert of_type(out, effects.PrepareWorker) == []          # no retry loop
        info = farm.scheduler.get_request_info(first)
        assert (info.state, info.job) == (RS.WAIT, None)
        w = farm.scheduler.get_worker_info(W1)
        assert w.state is WS.FAIL and "no tunnel" in w.fail_reason
        farm.idle(W2)
        assert farm.worker_of(first) == W2                   # still ahead of `second`
        assert farm.request_state(second) is RS.WAIT

    def test_rematched_at_once_to_another_idle_worker(self, farm):
        farm.idle(W1)
        farm.idle(W2, {"more": "caps"})
        req_id = farm.request()
        assert farm.worker_of(req_id) == W1
        farm.scheduler.job_start_failed(req_id, "x")
        assert farm.worker_of(req_id) == W2

    def test_ignored_when_not_in_progress(self, farm):
        farm.register(W1)
        req_id = farm.request()
        assert farm.scheduler.job_start_failed(req_id, "x") is False
        assert farm.scheduler.job_start_failed(99, "x") is False
        assert farm.request_state(req_id) is RS.WAIT

    def test_ignored_after_worker_already_failed(self, farm):
        req_id = farm.bring(W1, WS.RUN)
        farm.scheduler.set_fail(W1, "x")
        assert farm.scheduler.job_start_failed(req_id, "late") is False
        assert farm.request_state(req_id) is RS.FAILED

    def test_deadline_passed_meanwhile_times_out(self, farm):
        farm.idle(W1)
        req_id = farm.request(deadline=farm.later(60))
        farm.clock.advance(120)
        assert farm.scheduler.job_start_failed(req_id, "slow") is True
        assert farm.request_state(req_id) is RS.TIMEOUT

    def test_prolong_count_reset(self, farm):
        # Prolongations granted to a job that never started are not carried over.
        farm.idle(W1)
        req_id = farm.request()
        limit = farm.scheduler.config.prolong_limit
        for _ in range(limit):
            farm.scheduler.prolong_access(req_id)
        farm.scheduler.job_start_failed(req_id, "x")
        farm.idle(W2)
        assert farm.worker_of(req_id) == W2
        farm.scheduler.prolong_access(req_id)                   # a fresh job: allowed
