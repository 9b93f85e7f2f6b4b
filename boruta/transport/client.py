"""Clients of the Boruta server: `Client` (blocking) and `AsyncClient` (asyncio).

Both speak the protocol of docs/protocol.md over a ZeroMQ DEALER socket and
raise the core's exception classes for the server's error codes (an
unknown code becomes a BorutaError carrying that code).

Reliability (ZeroMQ guide, "Lazy Pirate"): every call waits at most
`timeout` seconds for its reply (plus the waiting time of a parked call).
Reads (get/list/acquire/wait/ping) are retried up to `retries` attempts in
all, on a fresh socket each time; calls that change state are sent once,
because a lost reply does not say whether they were carried out. When no
answer comes, `ServerUnreachableError` (code "unreachable") is raised.

`acquire_worker` and `wait_request` are parked by the server until their
condition holds; the client asks in slices of at most `park_slice` seconds,
so a server that dies while a call is parked is noticed. When the caller's
own timeout passes, `WaitTimeoutError` (a ServerUnreachableError, code
"wait_timeout") is raised.

One `Client` per thread (ZeroMQ sockets are not thread-safe).
"""
from __future__ import annotations

import asyncio
import itertools
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Mapping

import zmq
import zmq.asyncio

from boruta.core.errors import BorutaError, NotFoundError, all_error_classes
from boruta.core.types import (AccessInfo, ListInfo, Paginator, ReqInfo, ReqState,
                               RequestFilter, SortInfo, WorkerFilter, WorkerInfo, WorkerState,
                               iso, parse_req_state)
from boruta.transport import protocol as P

DEFAULT_ENDPOINT = "tcp://127.0.0.1:7175"
DEFAULT_EVENTS_PORT = 7177
PARK_SLICE = 10.0


class ServerUnreachableError(BorutaError):
    """The server did not answer in time (or at all)."""

    code = "unreachable"
    default_message = "the Boruta server did not answer"


class WaitTimeoutError(ServerUnreachableError):
    """acquire_worker / wait_request: the caller's timeout passed while waiting."""

    code = "wait_timeout"
    default_message = "timeout passed while waiting"


# --------------------------------------------------------------------------- errors
_ERROR_TABLE: dict[str, type[BorutaError]] | None = None


def _error_table() -> dict[str, type[BorutaError]]:
    global _ERROR_TABLE
    classes = all_error_classes()
    if _ERROR_TABLE is None or len(_ERROR_TABLE) != len(classes):
        table: dict[str, type[BorutaError]] = {}
        depth: dict[str, int] = {}
        for cls in classes:
            code = cls.__dict__.get("code")
            if not isinstance(code, str):
                continue
            if code not in table or len(cls.__mro__) > depth[code]:
                table[code], depth[code] = cls, len(cls.__mro__)
        table["unreachable"] = ServerUnreachableError
        table["wait_timeout"] = WaitTimeoutError
        table.pop("remote", None)
        _ERROR_TABLE = table
    return _ERROR_TABLE


def error_from_wire(code: str, message: str) -> BorutaError:
    """The exception for an error reply: the class that owns `code`, or BorutaError."""
    cls = _error_table().get(code)
    if cls is None:
        exc = BorutaError(message)
        exc.code = code
        return exc
    exc = cls.__new__(cls)
    BorutaError.__init__(exc, message)
    if isinstance(exc, NotFoundError):
        exc.what = message.removesuffix(" not found")
    return exc


# --------------------------------------------------------------------------- arguments
def time_arg(value: Any) -> Any:
    """datetime -> ISO 8601 UTC (naive = UTC); numbers and strings go as they are."""
    if value is None or isinstance(value, (int, float, str)):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return iso(value)
    raise TypeError(f"a time must be a datetime, epoch seconds or an ISO string, not {type(value).__name__}")


def _state_name(state: Any, parse: Callable[[str], Any]) -> str:
    if isinstance(state, (ReqState, WorkerState)):
        return str(state)
    try:
        return str(parse(str(state)))
    except ValueError:
        return str(state)


def _worker_state_name(state: Any) -> str:
    from boruta.core.types import parse_worker_state
    return _state_name(state, parse_worker_state)


@dataclass(frozen=True)
class _Spec:
    op: str
    args: dict[str, Any]
    convert: Callable[[Any], Any] = lambda result: None
    wait: float = 0.0                 # extra seconds the server may take (parked calls)


def _none(_: Any) -> None:
    return None


class _Ops:
    """Arguments and result conversion of every operation, shared by both clients."""

    @staticmethod
    def ping() -> _Spec:
        return _Spec("ping", {}, lambda r: r)

    @staticmethod
    def new_request(caps: Mapping[str, str], priority: int, valid_after: Any = None,
                    deadline: Any = None, queue_unsatisfiable: bool = False) -> _Spec:
        return _Spec("new_request", {
            "caps": dict(caps), "priority": priority, "valid_after": time_arg(valid_after),
            "deadline": time_arg(deadline), "queue_unsatisfiable": bool(queue_unsatisfiable)},
            lambda r: int(r["id"]))

    @staticmethod
    def update_request(req_id: int, priority: int | None = None, valid_after: Any = None,
                       deadline: Any = None) -> _Spec:
        return _Spec("update_request", {"id": req_id, "priority": priority,
                                        "valid_after": time_arg(valid_after),
                                        "deadline": time_arg(deadline)}, _none)

    @staticmethod
    def close_request(req_id: int) -> _Spec:
        return _Spec("close_request", {"id": req_id}, _none)

    @staticmethod
    def get_request_info(req_id: int) -> _Spec:
        return _Spec("get_request_info", {"id": req_id}, P.request_in)

    @staticmethod
    def list_requests(filter: RequestFilter | None, sorter: SortInfo | None,
                      paginator: Paginator | None) -> _Spec:
        return _Spec("list_requests", {
            "filter": P.request_filter_out(filter), "sorter": P.sorter_out(sorter),
            "paginator": P.paginator_out(paginator)}, lambda r: P.list_in(r, P.request_in))

    @staticmethod
    def acquire_worker(req_id: int, slice_: float) -> _Spec:
        return _Spec("acquire_worker", {"id": req_id, "timeout": slice_}, P.access_in, slice_)

    @staticmethod
    def prolong_access(req_id: int) -> _Spec:
        return _Spec("prolong_access", {"id": req_id}, _none)

    @staticmethod
    def wait_request(req_id: int, states: Iterable[Any] | None, slice_: float) -> _Spec:
        names = None if states is None else [_state_name(s, parse_req_state) for s in states]
        return _Spec("wait_request", {"id": req_id, "states": names, "timeout": slice_},
                     P.request_in, slice_)

    @staticmethod
    def list_workers(filter: WorkerFilter | None, sorter: SortInfo | None,
                     paginator: Paginator | None) -> _Spec:
        return _Spec("list_workers", {
            "filter": P.worker_filter_out(filter), "sorter": P.sorter_out(sorter),
            "paginator": P.paginator_out(paginator)}, lambda r: P.list_in(r, P.worker_in))

    @staticmethod
    def get_worker_info(uuid: str) -> _Spec:
        return _Spec("get_worker_info", {"uuid": uuid}, P.worker_in)

    @staticmethod
    def set_state(uuid: str, state: Any) -> _Spec:
        return _Spec("set_state", {"uuid": uuid, "state": _worker_state_name(state)}, _none)

    @staticmethod
    def set_groups(uuid: str, groups: Iterable[str] | None) -> _Spec:
        return _Spec("set_groups", {"uuid": uuid,
                                    "groups": None if groups is None else list(groups)}, _none)

    @staticmethod
    def deregister(uuid: str) -> _Spec:
        return _Spec("deregister", {"uuid": uuid}, _none)

    @staticmethod
    def healthcheck(uuid: str, wait: float) -> _Spec:
        return _Spec("healthcheck", {"uuid": uuid}, _none, wait)


def events_endpoint_for(endpoint: str, port: int = DEFAULT_EVENTS_PORT) -> str:
    """tcp://HOST:7175 -> tcp://HOST:7177 (the event stream's default place)."""
    match = re.match(r"^(tcp://.+):(\d+|\*)$", endpoint)
    if not match:
        raise ValueError(f"cannot derive the events endpoint from {endpoint!r}: pass events_endpoint")
    return f"{match.group(1)}:{port}"


def _topics(request_id: int | None, worker_uuid: str | None) -> list[bytes]:
    if request_id is None and worker_uuid is None:
        return [b""]
    topics = []
    if request_id is not None:
        topics.append(P.request_topic(int(request_id)))
    if worker_uuid is not None:
        topics.append(P.worker_topic(worker_uuid))
    return topics


def _slices(timeout: float | None, park_slice: float) -> Iterator[float]:
    """Server-side waiting times for one parked call with the caller's `timeout`."""
    if timeout is None:
        while True:
            yield park_slice
    if timeout < 0:
        raise ValueError("timeout must not be negative")
    deadline = time.monotonic() + timeout
    while True:
        left = max(0.0, deadline - time.monotonic())
        yield min(park_slice, left)
        if left <= park_slice:
            return


# =========================================================================== sync client
class Client:
    """Blocking client (one per thread)."""

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, timeout: float = 5.0, retries: int = 3,
                 events_endpoint: str | None = None, *, park_slice: float = PARK_SLICE,
                 context: zmq.Context | None = None) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.endpoint = endpoint
        self.timeout = float(timeout)
        self.retries = max(1, int(retries))
        self._events_endpoint = events_endpoint
        self.park_slice = park_slice
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self._ids = itertools.count(1)
        self._streams: list[EventStream] = []

    @property
    def events_endpoint(self) -> str:
        return self._events_endpoint or events_endpoint_for(self.endpoint)

    # ------------------------------------------------------------------ plumbing
    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self.endpoint)
            self._sock = sock
        return self._sock

    def _reset(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None

    def call(self, op: str, args: Mapping[str, Any] | None = None, *, wait: float = 0.0,
             attempts: int | None = None) -> Any:
        """One operation; the raw `ok` result. Reads are retried, writes are not."""
        if attempts is None:
            spec = P.CLIENT_OPS.get(op)
            attempts = self.retries if spec is not None and spec.idempotent else 1
        budget = self.timeout + wait
        for _ in range(max(1, attempts)):
            msg_id = next(self._ids)
            sock = self._socket()
            try:
                sock.send(P.request_frame(msg_id, op, args), zmq.DONTWAIT)
            except zmq.Again:
                self._reset()
                continue
            deadline = time.monotonic() + budget
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not sock.poll(max(1, int(left * 1000)), zmq.POLLIN):
                    break
                try:
                    env = P.decode(sock.recv_multipart()[-1])
                except BorutaError:
                    continue                         # garbage: keep waiting for ours
                if env.id != msg_id and not (env.id is None and env.error is not None):
                    continue                         # a late reply to an abandoned call
                if env.error is not None:
                    raise error_from_wire(env.error["code"], env.error["message"])
                return env.ok
            self._reset()                            # Lazy Pirate: a fresh socket
        what = "" if attempts == 1 else f" in {attempts} attempts"
        maybe = "" if (P.CLIENT_OPS.get(op) and P.CLIENT_OPS[op].idempotent) else \
            " (the call may or may not have been carried out)"
        raise ServerUnreachableError(
            f"no answer from {self.endpoint} to {op} within {budget:g}s{what}{maybe}")

    def _run(self, spec: _Spec, attempts: int | None = None) -> Any:
        return spec.convert(self.call(spec.op, spec.args, wait=spec.wait, attempts=attempts))

    def _parked(self, make: Callable[[float], _Spec], timeout: float | None) -> Any:
        last: WaitTimeoutError | None = None
        for slice_ in _slices(timeout, self.park_slice):
            try:
                return self._run(make(slice_), attempts=1)
            except WaitTimeoutError as exc:
                last = exc                   # the server's slice ended: ask again
        assert last is not None
        raise last

    # ------------------------------------------------------------------ Requests
    def ping(self) -> dict[str, Any]:
        return self._run(_Ops.ping())

    def new_request(self, caps: Mapping[str, str], priority: int, valid_after: Any = None,
                    deadline: Any = None, queue_unsatisfiable: bool = False) -> int:
        return self._run(_Ops.new_request(caps, priority, valid_after, deadline,
                                          queue_unsatisfiable))

    def update_request(self, req_id: int, priority: int | None = None, valid_after: Any = None,
                       deadline: Any = None) -> None:
        self._run(_Ops.update_request(req_id, priority, valid_after, deadline))

    def close_request(self, req_id: int) -> None:
        self._run(_Ops.close_request(req_id))

    def get_request_info(self, req_id: int) -> ReqInfo:
        return self._run(_Ops.get_request_info(req_id))

    def list_requests(self, filter: RequestFilter | None = None, sorter: SortInfo | None = None,
                      paginator: Paginator | None = None) -> tuple[list[ReqInfo], ListInfo]:
        return self._run(_Ops.list_requests(filter, sorter, paginator))

    def acquire_worker(self, req_id: int, timeout: float | None = None) -> AccessInfo:
        """Access to the request's worker; waits while the request is WAITING.

        `timeout` None waits as long as it takes; 0 answers at once.
        """
        return self._parked(lambda s: _Ops.acquire_worker(req_id, s), timeout)

    def prolong_access(self, req_id: int) -> None:
        self._run(_Ops.prolong_access(req_id))

    def wait_request(self, req_id: int, states: Iterable[ReqState | str] | None = None,
                     timeout: float | None = None) -> ReqInfo:
        """The request once it is in one of `states` (default: any but WAITING)."""
        states = None if states is None else list(states)
        return self._parked(lambda s: _Ops.wait_request(req_id, states, s), timeout)

    # ------------------------------------------------------------------ Workers
    def list_workers(self, filter: WorkerFilter | None = None, sorter: SortInfo | None = None,
                     paginator: Paginator | None = None) -> tuple[list[WorkerInfo], ListInfo]:
        return self._run(_Ops.list_workers(filter, sorter, paginator))

    def get_worker_info(self, uuid: str) -> WorkerInfo:
        return self._run(_Ops.get_worker_info(uuid))

    def set_state(self, uuid: str, state: WorkerState | str) -> None:
        self._run(_Ops.set_state(uuid, state))

    def set_groups(self, uuid: str, groups: Iterable[str] | None) -> None:
        self._run(_Ops.set_groups(uuid, groups))

    def deregister(self, uuid: str) -> None:
        self._run(_Ops.deregister(uuid))

    def healthcheck(self, uuid: str, wait: float = 30.0) -> None:
        """Admin: ask the worker's dryad for a healthcheck (a failure sets the worker FAILED)."""
        self._run(_Ops.healthcheck(uuid, wait))

    # ------------------------------------------------------------------ events
    def events(self, request_id: int | None = None, worker_uuid: str | None = None) -> "EventStream":
        """Iterator of event dicts (CLI.md shape); both filters given = either matches."""
        stream = EventStream(self._ctx, self.events_endpoint, _topics(request_id, worker_uuid),
                             self.timeout * self.retries)
        self._streams.append(stream)
        return stream

    def close(self) -> None:
        self._reset()
        for stream in self._streams:
            stream.close()
        self._streams.clear()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class EventStream:
    """Events from the server's XPUB, after a handshake that proves the subscription is live.

    Iterating blocks until the next event. The server ticks on the stream, so
    a silent stream (server gone) raises ServerUnreachableError.
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, topics: list[bytes], sync_timeout: float) -> None:
        self.endpoint = endpoint
        self.sock: zmq.Socket | None = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        for topic in topics:
            self.sock.setsockopt(zmq.SUBSCRIBE, topic)
        self.sock.setsockopt(zmq.SUBSCRIBE, P.TOPIC_TICK.encode())
        hello = f"{P.TOPIC_HELLO}{secrets.token_hex(8)}/".encode()
        self.sock.setsockopt(zmq.SUBSCRIBE, hello)
        self.idle_limit = 15.0
        self.last_seq: int | None = None
        deadline = time.monotonic() + sync_timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(max(1, int(left * 1000)), zmq.POLLIN):
                self.close()
                raise ServerUnreachableError(f"no answer from the event stream at {endpoint}")
            topic, body = self._recv()
            if topic == hello:
                doc = P.unpack(body)
                self.idle_limit = max(3 * float(doc.get("heartbeat_interval") or 5.0), 2.0) + 1.0
                break
        self.sock.setsockopt(zmq.UNSUBSCRIBE, hello)

    def _recv(self) -> tuple[bytes, bytes]:
        assert self.sock is not None
        frames = self.sock.recv_multipart()
        return (frames[0], frames[-1]) if len(frames) >= 2 else (b"", frames[0])

    def __iter__(self) -> "EventStream":
        return self

    def __next__(self) -> dict[str, Any]:
        return self.next()

    def next(self, timeout: float | None = None) -> dict[str, Any]:
        """The next event; with `timeout`, WaitTimeoutError when none comes in time."""
        if self.sock is None:
            raise StopIteration
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = self.idle_limit
            limited = False
            if deadline is not None and deadline - time.monotonic() < wait:
                wait, limited = deadline - time.monotonic(), True
                if wait <= 0:
                    raise WaitTimeoutError(f"no event within {timeout:g}s")
            if not self.sock.poll(max(1, int(wait * 1000)), zmq.POLLIN):
                if limited:
                    raise WaitTimeoutError(f"no event within {timeout:g}s")
                raise ServerUnreachableError(
                    f"the event stream at {self.endpoint} was silent for {self.idle_limit:g}s")
            _topic, body = self._recv()
            try:
                doc = P.unpack(body)
            except BorutaError:
                continue
            if not isinstance(doc, dict) or doc.get("kind") in ("tick", "hello"):
                continue
            seq = doc.get("seq")
            if isinstance(seq, int):
                self.last_seq = seq
            return doc

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None

    def __enter__(self) -> "EventStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# =========================================================================== async client
class AsyncClient:
    """asyncio client: many calls may be in flight at once on one socket."""

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, timeout: float = 5.0, retries: int = 3,
                 events_endpoint: str | None = None, *, park_slice: float = PARK_SLICE,
                 context: zmq.asyncio.Context | None = None) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.endpoint = endpoint
        self.timeout = float(timeout)
        self.retries = max(1, int(retries))
        self._events_endpoint = events_endpoint
        self.park_slice = park_slice
        self._own_ctx = context is None
        self._ctx = context
        self._sock: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)

    @property
    def events_endpoint(self) -> str:
        return self._events_endpoint or events_endpoint_for(self.endpoint)

    def _socket(self) -> zmq.asyncio.Socket:
        if self._sock is None:
            if self._ctx is None:
                self._ctx = zmq.asyncio.Context()
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self.endpoint)
            self._sock = sock
            self._reader = asyncio.create_task(self._read(sock))
        return self._sock

    async def _read(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sock.recv_multipart()
            try:
                env = P.decode(frames[-1])
            except BorutaError:
                continue
            fut = self._pending.get(env.id) if env.id is not None else None
            if fut is None and env.id is None and env.error is not None and len(self._pending) == 1:
                fut = next(iter(self._pending.values()))
            if fut is None or fut.done():
                continue
            if env.error is not None:
                fut.set_exception(error_from_wire(env.error["code"], env.error["message"]))
            else:
                fut.set_result(env.ok)

    async def call(self, op: str, args: Mapping[str, Any] | None = None, *, wait: float = 0.0,
                   attempts: int | None = None) -> Any:
        if attempts is None:
            spec = P.CLIENT_OPS.get(op)
            attempts = self.retries if spec is not None and spec.idempotent else 1
        budget = self.timeout + wait
        loop = asyncio.get_running_loop()
        for _ in range(max(1, attempts)):
            sock = self._socket()
            msg_id = next(self._ids)
            fut: asyncio.Future[Any] = loop.create_future()
            self._pending[msg_id] = fut
            try:
                try:
                    await sock.send_multipart([P.request_frame(msg_id, op, args)], flags=zmq.DONTWAIT)
                except zmq.Again:
                    continue
                try:
                    return await asyncio.wait_for(fut, budget)
                except asyncio.TimeoutError:
                    continue
            finally:
                self._pending.pop(msg_id, None)
        raise ServerUnreachableError(f"no answer from {self.endpoint} to {op} within {budget:g}s")

    async def _run(self, spec: _Spec, attempts: int | None = None) -> Any:
        return spec.convert(await self.call(spec.op, spec.args, wait=spec.wait, attempts=attempts))

    async def _parked(self, make: Callable[[float], _Spec], timeout: float | None) -> Any:
        last: WaitTimeoutError | None = None
        for slice_ in _slices(timeout, self.park_slice):
            try:
                return await self._run(make(slice_), attempts=1)
            except WaitTimeoutError as exc:
                last = exc
        assert last is not None
        raise last

    async def ping(self) -> dict[str, Any]:
        return await self._run(_Ops.ping())

    async def new_request(self, caps: Mapping[str, str], priority: int, valid_after: Any = None,
                          deadline: Any = None, queue_unsatisfiable: bool = False) -> int:
        return await self._run(_Ops.new_request(caps, priority, valid_after, deadline,
                                                queue_unsatisfiable))

    async def update_request(self, req_id: int, priority: int | None = None,
                             valid_after: Any = None, deadline: Any = None) -> None:
        await self._run(_Ops.update_request(req_id, priority, valid_after, deadline))

    async def close_request(self, req_id: int) -> None:
        await self._run(_Ops.close_request(req_id))

    async def get_request_info(self, req_id: int) -> ReqInfo:
        return await self._run(_Ops.get_request_info(req_id))

    async def list_requests(self, filter: RequestFilter | None = None,
                            sorter: SortInfo | None = None,
                            paginator: Paginator | None = None) -> tuple[list[ReqInfo], ListInfo]:
        return await self._run(_Ops.list_requests(filter, sorter, paginator))

    async def acquire_worker(self, req_id: int, timeout: float | None = None) -> AccessInfo:
        return await self._parked(lambda s: _Ops.acquire_worker(req_id, s), timeout)

    async def prolong_access(self, req_id: int) -> None:
        await self._run(_Ops.prolong_access(req_id))

    async def wait_request(self, req_id: int, states: Iterable[ReqState | str] | None = None,
                           timeout: float | None = None) -> ReqInfo:
        states = None if states is None else list(states)
        return await self._parked(lambda s: _Ops.wait_request(req_id, states, s), timeout)

    async def list_workers(self, filter: WorkerFilter | None = None,
                           sorter: SortInfo | None = None,
                           paginator: Paginator | None = None) -> tuple[list[WorkerInfo], ListInfo]:
        return await self._run(_Ops.list_workers(filter, sorter, paginator))

    async def get_worker_info(self, uuid: str) -> WorkerInfo:
        return await self._run(_Ops.get_worker_info(uuid))

    async def set_state(self, uuid: str, state: WorkerState | str) -> None:
        await self._run(_Ops.set_state(uuid, state))

    async def set_groups(self, uuid: str, groups: Iterable[str] | None) -> None:
        await self._run(_Ops.set_groups(uuid, groups))

    async def deregister(self, uuid: str) -> None:
        await self._run(_Ops.deregister(uuid))

    async def healthcheck(self, uuid: str, wait: float = 30.0) -> None:
        await self._run(_Ops.healthcheck(uuid, wait))

    async def events(self, request_id: int | None = None,
                     worker_uuid: str | None = None) -> "AsyncEventStream":
        if self._ctx is None:
            self._ctx = zmq.asyncio.Context()
        stream = AsyncEventStream(self._ctx, self.events_endpoint, _topics(request_id, worker_uuid))
        await stream.sync(self.timeout * self.retries)
        return stream

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass
            self._reader = None
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None
        if self._own_ctx and self._ctx is not None:
            self._ctx.destroy(0)
            self._ctx = None

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class AsyncEventStream:
    """`async for event in stream` (see EventStream)."""

    def __init__(self, ctx: zmq.asyncio.Context, endpoint: str, topics: list[bytes]) -> None:
        self.endpoint = endpoint
        self.sock: zmq.asyncio.Socket | None = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        for topic in topics:
            self.sock.setsockopt(zmq.SUBSCRIBE, topic)
        self.sock.setsockopt(zmq.SUBSCRIBE, P.TOPIC_TICK.encode())
        self.idle_limit = 15.0

    async def sync(self, timeout: float) -> None:
        assert self.sock is not None
        hello = f"{P.TOPIC_HELLO}{secrets.token_hex(8)}/".encode()
        self.sock.setsockopt(zmq.SUBSCRIBE, hello)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                frames = await asyncio.wait_for(self.sock.recv_multipart(), max(0.001, left))
            except asyncio.TimeoutError:
                self.close()
                raise ServerUnreachableError(f"no answer from the event stream at {self.endpoint}") from None
            if frames[0] == hello:
                doc = P.unpack(frames[-1])
                self.idle_limit = max(3 * float(doc.get("heartbeat_interval") or 5.0), 2.0) + 1.0
                break
        self.sock.setsockopt(zmq.UNSUBSCRIBE, hello)

    def __aiter__(self) -> "AsyncEventStream":
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self.sock is None:
            raise StopAsyncIteration
        while True:
            try:
                frames = await asyncio.wait_for(self.sock.recv_multipart(), self.idle_limit)
            except asyncio.TimeoutError:
                raise ServerUnreachableError(
                    f"the event stream at {self.endpoint} was silent for {self.idle_limit:g}s") from None
            try:
                doc = P.unpack(frames[-1])
            except BorutaError:
                continue
            if isinstance(doc, dict) and doc.get("kind") not in ("tick", "hello"):
                return doc

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None
