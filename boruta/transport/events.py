"""The event stream as a client sees it: a SUB socket, a handshake, ticks.

PUB/SUB drops messages until a subscription reaches the server, so a stream
also subscribes to `hello/<nonce>/`; the server (an XPUB) answers that
subscription once, and subscriptions are processed in order, so after the
hello every topic of the socket is live. The server ticks on the stream
every heartbeat interval: a stream silent for three intervals means the
server is gone (ServerUnreachableError). With credentials the SUB socket is a
CURVE client whose handshake is watched, as the clients' sockets are.
"""
from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import zmq
import zmq.asyncio

from boruta.core.durations import format_duration
from boruta.core.errors import BorutaError
from boruta.transport import codec
from boruta.transport.credentials import Credentials
from boruta.transport.errors import ServerUnreachableError, WaitTimeoutError
from boruta.transport.handshake import HandshakeWatch

QUIET_EVENTS = ("tick", "hello")     # the stream's own messages, not events


def topics(request_id: int | None, worker_uuid: str | None) -> list[bytes]:
    """The topics for a filter; both filters given = either matches; none = everything."""
    if request_id is None and worker_uuid is None:
        return [b""]
    found = []
    if request_id is not None:
        found.append(codec.request_topic(int(request_id)))
    if worker_uuid is not None:
        found.append(codec.worker_topic(worker_uuid))
    return found


def _subscribe(sock: Any, endpoint: str, wanted: list[bytes],
               credentials: Credentials | None) -> tuple[bytes, HandshakeWatch]:
    """Connect and subscribe; returns the hello topic to wait for and the handshake's watch."""
    sock.setsockopt(zmq.LINGER, 0)
    if credentials is not None:
        credentials.apply(sock)
    watch = HandshakeWatch(sock, endpoint, credentials)
    sock.connect(endpoint)
    for topic in wanted:
        sock.setsockopt(zmq.SUBSCRIBE, topic)
    sock.setsockopt(zmq.SUBSCRIBE, codec.TOPIC_TICK.encode())
    hello = f"{codec.TOPIC_HELLO}{secrets.token_hex(8)}/".encode()
    sock.setsockopt(zmq.SUBSCRIBE, hello)
    return hello, watch


def _idle_limit(hello_body: bytes) -> float:
    """Three of the server's heartbeat intervals (it says which in the hello)."""
    try:
        doc = codec.unpack(hello_body)
        interval = float(doc.get("heartbeat_interval") or 5.0)
    except (BorutaError, AttributeError, TypeError, ValueError):
        interval = 5.0
    return max(3 * interval, 2.0) + 1.0


def _event(body: bytes) -> dict[str, Any] | None:
    """The event in a message body; None for ticks, hellos and garbage."""
    try:
        doc = codec.unpack(body)
    except BorutaError:
        return None
    if not isinstance(doc, dict) or doc.get("kind") in QUIET_EVENTS:
        return None
    return doc


def _split(frames: list[bytes]) -> tuple[bytes, bytes]:
    return (frames[0], frames[-1]) if len(frames) >= 2 else (b"", frames[0])


class EventStream:
    """Blocking iterator of event documents; the subscription is live when it returns."""

    def __init__(self, ctx: zmq.Context, endpoint: str, wanted: list[bytes],
                 sync_timeout: float, *, credentials: Credentials | None = None) -> None:
        self.endpoint = endpoint
        self.sock: zmq.Socket | None = ctx.socket(zmq.SUB)
        hello, self._watch = _subscribe(self.sock, endpoint, wanted, credentials)
        self.last_seq: int | None = None
        deadline = time.monotonic() + sync_timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise ServerUnreachableError(f"no answer from the event stream at {endpoint}")
            if not self._readable(left):
                continue
            topic, body = _split(self.sock.recv_multipart())
            if topic == hello:
                self.idle_limit = _idle_limit(body)
                break
        self.sock.setsockopt(zmq.UNSUBSCRIBE, hello)

    def _readable(self, seconds: float) -> bool:
        """Poll the socket (and its handshake); a failed handshake closes the stream."""
        try:
            return self._watch.poll(max(1, int(seconds * 1000)))
        except BorutaError:
            self.close()
            raise

    def __iter__(self) -> "EventStream":
        return self

    def __next__(self) -> dict[str, Any]:
        return self.next()

    def next(self, timeout: float | None = None) -> dict[str, Any]:
        """The next event; with `timeout`, WaitTimeoutError when none comes in time."""
        if self.sock is None:
            raise StopIteration
        deadline = None if timeout is None else time.monotonic() + timeout
        silent_until = time.monotonic() + self.idle_limit     # any message restarts it
        while True:
            now = time.monotonic()
            wait, limited = silent_until - now, False
            if deadline is not None and deadline - now < wait:
                wait, limited = deadline - now, True
            if wait <= 0:
                if limited:
                    raise WaitTimeoutError(f"no event within {format_duration(timeout)}")
                raise ServerUnreachableError(
                    f"the event stream at {self.endpoint} was silent for "
                    f"{format_duration(self.idle_limit)}")
            if not self._readable(wait):
                continue                     # the time is up, or a harmless monitor event
            silent_until = time.monotonic() + self.idle_limit
            doc = _event(_split(self.sock.recv_multipart())[1])
            if doc is None:
                continue
            seq = doc.get("seq")
            if isinstance(seq, int):
                self.last_seq = seq
            return doc

    def close(self) -> None:
        self._watch.close()
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None

    def __enter__(self) -> "EventStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncEventStream:
    """`async for event in stream` (see EventStream); `sync()` before iterating."""

    def __init__(self, ctx: zmq.asyncio.Context, endpoint: str, wanted: list[bytes], *,
                 credentials: Credentials | None = None) -> None:
        self.endpoint = endpoint
        self.sock: zmq.asyncio.Socket | None = ctx.socket(zmq.SUB)
        self._hello, self._watch = _subscribe(self.sock, endpoint, wanted, credentials)
        self._failure: asyncio.Task[BorutaError] | None = None
        self.idle_limit = 15.0

    async def _recv(self, timeout: float) -> list[bytes] | None:
        """The next message, None after `timeout`; a failed handshake closes the stream
        and is raised."""
        assert self.sock is not None
        if self._failure is None:
            self._failure = asyncio.ensure_future(self._watch.failure())
        recv = asyncio.ensure_future(self.sock.recv_multipart())
        done, _ = await asyncio.wait({recv, self._failure}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if recv in done:
            return recv.result()
        recv.cancel()
        if self._failure in done:
            error = self._failure.result()
            self.close()
            raise error
        return None

    async def sync(self, timeout: float) -> None:
        assert self.sock is not None
        deadline = time.monotonic() + timeout
        while True:
            frames = await self._recv(max(0.001, deadline - time.monotonic()))
            if frames is None:
                self.close()
                raise ServerUnreachableError(
                    f"no answer from the event stream at {self.endpoint}")
            topic, body = _split(frames)
            if topic == self._hello:
                self.idle_limit = _idle_limit(body)
                break
        self.sock.setsockopt(zmq.UNSUBSCRIBE, self._hello)

    def __aiter__(self) -> "AsyncEventStream":
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self.sock is None:
            raise StopAsyncIteration
        while True:
            frames = await self._recv(self.idle_limit)
            if frames is None:
                raise ServerUnreachableError(
                    f"the event stream at {self.endpoint} was silent for "
                    f"{format_duration(self.idle_limit)}")
            doc = _event(_split(frames)[1])
            if doc is not None:
                return doc

    def close(self) -> None:
        if self._failure is not None:
            self._failure.cancel()
            self._failure = None
        self._watch.close()
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None
