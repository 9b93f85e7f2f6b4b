"""The blocking client: `boruta.Client`, one per thread (ZeroMQ sockets are not thread-safe).

It speaks the protocol of docs/protocol.md over a DEALER socket, and raises
the class that owns each error code (boruta.transport.errors.error_from_wire),
so callers catch the same exceptions as in process. Its operation methods
(`new_request`, `acquire_worker`, ...) are made from the operation table
(boruta.transport.calls); this module is only the plumbing.

Reliability (ZeroMQ guide, "Lazy Pirate"): every call waits at most
`timeout` seconds for its reply (plus what the operation may take: a parked
call's slice, a healthcheck's dryad). Reads are resent up to `retries`
attempts in all, on a fresh socket each time; calls that change state are
sent once, because a lost reply does not say whether they were carried out.
No answer: `ServerUnreachableError` (code "unreachable").

Identity: with `credentials` every socket is a CURVE client; without an
endpoint the client config says where the server is and with which keys
(boruta.transport.credentials). CURVE refuses a bad key by silence, so each
socket's handshake is watched (boruta.transport.handshake): a refused key or
a server key that does not match is raised at once (`KeyRefusedError`,
`ServerKeyMismatchError`), not after the timeout.
"""
from __future__ import annotations

import itertools
import os
import time
from typing import Any, Mapping, Self

import zmq

from boruta.core.durations import format_duration
from boruta.core.errors import BorutaError
from boruta.transport import calls, codec
from boruta.transport.addresses import CLIENT_ENDPOINT, EVENTS_PORT, endpoint_with_port
from boruta.transport.credentials import Credentials, load_client_config
from boruta.transport.errors import (
    ServerUnreachableError,
    WaitTimeoutError,
    error_from_wire,
)
from boruta.transport.events import EventStream, topics
from boruta.transport.handshake import HandshakeWatch
from boruta.transport.leases import LeaseKeeper
from boruta.transport.operations import CLIENT_OPS, Operation


class ClientBase:
    """What both clients share: settings, message IDs, attempts, the event endpoint.

    `endpoint` None: the client config (its server, events endpoint and
    credentials, unless `credentials` is given) decides, see `from_config`.
    """

    def __init__(self, endpoint: str | None = None, timeout: float = 5.0, retries: int = 3,
                 events_endpoint: str | None = None, *,
                 park_slice: float = calls.PARK_SLICE,
                 credentials: Credentials | None = None) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        if not park_slice > 0:
            raise ValueError("park_slice must be positive")
        if endpoint is None:
            config = load_client_config()
            endpoint = config.server or CLIENT_ENDPOINT
            events_endpoint = events_endpoint or config.events
            credentials = credentials or config.credentials
        self.endpoint = endpoint
        self.credentials = credentials
        self.timeout = float(timeout)
        self.retries = max(1, int(retries))
        self._events_endpoint = events_endpoint
        self.park_slice = park_slice
        self._ids = itertools.count(1)

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None = None, **kw: Any) -> Self:
        """A client as the client config file says (default: client_config_path()), with
        $BORUTA_SERVER, $BORUTA_SERVER_KEY and $BORUTA_KEY_FILE over it; `kw` as __init__."""
        config = load_client_config(path)
        kw.setdefault("events_endpoint", config.events)
        kw.setdefault("credentials", config.credentials)
        return cls(config.server or CLIENT_ENDPOINT, **kw)

    @property
    def events_endpoint(self) -> str:
        """Where the event stream is: as given, else the default port on the server's host."""
        return self._events_endpoint or endpoint_with_port(self.endpoint, EVENTS_PORT)

    def _attempts(self, op: str) -> int:
        declared = CLIENT_OPS.get(op)
        return self.retries if declared is not None and declared.idempotent else 1

    def _unreachable(self, op: str, budget: float, attempts: int) -> ServerUnreachableError:
        declared = CLIENT_OPS.get(op)
        what = "" if attempts == 1 else f" in {attempts} attempts"
        maybe = "" if declared is not None and declared.idempotent else \
            " (the call may or may not have been carried out)"
        return ServerUnreachableError(
            f"no answer from {self.endpoint} to {op} within {format_duration(budget)}{what}{maybe}")


@calls.with_operations(calls.sync_method)
class Client(ClientBase):
    """Blocking client. Its operation methods are listed in docs/protocol.md."""

    def __init__(self, endpoint: str | None = None, timeout: float = 5.0, retries: int = 3,
                 events_endpoint: str | None = None, *, park_slice: float = calls.PARK_SLICE,
                 context: zmq.Context | None = None,
                 credentials: Credentials | None = None) -> None:
        super().__init__(endpoint, timeout, retries, events_endpoint, park_slice=park_slice,
                         credentials=credentials)
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self._watch: HandshakeWatch | None = None
        self._streams: list[EventStream] = []
        #: The requests this client holds by lease, renewed in the background.
        self.leases = LeaseKeeper(self)

    # ------------------------------------------------------------------ plumbing
    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            if self.credentials is not None:
                self.credentials.apply(sock)
            self._watch = HandshakeWatch(sock, self.endpoint, self.credentials)
            sock.connect(self.endpoint)
            self._sock = sock
        return self._sock

    def _reset(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None

    def call(self, op: str, args: Mapping[str, Any] | None = None, *, wait: float = 0.0,
             attempts: int | None = None) -> Any:
        """One operation by name; the raw `ok` result. Reads are resent, writes are not."""
        attempts = self._attempts(op) if attempts is None else max(1, attempts)
        budget = self.timeout + wait
        for _ in range(attempts):
            msg_id = next(self._ids)
            sock = self._socket()
            try:
                sock.send(codec.request_frame(msg_id, op, args), zmq.DONTWAIT)
            except zmq.Again:
                try:
                    if self._watch is not None:
                        self._watch.check()      # a failed handshake leaves no peer
                finally:
                    self._reset()
                continue
            assert self._watch is not None
            deadline = time.monotonic() + budget
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    if not self._watch.poll(max(1, int(left * 1000))):
                        continue                     # a harmless monitor event
                except BorutaError:
                    self._reset()                    # ZeroMQ gives up on that socket
                    raise
                try:
                    env = codec.decode(sock.recv_multipart()[-1])
                except BorutaError:
                    continue                         # garbage: keep waiting for ours
                # A nil id answers the call in flight (its id could not be read);
                # any other id is a late reply to an abandoned call.
                if env.id != msg_id and not (env.id is None and env.error is not None):
                    continue
                if env.error is not None:
                    raise error_from_wire(env.error["code"], env.error["message"])
                return env.ok
            self._reset()                            # Lazy Pirate: a fresh socket
        raise self._unreachable(op, budget, attempts)

    def perform(self, op: Operation, values: dict[str, Any]) -> Any:
        """Carry out a declared operation with the caller's values (by parameter name)."""
        if not op.parks:
            wire = op.encode_args(values)
            result = op.decode(self.call(op.name, wire, wait=op.reply_within))
            self.leases.track(op.name, wire, result)
            return result
        last: WaitTimeoutError | None = None
        for slice_ in calls.slices(values.get("timeout"), self.park_slice):
            try:
                wire = op.encode_args({**values, "timeout": slice_})
                return op.decode(self.call(op.name, wire, wait=slice_, attempts=1))
            except WaitTimeoutError as exc:
                last = exc                   # the server's slice ended: ask again
        assert last is not None
        raise last

    # ------------------------------------------------------------------ events
    def events(self, request_id: int | None = None,
               worker_uuid: str | None = None) -> EventStream:
        """Iterator of event documents; both filters given = either matches."""
        stream = EventStream(self._ctx, self.events_endpoint, topics(request_id, worker_uuid),
                             self.timeout * self.retries, credentials=self.credentials)
        self._streams.append(stream)
        return stream

    def close(self) -> None:
        """Close the sockets and stop renewing leases (the server closes those requests
        after their grace; close them first to free their workers at once)."""
        self.leases.stop()
        self._reset()
        for stream in self._streams:
            stream.close()
        self._streams.clear()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
