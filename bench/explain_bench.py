"""How long `Scheduler.explain` takes for one request in a big farm.

    python -m bench.explain_bench                  # compiled 10,000 x 100,000; plain 1,000 x 10,000
    python -m bench.explain_bench --quick          # smaller, for a smoke run
    python -m bench.explain_bench --json out.json

The state is S2's (bench/scenarios.py): every worker RUNNING a job, all R
farm requests WAITING (~90% ready, ~10% before their ValidAfter). Every device type has
recent job durations, so each explanation computes its estimate too. Timed:
`explain(id)` for requests drawn from the backlog (the median and the 99th
percentile of N calls), and its two matcher questions alone (`candidates`,
`count_ahead`). The heap is frozen after the setup, as the server's is. The plain-Python matcher is measured on a smaller farm: its
setup at the full size takes far too long.
"""
from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from typing import Any

from bench import scenarios as sc
from bench.e2e_common import write_json
from bench.farm import DEVICE_TYPES, farm


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def busy_farm(kind: str, W: int, R: int, seed: int):
    """S2's starting point: every worker RUNNING a job, the R farm requests WAITING."""
    f = farm(W, R, seed)
    sched, clock = sc.sched_with_workers(kind, f.workers)
    for w in f.workers:
        sc.sched_bring_idle(sched, w["uuid"])
    sc._give_jobs(sched, f.workers, sc.utc_datetime(clock.now() + 14 * 86400.0))
    sc.sched_queue(sched, clock, f.requests)
    return sched


def measure(kind: str, W: int, R: int, calls: int, seed: int = sc.SEED) -> dict[str, Any]:
    t0 = time.perf_counter()
    sched = busy_farm(kind, W, R, seed)
    setup = time.perf_counter() - t0
    rng = random.Random(f"explain:{seed}")
    for device_type in DEVICE_TYPES:
        for _ in range(8):
            sched.job_durations.record(device_type, rng.uniform(60.0, 1800.0))
    waiting = list(sched._ready.values())
    gc.collect()
    gc.freeze()              # as the server does (boruta.server.gcfreeze): no full scans of the farm
    picks = [rng.choice(waiting) for _ in range(calls)]
    explain_ms, cand_ms, ahead_ms = [], [], []
    ns = time.perf_counter_ns
    matcher = sched._matcher
    aheads, cands = [], []
    for req in picks:
        t = ns()
        e = sched.explain(req.id)
        explain_ms.append((ns() - t) / 1e6)
        aheads.append(e.ahead)
        cands.append(e.candidates)
        t = ns()
        uuids = matcher.candidates(req.match_caps, req.groups)
        cand_ms.append((ns() - t) / 1e6)
        t = ns()
        matcher.count_ahead(req.priority, req.seq, uuids)
        ahead_ms.append((ns() - t) / 1e6)
    return {"kind": kind, "W": W, "R": R, "ready": len(waiting),
            "waiting": sum(1 for _ in sched._waiting()), "calls": calls,
            "setup_s": round(setup, 1),
            "explain_median_ms": round(statistics.median(explain_ms), 3),
            "explain_p90_ms": round(_percentile(explain_ms, 0.90), 3),
            "explain_p99_ms": round(_percentile(explain_ms, 0.99), 3),
            "candidates_median_ms": round(statistics.median(cand_ms), 3),
            "count_ahead_median_ms": round(statistics.median(ahead_ms), 3),
            "median_candidates": statistics.median(cands),
            "median_ahead": statistics.median(aheads)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller farms")
    parser.add_argument("--json", metavar="FILE", help="write the results here too")
    args = parser.parse_args(argv)
    runs = ([("compiled", 1_000, 10_000, 200), ("reference", 300, 3_000, 20)] if args.quick
            else [("compiled", 10_000, 100_000, 500), ("reference", 1_000, 10_000, 50)])
    results = []
    for kind, W, R, calls in runs:
        if kind == "compiled" and not sc.compiled_available():
            print("compiled matcher: not built", file=sys.stderr)
            continue
        result = measure(kind, W, R, calls)
        results.append(result)
        print(f"{kind:9} W={W:>6,} R={R:>7,} waiting={result['waiting']:>7,} "
              f"(ready {result['ready']:,})  "
              f"explain median {result['explain_median_ms']:.3f} ms "
              f"(p90 {result['explain_p90_ms']:.3f}, p99 {result['explain_p99_ms']:.3f}), candidates "
              f"{result['candidates_median_ms']:.3f} ms, count_ahead "
              f"{result['count_ahead_median_ms']:.3f} ms; median {result['median_candidates']} "
              f"candidates, {result['median_ahead']} ahead  [setup {result['setup_s']} s]",
              flush=True)
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
