"""The request timers: ValidAfter, Deadline and job timeout in one heap.

Entries are never removed, only fired; the scheduler checks on firing
whether an entry still means something (SPEC B4.5), so rescheduling is a
push and cancelling is free. At one instant deadlines fire first, then job
timeouts, then requests becoming ready, so a request whose Deadline equals
its ValidAfter times out rather than starts (SPEC B2.10 VerifyIfReady).
"""
from __future__ import annotations

import heapq
from enum import IntEnum


class TimerKind(IntEnum):
    DEADLINE = 0
    JOB_TIMEOUT = 1
    VALID_AFTER = 2


class RequestTimers:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int]] = []

    def push(self, when: float, kind: TimerKind, req_id: int) -> None:
        heapq.heappush(self._heap, (when, int(kind), req_id))

    def extend(self, entries: list[tuple[float, TimerKind, int]]) -> None:
        """Many entries at once (a restart): one heapify instead of n pushes."""
        self._heap.extend((when, int(kind), req_id) for when, kind, req_id in entries)
        heapq.heapify(self._heap)

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
