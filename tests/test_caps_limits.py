"""Caps are bounded: entries per request, per worker (its UUID counts) and per worker
filter, and the length of keys and values. Beyond a limit the caller gets bad_argument
naming the limit and the size; nothing is booked or interned, and the others are served
as before. Every test runs against both matchers."""
from __future__ import annotations

import dataclasses

import pytest

from boruta.core.config import SchedulerConfig
from boruta.core.errors import BadArgumentError
from boruta.core.scheduler import Scheduler
from boruta.core.types import UUID_KEY, ReqState, WorkerFilter, WorkerState
from boruta.testing import wuuid
from boruta.testing.farm import DRYAD_ADDRESS, SSH_ADDRESS

DEFAULTS = SchedulerConfig()
ENTRIES = DEFAULTS.max_caps_entries
KEY = DEFAULTS.max_cap_key_length
VALUE = DEFAULTS.max_cap_value_length


def many(n: int, prefix: str = "k") -> dict[str, str]:
    return {f"{prefix}{i}": "v" for i in range(n)}


def interned(sched):
    """The compiled matcher's interned state (None for the plain twin, which interns nothing)."""
    probe = getattr(sched._matcher, "_interned", None)
    return probe() if probe else None


def test_the_defaults_are_documented_sizes():
    assert (ENTRIES, KEY, VALUE) == (64, 64, 256)


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, None])
@pytest.mark.parametrize("name", ["max_caps_entries", "max_cap_key_length",
                                  "max_cap_value_length"])
def test_a_limit_must_be_a_positive_integer(name, bad):
    with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
        SchedulerConfig(**{name: bad})


# ---------------------------------------------------------------- new_request
class TestRequestCaps:
    def test_entries_at_the_limit_pass_one_more_is_refused(self, farm):
        sched = farm.scheduler
        farm.idle(wuuid(1), many(ENTRIES - 1))          # + UUID: the most a worker may have
        req = sched.new_request(many(ENTRIES - 1) | {UUID_KEY: wuuid(1)}, 8)
        assert farm.worker_of(req) == wuuid(1)
        with pytest.raises(BadArgumentError) as err:
            sched.new_request(many(ENTRIES + 1), 8, queue_unsatisfiable=True)
        assert str(err.value) == (f"caps have {ENTRIES + 1} entries; at most {ENTRIES} "
                                  "are allowed (max_caps_entries)")
        assert err.value.code == "bad_argument"

    def test_a_huge_map_is_refused_by_its_count_alone(self, farm):
        # 100,000 keys: what a 1 MiB frame holds. Refused before any entry is read,
        # so nothing is interned and no ID is spent.
        before = interned(farm.scheduler)
        with pytest.raises(BadArgumentError, match="caps have 100000 entries"):
            farm.scheduler.new_request(many(100_000), 8, queue_unsatisfiable=True)
        assert interned(farm.scheduler) == before
        assert farm.scheduler.list_requests()[0] == []
        assert farm.request({}, queue_unsatisfiable=True) == 1

    def test_key_length(self, farm):
        sched = farm.scheduler
        ok = sched.new_request({"k" * KEY: "v"}, 8, queue_unsatisfiable=True)
        with pytest.raises(BadArgumentError) as err:
            sched.new_request({"k" * (KEY + 1): "v"}, 8, queue_unsatisfiable=True)
        assert f"is {KEY + 1} characters long; at most {KEY} are allowed " \
               "(max_cap_key_length)" in str(err.value)
        assert "'kkkkkkkk" in str(err.value) and len(str(err.value)) < 200   # named, cut short
        assert [r.id for r in sched.list_requests()[0]] == [ok]

    def test_value_length(self, farm):
        sched = farm.scheduler
        ok = sched.new_request({"board": "v" * VALUE}, 8, queue_unsatisfiable=True)
        with pytest.raises(BadArgumentError) as err:
            sched.new_request({"board": "v" * (VALUE + 1)}, 8, queue_unsatisfiable=True)
        assert str(err.value) == (f"caps value of 'board' is {VALUE + 1} characters long; "
                                  f"at most {VALUE} are allowed (max_cap_value_length)")
        assert [r.id for r in sched.list_requests()[0]] == [ok]

    def test_lengths_count_characters_not_bytes(self, farm):
        # 64 characters of 4 bytes each in UTF-8: at the limit, not beyond it.
        farm.scheduler.new_request({"\U0001F600" * KEY: "\u00e9" * VALUE}, 8,
                                   queue_unsatisfiable=True)

    def test_others_are_served_while_oversized_requests_are_refused(self, farm):
        farm.idle(wuuid(1), {"device_type": "rpi4"})
        farm.idle(wuuid(2), {"device_type": "rpi4"})
        served = []
        for attempt in range(20):
            with pytest.raises(BadArgumentError):
                farm.scheduler.new_request(many(ENTRIES + 1, f"r{attempt}_"), 8,
                                           queue_unsatisfiable=True)
            if attempt in (5, 15):
                served.append(farm.request({"device_type": "rpi4"}))
        assert [farm.request_state(r) for r in served] == [ReqState.INPROGRESS] * 2
        assert {farm.worker_of(r) for r in served} == {wuuid(1), wuuid(2)}


# ---------------------------------------------------------------- register
class TestWorkerCaps:
    def test_the_uuid_counts_as_one_entry(self, farm):
        farm.register(wuuid(1), many(ENTRIES - 1))      # 63 + UUID = 64
        assert farm.worker_state(wuuid(1)) is WorkerState.MAINTENANCE
        with pytest.raises(BadArgumentError) as err:
            farm.register(wuuid(2), many(ENTRIES))      # 64 + UUID = 65
        assert str(err.value) == (f"caps have {ENTRIES + 1} entries; at most {ENTRIES} "
                                  "are allowed (max_caps_entries)")
        assert farm.scheduler.worker_ids() == [wuuid(1)]

    def test_a_known_worker_registering_oversized_caps_keeps_its_state(self, farm):
        farm.idle(wuuid(1), {"device_type": "rpi4"})
        before = farm.scheduler.get_worker_info(wuuid(1))
        with pytest.raises(BadArgumentError, match="max_cap_value_length"):
            farm.register(wuuid(1), {"device_type": "x" * (VALUE + 1)})
        assert farm.scheduler.get_worker_info(wuuid(1)) == before
        req = farm.request({"device_type": "rpi4"})
        assert farm.worker_of(req) == wuuid(1)

    def test_key_and_value_lengths(self, farm):
        farm.register(wuuid(1), {"k" * KEY: "v" * VALUE})
        with pytest.raises(BadArgumentError, match="max_cap_key_length"):
            farm.register(wuuid(2), {"k" * (KEY + 1): "v"})
        with pytest.raises(BadArgumentError, match=r"caps value of 'UUID' is \d+ characters"):
            farm.register("u" * (VALUE + 1))
        assert farm.scheduler.worker_ids() == [wuuid(1)]


# ---------------------------------------------------------------- list_workers
class TestFilterCaps:
    def test_filter_caps_are_bounded_as_a_workers(self, farm):
        farm.register(wuuid(1), {"device_type": "rpi4"})
        sched = farm.scheduler
        found, _ = sched.list_workers(WorkerFilter(caps=many(ENTRIES)))
        assert found == []
        for caps, limit in ((many(ENTRIES + 1), "max_caps_entries"),
                            ({"k" * (KEY + 1): "v"}, "max_cap_key_length"),
                            ({"device_type": "v" * (VALUE + 1)}, "max_cap_value_length")):
            with pytest.raises(BadArgumentError) as err:
                sched.list_workers(WorkerFilter(caps=caps))
            assert str(err.value).startswith("filter caps ") and limit in str(err.value)
        found, _ = sched.list_workers(WorkerFilter(caps={"device_type": "rpi4"}))
        assert [w.worker_uuid for w in found] == [wuuid(1)]


# ---------------------------------------------------------------- settings
@pytest.mark.parametrize("config", [SchedulerConfig(max_caps_entries=3, max_cap_key_length=5,
                                                    max_cap_value_length=40)])
def test_the_settings_are_honoured(farm, config):
    sched = farm.scheduler
    farm.register(wuuid(1), {"a": "1", "b": "2"})
    with pytest.raises(BadArgumentError, match="caps have 4 entries; at most 3"):
        farm.register(wuuid(2), {"a": "1", "b": "2", "c": "3"})
    sched.new_request({"abcde": "v" * 40}, 8, queue_unsatisfiable=True)
    with pytest.raises(BadArgumentError, match="at most 5 are allowed"):
        sched.new_request({"abcdef": "1"}, 8, queue_unsatisfiable=True)
    with pytest.raises(BadArgumentError, match="at most 40 are allowed"):
        sched.new_request({"a": "v" * 41}, 8, queue_unsatisfiable=True)
    with pytest.raises(BadArgumentError, match="filter caps have 4 entries"):
        sched.list_workers(WorkerFilter(caps=many(4)))


def test_restored_records_beyond_the_limits_are_kept(clock, matcher_kind):
    """Lowering a limit must not lose what the store already holds."""
    wide = Scheduler(clock, matcher=matcher_kind)
    wide.register({UUID_KEY: wuuid(1), **many(10)}, DRYAD_ADDRESS, SSH_ADDRESS)
    req = wide.new_request(many(10), 8, queue_unsatisfiable=True)
    narrow = Scheduler.restore(wide.snapshot(), clock,
                               dataclasses.replace(DEFAULTS, max_caps_entries=4), matcher_kind)
    assert narrow.get_request_info(req).caps == many(10)
    assert narrow.get_worker_info(wuuid(1)).caps == {UUID_KEY: wuuid(1), **many(10)}


# ---------------------------------------------------------------- memory
def test_closed_requests_leave_nothing_interned_in_the_matcher(sched):
    """1,000 requests with 64 never-seen keys each, opened and closed: the compiled
    matcher's interned caps and trie nodes come back to where they were."""
    sched.register({UUID_KEY: wuuid(1), "device_type": "rpi4"}, DRYAD_ADDRESS, SSH_ADDRESS)
    keep = sched.new_request({"device_type": "rpi4"}, 8)
    before = interned(sched)
    for n in range(1000):
        req = sched.new_request(many(ENTRIES, f"r{n}_"), 8, queue_unsatisfiable=True)
        if n == 0 and before is not None:
            grown = interned(sched)
            assert grown["caps"] == before["caps"] + ENTRIES     # the probe sees the growth
            assert grown["nodes"] == before["nodes"] + ENTRIES
        sched.close_request(req)
    assert interned(sched) == before
    assert sched.request_state(keep) is ReqState.WAIT


@pytest.mark.parametrize("config", [SchedulerConfig(retention=60.0)])
def test_purged_requests_leave_their_caps_behind(farm, config):
    sched = farm.scheduler
    gone = [sched.new_request({"k": str(n)}, 8, queue_unsatisfiable=True) for n in range(50)]
    for req in gone:
        sched.close_request(req)
    farm.tick(61)
    kept = sched.new_request({"k": "kept"}, 8, queue_unsatisfiable=True)
    assert sched.purge_history() == 50
    assert list(sched._caps_pool) == [(("k", "kept"),)]
    assert sched.get_request_info(kept).caps == {"k": "kept"}
