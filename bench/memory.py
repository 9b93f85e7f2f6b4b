"""Scenario S4: the memory a waiting request costs, each size in a fresh process.

`python -m bench` runs it through `s4_run`; the measurement itself runs in a
child (`python -m bench.memory s4-child SPEC`) so that one size's heap never
counts in another's.
"""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from typing import Any

from bench.farm import farm
from bench.scenarios import (DEFAULT_BUDGET, SEED, OutOfTime, utc_datetime, drain_changes,
                             sched_with_workers, time_budget)
from boruta.core.matching import make_matcher
from boruta.core.types import UserInfo

def rss_bytes() -> int:
    """Resident set size from /proc/self/statm (no psutil)."""
    with open("/proc/self/statm") as fh:
        resident = int(fh.read().split()[1])
    return resident * os.sysconf("SC_PAGE_SIZE")


def _memory_bytes(m) -> int | None:
    for name in ("memory_bytes", "_memory_bytes"):
        fn = getattr(m, name, None)
        if callable(fn):
            return int(fn())
    return None


def _s4_matcher_child(kind: str, W: int, R: int, seed: int, budget: float,
                      mode: str) -> dict[str, Any]:
    """In a fresh process: bytes the matcher holds for R ready requests.

    The requests are built first (they are the caller's, not the matcher's)
    and kept alive throughout (freeing anything before the first reading
    would let the matcher reuse that memory unseen), then handed over in
    (priority, seq) order: the final state is the same as in arrival order,
    and the plain matcher's sorted-list insertion stays O(log R) instead of
    O(R) per request. `mode` is "rss" (RSS growth, no tracing) or
    "tracemalloc" (Python allocator growth, which includes the compiled
    matcher's PyMem arrays and its Python objects).
    """
    import tracemalloc
    f = farm(W, R, seed)
    args = sorted((r["priority"], r["id"], r["caps"], r["groups"]) for r in f.requests)
    m = make_matcher(kind)
    for w in f.workers:
        m.add_worker(w["uuid"], w["caps"], w["groups"])
    gc.collect()
    if mode == "tracemalloc":
        tracemalloc.start()
    rss0 = rss_bytes()
    traced0 = tracemalloc.get_traced_memory()[0] if mode == "tracemalloc" else 0
    mb0 = _memory_bytes(m)
    n = 0
    finished = False
    add = m.add_request
    t0 = time.perf_counter()
    try:
        with time_budget(budget):
            for prio, req_id, caps, groups in args:
                add(req_id, caps, groups, prio, req_id)
                n += 1
            finished = True
    except OutOfTime:
        pass
    seconds = time.perf_counter() - t0
    gc.collect()
    rss1 = rss_bytes()
    traced1 = tracemalloc.get_traced_memory()[0] if mode == "tracemalloc" else 0
    mb1 = _memory_bytes(m)
    return {"kind": kind, "level": "matcher", "mode": mode, "W": W, "R": R, "n": n,
            "finished": finished, "seconds": seconds, "rss_delta": rss1 - rss0,
            "traced_delta": traced1 - traced0 if mode == "tracemalloc" else None,
            "memory_bytes_delta": None if mb0 is None or mb1 is None else mb1 - mb0,
            "ready": m.ready_count()}


def _s4_scheduler_child(kind: str, W: int, R: int, seed: int, budget: float) -> dict[str, Any]:
    """In a fresh process: RSS growth of a Scheduler taking R new_request calls.

    The workers are registered and stay in MAINTENANCE, so every request
    waits (90% ready in the matcher, 10% in the timer heap until their
    ValidAfter). Arguments are built before the first measurement and kept
    alive; effects are drained every 1024 calls, as the shell drains after
    each.
    """
    f = farm(W, R, seed)
    s, clock = sched_with_workers(kind, f.workers)
    now = clock.now()
    args = [(r["caps"], r["priority"], UserInfo(r["groups"]) if r["groups"] else None,
             None if r["valid_after"] is None else utc_datetime(now + r["valid_after"]),
             utc_datetime(now + r["deadline"])) for r in f.requests]
    gc.collect()
    rss0 = rss_bytes()
    n = 0
    finished = False
    new = s.new_request
    t0 = time.perf_counter()
    try:
        with time_budget(budget):
            for caps, prio, owner, va, dl in args:
                new(caps, prio, owner, va, dl)
                n += 1
                if not n & 1023:
                    s.drain_effects()
                    drain_changes(s)
            finished = True
    except OutOfTime:
        pass
    seconds = time.perf_counter() - t0
    s.drain_effects()
    drain_changes(s)
    gc.collect()
    rss1 = rss_bytes()
    counts = s.counts()
    return {"kind": kind, "level": "scheduler", "mode": "rss", "W": W, "R": R, "n": n,
            "finished": finished, "seconds": seconds, "rss_delta": rss1 - rss0,
            "traced_delta": None, "memory_bytes_delta": None, "ready": counts["ready"],
            "requests": counts["requests"]}


def s4_run(level: str, kind: str, W: int, R: int, seed: int = SEED,
           budget: float | None = DEFAULT_BUDGET, mode: str = "rss",
           setup_timeout: float = 900.0) -> dict[str, Any]:
    """Run one S4 measurement in a fresh interpreter; returns its result dict.

    `budget` limits the loading phase (None: no limit); the subprocess as a
    whole is killed after budget + setup_timeout.
    """
    spec = {"level": level, "kind": kind, "W": W, "R": R, "seed": seed, "budget": budget,
            "mode": mode}
    env = dict(os.environ)
    env.pop("BORUTA_PUREPYTHON", None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        proc = subprocess.run([sys.executable, "-m", "bench.memory", "s4-child",
                               json.dumps(spec)], cwd=root, env=env, capture_output=True,
                              text=True, timeout=(budget or 0) + setup_timeout)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"subprocess timed out after {(budget or 0) + setup_timeout:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return {**spec, "error": f"exit {proc.returncode}: {tail[0]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _child_main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    if spec["level"] == "matcher":
        out = _s4_matcher_child(spec["kind"], spec["W"], spec["R"], spec["seed"],
                                spec["budget"], spec["mode"])
    else:
        out = _s4_scheduler_child(spec["kind"], spec["W"], spec["R"], spec["seed"],
                                  spec["budget"])
    print(json.dumps(out))
    return 0




if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "s4-child":
        sys.exit(_child_main(sys.argv[2:]))
    print("usage: python -m bench  (this module is S4's child process)", file=sys.stderr)
    sys.exit(2)
