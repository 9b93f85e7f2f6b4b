"""The dryad's side of the server link, for the real agent and the simulator alike.

A dryad connects out to the server's dryad endpoint as a ZeroMQ DEALER, so
the board needs no inbound port. `DryadLink.run()`:

1. opens the socket and sends `register {caps, dryad_address, ssh_address}`
   (retrying until the server answers; a refusal such as a missing UUID is
   raised, since retrying cannot help);
2. heartbeats every `heartbeat_interval` seconds (the server says how often
   in its register reply; `max_heartbeat_interval` can make it more often);
   a heartbeat without a reply within `interval * liveness` seconds means
   the server is gone: the socket is recreated and the dryad registers
   again (Paranoid Pirate). A `not_registered` answer (the server restarted
   or declared this dryad lost) also triggers a new registration;
   `deregistered` stops the heartbeats until the dryad is restarted.
   Failed connection attempts in a row wait longer and longer (`retry_base`,
   doubling up to `retry_max`, jittered), so that a farm of dryads does not
   hammer a server that is coming back;
3. with `credentials` its socket is a CURVE client, and its handshake is
   watched: a key the server refuses (not enrolled yet) or a server key
   that does not match is logged at once, saying what to do, and the link
   keeps trying with the same backoff (an admin may enrol it meanwhile);
4. answers the server's commands (`prepare`, `put_in_maintenance`,
   `healthcheck`) by calling `handler(op, args)`: its return value is the
   reply, a BorutaError becomes an error reply, and `NO_REPLY` sends
   nothing (for fault injection).
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from typing import Any, Awaitable, Callable, Mapping

import zmq
import zmq.asyncio

from boruta.core.errors import BorutaError
from boruta.transport import codec, operations
from boruta.transport.addresses import UPSTREAM_DRYAD_PORT
from boruta.transport.credentials import Credentials
from boruta.transport.errors import KeyRefusedError, UnknownOperationError
from boruta.transport.handshake import HandshakeWatch

log = logging.getLogger(__name__)

#: What a dryad registers as its own address. It listens on nothing (it connects
#: out), so this is informational only: upstream's dryad port, with no host, which
#: the server fills in with the address the dryad connects from.
DRYAD_ADDRESS = f":{UPSTREAM_DRYAD_PORT}"

#: ZeroMQ's own TCP reconnect interval, doubling up to the maximum (milliseconds).
ZMQ_RECONNECT_MS = 100
ZMQ_RECONNECT_MAX_MS = 2000

NO_REPLY = object()
Handler = Callable[[str, dict[str, Any]], Awaitable[Any]]


class RemoteError(BorutaError):
    """An error reply from the server, with the server's code."""

    code = "remote"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Lost(Exception):
    """The server stopped answering: recreate the socket and register again."""


TRANSIENT = {"rate_limited", "busy", "shutting_down", "internal"}


def retry_wait(attempt: int, base: float, maximum: float) -> float:
    """The wait (before jitter) after failed connection attempt number `attempt` (1, 2, ...)."""
    return min(base * 2 ** (attempt - 1), max(maximum, base))


class DryadLink:
    """One dryad's connection to the server (see the module docstring).

    `dryad_address` is sent at registration (`DRYAD_ADDRESS` for a real
    dryad). `handler(op, args)` answers the server's commands. `retry_base` and
    `retry_max`: the wait after the first failed connection attempt and its
    ceiling (equal by default: a constant wait). `max_heartbeat_interval`:
    heartbeat at least this often even if the server allows more.
    """

    def __init__(self, server: str, caps: Mapping[str, str], dryad_address: str,
                 ssh_address: str, handler: Handler, *,
                 ctx: zmq.asyncio.Context | None = None, reply_timeout: float = 5.0,
                 retry_base: float = 1.0, retry_max: float | None = None,
                 max_heartbeat_interval: float | None = None,
                 name: str | None = None, credentials: Credentials | None = None) -> None:
        self.server = server
        self.credentials = credentials
        self.handshake_error: BorutaError | None = None   # the last failed handshake
        self.caps = dict(caps)
        self.dryad_address = dryad_address
        self.ssh_address = ssh_address
        self.handler = handler
        self.reply_timeout = reply_timeout
        self.retry_base = retry_base
        self.retry_max = max(retry_max if retry_max is not None else retry_base, retry_base)
        self.retry_interval = retry_base      # the wait after the current attempt fails
        self.attempts = 0                     # connection attempts since the last registration
        self.max_heartbeat_interval = max_heartbeat_interval
        self.name = name or self.caps.get("UUID", "dryad")
        self._own_ctx = ctx is None
        self.ctx = ctx or zmq.asyncio.Context()
        self.sock: zmq.asyncio.Socket | None = None
        self._watch: HandshakeWatch | None = None
        self.uuid: str | None = None
        self.heartbeat_interval = 5.0
        self.heartbeat_liveness = 3
        self.registered = asyncio.Event()
        self.deregistered = False
        self.paused = False                   # True: no heartbeats (simulates a hung agent)
        self.registrations = 0
        self.heartbeats = 0
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._stop = asyncio.Event()
        self._commands: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ public
    async def run(self) -> None:
        """Serve until `stop()`; raises RemoteError if the server refuses registration."""
        try:
            while not self._stop.is_set():
                self._open()
                reader = asyncio.create_task(self._reader())
                session = asyncio.create_task(self._session())
                stopper = asyncio.create_task(self._stop.wait())
                assert self._watch is not None
                watcher = asyncio.create_task(self._watch.failure())
                tasks = (reader, session, stopper, watcher)
                try:
                    await asyncio.wait({session, stopper, watcher},
                                       return_when=asyncio.FIRST_COMPLETED)
                    if session.done():
                        session.result()         # RemoteError (refused) propagates
                    elif watcher.done():
                        self._handshake_failed(watcher.result())
                except _Lost as exc:
                    log.info("%s: server lost (%s); reconnecting", self.name, exc)
                finally:
                    self.registered.clear()
                    for task in tasks:
                        task.cancel()
                    for task in tasks:
                        with contextlib.suppress(asyncio.CancelledError, _Lost, Exception):
                            await task
                    self._close_socket()
                if not self._stop.is_set():
                    await self._sleep(self.retry_interval * (0.5 + random.random()))
        finally:
            for task in list(self._commands):
                task.cancel()
            self._close_socket()
            if self._own_ctx:
                self.ctx.destroy(0)

    def stop(self) -> None:
        self._stop.set()

    async def register_again(self) -> None:
        """Register now, on this connection; the server treats it as any registration
        (a FAIL worker goes to PREPARE, a changed SSH port sends a BUSY one to
        MAINTENANCE)."""
        await self._register()

    async def set_fail(self, reason: str) -> None:
        """Report that this worker failed; the server fails its job and keeps the reason."""
        await self.call("set_fail", {"uuid": self.caps.get("UUID", ""), "reason": reason})

    async def call(self, op: str, args: dict[str, Any], timeout: float | None = None) -> Any:
        """One request to the server; RemoteError for an error reply, _Lost for silence."""
        if self.sock is None:
            raise _Lost("not connected")
        msg_id = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        try:
            try:
                await self.sock.send_multipart([codec.request_frame(msg_id, op, args)],
                                               flags=zmq.DONTWAIT)
            except zmq.ZMQError as exc:
                raise _Lost(f"cannot send: {exc}") from None
            try:
                return await asyncio.wait_for(fut, timeout or self.reply_timeout)
            except asyncio.TimeoutError:
                raise _Lost(f"no reply to {op}") from None
        finally:
            self._pending.pop(msg_id, None)

    # ------------------------------------------------------------------ internals
    def _handshake_failed(self, error: BorutaError) -> None:
        """Say why the server will not talk to us; run() then retries with its backoff."""
        self.handshake_error = error
        if isinstance(error, KeyRefusedError):
            key = self.credentials.public_key if self.credentials is not None else "none"
            log.warning("%s: the server refused this dryad's key (%s): enroll it with "
                        "boruta admin dryad enroll %s; retrying", self.name, key,
                        self.caps.get("UUID", "UUID"))
        elif self.credentials is None:
            log.warning("%s: the server at %s requires CURVE: put server_key and key_file in "
                        "this dryad's configuration (boruta admin dryad enroll %s writes the "
                        "key file); retrying", self.name, self.server,
                        self.caps.get("UUID", "UUID"))
        else:
            log.warning("%s: %s; retrying", self.name, error.message)

    def _open(self) -> None:
        # run() sleeps `retry_interval` (jittered) after an attempt fails, so set it
        # for the attempt starting now: base, 2 x base, 4 x base, ... max.
        self.attempts += 1
        self.retry_interval = retry_wait(self.attempts, self.retry_base, self.retry_max)
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RECONNECT_IVL, ZMQ_RECONNECT_MS)
        self.sock.setsockopt(zmq.RECONNECT_IVL_MAX, ZMQ_RECONNECT_MAX_MS)
        if self.credentials is not None:
            self.credentials.apply(self.sock)
        self._watch = HandshakeWatch(self.sock, self.server, self.credentials)
        self.sock.connect(self.server)

    def _close_socket(self) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(_Lost("socket closed"))
        self._pending.clear()
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _register(self) -> None:
        while not self._stop.is_set():
            try:
                reply = await self.call("register", {
                    "caps": self.caps, "dryad_address": self.dryad_address,
                    "ssh_address": self.ssh_address})
            except RemoteError as exc:
                if exc.code not in TRANSIENT:
                    raise
                await self._sleep(self.retry_interval)
                continue
            self.uuid = reply.get("uuid")
            self.heartbeat_interval = float(reply.get("heartbeat_interval") or 5.0)
            cap = self.max_heartbeat_interval
            if cap and cap < self.heartbeat_interval:
                self.heartbeat_interval = cap
            self.heartbeat_liveness = int(reply.get("heartbeat_liveness") or 3)
            self.attempts = 0
            self.retry_interval = self.retry_base
            self.registrations += 1
            self.deregistered = False
            self.registered.set()
            log.info("%s: registered", self.name)
            return

    async def _session(self) -> None:
        await self._register()
        while not self._stop.is_set():
            await self._sleep(self.heartbeat_interval)
            if self._stop.is_set():
                return
            if self.deregistered or self.paused:
                continue
            try:
                await self.call("heartbeat", {"uuid": self.uuid},
                                timeout=self.heartbeat_interval * self.heartbeat_liveness)
                self.heartbeats += 1
            except RemoteError as exc:
                if exc.code == "not_registered":
                    self.registered.clear()
                    await self._register()
                elif exc.code == "deregistered":
                    log.info("%s: deregistered by the server; heartbeats stop", self.name)
                    self.deregistered = True
                    self.registered.clear()

    async def _reader(self) -> None:
        assert self.sock is not None
        sock = self.sock
        while True:
            frames = await sock.recv_multipart()
            try:
                env = codec.decode(frames[-1])
            except BorutaError as exc:
                log.warning("%s: bad message from the server: %s", self.name, exc)
                continue
            if env.is_request:
                task = asyncio.create_task(self._command(sock, env))
                self._commands.add(task)
                task.add_done_callback(self._commands.discard)
                continue
            fut = self._pending.get(env.id) if isinstance(env.id, int) else None
            if fut is None or fut.done():
                continue
            if env.error is not None:
                fut.set_exception(RemoteError(env.error["code"], env.error["message"]))
            else:
                fut.set_result(env.ok)

    async def _command(self, sock: zmq.asyncio.Socket, env: codec.Envelope) -> None:
        assert env.op is not None and env.args is not None
        try:
            op = operations.SERVER_COMMANDS.get(env.op)
            if op is None:
                raise UnknownOperationError(f"unknown command {env.op!r}")
            args = op.check(env.args)
            result = await self.handler(env.op, args)
            if result is NO_REPLY:
                return
            frame = codec.ok_frame(env.id, result)
        except asyncio.CancelledError:
            raise
        except BorutaError as exc:
            frame = codec.error_frame(env.id, exc)
        except Exception as exc:
            log.exception("%s: command %s failed", self.name, env.op)
            frame = codec.error_frame(env.id, ("internal", str(exc)))
        if self.sock is sock:
            with contextlib.suppress(zmq.ZMQError):
                await sock.send_multipart([frame], flags=zmq.DONTWAIT)
