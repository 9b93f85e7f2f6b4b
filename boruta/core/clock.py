"""Time for the core, injected so that tests step it by hand."""
from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch, UTC."""


class SystemClock:
    def now(self) -> float:
        return time.time()


MANUAL_START = 1_800_000_000.0      # 2027-01-15T08:00:00Z: a fixed, ordinary "now" for tests


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = MANUAL_START) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("time does not go back")
        self._now += seconds
        return self._now

    def set(self, when: float) -> None:
        if when < self._now:
            raise ValueError("time does not go back")
        self._now = float(when)
