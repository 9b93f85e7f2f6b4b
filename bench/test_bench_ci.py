"""pytest-benchmark: what the server pays for one NewRequest, both matchers.

S3 at the scheduler level (docs/benchmarks.md): the whole `Scheduler`,
W workers of which 10% IDLE and a waiting backlog none of them serves;
one call = `new_request` (with its satisfiability check, as the server
does) + `drain_effects`. Same size, seed and rounds as
bench/test_bench_matcher.py, so `make bench-ci` (bench/ci.py) can set the
compiled/plain ratio of this bench against a floor: unlike the
matcher-level benches, it also fails if the Scheduler stops using the
compiled matcher it is given.
"""
from __future__ import annotations

import pytest

from bench.farm import more_requests
from bench.scenarios import (_prepare_op, _starts, JOB_KEY, JOB_USER, drain_changes,
                             s3_scheduler_state, utc_datetime)
from bench.test_bench_matcher import KINDS, R, ROUNDS, SEED, W
from boruta.core.types import UserInfo


def _new_request_state(kind: str):
    """A Scheduler with 90% of its workers running a job, 10% idle, and the backlog queued."""
    s, clock, f, _, backlog = s3_scheduler_state(kind, W, R, SEED)
    stream = more_requests(f.workers, max(ROUNDS.values()) + 10, SEED, R + 1)
    return s, clock, stream, len(backlog)


@pytest.mark.parametrize("kind", KINDS)
def test_sched_new_request(benchmark, kind):
    """One NewRequest: new_request + drain_effects; a worker that took it is freed (untimed)."""
    s, clock, stream, backlog = _new_request_state(kind)
    now = clock.now()
    waiting = s.counts()["ready"]
    state = {"next": 0, "made": []}

    def setup():
        for req_id, uuid in state["made"]:     # the job ends at once: the worker is IDLE again
            s.close_request(req_id)
            s.worker_prepared(uuid, _prepare_op(s.drain_effects(), uuid), JOB_KEY, JOB_USER)
            assert not _starts(s.drain_effects()), "a freed worker took a waiting request"
        drain_changes(s)
        r = stream[state["next"]]
        state["next"] += 1
        va = None if r["valid_after"] is None else utc_datetime(now + r["valid_after"])
        owner = UserInfo(r["groups"]) if r["groups"] else None
        return (r["caps"], r["priority"], owner, va, utc_datetime(now + r["deadline"])), {}

    def call(*args):
        s.new_request(*args)
        state["made"] = _starts(s.drain_effects())

    benchmark.extra_info.update(W=W, R=R, idle=W // 10, backlog=backlog, scenario="S3 scheduler")
    benchmark.pedantic(call, setup=setup, rounds=ROUNDS[kind], iterations=1)
    assert s.counts()["ready"] >= waiting     # no call assigned a backlog request
