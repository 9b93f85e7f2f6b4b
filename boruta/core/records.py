"""The records the scheduler hands to a durable store, and takes back on restart.

Plain data, no I/O: the store (boruta/server/store.py) decides how they are kept.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Snapshot:
    """Everything the scheduler needs to come back."""

    last_id: int = 0
    last_seq: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Changes:
    """What one turn of the loop changed."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)
    removed_workers: list[str] = field(default_factory=list)
    purged_requests: list[int] = field(default_factory=list)
    last_id: int | None = None
    last_seq: int | None = None

    def __bool__(self) -> bool:
        return bool(self.requests or self.workers or self.removed_workers
                    or self.purged_requests or self.last_id is not None
                    or self.last_seq is not None)
