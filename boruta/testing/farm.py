"""An in-process farm: the core Scheduler driven without a server, for tests.

The Scheduler does no I/O: it asks the shell to prepare workers and put
them in maintenance (effects), and waits for the answers. A server answers
after talking to the dryads; `InProcessFarm` answers itself, at once (or,
for the effects it is told to hold, when the test says how they went), and
keeps a manual clock that only the test moves, so a test is fast and
deterministic, and can play failures and late answers.

>>> from boruta.testing import InProcessFarm
>>> farm = InProcessFarm()
>>> worker = farm.idle("board-1", {"device_type": "rpi4"})      # registered and prepared
>>> req_id = farm.request({"device_type": "rpi4"})
>>> str(farm.request_state(req_id)), farm.worker_of(req_id)
('IN PROGRESS', 'board-1')
>>> _ = farm.tick(3600)                                         # the job timeout fires
>>> str(farm.request_state(req_id)), str(farm.worker_state("board-1"))
('DONE', 'IDLE')

Held effects, to test a failed preparation:

>>> farm = InProcessFarm(auto_complete=False)
>>> _ = farm.register("board-2")
>>> farm.scheduler.set_state("board-2", "IDLE")
>>> farm.prepare_failed("board-2", "no route to the dryad")
True
>>> str(farm.worker_state("board-2"))
'FAILED'
"""
from __future__ import annotations

import contextlib
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator, Mapping

from boruta.core import effects
from boruta.core.clock import MANUAL_START, ManualClock
from boruta.core.config import SchedulerConfig
from boruta.core.scheduler import Scheduler
from boruta.core.types import UUID_KEY, ReqState, UserInfo, WorkerState

START = MANUAL_START            # where a farm's clock starts: 2027-01-15T08:00:00Z
DRYAD_ADDRESS = "10.0.0.1:7175"
SSH_ADDRESS = "10.0.0.1:22"

Transition = effects.PrepareWorker | effects.PutInMaintenance


def at(seconds: float) -> datetime:
    """The UTC datetime of a clock reading (seconds since the epoch)."""
    return datetime.fromtimestamp(seconds, timezone.utc)


def wuuid(n: int) -> str:
    """A canonical-looking worker UUID for number `n`; they sort by `n`."""
    return f"00000000-0000-4000-8000-{n:012d}"


class InProcessFarm:
    """A Scheduler on a ManualClock, and the shell that answers its effects.

    `auto_complete=True` (the default) answers every PrepareWorker and
    PutInMaintenance as soon as it is drained, with success: workers reach
    IDLE and MAINTENANCE as on a healthy farm. With `auto_complete=False`, or
    inside `holding()`, they wait in `pending` until the test answers them
    (`prepared`, `prepare_failed`, `in_maintenance`, `maintenance_failed`)
    or answers with an old operation number by calling the scheduler itself.
    Every effect drained is appended to `log`, in order.
    """

    def __init__(self, scheduler: Scheduler | None = None, *, auto_complete: bool = True,
                 config: SchedulerConfig | None = None, matcher: str | None = None,
                 start: float = START, username: str = "boruta-user") -> None:
        """A new Scheduler on a ManualClock at `start`, or `scheduler` if given (its
        clock must be a ManualClock; `config` and `matcher` are then its own)."""
        if scheduler is None:
            scheduler = Scheduler(ManualClock(start), config=config, matcher=matcher)
        elif config is not None or matcher is not None:
            raise ValueError("config and matcher are for a new scheduler, not a given one")
        if not isinstance(scheduler.clock, ManualClock):
            raise TypeError("an InProcessFarm needs a scheduler on a ManualClock")
        self.scheduler = scheduler
        self.clock: ManualClock = scheduler.clock
        self.auto_complete = auto_complete
        self.username = username
        self.log: list[effects.Effect] = []
        self.pending: dict[str, Transition] = {}   # worker UUID -> the effect it awaits
        self._holds = 0
        self._keys = 0

    # ------------------------------------------------------------------ time
    def now(self) -> datetime:
        return at(self.clock.now())

    def later(self, seconds: float) -> datetime:
        """The time `seconds` from now (for deadlines and ValidAfter)."""
        return at(self.clock.now() + seconds)

    def tick(self, seconds: float) -> list[effects.Effect]:
        """Move the clock, fire the timers that came due, return the new effects."""
        self.clock.advance(seconds)
        self.scheduler.advance()
        return self.drain()

    # ------------------------------------------------------------------ effects
    def drain(self) -> list[effects.Effect]:
        """Take the scheduler's effects (and, unless held, answer its transitions)."""
        out: list[effects.Effect] = []
        while batch := self.scheduler.drain_effects():
            out.extend(batch)
            self.log.extend(batch)
            for effect in batch:
                if isinstance(effect, (effects.PrepareWorker, effects.PutInMaintenance)):
                    self.pending[effect.worker_uuid] = effect
            if self.auto_complete and not self._holds:
                for effect in batch:
                    if (isinstance(effect, (effects.PrepareWorker, effects.PutInMaintenance))
                            and self.pending.get(effect.worker_uuid) is effect):
                        self._answer(effect, ok=True)
        return out

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Within this block no transition is answered by itself; those issued here stay
        in `pending` until the test answers them."""
        self._holds += 1
        try:
            yield
            self.drain()
        finally:
            self._holds -= 1

    def op(self, uuid: str, kind: type[Transition] = effects.PrepareWorker) -> int:
        """The operation number of the transition `uuid` awaits (which must be a `kind`)."""
        self.drain()
        effect = self.pending.get(uuid)
        if not isinstance(effect, kind):
            raise AssertionError(f"{uuid} awaits {effect!r}, not a {kind.__name__}")
        return effect.op

    def started(self) -> list[tuple[int, str]]:
        """(request, worker) of every StartJob so far, in order."""
        return [(e.req_id, e.worker_uuid) for e in self.log if isinstance(e, effects.StartJob)]

    # ------------------------------------------------------------------ answers
    def new_key(self) -> str:
        """A distinct stand-in for a job's private key."""
        self._keys += 1
        return f"key-{self._keys}"

    def prepared(self, uuid: str, key: Any = None, username: str | None = None) -> bool:
        """Answer the PrepareWorker `uuid` awaits with success; False if it was stale."""
        return self._answer(self._awaited(uuid, effects.PrepareWorker), ok=True, key=key,
                            username=username)

    def prepare_failed(self, uuid: str, reason: str = "no route") -> bool:
        return self._answer(self._awaited(uuid, effects.PrepareWorker), ok=False,
                            reason=reason)

    def in_maintenance(self, uuid: str) -> bool:
        return self._answer(self._awaited(uuid, effects.PutInMaintenance), ok=True)

    def maintenance_failed(self, uuid: str, reason: str = "oled broken") -> bool:
        return self._answer(self._awaited(uuid, effects.PutInMaintenance), ok=False,
                            reason=reason)

    def _awaited(self, uuid: str, kind: type[Transition]) -> Transition:
        self.op(uuid, kind)
        return self.pending[uuid]

    def _answer(self, effect: Transition, ok: bool, key: Any = None,
                username: str | None = None, reason: str = "") -> bool:
        uuid, op = effect.worker_uuid, effect.op
        del self.pending[uuid]
        sched = self.scheduler
        if isinstance(effect, effects.PrepareWorker):
            if ok:
                answered = sched.worker_prepared(uuid, op, self.new_key() if key is None else key,
                                                 username or self.username)
            else:
                answered = sched.worker_prepare_failed(uuid, op, reason)
        elif ok:
            answered = sched.worker_in_maintenance(uuid, op)
        else:
            answered = sched.worker_maintenance_failed(uuid, op, reason)
        self.drain()
        return answered

    # ------------------------------------------------------------------ workers
    def register(self, uuid: str, caps: Mapping[str, str] | None = None,
                 dryad: str = DRYAD_ADDRESS, ssh: str = SSH_ADDRESS) -> str:
        """Register (or register again) worker `uuid`, as its dryad would."""
        self.scheduler.register({UUID_KEY: uuid, **(caps or {})}, dryad, ssh)
        self.drain()
        return uuid

    def idle(self, uuid: str, caps: Mapping[str, str] | None = None,
             groups: Iterable[str] | None = None, key: Any = None,
             username: str | None = None) -> str:
        """Register (if new), set groups, and bring to IDLE through a successful PREPARE."""
        if uuid not in self.scheduler.worker_ids():
            self.register(uuid, caps)
        if groups is not None:
            self.scheduler.set_groups(uuid, list(groups))
        with self.holding():
            self.scheduler.set_state(uuid, WorkerState.IDLE)
        if not self.prepared(uuid, key, username):
            raise AssertionError(f"{uuid} did not take its preparation")
        return uuid

    def maintenance(self, uuid: str) -> None:
        """Bring a worker to MAINTENANCE through BUSY."""
        with self.holding():
            self.scheduler.set_state(uuid, WorkerState.MAINTENANCE)
        if not self.in_maintenance(uuid):
            raise AssertionError(f"{uuid} did not take its maintenance")

    def worker_state(self, uuid: str) -> WorkerState:
        return self.scheduler.get_worker_info(uuid).state

    def bring(self, uuid: str, state: WorkerState,
              caps: Mapping[str, str] | None = None) -> int | None:
        """Register a fresh worker and put it in `state` by a legitimate path.

        PREPARE and BUSY are left awaiting their answer (in `pending`). For
        RUNNING a request pinned to the worker is created and assigned; its ID
        is returned (None for the other states).
        """
        self.register(uuid, caps)
        req_id = None
        if state is WorkerState.BUSY:
            with self.holding():
                self.scheduler.set_state(uuid, WorkerState.MAINTENANCE)
        elif state is WorkerState.PREPARE:
            with self.holding():
                self.scheduler.set_state(uuid, WorkerState.IDLE)
        elif state is not WorkerState.MAINTENANCE:
            self.idle(uuid)
            if state is WorkerState.FAIL:
                self.scheduler.set_fail(uuid, "broken")
            elif state is WorkerState.RUN:
                req_id = self.request({UUID_KEY: uuid})
        self.drain()
        if self.worker_state(uuid) is not state:
            raise AssertionError(f"{uuid} is {self.worker_state(uuid)}, not {state}")
        return req_id

    # ------------------------------------------------------------------ requests
    def request(self, caps: Mapping[str, str] | None = None, priority: int = 8, *,
                owner: UserInfo | None = None, valid_after: datetime | None = None,
                deadline: datetime | None = None, queue_unsatisfiable: bool = False,
                lease: float | None = None) -> int:
        """A new request (priority 8 unless given); returns its ID."""
        req_id = self.scheduler.new_request(dict(caps or {}), priority, owner, valid_after,
                                            deadline, queue_unsatisfiable=queue_unsatisfiable,
                                            lease=lease)
        self.drain()
        return req_id

    def request_state(self, req_id: int) -> ReqState:
        return self.scheduler.get_request_info(req_id).state

    def worker_of(self, req_id: int) -> str | None:
        """The worker of the request's job (None while it has none)."""
        job = self.scheduler.get_request_info(req_id).job
        return None if job is None else job.worker_uuid

    def done(self, req_id: int) -> None:
        """Close an IN PROGRESS request and bring its worker back to IDLE."""
        uuid = self.worker_of(req_id)
        with self.holding():
            self.scheduler.close_request(req_id)
        if uuid is not None and self.worker_state(uuid) is WorkerState.PREPARE:
            if not self.prepared(uuid):
                raise AssertionError(f"{uuid} did not take its preparation")
