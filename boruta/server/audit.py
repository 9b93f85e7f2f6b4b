"""The audit log: who changed what, one structured line per call that changes the farm.

A farm shared by teams must answer, after the fact, "who closed my request"
or "who put this worker in maintenance". Every call that changes state (the
operation table's non-idempotent operations, and every admin operation) is
written to the `boruta.audit` logger, so operators can route it apart from
the server's other lines (docs/operations.md, "Audit log"): the time, the
endpoint, the operation, the peer, the IDs it touched and its result (`ok`,
`accepted` for a call answered later, or the error code).

What a line never holds: arguments beyond the IDs. Caps, reasons, groups
and keys are not copied, so no secret can reach the log through it, and an
ID a peer sends is cut to `MAX_ID_CHARS`.

It must cost next to nothing on the request path: `record` adds a row
(time, request ID) to a run of calls that share everything else, keeping
no reference to the call; the runs go out as one log record, each row its
own line (boruta.logs formats them), at most FLUSH_DELAY seconds after the
first of them (or once FLUSH_ROWS are waiting, and at shutdown). Writing
after every turn instead cost a fifth of the server's time under load: a
busy server's turns hold a few calls each, and each write is a system call.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

from boruta.logs import AUDIT_LOGGER_NAME, Run
from boruta.server.parked import PARKED
from boruta.transport.operations import Access, Operation

if TYPE_CHECKING:
    from boruta.server.endpoint import Call

MAX_ID_CHARS = 64           # a UUID is 36; longer IDs from a peer are cut, not copied whole
MESSAGE = "audit"
FLUSH_DELAY = 0.05          # seconds the lines of a burst may wait to be written together
FLUSH_ROWS = 4096           # ... unless this many are waiting
SHARED_MAX = 4096           # run fields kept (one per connection, operation, worker, result)

#: Who made a call, as the audit names it (its `peer` field).
PeerName = Callable[["Call"], str]


def peer_of(call: "Call") -> str:
    """The caller as the audit names it: the user, else the dryad's key, else the
    connection's ROUTER identity in hex (an insecure server's peers)."""
    return call.who()


def audited(table: Mapping[str, Operation]) -> frozenset[str]:
    """The operations of `table` the audit records: those that change state, and admin ones."""
    return frozenset(name for name, op in table.items()
                     if not op.idempotent or op.access is Access.ADMIN)


def outcome_code(outcome: Any) -> str:
    """`ok`, `accepted` (answered later), or the error's code (`internal` when it has none)."""
    if isinstance(outcome, BaseException):
        return getattr(outcome, "code", None) or "internal"
    return "accepted" if outcome is PARKED else "ok"


def _short(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_ID_CHARS:
        return value[:MAX_ID_CHARS] + "..."
    return value


def touched(args: Mapping[str, Any] | None, outcome: Any) -> tuple[Any, Any]:
    """(request ID, worker UUID) a call touched: from its result (new_request's new ID,
    register's UUID), else from its arguments (`id`, `uuid`, or the UUID caps name)."""
    if type(outcome) is dict:
        req_id, uuid = outcome.get("id"), outcome.get("uuid")
    else:
        req_id = uuid = None
    if args is not None:
        if req_id is None:
            req_id = args.get("id")
        if uuid is None:
            uuid = args.get("uuid")
            if uuid is None:
                caps = args.get("caps")
                if type(caps) is dict:
                    uuid = caps.get("UUID")        # register's worker; new_request's pinned one
    if type(req_id) is not int and req_id is not None:
        req_id = _short(str(req_id))
    return req_id, (None if uuid is None else _short(str(uuid)))


VARYING = ("req_id",)                # a run's lines differ in these (and their time)


class AuditLog:
    """The audit of one endpoint: `record` after each call, lines written after the turn."""

    def __init__(self, endpoint: str, table: Mapping[str, Operation], *,
                 who: PeerName = peer_of, logger: logging.Logger | None = None,
                 flush_delay: float = FLUSH_DELAY) -> None:
        self.endpoint = endpoint
        self.operations = audited(table)
        self.who = who
        self.logger = logger or logging.getLogger(AUDIT_LOGGER_NAME)
        self.flush_delay = flush_delay                 # 0: after the turn
        self._runs: list[Run] = []
        self._waiting = 0                              # rows not yet written
        self._last: tuple[Any, ...] | None = None      # the current run's key
        self._rows: list[tuple[Any, ...]] = []         # the current run's rows
        self._shared: dict[tuple[Any, ...], tuple[Any, ...]] = {}   # run key -> its fields

    def record(self, op: Operation, call: "Call | None", args: Mapping[str, Any] | None,
               outcome: Any) -> None:
        """One call: its result, PARKED, or the exception it answered.

        Cheap, and keeps nothing of the call: consecutive calls of one operation
        by one peer with one result add a row (time, request ID) to one run."""
        name = op.name
        if name not in self.operations or call is None:
            return
        later = True
        if not self._runs:
            if not self.logger.isEnabledFor(logging.INFO):
                return                        # decided once per batch: off costs a look-up
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:              # no loop (an endpoint driven by hand): now
                later = False
            else:
                if self.flush_delay > 0:
                    loop.call_later(self.flush_delay, self.flush)
                else:
                    loop.call_soon(self.flush)
        req_id, uuid = touched(args, outcome)
        code = outcome_code(outcome)
        user = _short(args.get("name")) if args is not None else None   # a user operation's
        key = (name, call.route[0], uuid, code, user)
        if key != self._last:                 # (flush resets it: a batch starts a run)
            self._last, self._rows = key, []
            shared = self._shared.get(key)
            if shared is None:                # a connection's fields, made once
                shared = (("op", name), ("uuid", uuid), ("user", user), ("result", code),
                          ("peer", self.who(call)), ("ip", call.peer_ip()),
                          ("endpoint", self.endpoint))
                if len(self._shared) >= SHARED_MAX:
                    self._shared.clear()
                self._shared[key] = shared
            self._runs.append((MESSAGE, shared, VARYING, self._rows))
        self._rows.append((time.time(), req_id))
        self._waiting += 1
        if not later or self._waiting >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write the calls recorded so far: one log record, a line each."""
        runs, self._runs, self._last, self._waiting = self._runs, [], None, 0
        if runs:
            record = self.logger.makeRecord(self.logger.name, logging.INFO, __file__, 0,
                                            MESSAGE, (), None, extra={"runs": runs})
            self.logger.handle(record)
