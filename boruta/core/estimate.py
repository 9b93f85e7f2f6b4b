"""When will a waiting request start? A simple, explainable guess.

The model: the request's candidate workers that are in service (IDLE,
PREPARE or RUNNING; MAINTENANCE, BUSY and FAILED ones are not expected back)
are slots. An idle or preparing one is free now. A running one is expected
to free after its job's expected remaining time r: the mean excess of the
recent jobs of its device type that ran at least as long as this one has
(never after the job's timeout). Its next jobs take p each, the mean job
duration of its type.

The `k` ready requests ahead take the first `k` frees; the request takes the
next one, and not before its ValidAfter. Free slots serve first. Then each
running job is taken as a clock that rings at rate 1/r (when, nobody can
know: only how soon on average), so the next free among them comes after
1/(sum of their rates, plus 1/p for each slot already past its first job),
and the one to free is the one expected soonest. Once every first job is
over, the c slots free c/p per second. O(c log c) whatever the queue, which
keeps `explain` fast.

Requests filed later with a better priority pass it: at their recent rate
(Arrivals), each taking the share of our workers its own candidates hold, they
take a share s of the frees. While it waits for its k + 2/3 frees, about
s (k + 2/3) of them pass it, counted low (the wait is skewed: see `passes`),
and each pass costs one more free.

It ignores what it cannot know: requests ahead that other workers take,
workers back from maintenance. How good it is: bench/estimate_day.py (most of
the error is the luck of which job ends first: even knowing the workload's law
exactly, an estimate lands within 25% of the wait for only a quarter of them).
"""
from __future__ import annotations

import bisect
import itertools
import math
from collections import Counter, deque
from dataclasses import dataclass
from typing import Callable, Collection, Iterable, NamedTuple, Sequence

from boruta.core.durations import format_duration

#: How many recent jobs per device type the estimates look at.
RING_SIZE = 64


class DurationStats:
    """Recent job durations of a device type, sorted, with what the model asks of them."""

    def __init__(self, durations: Iterable[float]) -> None:
        self.sorted = sorted(durations)
        # tail[i]: the sum of sorted[i:], for the mean of the jobs longer than some time
        self._tail = list(itertools.accumulate(reversed(self.sorted)))[::-1] + [0.0]
        self.mean = self._tail[0] / len(self.sorted)

    def freed_within(self, elapsed: float, span: float) -> float:
        """The chance that a job that has run `elapsed` seconds ends within `span` more:
        the share of the recent jobs that ran longer and ended by then (an exponential
        of half a mean job when none ran that long)."""
        i = bisect.bisect_right(self.sorted, elapsed)
        longer = len(self.sorted) - i
        if not longer:
            return 1.0 - math.exp(-2.0 * span / self.mean) if self.mean > 0 else 1.0
        return (bisect.bisect_right(self.sorted, elapsed + span) - i) / longer

    def remaining(self, elapsed: float) -> float:
        """How much longer a job that has run `elapsed` seconds is expected to run: the
        mean excess of the recent jobs that ran longer; half a mean job if none did."""
        i = bisect.bisect_right(self.sorted, elapsed)
        longer = len(self.sorted) - i
        if not longer:
            return self.mean / 2
        return self._tail[i] / longer - elapsed


class JobDurations:
    """The last RING_SIZE job durations per device type (seconds)."""

    def __init__(self, size: int = RING_SIZE) -> None:
        self._size = size
        self._rings: dict[str, deque[float]] = {}
        self._stats: dict[str, DurationStats | None] = {}      # cache, dropped on record

    def record(self, device_type: str, seconds: float) -> None:
        if seconds < 0:
            return
        ring = self._rings.get(device_type)
        if ring is None:
            ring = self._rings[device_type] = deque(maxlen=self._size)
        ring.append(seconds)
        self._stats.clear()

    def stats(self, device_type: str) -> DurationStats | None:
        """The type's recent durations; else every type's; None before any job ended."""
        if device_type not in self._stats:
            ring = self._rings.get(device_type)
            every = ring or [d for r in self._rings.values() for d in r]
            self._stats[device_type] = DurationStats(every) if every else None
        return self._stats[device_type]

    def types(self) -> dict[str, float]:
        """Each known device type's mean job duration."""
        return {t: sum(r) / len(r) for t, r in self._rings.items() if r}


#: How many recent filings the arrival rates look at.
ARRIVALS_KEPT = 256

#: What a request asks the matcher: (its match caps, its groups).
Wants = tuple[tuple[tuple[str, str], ...], tuple[str, ...]]


class Arrivals:
    """The last ARRIVALS_KEPT requests filed: when, at which priority, asking what.

    A waiting request is passed by the requests filed after it with a better
    priority; their recent rate says how many to expect while it waits."""

    def __init__(self, size: int = ARRIVALS_KEPT) -> None:
        self._ring: deque[tuple[float, int, Wants]] = deque(maxlen=size)
        self._last_id = -1

    def record(self, req_id: int, at: float, priority: int, wants: Wants) -> None:
        """Once per request (a second call for the same or an older id is ignored)."""
        if req_id <= self._last_id:
            return
        self._last_id = req_id
        self._ring.append((at, priority, wants))

    def better_rates(self, now: float, priority: int) -> dict[Wants, float]:
        """Filings per second of a better priority (smaller number), per distinct ask."""
        if len(self._ring) < 2 or now <= self._ring[0][0]:
            return {}
        span = now - self._ring[0][0]
        counts = Counter(wants for _, p, wants in self._ring if p < priority)
        return {wants: n / span for wants, n in counts.items()}


def competing_rate(rates: dict[Wants, float], candidates_of: Callable[[Wants], list[str]],
                   ours: Collection[str], our_caps: Iterable[tuple[str, str]] = ()) -> float:
    """How many of those filings per second take one of `ours`: each ask's rate times the
    share of its candidates that are ours (it takes whichever of them frees first). An ask
    that wants another value of one of `our_caps` shares no worker: skipped unlooked."""
    mine = dict(our_caps)
    total = 0.0
    for wants, rate in rates.items():
        if any(mine.get(key, value) != value for key, value in wants[0]):
            continue
        theirs = candidates_of(wants)
        if theirs:
            total += rate * sum(1 for uuid in theirs if uuid in ours) / len(theirs)
    return total


class Slot(NamedTuple):
    """A candidate worker in service: when it is expected to free first (its running
    job's start and duration books, timeout, if it runs one), then how often."""

    free_at: float
    period: float
    job_start: float | None = None
    stats: DurationStats | None = None
    ends_by: float | None = None           # the running job's timeout

    def freed_by(self, now: float, t: float) -> float:
        """The chance that its first job is over at time t (now <= t)."""
        if self.ends_by is not None and t >= self.ends_by:
            return 1.0
        if self.job_start is None or self.stats is None:
            return 1.0 if t >= self.free_at else 0.0
        return self.stats.freed_within(now - self.job_start, t - now)


@dataclass(frozen=True)
class Estimate:
    """An expected start (epoch seconds) or None, and the reason in words."""

    start: float | None
    basis: str
    late: bool = False               # the expected start is after the request's deadline


def first_free(now: float, job_timeout: float | None, job_start: float | None,
               stats: DurationStats) -> float:
    """When a worker is expected to free: now unless running; a running job after its
    expected remaining time (from when it started), at the latest at its timeout; a job
    whose start is unknown (prolonged: someone holds it) at its timeout."""
    if job_timeout is None:
        return now
    if job_start is None:
        return max(now, job_timeout)
    return max(now, min(job_timeout, now + stats.remaining(now - job_start)))


def common_period(slots: Sequence[Slot]) -> float:
    """The harmonic mean of the periods: together the slots free len/period per second."""
    return len(slots) / sum(1.0 / max(s.period, 1e-9) for s in slots)


#: Up to this many slots, the frees are counted from each job's own chances; above it
#: many independent slots free like a Poisson process (the rates model).
FEW_SLOTS = 32
#: The (k+1)-th of events counted this way is expected when k + 2/3 are (the median
#: of a Gamma(k+1) is close to k + 2/3).
MEDIAN_SHIFT = 2.0 / 3.0


def kth_free(now: float, slots: Sequence[Slot], k: int) -> float:
    """When the k-th (from 0) free among the slots is expected (see the module docstring)."""
    if len(slots) <= FEW_SLOTS:
        return kth_free_counted(now, slots, k)
    return kth_free_rates(now, slots, k)


def expected_frees(now: float, slots: Sequence[Slot], t: float) -> float:
    """How many frees are expected by time t: each first job's chance to be over, and
    one more at each period after its expected first free."""
    return sum(s.freed_by(now, t) + max(0.0, t - s.free_at) // s.period for s in slots)


def kth_free_counted(now: float, slots: Sequence[Slot], k: int, precision: float = 1.0) -> float:
    """The first time by which k + 2/3 frees are expected (bisection to `precision` s)."""
    target = k + MEDIAN_SHIFT
    if expected_frees(now, slots, now) >= target:
        return now
    span = max(max(s.free_at for s in slots) - now, 1.0)
    while expected_frees(now, slots, now + span) < target:
        span *= 2
    low, high = now, now + span
    while high - low > precision:
        mid = (low + high) / 2
        if expected_frees(now, slots, mid) >= target:
            high = mid
        else:
            low = mid
    return high


def kth_free_rates(now: float, slots: Sequence[Slot], k: int) -> float:
    """The rates model: each running first job frees at 1/(its expected remaining time)."""
    period = common_period(slots)
    free = sum(1 for s in slots if s.free_at <= now)
    if k < free:
        return now
    k -= free
    busy_rates = sorted((1.0 / (s.free_at - now) for s in slots if s.free_at > now),
                        reverse=True)              # the soonest first
    pending = sum(busy_rates)                      # rate of the first jobs still running
    t = now
    done = 0
    while done <= k and done < len(busy_rates):
        t += 1.0 / (pending + (free + done) / period)
        pending -= busy_rates[done]
        done += 1
    return t + max(0, k + 1 - done) * period / len(slots)


def passed_share(slots: Sequence[Slot], competing: float) -> float:
    """The share of the slots' frees that requests filed later with a better priority
    take: their rate (`competing`, per second) over the slots' (len/period), at most 1."""
    drain = len(slots) / common_period(slots)
    return min(1.0, competing / drain) if drain > 0 else 0.0


def passes(ahead: int, share: float) -> float:
    """How many requests filed later with a better priority are counted as passing one
    with `ahead` before it: while it waits for its k + 2/3 frees, they are expected to
    take s (k + 2/3) of them. That count is a skewed (Poisson) one and the estimate is a
    median, not a mean: taken at its median's lower bound, the mean less ln 2, never
    below 0 (the mean itself overshot most waits in bench/estimate_day.py)."""
    return max(0.0, share * (ahead + MEDIAN_SHIFT) - math.log(2))


def expected_start(now: float, ahead: int, slots: Iterable[Slot], valid_after: float,
                   deadline: float, competing: float = 0.0) -> Estimate:
    """The request's expected start behind `ahead` ready requests sharing `slots`, while
    better ones keep coming at `competing` per second: each pass (`passes`) costs it one
    more free, so its wait for k + 2/3 frees stretches by passes / (k + 2/3)."""
    slots = list(slots)
    if not slots:
        return Estimate(None, "no candidate worker is in service")
    share = passed_share(slots, competing)
    stretch = 1.0 + passes(ahead, share) / (ahead + MEDIAN_SHIFT)
    start = max(now + (kth_free(now, slots, ahead) - now) * stretch, valid_after, now)
    basis = (f"{ahead} ahead on {len(slots)} worker{'s' if len(slots) != 1 else ''} "
             f"in service, a job every {format_duration(common_period(slots))} on each")
    if stretch > 1.0:
        basis += (f"; later, better requests take {100 * share:.0f}% of their frees: "
                  f"{passes(ahead, share):.1f} expected to pass it")
    return Estimate(start, basis, start > deadline)
