"""The plain-Python matcher: upstream's algorithm, literally.

It is the oracle for the compiled matcher (`boruta._matcher`) and the
fallback when the extension is absent or BORUTA_PUREPYTHON=1. It is written
to be obviously right, not fast: every `match()` runs upstream's pass (ready
requests in priority then FIFO order, each offered the best idle worker,
restart from the head after every assignment) until a pass assigns nothing.

Both matchers share this interface:

- Workers are registered with caps and groups; they are *idle* or not.
- Requests handed to the matcher are *ready* (WAIT, ValidAfter reached,
  deadline ahead); the scheduler adds and removes them. `add_request`
  returns a handle that `remove_request` takes.
- `match()` makes every assignment the rules allow and returns them in the
  order made, as `(request_id, worker_uuid)`; assigned requests and workers
  leave the matcher's ready and idle sets.
- Term caps (keys starting with "\x00", boruta.core.capexpr) are caps like
  any other, except that they do not count in a worker's penalty.
- Order: priority (1 first), then `seq` (the request's place in its FIFO,
  given by the scheduler). Best worker: fewest caps (UUID included) plus
  groups, ties to the smallest UUID.
"""
from __future__ import annotations

import bisect
from typing import Iterable, Mapping, Sequence

from boruta.core.capexpr import real_caps_count


def caps_satisfied(wanted: Mapping[str, str], offered: Mapping[str, str]) -> bool:
    """Every requested key exists on the worker with an equal value."""
    return all(offered.get(key) == value for key, value in wanted.items())


def groups_satisfied(wanted: Sequence[str], offered: Sequence[str]) -> bool:
    """An owner without groups may use any worker; else they must share one."""
    return not wanted or any(group in offered for group in wanted)


class _Worker:
    __slots__ = ("uuid", "caps", "groups", "idle")

    def __init__(self, uuid: str, caps: Mapping[str, str], groups: Sequence[str]) -> None:
        self.uuid = uuid
        self.caps = dict(caps)
        self.groups = tuple(groups)
        self.idle = False

    @property
    def penalty(self) -> int:
        """Its real caps (UUID included) and groups; term caps do not count."""
        return real_caps_count(self.caps) + len(self.groups)

    def serves(self, caps: Mapping[str, str], groups: Sequence[str]) -> bool:
        return caps_satisfied(caps, self.caps) and groups_satisfied(groups, self.groups)


class ReferenceMatcher:
    """Upstream's ordered scan. See the module docstring for the contract."""

    compiled = False

    def __init__(self) -> None:
        self._workers: dict[str, _Worker] = {}
        # Ready requests as sorted (priority, seq, id); details by id.
        self._order: list[tuple[int, int, int]] = []
        self._ready: dict[int, tuple[int, int, dict[str, str], tuple[str, ...]]] = {}

    # -- workers -----------------------------------------------------------
    def add_worker(self, uuid: str, caps: Mapping[str, str], groups: Sequence[str]) -> None:
        if uuid in self._workers:
            raise KeyError(f"worker {uuid} already in matcher")
        self._workers[uuid] = _Worker(uuid, caps, groups)

    def update_worker(self, uuid: str, caps: Mapping[str, str], groups: Sequence[str]) -> None:
        worker = self._workers[uuid]
        worker.caps = dict(caps)
        worker.groups = tuple(groups)

    def remove_worker(self, uuid: str) -> None:
        del self._workers[uuid]

    def set_idle(self, uuid: str, idle: bool) -> None:
        self._workers[uuid].idle = idle

    # -- requests ----------------------------------------------------------
    def add_request(self, req_id: int, caps: Mapping[str, str] | Iterable[tuple[str, str]],
                    groups: Sequence[str], priority: int, seq: int) -> int:
        """`caps`: a mapping or its (key, value) pairs (the scheduler's interned tuples)."""
        if req_id in self._ready:
            raise KeyError(f"request {req_id} already in matcher")
        self._ready[req_id] = (priority, seq, dict(caps), tuple(groups))
        bisect.insort(self._order, (priority, seq, req_id))
        return req_id

    def remove_request(self, handle: int) -> None:
        priority, seq, _, _ = self._ready.pop(handle)
        del self._order[bisect.bisect_left(self._order, (priority, seq, handle))]

    # -- decisions ---------------------------------------------------------
    def _best_idle_worker(self, caps: Mapping[str, str],
                          groups: Sequence[str]) -> _Worker | None:
        candidates = [w for w in self._workers.values() if w.idle and w.serves(caps, groups)]
        candidates.sort(key=lambda w: w.uuid)           # upstream lists by UUID
        best = None
        for worker in candidates:                        # strictly smaller penalty wins
            if best is None or worker.penalty < best.penalty:
                best = worker
        return best

    def _one_pass(self) -> tuple[int, str] | None:
        for _, _, req_id in self._order:
            _, _, caps, groups = self._ready[req_id]
            worker = self._best_idle_worker(caps, groups)
            if worker is not None:
                worker.idle = False
                self.remove_request(req_id)
                return req_id, worker.uuid
        return None

    def match(self) -> list[tuple[int, str]]:
        made = []
        while (assignment := self._one_pass()) is not None:
            made.append(assignment)
        return made

    def satisfiable(self, caps: Mapping[str, str], groups: Sequence[str]) -> bool:
        """Could any registered worker, in any state, ever serve these?"""
        return any(w.serves(caps, groups) for w in self._workers.values())

    # -- introspection (tests, benchmarks) ---------------------------------
    def ready_count(self) -> int:
        return len(self._ready)

    def idle_count(self) -> int:
        return sum(1 for w in self._workers.values() if w.idle)

    # -- explain: why a request waits ---------------------------------------
    def candidates(self, caps: Mapping[str, str], groups: Sequence[str]) -> list[str]:
        """UUIDs of every registered worker (any state) serving these, sorted."""
        caps = dict(caps)
        return sorted(w.uuid for w in self._workers.values() if w.serves(caps, groups))

    def count_ahead(self, priority: int, seq: int, candidate_uuids: Iterable[str]) -> int:
        """Ready requests before (priority, seq) that some of these workers serve."""
        if not 1 <= priority <= 16:
            raise ValueError(f"priority {priority} outside 1..16")
        if not 0 <= seq < 2 ** 36:
            raise ValueError(f"seq {seq} outside 0..2**36-1")
        workers = [self._workers[u] for u in set(candidate_uuids) if u in self._workers]
        ahead = 0
        for prio, sq, req_id in self._order:
            if (prio, sq) >= (priority, seq):
                break
            _, _, caps, groups = self._ready[req_id]
            if any(w.serves(caps, groups) for w in workers):
                ahead += 1
        return ahead
