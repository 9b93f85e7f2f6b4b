"""Focused matching rules, run against both matchers (reference and compiled)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from boruta.core.matching import make_matcher


def _compiled_available() -> bool:
    try:
        import boruta._matcher  # noqa: F401
    except ImportError:
        return False
    return True


KINDS = ["reference",
         pytest.param("compiled", marks=pytest.mark.skipif(
             not _compiled_available(), reason="boruta._matcher not built"))]


@pytest.fixture(params=KINDS)
def m(request):
    return make_matcher(request.param)


class Seq:
    def __init__(self):
        self.n = 0

    def __call__(self):
        self.n += 1
        return self.n


def _caps(uuid, n):
    caps = {f"c{i}": "yes" for i in range(n)}
    caps["UUID"] = uuid
    return caps


@pytest.mark.slow
def test_kind_flag() -> None:
    """Each kind is the class it names, says whether it is compiled, and an unknown kind
    is refused; BORUTA_PUREPYTHON=1 makes the plain twin the default (as msgpack's
    MSGPACK_PUREPYTHON does), checked in a fresh interpreter."""
    from boruta.core.reference import ReferenceMatcher
    reference = make_matcher("reference")
    assert type(reference) is ReferenceMatcher and reference.compiled is False
    if _compiled_available():
        from boruta._matcher import CompiledMatcher
        compiled = make_matcher("compiled")
        assert type(compiled) is CompiledMatcher and compiled.compiled is True
    with pytest.raises(ValueError, match="unknown matcher kind 'fast'"):
        make_matcher("fast")
    probe = ("from boruta.core.matching import make_matcher; "
             "print(type(make_matcher()).__name__)")
    for env, want in (({"BORUTA_PUREPYTHON": "1"}, "ReferenceMatcher"),
                      ({"BORUTA_PUREPYTHON": "0"},
                       "CompiledMatcher" if _compiled_available() else "ReferenceMatcher")):
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                             env={**os.environ, **env}, timeout=60)
        assert out.stdout.strip() == want, (env, out.stdout, out.stderr)


def test_penalty_order_upstream_example(m):
    # Upstream's example: penalties 5+6=11, 1+8=9, 5+2=7.
    m.add_worker("A", _caps("A", 5), ["g0", "g1", "g2", "g3", "g4"])
    m.add_worker("B", _caps("B", 7), ["g0"])
    m.add_worker("C", _caps("C", 1), ["g0", "g1", "g2", "g3", "g4"])
    for uuid in "ABC":
        m.set_idle(uuid, True)
    seq = Seq()
    for req_id in range(1, 5):
        m.add_request(req_id, {"c0": "yes"}, ["g0"], 8, seq())
    assert m.match() == [(1, "C"), (2, "B"), (3, "A")]
    assert m.ready_count() == 1 and m.idle_count() == 0
    assert m.match() == []


def test_penalty_order_one_request_at_a_time(m):
    m.add_worker("A", _caps("A", 5), ["g0", "g1", "g2", "g3", "g4"])
    m.add_worker("B", _caps("B", 7), ["g0"])
    m.add_worker("C", _caps("C", 1), ["g0", "g1", "g2", "g3", "g4"])
    for uuid in "ABC":
        m.set_idle(uuid, True)
    seq = Seq()
    got = []
    for req_id in range(1, 5):
        m.add_request(req_id, {"c0": "yes"}, ["g0"], 8, seq())
        got += m.match()
    assert got == [(1, "C"), (2, "B"), (3, "A")]
    assert m.ready_count() == 1


def test_uuid_breaks_penalty_ties(m):
    for uuid in ["w9", "w2", "w5"]:
        m.add_worker(uuid, {"UUID": uuid, "arch": "arm"}, [])
        m.set_idle(uuid, True)
    seq = Seq()
    for req_id in (1, 2, 3):
        m.add_request(req_id, {"arch": "arm"}, [], 1, seq())
    assert m.match() == [(1, "w2"), (2, "w5"), (3, "w9")]


def test_priority_then_fifo(m):
    seq = Seq()
    m.add_request(10, {}, [], 5, seq())
    m.add_request(11, {}, [], 2, seq())
    m.add_request(12, {}, [], 5, seq())
    m.add_request(13, {}, [], 2, seq())
    m.add_request(14, {}, [], 16, seq())
    for i in range(5):
        m.add_worker(f"w{i}", {"UUID": f"w{i}"}, [])
    assert m.match() == []
    got = []
    for i in range(5):
        m.set_idle(f"w{i}", True)
        got += m.match()
    assert [req for req, _ in got] == [11, 13, 10, 12, 14]
    assert [uuid for _, uuid in got] == [f"w{i}" for i in range(5)]


def test_priority_then_fifo_in_one_match(m):
    seq = Seq()
    for req_id, prio in [(1, 3), (2, 1), (3, 3), (4, 1)]:
        m.add_request(req_id, {}, [], prio, seq())
    for i in range(3):
        m.add_worker(f"w{i}", {}, [])
        m.set_idle(f"w{i}", True)
    assert m.match() == [(2, "w0"), (4, "w1"), (1, "w2")]


def test_unservable_request_does_not_block(m):
    m.add_worker("w1", {"UUID": "w1", "arch": "arm"}, [])
    m.set_idle("w1", True)
    seq = Seq()
    m.add_request(1, {"arch": "x86"}, [], 1, seq())
    m.add_request(2, {"arch": "arm", "ghost": "yes"}, [], 1, seq())
    m.add_request(3, {"arch": "arm"}, [], 9, seq())
    assert m.match() == [(3, "w1")]
    assert m.ready_count() == 2


def test_best_worker_goes_to_first_request_not_best_fit(m):
    # The head request takes the best worker even if a later one needed it.
    m.add_worker("a", {"UUID": "a", "usb": "yes"}, [])
    m.add_worker("b", {"UUID": "b", "usb": "yes", "hdmi": "yes"}, [])
    m.set_idle("a", True)
    m.set_idle("b", True)
    seq = Seq()
    m.add_request(1, {}, [], 1, seq())
    m.add_request(2, {"usb": "yes"}, [], 2, seq())
    m.add_request(3, {"hdmi": "yes"}, [], 3, seq())
    assert m.match() == [(1, "a"), (2, "b")]
    assert m.ready_count() == 1


def test_empty_caps_match_everything(m):
    m.add_worker("w", {"UUID": "w", "a": "1", "b": "2"}, ["g"])
    m.set_idle("w", True)
    m.add_request(1, {}, [], 4, 1)
    assert m.match() == [(1, "w")]


def test_pinned_uuid(m):
    m.add_worker("a", {"UUID": "a"}, [])
    m.add_worker("b", {"UUID": "b", "x": "1"}, [])
    m.set_idle("a", True)
    m.set_idle("b", True)
    seq = Seq()
    m.add_request(1, {"UUID": "b"}, [], 9, seq())
    m.add_request(2, {"UUID": "b"}, [], 9, seq())
    m.add_request(3, {"UUID": "zz"}, [], 1, seq())
    m.add_request(4, {"UUID": "a", "x": "1"}, [], 1, seq())
    assert m.match() == [(1, "b")]
    m.set_idle("b", True)
    assert m.match() == [(2, "b")]
    assert m.ready_count() == 2


def test_pin_uses_the_workers_uuid_cap(m):
    # The reference compares caps: a worker without a UUID cap is never pinned.
    m.add_worker("a", {"arch": "arm"}, [])
    m.set_idle("a", True)
    m.add_request(1, {"UUID": "a"}, [], 1, 1)
    assert m.match() == []
    m.update_worker("a", {"UUID": "a", "arch": "arm"}, [])
    assert m.match() == [(1, "a")]


def test_groups_rule(m):
    m.add_worker("nog", {"UUID": "nog"}, [])
    m.add_worker("g12", {"UUID": "g12"}, ["g1", "g2"])
    m.add_worker("g3", {"UUID": "g3"}, ["g3"])
    seq = Seq()
    m.add_request(1, {}, ["g2", "g9"], 1, seq())      # shares g2 with g12 only
    m.add_request(2, {}, ["g4"], 1, seq())            # nobody
    m.add_request(3, {}, [], 1, seq())                # anybody
    m.add_request(4, {}, ["g3"], 1, seq())
    for uuid in ("nog", "g12", "g3"):
        m.set_idle(uuid, True)
    assert m.match() == [(1, "g12"), (3, "nog"), (4, "g3")]
    assert m.ready_count() == 1


def test_satisfiable(m):
    assert not m.satisfiable({}, [])                      # no workers at all
    m.add_worker("a", {"UUID": "a", "arch": "arm"}, ["g1"])
    m.add_worker("b", {"UUID": "b", "arch": "x86", "usb": "yes"}, [])
    assert m.satisfiable({}, [])
    assert m.satisfiable({"arch": "arm"}, [])
    assert m.satisfiable({"arch": "arm"}, ["g1", "g7"])
    assert not m.satisfiable({"arch": "arm"}, ["g2"])
    assert not m.satisfiable({"arch": "x86"}, ["g1"])      # b has no groups
    assert m.satisfiable({"arch": "x86", "usb": "yes"}, [])
    assert not m.satisfiable({"arch": "arm", "usb": "yes"}, [])
    assert not m.satisfiable({"ghost": "1"}, [])
    assert m.satisfiable({"UUID": "a"}, ["g1"])
    assert not m.satisfiable({"UUID": "a", "usb": "yes"}, [])
    assert not m.satisfiable({"UUID": "c"}, [])
    # any state counts, and updates/removals are seen
    m.set_idle("a", True)
    assert m.satisfiable({"arch": "arm"}, [])
    m.update_worker("a", {"UUID": "a", "arch": "riscv"}, ["g1"])
    assert not m.satisfiable({"arch": "arm"}, [])
    assert m.satisfiable({"arch": "riscv"}, ["g1"])
    m.remove_worker("a")
    assert not m.satisfiable({"arch": "riscv"}, [])
    assert not m.satisfiable({"UUID": "a"}, [])


def test_remove_and_readd(m):
    seq = Seq()
    h1 = m.add_request(1, {"arch": "arm"}, [], 1, seq())
    h2 = m.add_request(2, {"arch": "arm"}, [], 2, seq())
    m.remove_request(h1)
    with pytest.raises(KeyError):
        m.remove_request(h1)
    h1 = m.add_request(1, {"arch": "arm"}, [], 1, seq())
    with pytest.raises(KeyError):
        m.add_request(2, {}, [], 1, seq())
    m.add_worker("w", {"UUID": "w", "arch": "arm"}, [])
    m.set_idle("w", True)
    assert m.match() == [(1, "w")]
    with pytest.raises(KeyError):
        m.remove_request(h1)
    m.remove_request(h2)
    assert m.ready_count() == 0
    # worker misuse
    with pytest.raises(KeyError):
        m.add_worker("w", {}, [])
    m.remove_worker("w")
    with pytest.raises(KeyError):
        m.remove_worker("w")
    with pytest.raises(KeyError):
        m.set_idle("w", True)
    with pytest.raises(KeyError):
        m.update_worker("w", {}, [])
    m.add_worker("w", {"UUID": "w"}, [])
    assert m.idle_count() == 0
    m.set_idle("w", True)
    m.add_request(3, {}, [], 1, seq())
    assert m.match() == [(3, "w")]


def test_idle_transitions(m):
    m.add_worker("a", {"UUID": "a"}, [])
    m.add_worker("b", {"UUID": "b", "x": "1"}, [])
    m.set_idle("a", True)
    m.set_idle("a", True)           # no-op
    assert m.idle_count() == 1
    m.set_idle("a", False)
    m.set_idle("b", True)
    m.add_request(1, {}, [], 1, 1)
    assert m.match() == [(1, "b")]
    m.set_idle("a", True)
    m.remove_worker("a")            # idle worker removed
    assert m.idle_count() == 0
    m.add_request(2, {}, [], 1, 2)
    assert m.match() == []


def test_update_idle_worker_can_match(m):
    m.add_worker("a", {"UUID": "a"}, ["g1"])
    m.set_idle("a", True)
    m.add_request(1, {"arch": "arm"}, ["g2"], 1, 1)
    assert m.match() == []
    m.update_worker("a", {"UUID": "a", "arch": "arm"}, ["g1"])
    assert m.match() == []
    m.update_worker("a", {"UUID": "a", "arch": "arm"}, ["g2"])
    assert m.match() == [(1, "a")]


def test_update_changes_penalty_order(m):
    m.add_worker("a", {"UUID": "a"}, [])
    m.add_worker("b", {"UUID": "b", "x": "1"}, [])
    m.set_idle("a", True)
    m.set_idle("b", True)
    m.update_worker("a", {"UUID": "a", "x": "1", "y": "2"}, [])
    m.add_request(1, {}, [], 1, 1)
    assert m.match() == [(1, "b")]


def test_removing_pending_request(m):
    m.add_worker("a", {"UUID": "a"}, [])
    m.set_idle("a", True)
    h = m.add_request(1, {}, [], 1, 1)
    m.add_request(2, {}, [], 2, 2)
    m.remove_request(h)
    assert m.match() == [(2, "a")]


def test_freed_cap_bits_are_reused_without_confusion(m):
    # Caps nobody uses any more are forgotten and their bits handed to new caps:
    # a worker or request must never inherit what the old cap meant.
    m.add_worker("a", {"UUID": "a", "old": "1"}, [])
    h = m.add_request(1, {"gone": "x"}, [], 1, 1)
    m.remove_request(h)                       # "gone" had only this request
    m.update_worker("a", {"UUID": "a"}, [])   # "old" had only this worker
    m.add_worker("b", {"UUID": "b", "new": "2"}, [])
    m.set_idle("a", True)
    m.add_request(2, {"new": "2"}, [], 1, 2)
    m.add_request(3, {"old": "1"}, [], 1, 3)
    m.add_request(4, {"gone": "x"}, [], 1, 4)
    assert m.match() == []
    assert not m.satisfiable({"old": "1"}, []) and not m.satisfiable({"gone": "x"}, [])
    m.set_idle("b", True)
    assert m.match() == [(2, "b")]
    m.update_worker("a", {"UUID": "a", "old": "1"}, [])
    assert m.match() == [(3, "a")]
    assert m.ready_count() == 1


@pytest.mark.skipif(not _compiled_available(), reason="boruta._matcher not built")
def test_compiled_memory_returns_after_requests_with_new_keys_close():
    """1,000 requests, each with 64 keys never seen before, added (some served) and
    removed: the interned caps and trie nodes return to their baseline, and the
    matcher's C memory stops growing after the first round (it was quadratic in the
    keys of a request, and kept for good)."""
    from boruta._matcher import CompiledMatcher
    m = CompiledMatcher()
    for i in range(10):
        m.add_worker(f"w{i}", {"UUID": f"w{i}", "device_type": f"t{i % 3}"}, ["g"])
    m.set_idle("w0", True)
    m.add_request(10**6, {"device_type": "t1"}, ["g"], 1, 0)   # stays: w0 is t0
    assert m.match() == []
    base = m._interned()
    sizes = []
    for rnd in range(4):
        for r in range(250):
            n = rnd * 250 + r
            caps = {f"k{n}_{j}": "v" * j for j in range(63)}
            caps["device_type"] = "t0" if n % 50 == 0 else "t2"
            h = m.add_request(n + 1, caps, ["g"] if n % 2 else [], 1 + n % 16, n + 1)
            if n == 0:
                grown = m._interned()
                assert (grown["caps"], grown["nodes"]) == (base["caps"] + 63, base["nodes"] + 64)
            assert m.match() == []            # no worker has those keys
            m.remove_request(h)
        assert m._interned() == base
        assert m._check()
        sizes.append(m._memory_bytes())
    assert sizes[1:] == sizes[:-1]
    # what stayed still works: the waiting request goes to the first t1 worker
    m.set_idle("w1", True)
    assert m.match() == [(10**6, "w1")]
