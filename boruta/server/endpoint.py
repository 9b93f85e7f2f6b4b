"""One ROUTER socket serving one table of operations.

Both the client and the dryad endpoint work the same way, read from the
operation table (boruta.transport.operations): a peer over its rate gets
`rate_limited` before anything is decoded; the frame is decoded and its
operation looked up (an operation of the other endpoint is named as such);
the arguments are converted once by the declaration; the handler
`op_<name>` is called; the reply (or the error, with its code) goes out with
the turn (a list cut to `max_reply_bytes`; a large reply only within the
peer's byte budget: boruta.server.replybytes). Nothing a peer sends escapes
as an exception: a BorutaError is its code, anything else is `internal` and
logged with its traceback.

Handlers are looked up once, at construction: an operation without a
handler, or a handler without an operation, stops the server from starting.

Calls are counted by operation and errors by code, and the handlers of the
operations that may run the matcher are timed, in plain numbers the hot path
only adds to (`counts`, `errors`, `rate_limited`); /metrics reads them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any, Callable, Mapping

from boruta.core.errors import BorutaError, UnknownUserError
from boruta.core.users import User
from boruta.server.audit import AuditLog
from boruta.server.outbox import NOT_AN_ACK
from boruta.server.parked import PARKED
from boruta.server.replybytes import TRACKED_FROM, PeerBuffers, fit_list
from boruta.transport import codec
from boruta.transport.errors import BadFrameError, RateLimitedError, UnknownOperationError
from boruta.transport.loopsocket import LoopSocket
from boruta.transport.operations import Access, Operation

if TYPE_CHECKING:
    from boruta.server.app import Server
    from boruta.server.identities import Identities

log = logging.getLogger("boruta.server")

Route = tuple[bytes, tuple[bytes, ...]]      # the peer's identity, the envelope prefix
PEEK_LIMIT = 4096                            # bytes a rate-limited frame is read for its id
Handler = Callable[["Call", dict[str, Any]], Any]
Authorise = Callable[[Operation, "Call", dict[str, Any], "Server"], None]
# The client operations whose scheduler call may run the matcher (a new request, a
# changed request, a worker that may turn IDLE or gain groups): their handlers are timed.
MATCHING_OPS = frozenset({"new_request", "update_request", "set_state", "set_groups"})
NO_OPERATION = ""            # the operation of a refused frame that named none (or none known)


@dataclass(slots=True)
class Call:
    """Who called, and how to answer: a handler's first argument."""

    route: Route
    msg_id: Any
    frame: Any = None            # the payload as a zmq.Frame (Peer-Address, User-Id)
    key: str | None = None       # the connection's CURVE public key (None: insecure)
    user: User | None = None     # the user holding that key (client endpoint)
    ip: str | None = None        # the peer's address where no frame carries it (HTTP)

    @property
    def identity(self) -> bytes:
        return self.route[0]

    def who(self) -> str:
        """The caller as logs name it: the user, else the key, else the connection
        (an insecure server's peers have no key: they are told apart by connection)."""
        if self.user is not None and self.key is not None:
            return self.user.name
        return f"key:{self.key}" if self.key is not None else self.route[0].hex()

    def peer_ip(self) -> str | None:
        """The IP the peer connected from (None for ipc, inproc, or a copied frame)."""
        if self.frame is None:
            return self.ip
        try:
            return self.frame.get("Peer-Address")
        except Exception:        # zmq raises for transports without a peer address
            return None


class OperationCounts:
    """One operation's calls, and for a matching one its handler's time, in plain numbers:
    the hot path only adds to them; metrics reads them when scraped."""

    __slots__ = ("calls", "timed", "timed_calls", "seconds")

    def __init__(self, timed: bool = False) -> None:
        self.calls = 0               # calls that named this operation (refused ones too)
        self.timed = timed           # a matching operation: its handler's time is kept
        self.timed_calls = 0         # handler calls that returned (and were timed)
        self.seconds = 0.0           # their time, perf_counter seconds

    def add(self, seconds: float) -> None:
        """One more call that returned after `seconds` (a path outside the endpoint)."""
        self.calls += 1
        self.timed_calls += 1
        self.seconds += seconds


def handlers_for(table: Mapping[str, Operation], *handlers: object) -> dict[str, Handler]:
    """`op_<name>` of `handlers` for every operation of `table`; both sets must be equal."""
    found: dict[str, Any] = {}
    extra: list[str] = []
    for handler in handlers:
        for attr in dir(handler):
            if attr.startswith("op_"):
                if attr[3:] in table and attr[3:] not in found:
                    found[attr[3:]] = getattr(handler, attr)
                else:
                    extra.append(attr[3:])
    missing = sorted(name for name in table if name not in found)
    if missing or extra:
        names = ", ".join(type(h).__name__ for h in handlers)
        raise TypeError(f"{names} does not match the operation table: "
                        f"missing {missing}, not declared {sorted(extra)}")
    return {name: found[name] for name in table}


class Endpoint:
    def __init__(self, app: "Server", name: str, table: Mapping[str, Operation],
                 *handlers: object, other_table: Mapping[str, Operation], other_name: str,
                 acknowledges: bool, on_reply: Callable[[bytes, codec.Envelope], None] | None
                 = None, gate: Callable[[str, dict[str, Any], list[Any]], bool] | None = None,
                 on_message: Callable[[bytes], None] | None = None,
                 zero_copy: bool = False, identity_frame: bool = False,
                 buffers: PeerBuffers | None = None,
                 users: "Identities | None" = None, authorise: Authorise | None = None) -> None:
        self.app = app
        self.name = name
        self.table = table
        self.handlers = handlers_for(table, *handlers)
        self.other_table = other_table
        self.other_name = other_name
        self.acknowledges = acknowledges       # success replies are acks (storage_failed)
        self.on_reply = on_reply               # replies to our commands (dryad endpoint)
        self.gate = gate                       # may hold a call back (history loading)
        self.on_message = on_message           # every message from a peer (liveness)
        self.zero_copy = zero_copy             # frames arrive as zmq.Frame, not bytes
        self.audit = AuditLog(name, table)     # state-changing calls, one line each
        # A secure endpoint knows each call's key from its frame (the CURVE handshake's
        # ZAP user id), and with a user book, its user: unknown keys are refused.
        self.secure = (zero_copy or identity_frame) and not app.cfg.insecure
        self.identity_frame = zero_copy or identity_frame   # frames[0] is a zmq.Frame
        self.users = users
        self._user_of = users.user_of if users is not None else None
        self.authorise = authorise             # Access of each operation (authorisation)
        self.buffers = buffers                 # bytes of replies per peer (client endpoint)
        self.sock: LoopSocket | None = None
        self.messages = 0
        # Calls by operation, errors by (operation, code): plain numbers read by metrics.
        self.counts = {name: OperationCounts(name in MATCHING_OPS) for name in table}
        self.errors: dict[tuple[str, str], int] = {}
        self.rate_limited = 0        # refused before decoding (no operation): the busiest error
        # The hot path's collaborators, looked up once (they live as long as the app).
        self._allow = app.limiter.allow
        self._send = app.outbox.send
        self._after_turn = app.after_turn
        self._max_bytes = app.cfg.max_frame_bytes
        self._max_reply = app.cfg.max_reply_bytes

    # ------------------------------------------------------------------ replies
    def reply(self, route: Route, msg_id: Any, result: Any = None,
              error: BorutaError | tuple[str, str] | None = None,
              backward: bool | None = None) -> None:
        """Answer a call; leaves with the turn, after its commit.

        `backward` is given for a list document (the page's direction): one
        larger than max_reply_bytes is cut. A large reply to a peer that does
        not read is dropped here, before the turn holds it.
        """
        if error is not None:
            frame, ack = codec.error_frame(msg_id, error), NOT_AN_ACK
        else:
            frame = codec.ok_frame(msg_id, result)
            if backward is not None and len(frame) > self._max_reply:
                frame = fit_list(msg_id, result, backward, self._max_reply)
            ack = msg_id if self.acknowledges else NOT_AN_ACK
        if len(frame) >= TRACKED_FROM and self.buffers is not None:
            frame = self.buffers.admit(route[0], frame)
            if frame is None:
                return
        self._send(self.sock, [route[0], *route[1], frame], ack)

    def _refuse(self, route: Route, msg_id: Any, error: BorutaError) -> None:
        self.app.stats.errors += 1
        self.reply(route, msg_id, error=error)

    # ------------------------------------------------------------------ counts
    def count_error(self, op: Operation | None, code: str) -> None:
        """One more call of `op` (None: a frame that named no known operation) answered
        with the error `code`."""
        key = (NO_OPERATION if op is None else op.name, code)
        self.errors[key] = self.errors.get(key, 0) + 1

    def call_handler(self, op: Operation, call: Call, args: dict[str, Any]) -> Any:
        """`op`'s handler for a checked and authorised call, timed when it may run the
        matcher (a call that raises is not timed: it matched nothing). The socket's path
        and the HTTP face's."""
        counts = self.counts[op.name]
        if not counts.timed:
            return self.handlers[op.name](call, args)
        started = perf_counter()
        result = self.handlers[op.name](call, args)
        counts.seconds += perf_counter() - started
        counts.timed_calls += 1
        return result

    # ------------------------------------------------------------------ one message
    def on_frames(self, frames: list[Any]) -> None:
        """The socket's reader: one multipart message from a peer."""
        self.messages += 1
        zero_copy = self.zero_copy
        first = frames[0]
        identity = first.bytes if self.identity_frame else first
        if len(frames) == 2:
            route: Route = (identity, ())
            frame = frames[1]
        elif len(frames) == 3 and not zero_copy and frames[1] == b"":
            route, frame = (identity, (b"",)), frames[2]          # a REQ peer
        else:
            self.count_error(None, BadFrameError.code)
            self._refuse((identity, ()), None, BadFrameError(
                f"expected one frame per message, got {len(frames) - 1}"))
            return
        payload = frame.bytes if zero_copy else frame
        key = first.get("User-Id") if self.secure else None
        user = self._user_of(key) if self._user_of is not None else None
        # Calls count against their user; an insecure server's peers (no key) each alone.
        by_user = key is not None and user is not None
        if not self._allow(user.name if by_user else key or identity):    # type: ignore[union-attr]
            self.rate_limited += 1
            self._refuse(route, _peek_id(payload), RateLimitedError(
                f"more than {self.app.cfg.peer_rate:g} messages/s from "
                f"{'user ' + user.name if by_user else 'this peer'}: slow down"))  # type: ignore[union-attr]
            return
        if self.on_message is not None:
            self.on_message(identity)
        msg_id = call = op = args = None
        try:
            if self.on_reply is not None:
                env = codec.decode(payload, self._max_bytes)
                msg_id = env.id
                if not env.is_request:
                    self.on_reply(identity, env)
                    return
                name, raw_args = env.op, env.args
            else:
                msg_id, name, raw_args = codec.decode_request(payload, self._max_bytes)
            call = Call(route, msg_id, frame if zero_copy else None, key, user)
            if user is None and self.users is not None:
                raise UnknownUserError(
                    "this connection's key belongs to no user (removed since it connected?)")
            op = self.table.get(name)  # type: ignore[arg-type]
            if op is None:
                hint = (f" (a {self.other_name} operation: use the {self.other_name} endpoint)"
                        if name in self.other_table else "")
                raise UnknownOperationError(f"unknown operation {name!r}{hint}")
            counts = self.counts[op.name]
            counts.calls += 1
            args = op.check(raw_args)  # type: ignore[arg-type]
            if self.authorise is not None and op.access is not Access.ANYONE:
                self.authorise(op, call, args, self.app)
            if self.gate is not None and self.gate(op.name, args, frames):
                counts.calls -= 1                 # held back: counted when it is replayed
                return
            result = self.call_handler(op, call, args)
        except BorutaError as exc:
            self.count_error(op, exc.code)
            self._refuse(route, getattr(exc, "msg_id", msg_id), exc)
            if op is not None:
                self.audit.record(op, call, args, exc)
        except Exception as exc:
            self.app.stats.errors += 1
            self.count_error(op, "internal")
            log.exception("internal error in a %s call", self.name)
            self.reply(route, msg_id, error=("internal", f"internal server error: {exc}"))
            if op is not None:
                self.audit.record(op, call, args, exc)
        else:
            self.audit.record(op, call, args, result)
            if result is not PARKED:
                # A list (its declaration has a paginator) may be cut to fit a reply.
                self.reply(route, msg_id, result=result, backward=_backward(
                    args["paginator"]) if "paginator" in op.known else None)
        self._after_turn()


def _backward(paginator: Any) -> bool:
    """The direction of a list reply's page (no paginator: forward)."""
    return paginator is not None and bool(paginator.backward)


def _peek_id(payload: bytes) -> Any:
    """The message id of a frame we will not process, if it is cheap to read."""
    if len(payload) > PEEK_LIMIT:
        return None
    try:
        obj = codec.unpack(payload)
    except BorutaError:
        return None
    msg_id = obj.get("id") if isinstance(obj, dict) else None
    return msg_id if codec.is_id(msg_id) else None
