"""A short seeded fuzz run against a live server, both ports (bench/fuzz.py; `make fuzz`: long).

The run fails on an `internal` reply, a reply that is not an envelope, a
frame left unanswered, a dead server, a state that cannot be listed
afterwards or a Traceback in the log (bench.fuzz lists what must hold).
It also checks that the frames reached where they should: a fuzzer that
only ever got `bad_frame` back would prove nothing.
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from bench import fuzz, fuzz_frames

SEED = 20240607
FRAMES = 4000


@pytest.mark.slow
def test_a_seeded_fuzz_run_finds_nothing(tmp_path: Path) -> None:
    report = fuzz.run(FRAMES, SEED, tmp_path)
    assert report.failures == [], report.summary()
    assert report.frames == FRAMES
    assert report.by_port[fuzz_frames.CLIENT] > FRAMES / 3 and report.by_port[fuzz_frames.DRYAD] > FRAMES / 4
    # Every layer answered: the envelope, the operation table, the arguments, the core.
    for code in ("bad_frame", "frame_too_large", "unsupported_version", "unknown_operation",
                 "bad_argument", "not_found", "not_registered", "invalid_address", "ok"):
        assert report.replies[code] > 0, (code, report.summary())
    assert report.replies["ok"] > FRAMES / 20, report.summary()
    assert report.requests > 20, report.summary()


def test_the_checks_catch_what_they_are_for() -> None:
    """The fuzzer's own judges: a reply that is not an envelope, and what gets no reply."""
    assert fuzz.envelope_problem({"v": 1, "id": 3, "ok": None}) is None
    assert fuzz.envelope_problem({"v": 1, "id": None, "error": {"code": "x", "message": ""}}) is None
    assert fuzz.envelope_problem({"v": 1, "id": None, "ok": 1}) == "a success reply with id None"
    assert fuzz.envelope_problem({"v": True, "id": 1, "ok": 1}) == "v is True"
    assert fuzz.envelope_problem({"v": 1, "id": 1}) == "not exactly one of ok and error"
    assert fuzz.envelope_problem({"v": 1, "id": 1, "error": {"code": "x"}}).startswith("error is")
    assert fuzz.envelope_problem([1]) == "not a map but list"
    assert fuzz.is_reply_envelope({"v": 1, "id": 4, "ok": {"username": "u"}})
    assert fuzz.is_reply_envelope({"v": 1, "id": None, "error": {"code": "c", "message": "m"}})
    assert not fuzz.is_reply_envelope({"v": 1, "id": 4, "op": "x", "ok": 1})
    assert not fuzz.is_reply_envelope({"v": 2, "id": 4, "ok": 1})
    assert not fuzz.is_reply_envelope({"v": 1, "id": 1.5, "ok": 1})


def test_frames_are_seeded() -> None:
    def frames(seed: int) -> list[tuple[str, bytes]]:
        maker = fuzz_frames.Frames(random.Random(seed), now=lambda: 1_700_000_000.0)
        return [maker.make() for _ in range(200)]

    assert frames(SEED) == frames(SEED)
    assert frames(SEED) != frames(SEED + 1)
