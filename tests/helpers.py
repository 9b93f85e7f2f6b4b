"""A small farm driver for scheduler tests.

`Farm` wraps a Scheduler and its ManualClock and plays the shell: it drains
the effects, remembers the last PrepareWorker / PutInMaintenance each worker
is waiting on (with its op number) and answers them on request.

Test files import it as `from helpers import Farm` (tests/ has no
__init__.py, so pytest puts this folder on sys.path).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from boruta.core import effects as fx
from boruta.core.clock import ManualClock
from boruta.core.scheduler import Scheduler
from boruta.core.types import ReqState, WorkerState

START = 1_800_000_000.0          # 2027-01-15T08:00:00Z, the ManualClock's default


def at(ts: float) -> datetime:
    """A UTC datetime for a clock reading."""
    return datetime.fromtimestamp(ts, timezone.utc)


def wuuid(n: int) -> str:
    """Canonical-looking worker UUIDs that sort by n."""
    return f"00000000-0000-4000-8000-{n:012d}"


class Farm:
    def __init__(self, sched: Scheduler, clock: ManualClock) -> None:
        self.sched = sched
        self.clock = clock
        self.log: list[Any] = []                 # every effect drained, in order
        self.pending: dict[str, Any] = {}        # uuid -> PrepareWorker / PutInMaintenance
        self._keys = 0

    # ------------------------------------------------------------------ time
    def now(self) -> datetime:
        return at(self.clock.now())

    def later(self, seconds: float) -> datetime:
        return at(self.clock.now() + seconds)

    def tick(self, seconds: float) -> list[Any]:
        """Move the clock, let the scheduler fire its timers, return the new effects."""
        self.clock.advance(seconds)
        self.sched.advance()
        return self.drain()

    # ------------------------------------------------------------------ effects
    def drain(self) -> list[Any]:
        out = self.sched.drain_effects()
        for effect in out:
            if isinstance(effect, (fx.PrepareWorker, fx.PutInMaintenance)):
                self.pending[effect.worker_uuid] = effect
        self.log.extend(out)
        return out

    def op(self, uuid: str, kind: type = fx.PrepareWorker) -> int:
        self.drain()
        effect = self.pending.get(uuid)
        assert isinstance(effect, kind), f"{uuid} awaits {effect!r}, not a {kind.__name__}"
        return effect.op

    # ------------------------------------------------------------------ answers
    def new_key(self) -> str:
        self._keys += 1
        return f"key-{self._keys}"

    def prepared(self, uuid: str, key: Any = None, username: str = "boruta-user") -> bool:
        op = self.op(uuid, fx.PrepareWorker)
        ok = self.sched.worker_prepared(uuid, op, key if key is not None else self.new_key(),
                                        username)
        self.drain()
        return ok

    def prepare_failed(self, uuid: str, reason: str = "no route") -> bool:
        ok = self.sched.worker_prepare_failed(uuid, self.op(uuid, fx.PrepareWorker), reason)
        self.drain()
        return ok

    def in_maintenance(self, uuid: str) -> bool:
        ok = self.sched.worker_in_maintenance(uuid, self.op(uuid, fx.PutInMaintenance))
        self.drain()
        return ok

    def maintenance_failed(self, uuid: str, reason: str = "oled broken") -> bool:
        ok = self.sched.worker_maintenance_failed(uuid, self.op(uuid, fx.PutInMaintenance),
                                                  reason)
        self.drain()
        return ok

    # ------------------------------------------------------------------ workers
    def register(self, uuid: str, caps: Mapping[str, str] | None = None,
                 dryad: str = "10.0.0.1:7175", ssh: str = "10.0.0.1:22") -> str:
        full = {"UUID": uuid, **(caps or {})}
        self.sched.register(full, dryad, ssh)
        self.drain()
        return uuid

    def idle(self, uuid: str, caps: Mapping[str, str] | None = None,
             groups: Iterable[str] | None = None, key: Any = None,
             username: str = "boruta-user") -> str:
        """Register (if new), set groups, bring to IDLE by answering PrepareWorker."""
        if uuid not in self.sched.worker_ids():
            self.register(uuid, caps)
        if groups is not None:
            self.sched.set_groups(uuid, list(groups))
        self.sched.set_state(uuid, WorkerState.IDLE)
        assert self.prepared(uuid, key, username)
        return uuid

    def maintenance(self, uuid: str) -> None:
        """Bring a worker to MAINTENANCE through BUSY."""
        self.sched.set_state(uuid, WorkerState.MAINTENANCE)
        assert self.in_maintenance(uuid)

    def wstate(self, uuid: str) -> WorkerState:
        return self.sched.get_worker_info(uuid).state

    # ------------------------------------------------------------------ requests
    def request(self, caps: Mapping[str, str] | None = None, priority: int = 8,
                **kwargs: Any) -> int:
        req_id = self.sched.new_request(dict(caps or {}), priority, **kwargs)
        self.drain()
        return req_id

    def rstate(self, req_id: int) -> ReqState:
        return self.sched.get_request_info(req_id).state

    def worker_of(self, req_id: int) -> str | None:
        job = self.sched.get_request_info(req_id).job
        return None if job is None else job.worker_uuid

    def started(self) -> list[tuple[int, str]]:
        """(request, worker) of every StartJob so far, in order."""
        return [(e.req_id, e.worker_uuid) for e in self.log if isinstance(e, fx.StartJob)]

    def done(self, req_id: int) -> None:
        """Close an IN PROGRESS request and bring its worker back to IDLE."""
        uuid = self.worker_of(req_id)
        self.sched.close_request(req_id)
        self.drain()
        if uuid is not None and self.wstate(uuid) is WorkerState.PREPARE:
            assert self.prepared(uuid)

    def bring(self, uuid: str, state: WorkerState, caps: Mapping[str, str] | None = None
              ) -> int | None:
        """Put a fresh worker in `state` by a legitimate path.

        For RUN a request pinned to the worker is created and matched; its ID
        is returned (None for the other states).
        """
        self.register(uuid, caps)
        if state is WorkerState.MAINTENANCE:
            return None
        if state is WorkerState.BUSY:
            self.sched.set_state(uuid, WorkerState.MAINTENANCE)
        elif state is WorkerState.PREPARE:
            self.sched.set_state(uuid, WorkerState.IDLE)
        else:
            self.idle(uuid)
            if state is WorkerState.FAIL:
                self.sched.set_fail(uuid, "broken")
            elif state is WorkerState.RUN:
                req_id = self.request({"UUID": uuid})
                assert self.worker_of(req_id) == uuid
                return req_id
        self.drain()
        assert self.wstate(uuid) is state
        return None
