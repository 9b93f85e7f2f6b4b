"""The request timers: ValidAfter, Deadline, job timeout and lease expiry in one heap.

Rescheduling is a push: the entry it replaces stays in the heap, and the
scheduler checks on firing whether an entry still means something (the
request's current time of that kind has come, and it has not finished).
So that calls which replace earlier ones (a deadline updated 100,000 times,
a job prolonged all week) cannot grow the heap for good, the scheduler says
when entries lose their meaning (`superseded`); once more have lost it than
the last compaction kept, the heap is compacted: the entries the `is_live`
callback no longer recognises, and duplicates, go. A compaction costs one
pass over the heap and comes only after as many superseding calls as the
heap then held, so every call stays O(log n) amortised; a heap of live
timers alone (a million waiting requests) is never scanned; and the stale
entries stay within a small multiple of max(COMPACT_FLOOR, the entries the
last compaction kept).

At one instant deadlines fire first, then lapsed leases, then job timeouts,
then requests becoming ready, so a request whose Deadline equals its
ValidAfter times out rather than starts (as upstream's VerifyIfReady
decides), and a request whose holder is gone never gets a worker.

A lease's entry is not pushed again at each renewal (a renewal only moves
the request's expiry): when the entry fires before the expiry it is pushed
once at the expiry, so ten thousand leases renewed every few seconds cost
the heap one push per lease per grace period, not one per renewal.
"""
from __future__ import annotations

import heapq
from enum import IntEnum
from typing import Callable


class TimerKind(IntEnum):
    DEADLINE = 0
    LEASE = 1
    JOB_TIMEOUT = 2
    VALID_AFTER = 3


# (when, kind, request ID) -> does the entry still mean something? `kind` is the plain int.
LivenessCheck = Callable[[float, int, int], bool]

COMPACT_FLOOR = 256          # stale entries tolerated however small the heap


class RequestTimers:
    def __init__(self, is_live: LivenessCheck | None = None) -> None:
        """`is_live` tells superseded entries from live ones; without it none is dropped."""
        self._heap: list[tuple[float, int, int]] = []
        self._is_live = is_live
        self._stale = 0          # entries that lost their meaning since the last compaction
        self._kept = 0           # entries the last compaction (or restart) left

    def push(self, when: float, kind: TimerKind, req_id: int, *,
             replaces: bool = False) -> None:
        """Add an entry; `replaces`: it takes over from an earlier one of its request and kind."""
        heapq.heappush(self._heap, (when, int(kind), req_id))
        if replaces:
            self.superseded()

    def superseded(self, count: int = 1) -> None:
        """`count` entries no longer mean anything (replaced, or their request ended)."""
        self._stale += count
        if self._stale > max(COMPACT_FLOOR, self._kept):
            self.compact()

    def extend(self, entries: list[tuple[float, TimerKind, int]]) -> None:
        """Many entries at once (a restart): one heapify instead of n pushes."""
        self._heap.extend((when, int(kind), req_id) for when, kind, req_id in entries)
        heapq.heapify(self._heap)
        self._kept = len(self._heap)

    def compact(self) -> int:
        """Drop the entries that no longer mean anything, and duplicates; returns how many."""
        before = len(self._heap)
        if self._is_live is not None:
            is_live = self._is_live
            self._heap = list({entry for entry in self._heap if is_live(*entry)})
            heapq.heapify(self._heap)
        self._stale, self._kept = 0, len(self._heap)
        return before - len(self._heap)

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_instant(self, now: float) -> tuple[float, list[tuple[TimerKind, int]]] | None:
        """All entries of the earliest instant that is not after `now`."""
        if not self._heap or self._heap[0][0] > now:
            return None
        instant = self._heap[0][0]
        fired = []
        while self._heap and self._heap[0][0] == instant:
            _, kind, req_id = heapq.heappop(self._heap)
            fired.append((TimerKind(kind), req_id))
        return instant, fired

    def __len__(self) -> int:
        return len(self._heap)
