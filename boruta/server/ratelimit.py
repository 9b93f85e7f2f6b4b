"""Per-peer token buckets: a peer over its rate gets `rate_limited`, costing no core work."""
from __future__ import annotations

import time
from dataclasses import dataclass

IDLE_FORGET = 60.0           # seconds after which a quiet peer's bucket is dropped


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """`rate` messages a second per peer identity, in bursts of up to `burst`."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self._buckets: dict[bytes, _Bucket] = {}

    def allow(self, identity: bytes) -> bool:
        now = time.monotonic()
        bucket = self._buckets.get(identity)
        if bucket is None:
            bucket = self._buckets[identity] = _Bucket(self.burst, now)
        tokens = bucket.tokens + (now - bucket.at) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        bucket.at = now
        if tokens < 1.0:
            bucket.tokens = tokens
            return False
        bucket.tokens = tokens - 1.0
        return True

    def forget_idle(self, now: float) -> None:
        """Drop the buckets of peers quiet for a minute (a full bucket is the default)."""
        for ident in [i for i, b in self._buckets.items() if now - b.at > IDLE_FORGET]:
            del self._buckets[ident]
