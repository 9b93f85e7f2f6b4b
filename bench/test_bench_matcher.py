"""pytest-benchmark: per-event cost of S2 (churn) and S3 (arrivals), both matchers.

    pytest bench/ --benchmark-only
    pytest bench/ --benchmark-only -k compiled --benchmark-columns=median,min,max,rounds

Moderate size (W=1000, R=10000): big enough for the compiled matcher's
data structures to matter, small enough for the plain-Python reference to
do a few rounds (about 0.3 s per S2 event and 1-2 s per S3 call there: it
rescans the queue for every match). The scenarios are the ones of
`python -m bench` (see bench/scenarios.py); this file is not part of the
normal test run (tests/ is the testpath).
"""
from __future__ import annotations

import random

import pytest

from bench.farm import farm, more_requests
from bench.scenarios import compiled_available, load_matcher, split_by_idle_service

W, R = 1_000, 10_000
SEED = 0
ROUNDS = {"compiled": 2_000, "reference": 5}

KINDS = [
    pytest.param("compiled", marks=pytest.mark.skipif(not compiled_available(),
                                                      reason="compiled matcher not built")),
    "reference",
]


@pytest.fixture(scope="module")
def standard_farm():
    f = farm(W, R, SEED)
    extra = more_requests(f.workers, max(ROUNDS.values()) + 10, SEED, R + 1)
    return f, extra


@pytest.mark.parametrize("kind", KINDS)
def test_s2_churn_event(benchmark, kind, standard_farm):
    """One job completion: a busy worker turns idle and takes its next request."""
    f, refill = standard_farm
    m = load_matcher(kind, f.workers, f.requests)
    rng = random.Random(f"s2:{SEED}")
    uuids = [w["uuid"] for w in f.workers]
    state = {"last": None, "refill": 0}

    def setup():
        last = state["last"]
        if last is not None:             # bookkeeping of the previous event (untimed)
            uuid, made = last
            if made:
                r = refill[state["refill"]]
                state["refill"] += 1
                m.add_request(r["id"], r["caps"], r["groups"], r["priority"], r["id"])
            else:
                m.set_idle(uuid, False)
        return (uuids[rng.randrange(W)],), {}

    def event(uuid):
        m.set_idle(uuid, True)
        made = m.match()
        state["last"] = (uuid, made)
        return made

    benchmark.extra_info.update(W=W, R=R, scenario="S2")
    benchmark.pedantic(event, setup=setup, rounds=ROUNDS[kind], iterations=1)
    assert m.ready_count() in (R - 1, R)   # the last event is not refilled


@pytest.mark.parametrize("kind", KINDS)
def test_s3_arrival_call(benchmark, kind, standard_farm):
    """One arrival: add_request + match() with 10% of the workers idle."""
    f, stream = standard_farm
    rng = random.Random(f"s3:{SEED}")
    idle_index = sorted(rng.sample(range(W), W // 10))
    backlog = split_by_idle_service(f.requests, f.workers, idle_index)
    m = load_matcher(kind, f.workers, backlog,
                     idle=[f.workers[i]["uuid"] for i in idle_index])
    if getattr(m, "compiled", False):
        assert m.match() == []
    state = {"next": 0, "last": None}

    def setup():
        for _, uuid in state["last"] or ():
            m.set_idle(uuid, True)        # the worker is free again at once (untimed)
        r = stream[state["next"]]
        state["next"] += 1
        return (r,), {}

    def call(r):
        m.add_request(r["id"], r["caps"], r["groups"], r["priority"], r["id"])
        made = m.match()
        state["last"] = made
        return made

    benchmark.extra_info.update(W=W, R=R, idle=len(idle_index), backlog=len(backlog),
                                scenario="S3")
    benchmark.pedantic(call, setup=setup, rounds=ROUNDS[kind], iterations=1)
    assert m.idle_count() >= len(idle_index) - 1
