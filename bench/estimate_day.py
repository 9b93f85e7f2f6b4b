"""How good are the start-time estimates? A simulated day of the demo's workload.

    python -m bench.estimate_day                    # one day, seed 0
    python -m bench.estimate_day --days 3 --seeds 0,1,2 --load 0.9

The demo's farm (boruta.sim.demo: 8 rpi4, 6 odroid-xu4, 6 artik530) and its
mix of wishes (WANTS) and users (alice asks priorities 2..8, bob 9..16), on
the in-process farm (real Scheduler, manual clock). Requests arrive as a
Poisson process sized for the wanted load; a job holds its board for a
lognormal time around its device type's median (JOB_MEDIANS, sigma SIGMA,
below the job timeout) and is then closed. Each request that has to wait is
asked `expected_start` at once; its actual start is when the scheduler
assigns it. The error of a request: |estimate - actual| / actual wait. The
first WARMUP seconds only fill the duration books and are not scored.

For comparison, an *oracle* that knows when every running job will really
end (which the scheduler cannot) is scored too: it takes the candidates'
true ends in order, then one job every mean duration per worker. The gap
between the two is what the randomness of job durations costs.
"""
from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import statistics
import sys
from typing import Any

from boruta.core import effects
from boruta.core.estimate import common_period, Slot
from boruta.core.explain import IN_SERVICE
from boruta.core.types import ReqState
from boruta.sim.demo import BOARDS, USERS, WANTS
from boruta.testing import InProcessFarm
from boruta.testing.farm import wuuid

DAY = 86400.0
WARMUP = 3600.0
JOB_MEDIANS = {"rpi4": 600.0, "odroid-xu4": 900.0, "artik530": 300.0}
SIGMA = 0.5
LONG_WAIT = 600.0                # s: waits from this long on are also scored apart
JOB_CAP = 3000.0                 # below the default job timeout (3600 s): jobs are closed


def _arrival_rate(load: float, sigma: float) -> float:
    """Requests per second so that the farm is busy `load` of the time, roughly (every
    wish counted at its boards' median: the busier the farm, the longer the queues)."""
    boards = sum(count for count, _ in BOARDS)
    by_type = {caps["device_type"]: caps for _, caps in BOARDS}
    mean_median = statistics.mean(
        statistics.mean(JOB_MEDIANS[t] for t, caps in by_type.items()
                        if all(caps.get(k) == v for k, v in want.items()))
        for want in WANTS)
    mean_job = mean_median * math.exp(sigma ** 2 / 2)          # lognormal mean
    return load * boards / mean_job


def _oracle(sched, req_id: int, true_end: dict[int, float]) -> float | None:
    """The expected start had the scheduler known when each running job ends."""
    now, req = sched._now, sched._requests[req_id]
    candidates = sched._matcher.candidates(req.match_caps, req.groups)
    ahead = sched._matcher.count_ahead(req.priority, req.seq, candidates)
    slots = []
    for uuid in candidates:
        worker = sched._workers[uuid]
        stats = sched.job_durations.stats(worker.caps.get("device_type", ""))
        if worker.state in IN_SERVICE and stats is not None:
            slots.append(Slot(true_end.get(worker.job, now) if worker.job else now, stats.mean))
    if not slots:
        return None
    firsts = sorted(s.free_at for s in slots)
    rounds, index = divmod(ahead, len(firsts))
    return max(now, firsts[index] + rounds * common_period(slots))


def simulate(seed: int = 0, days: float = 1.0, load: float = 0.85,
             sigma: float = SIGMA) -> dict[str, Any]:
    rng = random.Random(f"estimate-day:{seed}")
    farm = InProcessFarm()
    sched = farm.scheduler
    type_of: dict[str, str] = {}
    n = 0
    for count, caps in BOARDS:
        for _ in range(count):
            farm.idle(wuuid(n), caps)
            type_of[wuuid(n)] = caps["device_type"]
            n += 1
    rate = _arrival_rate(load, sigma)
    start = farm.clock.now()
    end = start + days * DAY
    ends: list[tuple[float, int]] = []              # (job end, request)
    true_end: dict[int, float] = {}                 # running job -> when it will end
    submitted: dict[int, tuple[float, float | None, float | None]] = {}   # submit, estimates
    results: list[tuple[float, float, float, float]] = []   # submit, estimate, oracle, start
    no_estimate = immediate = 0
    seen = len(farm.log)

    def collect_starts() -> None:
        nonlocal seen
        now = farm.clock.now()
        for e in farm.log[seen:]:
            if isinstance(e, effects.StartJob):
                median = JOB_MEDIANS[type_of[e.worker_uuid]]
                hold = min(JOB_CAP, rng.lognormvariate(math.log(median), sigma))
                heapq.heappush(ends, (now + hold, e.req_id))
                true_end[e.req_id] = now + hold
                if e.req_id in submitted:
                    at, estimate, oracle = submitted.pop(e.req_id)
                    if estimate is not None and oracle is not None and at >= start + WARMUP:
                        results.append((at, estimate, oracle, now))
        seen = len(farm.log)

    next_arrival = start + rng.expovariate(rate)
    while True:
        now = farm.clock.now()
        step = min(next_arrival, ends[0][0] if ends else math.inf)
        if step >= end:
            break
        farm.tick(step - now)
        collect_starts()
        if ends and ends[0][0] <= step:
            _, req_id = heapq.heappop(ends)
            del true_end[req_id]
            farm.done(req_id)
            collect_starts()
            continue
        user = "alice" if rng.random() < 0.4 else "bob"
        priority = rng.randint(*USERS[user])
        req_id = farm.request(rng.choice(WANTS), priority)
        if sched.request_state(req_id) is ReqState.WAIT:
            estimate = sched.expected_start(req_id)
            submitted[req_id] = (step, estimate.start, _oracle(sched, req_id, true_end))
            if estimate.start is None:
                no_estimate += 1
        else:
            immediate += 1
        collect_starts()
        next_arrival = step + rng.expovariate(rate)
    waited = [(at, est, orc, actual) for at, est, orc, actual in results if actual > at]
    errors = sorted(abs(est - actual) / (actual - at) for at, est, _, actual in waited)
    oracle = sorted(abs(orc - actual) / (actual - at) for at, _, orc, actual in waited)
    signed = [(est - actual) / (actual - at) for at, est, _, actual in waited]
    long = [(at, est, orc, actual) for at, est, orc, actual in waited if actual - at >= LONG_WAIT]
    long_errors = sorted(abs(est - actual) / (actual - at) for at, est, _, actual in long)
    long_signed = sorted((est - actual) / (actual - at) for at, est, _, actual in long)
    long_oracle = sorted(abs(orc - actual) / (actual - at) for at, _, orc, actual in long)

    def pct(values: list[float], q: float = 0.5) -> float | None:
        return round(100 * values[int(q * len(values))], 1) if values else None

    return {"seed": seed, "days": days, "load": load, "sigma": sigma,
            "arrivals_per_hour": round(rate * 3600, 1), "scored": len(errors),
            "started_at_once": immediate, "without_estimate": no_estimate,
            "still_waiting_at_end": len(submitted),
            "median_wait_s": round(statistics.median(a - t for t, _, _, a in waited))
            if waited else None,
            "median_abs_error_pct": pct(errors), "p90_abs_error_pct": pct(errors, 0.9),
            "median_signed_error_pct": pct(sorted(signed)),
            "within_25pct_share": round(sum(e <= 0.25 for e in errors) / len(errors), 2)
            if errors else None,
            "long_waits": len(long), "long_wait_median_abs_error_pct": pct(long_errors),
            "long_wait_median_signed_error_pct": pct(long_signed),
            "long_wait_oracle_median_abs_error_pct": pct(long_oracle),
            "oracle_median_abs_error_pct": pct(oracle)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=1.0)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    parser.add_argument("--load", type=float, default=0.85, help="busy share wanted (0.85)")
    parser.add_argument("--sigma", type=float, default=SIGMA,
                        help=f"spread of job durations (lognormal sigma, {SIGMA})")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds: not a list of integers: {args.seeds!r}")
    if not 0 < args.load < 2 or args.days <= 0 or args.sigma < 0:
        parser.error("--load must be in (0, 2), --days positive, --sigma not negative")
    results = [simulate(seed, args.days, args.load, args.sigma) for seed in seeds]
    for r in results:
        print(f"seed {r['seed']} sigma {r['sigma']:g}: {r['scored']} waiting requests scored "
              f"({r['started_at_once']} started at once, {r['arrivals_per_hour']}/h), median wait "
              f"{r['median_wait_s']} s; median |error| {r['median_abs_error_pct']}% of the wait "
              f"(p90 {r['p90_abs_error_pct']}%, median signed {r['median_signed_error_pct']}%); "
              f"{100 * r['within_25pct_share']:.0f}% within 25%; waits >= {LONG_WAIT:g} s "
              f"({r['long_waits']}): median |error| {r['long_wait_median_abs_error_pct']}% "
              f"(signed {r['long_wait_median_signed_error_pct']}%, oracle "
              f"{r['long_wait_oracle_median_abs_error_pct']}%); "
              f"oracle {r['oracle_median_abs_error_pct']}%",
              flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
