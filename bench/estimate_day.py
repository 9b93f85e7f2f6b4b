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

Scored apart: requests queued behind others (ahead >= 1 at submit) and waits
of LONG_WAIT or more. The second split is chosen by the outcome: a wait that
turned out long is, most often, one that went worse than its odds, so even a
perfect median looks low there; the first split is fair.

`--floor N` adds the *law oracle*: it knows the workload's law (durations,
arrivals, priorities, as drawn here) and the whole farm at submit, and plays
the rest of the day N times for a sample of the requests (FLOOR_SHARE). Its
median is as good as a point estimate can be with no more than the scheduler
knows; the best share of requests it can expect within 25% bounds any
estimate's (the median |error| is under 25% only if that share is over half).
"""
from __future__ import annotations

import argparse
import bisect
import heapq
import math
import random
import statistics
import sys
from typing import Any

from bench.e2e_common import write_json
from boruta.core import effects
from boruta.core.estimate import common_period, Slot
from boruta.core.explain import IN_SERVICE
from boruta.core.types import ReqState, WorkerState
from boruta.sim.demo import BOARDS, USERS, WANTS
from boruta.testing import InProcessFarm
from boruta.testing.farm import wuuid

DAY = 86400.0
WARMUP = 3600.0
JOB_MEDIANS = {"rpi4": 600.0, "odroid-xu4": 900.0, "artik530": 300.0}
SIGMA = 0.5
LONG_WAIT = 600.0                # s: waits from this long on are also scored apart
JOB_CAP = 3000.0                 # below the default job timeout (3600 s): jobs are closed
FLOOR_SHARE = 0.25               # of the scored requests, the law oracle plays out


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


def _draw_hold(rng: random.Random, device_type: str, sigma: float,
               elapsed: float | None = None) -> float:
    """A job's hold as the day draws it; with `elapsed`, what is left of one that ran that
    long (drawn from the law given that it did)."""
    mu = math.log(JOB_MEDIANS[device_type])
    if elapsed is None or sigma == 0:
        hold = min(JOB_CAP, math.exp(mu) if sigma == 0 else rng.lognormvariate(mu, sigma))
        return hold if elapsed is None else max(0.0, hold - elapsed)
    normal = statistics.NormalDist()
    ran = normal.cdf((math.log(max(elapsed, 1e-9)) - mu) / sigma)
    u = min(ran + (1.0 - ran) * rng.random(), 1.0 - 1e-12)
    return max(0.0, min(JOB_CAP, math.exp(mu + sigma * normal.inv_cdf(u))) - elapsed)


def _snapshot(sched, req_id: int) -> tuple[list, list]:
    """The farm at submit as the law oracle needs it: each worker's caps and its running
    job's age (None when idle); the waiting requests (priority, seq, wants, is it this one)."""
    now = sched._now
    workers = []
    for worker in sched._workers.values():
        job = sched._requests.get(worker.job) if worker.job is not None else None
        age = now - sched._job_start(job) if worker.state is WorkerState.RUN and job else None
        workers.append((dict(worker.caps), age))
    queue = sorted((r.priority, r.seq, dict(r.match_caps), r.id == req_id)
                   for r in sched._requests.values() if r.state is ReqState.WAIT)
    return workers, queue


def _play_out(rng: random.Random, workers: list, queue: list, rate: float,
              sigma: float) -> float:
    """One future of the day from a snapshot: the wait until the marked request starts.
    The scheduler's rule: a freed worker takes the best waiting request it serves, an
    arrival an idle worker that serves it."""
    def serves(caps: dict, wants: dict) -> bool:
        return all(caps.get(k) == v for k, v in wants.items())

    frees = [(_draw_hold(rng, caps["device_type"], sigma, age), i)
             for i, (caps, age) in enumerate(workers) if age is not None]
    heapq.heapify(frees)
    idle = {i for i, (_, age) in enumerate(workers) if age is None}
    queue = list(queue)
    seq = 1 << 40
    arrival = rng.expovariate(rate)
    while True:
        if frees and frees[0][0] <= arrival:
            t, i = heapq.heappop(frees)
            caps = workers[i][0]
            for j, (_, _, wants, mine) in enumerate(queue):
                if serves(caps, wants):
                    if mine:
                        return t
                    del queue[j]
                    heapq.heappush(frees, (t + _draw_hold(rng, caps["device_type"], sigma), i))
                    break
            else:
                idle.add(i)
            continue
        t, seq = arrival, seq + 1
        user = "alice" if rng.random() < 0.4 else "bob"
        priority, wants = rng.randint(*USERS[user]), rng.choice(WANTS)
        taker = next((i for i in sorted(idle) if serves(workers[i][0], wants)), None)
        if taker is None:
            bisect.insort(queue, (priority, seq, wants, False))
        else:
            idle.discard(taker)
            heapq.heappush(frees, (t + _draw_hold(rng, workers[taker][0]["device_type"], sigma),
                                   taker))
        arrival = t + rng.expovariate(rate)


def _best_share(waits: list[float], within: float = 0.25) -> float:
    """The largest share of these (sorted) waits one point can be within `within` of."""
    best = 0
    for wait in waits:
        for point in (wait * (1 - within), wait, wait * (1 + within)):
            lo, hi = point / (1 + within), point / (1 - within)
            best = max(best, bisect.bisect_right(waits, hi) - bisect.bisect_left(waits, lo))
    return best / len(waits)


def simulate(seed: int = 0, days: float = 1.0, load: float = 0.85,
             sigma: float = SIGMA, floor: int = 0) -> dict[str, Any]:
    rng = random.Random(f"estimate-day:{seed}")
    law_rng = random.Random(f"estimate-day-law:{seed}")     # apart: the day stays the same
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
    submitted: dict[int, tuple] = {}        # submit, estimate, oracle, ahead, law oracle's waits
    results: list[tuple] = []               # submit, estimate, oracle, start, ahead, law's waits
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
                    at, estimate, oracle, ahead, law = submitted.pop(e.req_id)
                    if estimate is not None and oracle is not None and at >= start + WARMUP:
                        results.append((at, estimate, oracle, now, ahead, law))
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
        sched._request_filed(sched._requests[req_id])   # once: a no-op where new_request does it
        if sched.request_state(req_id) is ReqState.WAIT:
            explanation = sched.explain(req_id)
            estimate = explanation.estimate
            law = None
            if floor and step >= start + WARMUP and law_rng.random() < FLOOR_SHARE:
                workers, queue = _snapshot(sched, req_id)
                law = sorted(_play_out(law_rng, workers, queue, rate, sigma)
                             for _ in range(floor))
            submitted[req_id] = (step, estimate.start, _oracle(sched, req_id, true_end),
                                 explanation.ahead, law)
            if estimate.start is None:
                no_estimate += 1
        else:
            immediate += 1
        collect_starts()
        next_arrival = step + rng.expovariate(rate)
    waited = [r for r in results if r[3] > r[0]]          # started later than filed

    def errors(rows: list[tuple], signed: bool = False, oracle: bool = False) -> list[float]:
        out = [((orc if oracle else est) - actual) / (actual - at)
               for at, est, orc, actual, _, _ in rows]
        return sorted(out if signed else map(abs, out))

    long = [r for r in waited if r[3] - r[0] >= LONG_WAIT]
    queued = [r for r in waited if r[4]]
    played = [r for r in waited if r[5]]
    law_errors = sorted(abs(statistics.median(law) - (actual - at)) / (actual - at)
                        for at, _, _, actual, _, law in played)
    shares = [_best_share(law) for *_, law in played]
    err = errors(waited)

    def pct(values: list[float], q: float = 0.5) -> float | None:
        return round(100 * values[int(q * len(values))], 1) if values else None

    return {"seed": seed, "days": days, "load": load, "sigma": sigma,
            "arrivals_per_hour": round(rate * 3600, 1), "scored": len(err),
            "started_at_once": immediate, "without_estimate": no_estimate,
            "still_waiting_at_end": len(submitted),
            "median_wait_s": round(statistics.median(r[3] - r[0] for r in waited))
            if waited else None,
            "median_abs_error_pct": pct(err), "p90_abs_error_pct": pct(err, 0.9),
            "median_signed_error_pct": pct(errors(waited, signed=True)),
            "within_25pct_share": round(sum(e <= 0.25 for e in err) / len(err), 2)
            if err else None,
            "queued": len(queued), "queued_median_abs_error_pct": pct(errors(queued)),
            "queued_median_signed_error_pct": pct(errors(queued, signed=True)),
            "long_waits": len(long), "long_wait_median_abs_error_pct": pct(errors(long)),
            "long_wait_median_signed_error_pct": pct(errors(long, signed=True)),
            "long_wait_oracle_median_abs_error_pct": pct(errors(long, oracle=True)),
            "oracle_median_abs_error_pct": pct(errors(waited, oracle=True)),
            "law_played": len(played),
            "law_model_median_abs_error_pct": pct(errors(played)),
            "law_median_abs_error_pct": pct(law_errors),
            "law_best_within_25pct_share": round(statistics.mean(shares), 2)
            if shares else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=1.0)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    parser.add_argument("--load", type=float, default=0.85, help="busy share wanted (0.85)")
    parser.add_argument("--sigma", type=float, default=SIGMA,
                        help=f"spread of job durations (lognormal sigma, {SIGMA})")
    parser.add_argument("--floor", type=int, default=0, metavar="N",
                        help="play the day out N times per sampled request (the law oracle)")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds: not a list of integers: {args.seeds!r}")
    if not 0 < args.load < 2 or args.days <= 0 or args.sigma < 0 or args.floor < 0:
        parser.error("--load must be in (0, 2), --days positive, --sigma and --floor "
                     "not negative")
    results = [simulate(seed, args.days, args.load, args.sigma, args.floor) for seed in seeds]
    for r in results:
        print(f"seed {r['seed']} sigma {r['sigma']:g}: {r['scored']} waiting requests scored "
              f"({r['started_at_once']} started at once, {r['arrivals_per_hour']}/h), median wait "
              f"{r['median_wait_s']} s; median |error| {r['median_abs_error_pct']}% of the wait "
              f"(p90 {r['p90_abs_error_pct']}%, median signed {r['median_signed_error_pct']}%); "
              f"{100 * r['within_25pct_share']:.0f}% within 25%; queued behind others "
              f"({r['queued']}): median |error| {r['queued_median_abs_error_pct']}% (signed "
              f"{r['queued_median_signed_error_pct']}%); waits >= {LONG_WAIT:g} s "
              f"({r['long_waits']}): median |error| {r['long_wait_median_abs_error_pct']}% "
              f"(signed {r['long_wait_median_signed_error_pct']}%, oracle "
              f"{r['long_wait_oracle_median_abs_error_pct']}%); "
              f"oracle {r['oracle_median_abs_error_pct']}%", flush=True)
        if r["law_played"]:
            print(f"  law oracle on {r['law_played']} of them: median |error| "
                  f"{r['law_median_abs_error_pct']}% (the model on the same: "
                  f"{r['law_model_median_abs_error_pct']}%); best share within 25% it can "
                  f"expect: {100 * r['law_best_within_25pct_share']:.0f}%", flush=True)
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
