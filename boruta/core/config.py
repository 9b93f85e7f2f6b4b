"""What upstream hard-codes (default deadline, job timeout...), as configuration."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SchedulerConfig:
    # A request without a Deadline must start within one calendar month.
    default_deadline_months: int = 1
    # A job ends this long after it starts or was last prolonged.
    job_timeout: float = 3600.0
    # How many times one job may be prolonged; None = no limit (upstream).
    prolong_limit: int | None = 168
    # Terminal requests older than this are purged from history; None = keep.
    retention: float | None = 30 * 86400.0
    # The message a dryad shows on its OLED when put in maintenance.
    maintenance_message: str = "maintenance"
    # The size of caps a request, a worker (its UUID counts) or a worker
    # filter may have. A farm's real caps are a few dozen short pairs; the
    # matcher's memory per request grows with the square of the entries.
    max_caps_entries: int = 64
    max_cap_key_length: int = 64          # characters
    max_cap_value_length: int = 256       # characters
    # The grace a client may ask for its request's lease (seconds without a
    # renewal before the server closes the request). Too short and a stalled
    # network closes live jobs; too long and a dead CI job holds its board.
    lease_min: float = 5.0
    lease_max: float = 86400.0
    # Distinct capability expressions in use at once: each costs a pass over the
    # workers when it comes into use (and when it goes), and a bit on each worker
    # that satisfies it.
    max_terms: int = 1024

    def __post_init__(self) -> None:
        if self.default_deadline_months < 1:
            raise ValueError("default_deadline_months must be at least 1")
        if not self.job_timeout > 0:                      # NaN too
            raise ValueError("job_timeout must be positive")
        if self.prolong_limit is not None and self.prolong_limit < 0:
            raise ValueError("prolong_limit must not be negative")
        if self.retention is not None and not self.retention > 0:
            raise ValueError("retention must be positive")
        if not 0 < self.lease_min <= self.lease_max < float("inf"):
            raise ValueError("lease_min and lease_max must be positive, finite, "
                             "and lease_min <= lease_max")
        for name in ("max_caps_entries", "max_cap_key_length", "max_cap_value_length",
                     "max_terms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer")
