"""The asyncio client: `boruta.AsyncClient`, many calls in flight on one socket.

Same operations, errors and retry rules as `boruta.Client` (both read the
operation table); replies are matched to calls by message ID by one reader
task. One more task watches the socket's handshake: it wakes only on a
connection's events, and a failed handshake fails every call in flight with
its error (KeyRefusedError, ServerKeyMismatchError) and drops the socket,
which ZeroMQ would not use again. The calls themselves do no monitor work.
"""
from __future__ import annotations

import asyncio
from typing import Any, Mapping

import zmq
import zmq.asyncio

from boruta.core.errors import BorutaError
from boruta.transport import calls, codec
from boruta.transport.client import ClientBase
from boruta.transport.credentials import Credentials
from boruta.transport.errors import WaitTimeoutError, error_from_wire
from boruta.transport.events import AsyncEventStream, topics
from boruta.transport.handshake import HandshakeWatch
from boruta.transport.leases import AsyncLeaseKeeper
from boruta.transport.operations import Operation


#: How long a call whose send found no peer waits for the handshake's verdict.
AGAIN_WAIT = 0.5


@calls.with_operations(calls.async_method)
class AsyncClient(ClientBase):
    """asyncio client. Its operation methods are coroutines (docs/protocol.md lists them)."""

    def __init__(self, endpoint: str | None = None, timeout: float = 5.0, retries: int = 3,
                 events_endpoint: str | None = None, *, park_slice: float = calls.PARK_SLICE,
                 context: zmq.asyncio.Context | None = None,
                 credentials: Credentials | None = None) -> None:
        super().__init__(endpoint, timeout, retries, events_endpoint, park_slice=park_slice,
                         credentials=credentials)
        self._own_ctx = context is None
        self._ctx = context
        self._sock: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._watch: HandshakeWatch | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        #: The requests this client holds by lease, renewed by a task of its loop.
        self.leases = AsyncLeaseKeeper(self)

    def _socket(self) -> zmq.asyncio.Socket:
        if self._sock is None:
            if self._ctx is None:
                self._ctx = zmq.asyncio.Context()
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            if self.credentials is not None:
                self.credentials.apply(sock)
            self._watch = HandshakeWatch(sock, self.endpoint, self.credentials)
            sock.connect(self.endpoint)
            self._sock = sock
            self._reader = asyncio.create_task(self._read(sock))
            self._watcher = asyncio.create_task(self._watch_handshake(self._watch))
        return self._sock

    async def _watch_handshake(self, watch: HandshakeWatch) -> None:
        """Fail the calls in flight when the handshake fails, and drop the socket."""
        error = await watch.failure()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(error)
        if self._watch is watch:
            await self._drop_socket()

    async def _drop_socket(self) -> None:
        """Forget the socket at once (the next call makes a fresh one), then close it."""
        sock, watch, tasks = self._sock, self._watch, (self._watcher, self._reader)
        self._sock = self._watch = self._watcher = self._reader = None
        current = asyncio.current_task()
        for task in tasks:
            if task is not None and task is not current:
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        if watch is not None:
            watch.close()
        if sock is not None:
            sock.close(0)

    async def _read(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sock.recv_multipart()
            try:
                env = codec.decode(frames[-1])
            except BorutaError:
                continue
            fut = self._pending.get(env.id) if env.id is not None else None
            # A nil id answers a call whose id the server could not read: certain
            # only while one call is in flight (else that call times out).
            if fut is None and env.id is None and env.error is not None \
                    and len(self._pending) == 1:
                fut = next(iter(self._pending.values()))
            if fut is None or fut.done():
                continue
            if env.error is not None:
                fut.set_exception(error_from_wire(env.error["code"], env.error["message"]))
            else:
                fut.set_result(env.ok)

    async def call(self, op: str, args: Mapping[str, Any] | None = None, *, wait: float = 0.0,
                   attempts: int | None = None) -> Any:
        """One operation by name; the raw `ok` result. Reads are resent, writes are not."""
        attempts = self._attempts(op) if attempts is None else max(1, attempts)
        budget = self.timeout + wait
        loop = asyncio.get_running_loop()
        for _ in range(attempts):
            sock = self._socket()
            msg_id = next(self._ids)
            fut: asyncio.Future[Any] = loop.create_future()
            self._pending[msg_id] = fut
            try:
                try:
                    await sock.send_multipart([codec.request_frame(msg_id, op, args)],
                                              flags=zmq.DONTWAIT)
                except zmq.Again:
                    # No peer to send to: a failed handshake (its watcher fails this call
                    # at once) or a full queue (wait a little before the next attempt).
                    await asyncio.wait({fut}, timeout=min(budget, AGAIN_WAIT))
                    if fut.done():
                        return fut.result()
                    continue
                try:
                    return await asyncio.wait_for(fut, budget)
                except asyncio.TimeoutError:
                    continue
            finally:
                self._pending.pop(msg_id, None)
        raise self._unreachable(op, budget, attempts)

    async def perform(self, op: Operation, values: dict[str, Any]) -> Any:
        """Carry out a declared operation with the caller's values (by parameter name)."""
        if not op.parks:
            wire = op.encode_args(values)
            result = op.decode(await self.call(op.name, wire, wait=op.reply_within))
            self.leases.track(op.name, wire, result)
            return result
        last: WaitTimeoutError | None = None
        for slice_ in calls.slices(values.get("timeout"), self.park_slice):
            try:
                wire = op.encode_args({**values, "timeout": slice_})
                return op.decode(await self.call(op.name, wire, wait=slice_, attempts=1))
            except WaitTimeoutError as exc:
                last = exc
        assert last is not None
        raise last

    async def events(self, request_id: int | None = None,
                     worker_uuid: str | None = None) -> AsyncEventStream:
        if self._ctx is None:
            self._ctx = zmq.asyncio.Context()
        stream = AsyncEventStream(self._ctx, self.events_endpoint,
                                  topics(request_id, worker_uuid), credentials=self.credentials)
        await stream.sync(self.timeout * self.retries)
        return stream

    async def close(self) -> None:
        await self.leases.stop()
        await self._drop_socket()
        if self._own_ctx and self._ctx is not None:
            self._ctx.destroy(0)
            self._ctx = None

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
