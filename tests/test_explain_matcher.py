"""`candidates()` and `count_ahead()`: the compiled matcher answers as the reference.

The same random call sequences as tests/test_matcher_differential.py (its state
machine, reused), plus rules that ask both matchers which workers could serve
some caps and groups, and how many ready requests are ahead of a (priority, seq)
for a set of workers, then compare the answers. A seeded large farm checks the
trie pruning and the heap-pruned counting with many classes and deep heaps.
"""
from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from boruta.core.reference import ReferenceMatcher
from test_matcher_differential import (UUIDS, MatcherPair, _random_farm, _random_request,
                                       matcher_pair, req_group_lists, request_caps)

_matcher = pytest.importorskip("boruta._matcher")
CompiledMatcher = _matcher.CompiledMatcher


class ExplainPair(MatcherPair):

    @rule(caps=request_caps(), groups=req_group_lists)
    def candidates(self, caps, groups):
        got = self.comp.candidates(caps, groups)
        assert got == self.ref.candidates(caps, groups)
        assert bool(got) == self.ref.satisfiable(caps, groups)

    @rule(priority=st.integers(1, 16), seq_back=st.integers(0, 30),
          uuids=st.lists(st.sampled_from(UUIDS + ["w9"]), max_size=8))
    def count_ahead(self, priority, seq_back, uuids):
        seq = max(0, self.seq + 1 - seq_back)
        assert (self.comp.count_ahead(priority, seq, uuids)
                == self.ref.count_ahead(priority, seq, uuids))

    @precondition(lambda self: self.live)
    @rule(data=st.data(), caps=request_caps(), groups=req_group_lists)
    def count_ahead_of_candidates(self, data, caps, groups):
        # what explain asks: the candidates of some caps, ahead of a live request
        req_id = data.draw(st.sampled_from(sorted(self.live)))
        priority = data.draw(st.integers(1, 16))
        uuids = self.ref.candidates(caps, groups)
        assert (self.comp.count_ahead(priority, req_id, uuids)
                == self.ref.count_ahead(priority, req_id, uuids))


TestExplainPair = ExplainPair.TestCase
TestExplainPair.settings = settings(max_examples=150, stateful_step_count=60, deadline=None,
                                    suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("seed", [11, 12])
def test_large_farm_candidates_and_ahead_identical(seed):
    rng = random.Random(seed)
    types, ifaces, groups, workers = _random_farm(rng, 300)
    ref, comp = matcher_pair(workers)
    probes = []
    for req_id in range(1, 3001):
        caps, owner, prio = _random_request(rng, types, ifaces, groups, workers)
        ref.add_request(req_id, caps, owner, prio, req_id)
        comp.add_request(req_id, caps, owner, prio, req_id)
        probes.append((caps, owner, prio, req_id))
    for uuid in rng.sample([w[0] for w in workers], 100):
        ref.set_idle(uuid, True)
        comp.set_idle(uuid, True)
    assert comp.match() == ref.match()
    nonzero = 0
    for caps, owner, prio, req_id in rng.sample(probes, 150):
        uuids = comp.candidates(caps, owner)
        assert uuids == ref.candidates(caps, owner)
        ahead = comp.count_ahead(prio, req_id, uuids)
        assert ahead == ref.count_ahead(prio, req_id, uuids)
        nonzero += ahead > 0
    assert nonzero > 50          # the probes did exercise the counting


def test_count_ahead_rejects_what_add_request_rejects():
    for m in (ReferenceMatcher(), CompiledMatcher()):
        with pytest.raises(ValueError):
            m.count_ahead(0, 1, [])
        with pytest.raises(ValueError):
            m.count_ahead(1, -1, [])
