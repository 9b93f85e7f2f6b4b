"""`Scheduler.explain`: why a request waits, on a real scheduler (in-process farm).

Each test builds a small farm whose answer is known by construction (which
workers serve, in which states, which term rules out which worker, who is
ahead) and checks the explanation against it, with both matchers. The text
rendering of the CLI is checked on the same documents.
"""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from boruta.cli.explain_output import format_explanation, start_phrase
from boruta.core.errors import NotFoundError
from boruta.core.explain import to_doc
from boruta.core.matching import CompiledMatcher
from boruta.core.types import ReqState, UserInfo, WorkerState
from boruta.testing import InProcessFarm
from boruta.testing.farm import wuuid

MATCHERS = ["reference", pytest.param("compiled", marks=pytest.mark.skipif(
    CompiledMatcher is None, reason="extension not built"))]
RPI4_USB = {"device_type": "rpi4", "usb": "yes"}
GROUP_A = UserInfo(("a",))


def _farm(matcher: str) -> InProcessFarm:
    """Candidates for rpi4+usb, group a: one per worker state (none IDLE, so requests
    wait); and workers failing on one term each: usb (2), device_type (1), groups (1)."""
    farm = InProcessFarm(matcher=matcher)
    states = [WorkerState.RUN, WorkerState.RUN, WorkerState.PREPARE, WorkerState.BUSY,
              WorkerState.MAINTENANCE, WorkerState.FAIL]
    for n, state in enumerate(states):
        farm.bring(wuuid(n), state, RPI4_USB)
    for n in range(6, 10):
        caps = {**RPI4_USB, "usb": "no"} if n < 8 else (
            {**RPI4_USB, "device_type": "rpi3"} if n == 8 else RPI4_USB)
        farm.register(wuuid(n), caps)
        farm.scheduler.set_groups(wuuid(n), ["b"] if n == 9 else ["a"])
    for n in range(6):
        farm.scheduler.set_groups(wuuid(n), ["a"])
    farm.drain()
    return farm


@pytest.mark.parametrize("matcher", MATCHERS)
def test_candidates_by_state_and_nearest_misses(matcher):
    farm = _farm(matcher)
    req_id = farm.request(RPI4_USB, owner=GROUP_A)
    e = farm.scheduler.explain(req_id)
    assert e.state is ReqState.WAIT and e.ready
    assert e.candidates == 6
    assert e.by_state == {"RUNNING": 2, "PREPARE": 1, "BUSY": 1, "MAINTENANCE": 1, "FAILED": 1}
    misses = {m.term: (m.workers, m.examples) for m in e.misses}
    assert misses == {"usb=yes": (2, (wuuid(6), wuuid(7))),
                      "device_type=rpi4": (1, (wuuid(8),)),
                      "groups": (1, (wuuid(9),))}
    assert [m.term for m in e.misses][0] == "usb=yes"       # most workers first
    assert e.held_by == "busy"                               # nobody ahead, nobody idle


@pytest.mark.parametrize("matcher", MATCHERS)
def test_ahead_counts_only_requests_its_candidates_serve_first(matcher):
    farm = _farm(matcher)
    early = farm.request(RPI4_USB, owner=GROUP_A)                    # ahead (FIFO)
    farm.request({"device_type": "rpi3"}, priority=1, owner=GROUP_A)  # other workers only
    farm.request({"device_type": "rpi4"}, priority=9)               # behind (priority)
    req_id = farm.request(RPI4_USB, owner=GROUP_A)
    urgent = farm.request({"usb": "yes"}, priority=2)               # later but before it
    e = farm.scheduler.explain(req_id)
    assert (e.ahead, e.held_by) == (2, "queue")
    assert farm.scheduler.explain(early).ahead == 1                 # only `urgent`
    # `urgent` (any board with usb) shares the rpi3 with the priority-1 rpi3 request
    assert farm.scheduler.explain(urgent).ahead == 1


@pytest.mark.parametrize("matcher", MATCHERS)
def test_held_by_valid_after_and_by_no_candidates(matcher):
    farm = _farm(matcher)
    later = farm.request(RPI4_USB, owner=GROUP_A, valid_after=farm.later(600))
    e = farm.scheduler.explain(later)
    assert (e.ready, e.held_by, e.candidates) == (False, "valid_after", 6)
    nowhere = farm.request({"device_type": "rpi9"}, queue_unsatisfiable=True)
    e = farm.scheduler.explain(nowhere)
    assert (e.held_by, e.candidates, e.by_state) == ("no_candidates", 0, {})
    # its one term rules out every registered worker
    assert [(m.term, m.workers) for m in e.misses] == [("device_type=rpi9", 10)]
    assert e.estimate is not None and e.estimate.start is None


@pytest.mark.parametrize("matcher", MATCHERS)
def test_expression_terms_are_named_by_their_text(matcher):
    farm = _farm(matcher)
    farm.register(wuuid(20), {"device_type": "rpi4", "usb": "yes", "serial": "9600"})
    farm.register(wuuid(21), {"device_type": "rpi4", "usb": "yes", "serial": "115200"})
    req_id = farm.scheduler.new_request({"device_type": "rpi4"}, 8, expr=["serial in 9600"])
    farm.drain()
    e = farm.scheduler.explain(req_id)
    assert e.candidates == 1
    assert {m.term: m.examples for m in e.misses}["serial in 9600"][:1] == (wuuid(0),)


@pytest.mark.parametrize("matcher", MATCHERS)
def test_a_request_not_waiting_is_said_so(matcher):
    farm = InProcessFarm(matcher=matcher)
    farm.idle(wuuid(1), {"device_type": "rpi4"})
    req_id = farm.request({"device_type": "rpi4"})
    e = farm.scheduler.explain(req_id)
    assert (e.state, e.held_by, e.ahead, e.estimate, e.misses) == (
        ReqState.INPROGRESS, "not_waiting", None, None, ())
    assert format_explanation(to_doc(e)) == f"Request {req_id}: IN PROGRESS, priority 8."
    with pytest.raises(NotFoundError):
        farm.scheduler.explain(9999)


def test_the_text_says_what_the_document_says():
    farm = _farm("reference")
    farm.request(RPI4_USB, owner=GROUP_A)
    req_id = farm.request(RPI4_USB, owner=GROUP_A)
    doc = to_doc(farm.scheduler.explain(req_id))
    text = format_explanation(doc).splitlines()
    assert text[0] == f"Request {req_id}: WAITING, priority 8."
    assert text[1] == "Held because requests ahead of it take its candidate workers first."
    assert text[2] == ("Candidate workers: 6 (2 RUNNING, 1 PREPARE, 1 BUSY, 1 MAINTENANCE, "
                       "1 FAILED).")
    assert text[3] == "Ahead of it on those workers: 1 ready request."
    assert f"  usb=yes: 2 workers (e.g. {wuuid(6)}, {wuuid(7)})" in text
    # no job ended yet: no estimate, and the text says why
    assert text[-1] == "Estimate: none (no job has ended yet: no durations to go by)."


def test_start_phrase_warns_when_the_deadline_is_unlikely():
    now = datetime(2027, 1, 15, 8, 0, tzinfo=timezone.utc)
    doc = {"expected_start": "2027-01-15T08:05:00Z", "late": False,
           "deadline": "2027-01-15T09:00:00Z"}
    assert start_phrase(doc, now) == "expected to start in about 5m (2027-01-15 08:05:00Z)"
    late = start_phrase({**doc, "late": True}, now)
    assert late.endswith("WARNING: its deadline (2027-01-15T09:00:00Z) is unlikely to be met")
    assert start_phrase({"expected_start": None}, now) is None
