"""The event stream as a client sees it: a SUB socket, a handshake, ticks.

PUB/SUB drops messages until a subscription reaches the server, so a stream
also subscribes to `hello/<nonce>/`; the server (an XPUB) answers that
subscription once, and subscriptions are processed in order, so after the
hello every topic of the socket is live. The server ticks on the stream
every heartbeat interval: a stream silent for three intervals means the
server is gone (ServerUnreachableError).
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
from boruta.transport.errors import ServerUnreachableError, WaitTimeoutError

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


def _subscribe(sock: Any, endpoint: str, wanted: list[bytes]) -> bytes:
    """Connect and subscribe; returns the hello topic to wait for."""
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    for topic in wanted:
        sock.setsockopt(zmq.SUBSCRIBE, topic)
    sock.setsockopt(zmq.SUBSCRIBE, codec.TOPIC_TICK.encode())
    hello = f"{codec.TOPIC_HELLO}{secrets.token_hex(8)}/".encode()
    sock.setsockopt(zmq.SUBSCRIBE, hello)
    return hello


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
                 sync_timeout: float) -> None:
        self.endpoint = endpoint
        self.sock: zmq.Socket | None = ctx.socket(zmq.SUB)
        hello = _subscribe(self.sock, endpoint, wanted)
        self.last_seq: int | None = None
        deadline = time.monotonic() + sync_timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(max(1, int(left * 1000)), zmq.POLLIN):
                self.close()
                raise ServerUnreachableError(f"no answer from the event stream at {endpoint}")
            topic, body = _split(self.sock.recv_multipart())
            if topic == hello:
                self.idle_limit = _idle_limit(body)
                break
        self.sock.setsockopt(zmq.UNSUBSCRIBE, hello)

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
            wait, limited = self.idle_limit, False
            if deadline is not None and deadline - time.monotonic() < wait:
                wait, limited = deadline - time.monotonic(), True
                if wait <= 0:
                    raise WaitTimeoutError(f"no event within {format_duration(timeout)}")
            if not self.sock.poll(max(1, int(wait * 1000)), zmq.POLLIN):
                if limited:
                    raise WaitTimeoutError(f"no event within {format_duration(timeout)}")
                raise ServerUnreachableError(
                    f"the event stream at {self.endpoint} was silent for "
                    f"{format_duration(self.idle_limit)}")
            doc = _event(_split(self.sock.recv_multipart())[1])
            if doc is None:
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


class AsyncEventStream:
    """`async for event in stream` (see EventStream); `sync()` before iterating."""

    def __init__(self, ctx: zmq.asyncio.Context, endpoint: str, wanted: list[bytes]) -> None:
        self.endpoint = endpoint
        self.sock: zmq.asyncio.Socket | None = ctx.socket(zmq.SUB)
        self._hello = _subscribe(self.sock, endpoint, wanted)
        self.idle_limit = 15.0

    async def sync(self, timeout: float) -> None:
        assert self.sock is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                frames = await asyncio.wait_for(self.sock.recv_multipart(), max(0.001, left))
            except asyncio.TimeoutError:
                self.close()
                raise ServerUnreachableError(
                    f"no answer from the event stream at {self.endpoint}") from None
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
            try:
                frames = await asyncio.wait_for(self.sock.recv_multipart(), self.idle_limit)
            except asyncio.TimeoutError:
                raise ServerUnreachableError(
                    f"the event stream at {self.endpoint} was silent for "
                    f"{format_duration(self.idle_limit)}") from None
            doc = _event(_split(frames)[1])
            if doc is not None:
                return doc

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None
