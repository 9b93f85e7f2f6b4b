"""The compiled matcher against the reference: same calls, same answers.

`ReferenceMatcher` is the contract. Hypothesis drives both matchers with the
same random sequence of calls over small pools (so that workers, caps, groups
and pins collide often) and compares every answer: match() results (pairs and
order), counts, satisfiable(), and the errors raised for misuse.
"""
from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant,
                                 precondition, rule)

from boruta.core.reference import ReferenceMatcher

_matcher = pytest.importorskip("boruta._matcher")
CompiledMatcher = _matcher.CompiledMatcher

UUIDS = ["w3", "w1", "w7", "w0", "w5", "w2", "w6", "w4"]
KEYS = ["arch", "board", "usb", "serial"]
VALUES = ["a", "b"]
GROUPS = ["g1", "g2", "g3", "g4"]

cap_pairs = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), min_size=1,
                            max_size=4)
req_cap_pairs = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=2)
group_lists = st.lists(st.sampled_from(GROUPS), max_size=3)   # duplicates allowed
req_group_lists = st.one_of(st.just([]),
                            st.lists(st.sampled_from(GROUPS + ["nobody"]), max_size=2))


@st.composite
def worker_caps(draw):
    caps = draw(cap_pairs)
    uuid_cap = draw(st.sampled_from(["own", "own", "own", "none", "other"]))
    return caps, uuid_cap


def _with_uuid(uuid: str, spec) -> dict:
    caps, uuid_cap = spec
    caps = dict(caps)
    if uuid_cap == "own":
        caps["UUID"] = uuid
    elif uuid_cap == "other":
        caps["UUID"] = "w0"
    return caps


@st.composite
def request_caps(draw):
    caps = dict(draw(req_cap_pairs))
    if draw(st.integers(0, 15)) == 0:
        caps["ghost"] = "a"                     # a key no worker has
    if draw(st.integers(0, 5)) == 0:
        caps["UUID"] = draw(st.sampled_from(UUIDS + ["w9"]))
    return caps


def _same_error(call_ref, call_comp):
    ref_exc = comp_exc = None
    ref_val = comp_val = None
    try:
        ref_val = call_ref()
    except Exception as exc:  # noqa: BLE001 - compared below
        ref_exc = exc
    try:
        comp_val = call_comp()
    except Exception as exc:  # noqa: BLE001
        comp_exc = exc
    assert type(ref_exc) is type(comp_exc), (ref_exc, comp_exc)
    return ref_exc is None, ref_val, comp_val


SAT_PROBES = [
    ({}, []),
    ({"arch": "a"}, []),
    ({"arch": "a", "usb": "b"}, ["g1"]),
    ({"ghost": "a"}, []),
    ({}, ["g2", "g3"]),
    ({"UUID": "w1"}, []),
    ({"UUID": "w0", "board": "c"}, ["g4"]),
]


class MatcherPair(RuleBasedStateMachine):

    tune = None     # (walk_limit, walk_ratio): force one of match()'s two modes

    @initialize()
    def setup(self):
        self.ref = ReferenceMatcher()
        self.comp = CompiledMatcher()
        if self.tune is not None:
            self.comp._tune(*self.tune)
        self.next_id = 1
        self.seq = 0
        self.live: dict[int, int] = {}      # request id -> compiled handle
        self.gone: dict[int, int] = {}      # served or removed: id -> old handle

    # -- workers -----------------------------------------------------------
    @rule(uuid=st.sampled_from(UUIDS), spec=worker_caps(), groups=group_lists)
    def add_worker(self, uuid, spec, groups):
        caps = _with_uuid(uuid, spec)
        _same_error(lambda: self.ref.add_worker(uuid, caps, groups),
                    lambda: self.comp.add_worker(uuid, caps, groups))

    @rule(uuid=st.sampled_from(UUIDS), spec=worker_caps(), groups=group_lists)
    def update_worker(self, uuid, spec, groups):
        caps = _with_uuid(uuid, spec)
        _same_error(lambda: self.ref.update_worker(uuid, caps, groups),
                    lambda: self.comp.update_worker(uuid, caps, groups))

    @rule(uuid=st.sampled_from(UUIDS), spec=worker_caps(), groups=group_lists)
    def add_idle_worker(self, uuid, spec, groups):
        self.add_worker(uuid, spec, groups)
        self.set_idle(uuid, True)

    @rule(uuid=st.sampled_from(UUIDS))
    def remove_worker(self, uuid):
        _same_error(lambda: self.ref.remove_worker(uuid),
                    lambda: self.comp.remove_worker(uuid))

    @rule(uuid=st.sampled_from(UUIDS), idle=st.booleans())
    def set_idle(self, uuid, idle):
        _same_error(lambda: self.ref.set_idle(uuid, idle),
                    lambda: self.comp.set_idle(uuid, idle))

    @rule(uuids=st.lists(st.sampled_from(UUIDS), min_size=2, max_size=8, unique=True))
    def set_several_idle(self, uuids):
        # several workers turning idle between two match() calls
        for uuid in uuids:
            self.set_idle(uuid, True)

    @rule()
    def all_busy(self):
        for uuid in UUIDS:
            self.set_idle(uuid, False)

    # -- requests ----------------------------------------------------------
    @rule(caps=request_caps(), groups=req_group_lists, priority=st.integers(1, 16))
    def add_request(self, caps, groups, priority):
        req_id = self.next_id
        self.next_id += 1
        self.seq += 1
        self.ref.add_request(req_id, caps, groups, priority, self.seq)
        self.live[req_id] = self.comp.add_request(req_id, caps, groups, priority, self.seq)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def add_duplicate_request(self, data):
        req_id = data.draw(st.sampled_from(sorted(self.live)))
        self.seq += 1
        ok, _, _ = _same_error(lambda: self.ref.add_request(req_id, {}, [], 1, self.seq),
                               lambda: self.comp.add_request(req_id, {}, [], 1, self.seq))
        assert not ok

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def remove_request(self, data):
        req_id = data.draw(st.sampled_from(sorted(self.live)))
        handle = self.live.pop(req_id)
        self.ref.remove_request(req_id)
        self.comp.remove_request(handle)
        self.gone[req_id] = handle

    @precondition(lambda self: self.gone)
    @rule(data=st.data())
    def remove_gone_request(self, data):
        req_id = data.draw(st.sampled_from(sorted(self.gone)))
        handle = self.gone[req_id]
        ok, _, _ = _same_error(lambda: self.ref.remove_request(req_id),
                               lambda: self.comp.remove_request(handle))
        assert not ok

    # -- decisions ---------------------------------------------------------
    @rule()
    def match(self):
        expected = self.ref.match()
        got = self.comp.match()
        assert got == expected
        for req_id, _ in got:
            self.gone[req_id] = self.live.pop(req_id)

    @rule()
    def match_again(self):
        self.match()
        assert self.comp.match() == [] == self.ref.match()

    @rule(caps=request_caps(), groups=req_group_lists)
    def satisfiable(self, caps, groups):
        assert self.comp.satisfiable(caps, groups) == self.ref.satisfiable(caps, groups)

    @invariant()
    def same_counts(self):
        if not hasattr(self, "ref"):
            return
        assert self.comp.ready_count() == self.ref.ready_count()
        assert self.comp.idle_count() == self.ref.idle_count()
        for caps, groups in SAT_PROBES:
            assert self.comp.satisfiable(caps, groups) == self.ref.satisfiable(caps, groups)
        # heaps in order (heads included), slot positions, class table, trie live counts
        assert self.comp._check()


class MatcherPairWalking(MatcherPair):
    tune = (10**9, 0)       # always walk the trie for each pending worker


class MatcherPairAllClasses(MatcherPair):
    tune = (-1, 0)          # always offer every class


_SETTINGS = settings(max_examples=200, stateful_step_count=60, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])
TestMatcherPair = MatcherPair.TestCase
TestMatcherPair.settings = _SETTINGS
TestMatcherPairWalking = MatcherPairWalking.TestCase
TestMatcherPairWalking.settings = _SETTINGS
TestMatcherPairAllClasses = MatcherPairAllClasses.TestCase
TestMatcherPairAllClasses.settings = _SETTINGS


TUNES = {"default": None, "walking": (10**9, 0), "all-classes": (-1, 0)}


@pytest.mark.parametrize("tune", list(TUNES))
def test_stale_worker_entries_are_refreshed(tune):
    # Three idle workers whose best request is the same: after it is served the
    # others must look again (in walking mode, whatever the set order).
    ref, comp = ReferenceMatcher(), CompiledMatcher()
    if TUNES[tune]:
        comp._tune(*TUNES[tune])
    for m in (ref, comp):
        for uuid in ("a", "b", "c"):
            m.add_worker(uuid, {"UUID": uuid, "arch": "arm"}, ["g"])
        for req_id in range(1, 6):
            m.add_request(req_id, {"arch": "arm"} if req_id % 2 else {}, ["g"], 3, req_id)
        assert m.match() == []
    for uuid in ("c", "a", "b"):
        ref.set_idle(uuid, True)
        comp.set_idle(uuid, True)
    made = ref.match()
    assert made == [(1, "a"), (2, "b"), (3, "c")]
    assert comp.match() == made


# -- larger, seeded ---------------------------------------------------------

def matcher_pair(workers: list, tune: str | None = None) -> tuple:
    """A reference and a compiled matcher (tuned as `tune` says) with these workers."""
    ref, comp = ReferenceMatcher(), CompiledMatcher()
    if tune is not None and TUNES[tune]:
        comp._tune(*TUNES[tune])
    for uuid, caps, grps in workers:
        ref.add_worker(uuid, caps, grps)
        comp.add_worker(uuid, caps, grps)
    return ref, comp


def _random_farm(rng: random.Random, n_workers: int):
    types = [f"t{i}" for i in range(12)]
    ifaces = [f"if{i}" for i in range(10)]
    groups = [f"g{i}" for i in range(8)]
    workers = []
    for i in range(n_workers):
        uuid = f"{rng.getrandbits(64):016x}"
        caps = {"UUID": uuid, "device_type": rng.choice(types[: rng.randint(1, 12)])}
        for iface in rng.sample(ifaces, rng.randint(0, 5)):
            caps[iface] = "yes"
        workers.append((uuid, caps, rng.sample(groups, rng.randint(0, 3))))
    return types, ifaces, groups, workers


def _random_request(rng, types, ifaces, groups, workers):
    caps = {}
    if rng.random() < 0.9:
        caps["device_type"] = rng.choice(types)
    for iface in rng.sample(ifaces, rng.randint(0, 2)):
        caps[iface] = "yes"
    if rng.random() < 0.03:
        caps["UUID"] = rng.choice(workers)[0]
    if rng.random() < 0.01:
        caps["nowhere"] = "x"
    owner = [] if rng.random() < 0.3 else rng.sample(groups, rng.randint(1, 2))
    return caps, owner, rng.randint(1, 16)


@pytest.mark.parametrize("seed,tune", [(1, "default"), (2, "default"), (3, "walking"),
                                       (4, "all-classes")])
def test_large_drain_and_churn_identical(seed, tune):
    rng = random.Random(seed)
    types, ifaces, groups, workers = _random_farm(rng, 200)
    ref, comp = matcher_pair(workers, tune)
    handles = {}
    seq = 0
    for req_id in range(1, 1201):
        caps, owner, prio = _random_request(rng, types, ifaces, groups, workers)
        seq += 1
        ref.add_request(req_id, caps, owner, prio, seq)
        handles[req_id] = comp.add_request(req_id, caps, owner, prio, seq)
    assert comp.match() == ref.match() == []
    # S1-like drain: everybody turns idle at once.
    for uuid, _, _ in workers:
        ref.set_idle(uuid, True)
        comp.set_idle(uuid, True)
    made = ref.match()
    assert comp.match() == made
    assert made
    for req_id, _ in made:
        del handles[req_id]
    # Churn: workers come back one or a few at a time, requests arrive and go.
    busy = [uuid for _, uuid in made]
    next_id = 1201
    for step in range(120):
        action = rng.random()
        if action < 0.45 and busy:
            for _ in range(rng.randint(1, 3)):
                if busy:
                    uuid = busy.pop(rng.randrange(len(busy)))
                    ref.set_idle(uuid, True)
                    comp.set_idle(uuid, True)
        elif action < 0.8:
            caps, owner, prio = _random_request(rng, types, ifaces, groups, workers)
            seq += 1
            ref.add_request(next_id, caps, owner, prio, seq)
            handles[next_id] = comp.add_request(next_id, caps, owner, prio, seq)
            next_id += 1
        elif action < 0.9 and handles:
            req_id = rng.choice(list(handles))
            ref.remove_request(req_id)
            comp.remove_request(handles.pop(req_id))
        else:
            uuid, caps, grps = rng.choice(workers)
            caps = dict(caps)
            caps[rng.choice(ifaces)] = "yes"
            ref.update_worker(uuid, caps, grps)
            comp.update_worker(uuid, caps, grps)
        made = ref.match()
        assert comp.match() == made, step
        for req_id, uuid in made:
            del handles[req_id]
            busy.append(uuid)
        assert comp.ready_count() == ref.ready_count()
        assert comp.idle_count() == ref.idle_count()


@pytest.mark.parametrize("seed", [5, 6])
def test_churn_one_worker_at_a_time(seed):
    # S2-like: every worker busy, a large queue; one worker at a time turns idle
    # and takes its best request (match()'s single-worker fast path, with enough
    # classes for the default mode), while requests arrive and leave anywhere in
    # their class (heads included) so heads and classes keep changing.
    rng = random.Random(seed)
    types, ifaces, groups, workers = _random_farm(rng, 120)
    ref, comp = matcher_pair(workers)
    handles = {}
    next_id = 1

    def add():
        nonlocal next_id
        caps, owner, prio = _random_request(rng, types, ifaces, groups, workers)
        ref.add_request(next_id, caps, owner, prio, next_id)
        handles[next_id] = comp.add_request(next_id, caps, owner, prio, next_id)
        next_id += 1

    for _ in range(1500):
        add()
    assert comp.match() == ref.match() == []
    for step in range(400):
        uuid = rng.choice(workers)[0]
        ref.set_idle(uuid, True)
        comp.set_idle(uuid, True)
        made = ref.match()
        assert comp.match() == made, step
        assert len(made) <= 1
        for req_id, _ in made:
            del handles[req_id]
        ref.set_idle(uuid, False)
        comp.set_idle(uuid, False)
        for _ in range(rng.randint(0, 2)):
            add()
        for _ in range(rng.randint(0, 2)):
            if handles:
                req_id = rng.choice(list(handles))
                ref.remove_request(req_id)
                comp.remove_request(handles.pop(req_id))
        if step % 50 == 0:
            assert comp._check()
    assert comp.ready_count() == ref.ready_count()
    assert comp._check()


def test_pins_and_class_ids_are_reused():
    # Classes (and pinned values) are freed when their last request goes and
    # their ids are reused by other classes: nothing of the old one may leak.
    ref, comp = ReferenceMatcher(), CompiledMatcher()
    for m in (ref, comp):
        m.add_worker("a", {"UUID": "a", "arch": "arm"}, ["g1"])
        m.add_worker("b", {"UUID": "b", "arch": "x86"}, ["g2"])
    seq = 0
    live = {}
    for rnd in range(6):
        specs = [({"UUID": "a"}, []), ({"UUID": "b", "arch": "x86"}, ["g2"]),
                 ({"arch": "arm"}, ["g1", "g2"]), ({}, []), ({"UUID": "zz"}, [])]
        rng = random.Random(rnd)
        rng.shuffle(specs)
        for caps, grps in specs:
            seq += 1
            ref.add_request(seq, caps, grps, 1 + seq % 3, seq)
            live[seq] = comp.add_request(seq, caps, grps, 1 + seq % 3, seq)
        # drop a random half, then let the workers take what they can
        for req_id in rng.sample(sorted(live), len(live) // 2):
            ref.remove_request(req_id)
            comp.remove_request(live.pop(req_id))
        assert comp._check()
        for uuid in ("a", "b"):
            ref.set_idle(uuid, True)
            comp.set_idle(uuid, True)
            made = ref.match()
            assert comp.match() == made
            for req_id, _ in made:
                del live[req_id]
        for uuid in ("a", "b"):
            ref.set_idle(uuid, False)
            comp.set_idle(uuid, False)
        assert comp._check()
        assert comp.ready_count() == ref.ready_count()


@pytest.mark.parametrize("seed,tune", [(7, "default"), (8, "walking"), (9, "all-classes")])
def test_caps_come_and_go_bits_and_nodes_are_reused(seed, tune):
    # Keys rotate: each round brings caps never seen before and drops the old ones
    # from workers and requests, so freed cap bits and trie nodes are reused by
    # other caps while some survive. Same answers, sound structures, and the
    # interned state follows what is live.
    rng = random.Random(seed)
    ref, comp = ReferenceMatcher(), CompiledMatcher()
    if TUNES[tune]:
        comp._tune(*TUNES[tune])
    uuids = [f"w{i}" for i in range(12)]
    for uuid in uuids:
        for m in (ref, comp):
            m.add_worker(uuid, {"UUID": uuid}, [])
    handles: dict[int, int] = {}
    next_id = 1
    for rnd in range(30):
        pool = [f"r{rnd - d}k{i}" for d in range(2) for i in range(6)]   # this round and the last
        for uuid in rng.sample(uuids, 5):
            caps = {"UUID": uuid, **{k: rng.choice("ab") for k in rng.sample(pool, 3)}}
            ref.update_worker(uuid, caps, [])
            comp.update_worker(uuid, caps, [])
        for _ in range(rng.randint(3, 10)):
            caps = {k: rng.choice("ab") for k in rng.sample(pool, rng.randint(0, 4))}
            prio = rng.randint(1, 16)
            ref.add_request(next_id, caps, [], prio, next_id)
            handles[next_id] = comp.add_request(next_id, caps, [], prio, next_id)
            next_id += 1
        for req_id in rng.sample(sorted(handles), len(handles) // 3):
            ref.remove_request(req_id)
            comp.remove_request(handles.pop(req_id))
        for uuid in rng.sample(uuids, 4):
            ref.set_idle(uuid, True)
            comp.set_idle(uuid, True)
        made = ref.match()
        assert comp.match() == made, rnd
        for req_id, uuid in made:
            del handles[req_id]
            ref.set_idle(uuid, False)
            comp.set_idle(uuid, False)
        for caps, groups in SAT_PROBES + [({pool[0]: "a"}, []), ({pool[-1]: "b"}, [])]:
            assert comp.satisfiable(caps, groups) == ref.satisfiable(caps, groups)
        assert comp._check()
    for req_id in list(handles):
        ref.remove_request(req_id)
        comp.remove_request(handles.pop(req_id))
    for uuid in uuids:
        ref.remove_worker(uuid)
        comp.remove_worker(uuid)
    assert comp._interned()["caps"] == 0 and comp._interned()["nodes"] == 1
    assert comp._check()
