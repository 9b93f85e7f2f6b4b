"""Parked calls: `acquire_worker` and `wait_request` answered when their condition holds.

The server holds the reply, not a thread: a parked call is its route, its
message ID and what it waits for. Every request state change wakes the calls
parked on that request; a timer answers `wait_timeout` when the caller's
timeout passes first; shutdown answers `shutting_down`.

A parked call holds a slot until it is answered, and a peer that parks and
disconnects never reads its answer. So two limits: one peer holds at most
`max_parked_per_peer` slots (beyond, `busy`: the others go on), and no call
stays parked longer than `max_park_seconds`, whatever timeout it asked for
(`wait_timeout` then: boruta.Client asks in slices of 10 s and asks again,
so it never notices). The second reaps the calls of gone peers without
knowing they are gone: a ROUTER cannot tell which identity a disconnect
was (that needs ZeroMQ's draft API), and probing a peer would send it a
message it never asked for.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Hashable

from boruta.core.durations import format_duration
from boruta.core.errors import BorutaError, WorkerNotAssignedError
from boruta.core.types import ReqState
from boruta.transport import documents
from boruta.transport.errors import RequestEndedError, ServerBusyError, WaitTimeoutError

if TYPE_CHECKING:
    from boruta.server.app import Server
    from boruta.server.endpoint import Route

PARKED = object()            # a handler's answer: "the reply comes later"
ALL_BUT_WAIT = frozenset(s for s in ReqState if s is not ReqState.WAIT)
ACQUIRE = "acquire"
WAIT = "wait"


@dataclass(eq=False)
class ParkedCall:
    kind: str                                  # ACQUIRE | WAIT
    req_id: int
    route: "Route"
    msg_id: Any
    timeout: float | None
    states: frozenset[ReqState] = ALL_BUT_WAIT
    timer: asyncio.TimerHandle | None = None
    owner: Hashable = None                     # whom the call counts against: Call.who()


def request_ended(req_id: int, state: ReqState,
                  states: frozenset[ReqState]) -> RequestEndedError:
    wanted = ", ".join(sorted(str(s) for s in states))
    return RequestEndedError(f"request {req_id} ended {state}; it will never be {wanted}")


def not_assigned(req_id: int, state: ReqState) -> WorkerNotAssignedError:
    return WorkerNotAssignedError(f"worker not assigned: request {req_id} is {state}")


class ParkedCalls:
    def __init__(self, app: "Server") -> None:
        self.app = app
        self.by_request: dict[int, list[ParkedCall]] = {}
        self.by_owner: dict[Hashable, int] = {}
        self.count = 0

    # ------------------------------------------------------------------ the two operations
    def acquire(self, route: "Route", msg_id: Any, req_id: int, timeout: float | None,
                owner: Hashable = None) -> Any:
        """The access document at once if the job runs; else parked until it does."""
        app = self.app
        info = app.sched.get_request_info(req_id)
        job = app.jobs.get(req_id)
        if info.state is ReqState.INPROGRESS and job is not None:
            return app.jobs.access_doc(job)
        if info.state.terminal:
            raise not_assigned(req_id, info.state)
        if timeout == 0:
            raise WaitTimeoutError(f"request {req_id} is {info.state}: no worker assigned yet")
        return self._park(ParkedCall(ACQUIRE, req_id, route, msg_id, timeout, owner=owner))

    def wait(self, route: "Route", msg_id: Any, req_id: int,
             states: frozenset[ReqState] | None, timeout: float | None,
             owner: Hashable = None) -> Any:
        """The request once it is in one of `states`; parked until then."""
        states = states or ALL_BUT_WAIT
        info = self.app.sched.get_request_info(req_id)
        if info.state in states:
            return documents.request_out(info)
        if info.state.terminal:
            raise request_ended(req_id, info.state, states)
        if timeout == 0:
            raise WaitTimeoutError(f"request {req_id} is {info.state}")
        return self._park(ParkedCall(WAIT, req_id, route, msg_id, timeout, states, owner=owner))

    # ------------------------------------------------------------------ bookkeeping
    def _park(self, call: ParkedCall) -> Any:
        app = self.app
        cfg = app.cfg
        if self.count >= cfg.max_parked:
            raise ServerBusyError(f"server busy: {self.count} calls already waiting "
                                  f"(max_parked {cfg.max_parked})")
        owner = call.owner
        mine = self.by_owner.get(owner, 0)
        if mine >= cfg.max_parked_per_peer:
            raise ServerBusyError(f"server busy: {owner} already has {mine} calls waiting "
                                  f"(max_parked_per_peer {cfg.max_parked_per_peer})")
        self.by_owner[owner] = mine + 1
        self.by_request.setdefault(call.req_id, []).append(call)
        self.count += 1
        if app.loop is not None:
            call.timer = app.loop.call_later(self._parked_for(call), self._expire, call)
        return PARKED

    def _parked_for(self, call: ParkedCall) -> float:
        """The caller's timeout, but never more than max_park_seconds."""
        cap = self.app.cfg.max_park_seconds
        return cap if call.timeout is None or call.timeout > cap else call.timeout

    def answer(self, call: ParkedCall, result: Any = None,
               error: BorutaError | None = None) -> None:
        waiting = self.by_request.get(call.req_id)
        if waiting is None or call not in waiting:
            return
        waiting.remove(call)
        if not waiting:
            del self.by_request[call.req_id]
        self.count -= 1
        owner = call.owner
        left = self.by_owner[owner] - 1
        if left:
            self.by_owner[owner] = left
        else:
            del self.by_owner[owner]
        if call.timer is not None:
            call.timer.cancel()
        self.app.client_endpoint.reply(call.route, call.msg_id, result=result, error=error)

    def _expire(self, call: ParkedCall) -> None:
        call.timer = None
        try:
            state = self.app.sched.request_state(call.req_id)
        except BorutaError:
            state = None
        waited = self._parked_for(call)
        capped = "" if waited == call.timeout else (
            " (the server parks a call at most max_park_seconds: ask again)")
        self.answer(call, error=WaitTimeoutError(
            f"request {call.req_id} still {state} after {format_duration(waited)}{capped}"))
        self.app.after_turn()

    def wake(self, req_id: int, state: ReqState) -> None:
        """The request changed state: answer what waited for that."""
        for call in list(self.by_request.get(req_id, ())):
            if call.kind == ACQUIRE:
                if state.terminal:
                    self.answer(call, error=not_assigned(req_id, state))
            elif state in call.states:
                info = self.app.sched.get_request_info(req_id)
                self.answer(call, result=documents.request_out(info))
            elif state.terminal:
                self.answer(call, error=request_ended(req_id, state, call.states))

    def job_opened(self, req_id: int, access_doc: dict[str, Any]) -> None:
        """The job's tunnel is open: every parked acquire of the request gets the access."""
        for call in list(self.by_request.get(req_id, ())):
            if call.kind == ACQUIRE:
                self.answer(call, result=access_doc)

    def close(self, error: BorutaError) -> None:
        """Shutdown: every parked call is answered with `error`."""
        for req_id in list(self.by_request):
            for call in list(self.by_request.get(req_id, ())):
                self.answer(call, error=error)
