"""What the core asks the shell to do. The core never does I/O itself.

Transitional worker states (PREPARE, BUSY) carry an operation number; the
shell answers with the same number, so a late answer to an operation that
was interrupted (the worker was deregistered, re-registered or set to
another state meanwhile) is recognised and ignored.
"""
from __future__ import annotations

from dataclasses import dataclass

from boruta.core.types import ReqState, WorkerState


@dataclass(frozen=True, slots=True)
class PrepareWorker:
    """Make a fresh job key, install it on the dryad, then report back."""
    worker_uuid: str
    op: int


@dataclass(frozen=True, slots=True)
class PutInMaintenance:
    worker_uuid: str
    op: int
    message: str


@dataclass(frozen=True, slots=True)
class StartJob:
    """Open the tunnel for request `req_id` on worker `worker_uuid`."""
    req_id: int
    worker_uuid: str


@dataclass(frozen=True, slots=True)
class FinishJob:
    """Close the job's tunnel and forget its key."""
    req_id: int
    worker_uuid: str


@dataclass(frozen=True, slots=True)
class ResumeJob:
    """After a server restart: the job's dryad is back, reopen its tunnel."""
    req_id: int
    worker_uuid: str


@dataclass(frozen=True, slots=True)
class RequestChanged:
    req_id: int
    state: ReqState
    reason: str = ""
    worker_uuid: str | None = None


@dataclass(frozen=True, slots=True)
class WorkerChanged:
    worker_uuid: str
    state: WorkerState
    reason: str = ""


@dataclass(frozen=True, slots=True)
class WorkerRemoved:
    worker_uuid: str


Effect = (PrepareWorker | PutInMaintenance | StartJob | FinishJob | ResumeJob | RequestChanged
          | WorkerChanged | WorkerRemoved)
