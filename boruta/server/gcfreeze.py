"""Keep the garbage collector's full passes off the server's request path.

The books of a busy server are hundreds of thousands of long-lived objects
(requests, their caps, timers). CPython's full collection walks all of them
every time the heap has grown by a quarter, and the loop stands still
meanwhile: 30-50 ms with 100k-200k requests on this machine, which is the
whole latency budget of thousands of calls.

So, once a second, the server collects the young generations (cheap: they
hold only what the last second made) and freezes what survived
(gc.freeze moves it out of the collector's sight in constant time). Full
passes then only ever see the last second's objects. A cycle that becomes
garbage after it was frozen would stay until the next *sweep*: once an hour
everything is unfrozen and collected in one full pass, then frozen again.
"""
from __future__ import annotations

import gc

FREEZE_EVERY = 1.0           # seconds between freezes of what survived the young collections
SWEEP_EVERY = 3600.0         # seconds between full collections of everything frozen


class GcFreezer:
    """Call `tick(now)` from a periodic task (`now`: a monotonic clock, in seconds)."""

    def __init__(self, now: float, freeze_every: float = FREEZE_EVERY,
                 sweep_every: float = SWEEP_EVERY) -> None:
        self.freeze_every = freeze_every
        self.sweep_every = sweep_every
        self._last_freeze = now
        self._last_sweep = now
        self.sweeps = 0

    def tick(self, now: float) -> None:
        if now - self._last_sweep >= self.sweep_every:
            self._last_sweep = self._last_freeze = now
            self.sweeps += 1
            gc.unfreeze()
            gc.collect()
            gc.freeze()
        elif now - self._last_freeze >= self.freeze_every:
            self._last_freeze = now
            gc.collect(1)
            gc.freeze()
