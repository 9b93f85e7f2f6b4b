"""Watching a connecting socket's handshake, so that a refused key is reported, not waited out.

CURVE refuses a bad key by silence: ZeroMQ drops the connection and retries,
and the caller's message just never arrives. A socket monitor sees why
(libzmq 4.3.5, tried on loopback):

* a client key the server's ZAP handler refuses (status 400):
  HANDSHAKE_FAILED_AUTH, then DISCONNECTED; ZeroMQ does not reconnect;
* a wrong server key: HANDSHAKE_FAILED_NO_DETAIL (the server cannot read
  our HELLO and hangs up), then DISCONNECTED, again at every reconnect;
* a plain client and a CURVE server, or the reverse:
  HANDSHAKE_FAILED_PROTOCOL (mechanism mismatch), then DISCONNECTED.

So a failed authentication is `KeyRefusedError`; any other failed handshake,
or a connection dropped before any handshake succeeded, is
`ServerKeyMismatchError`. After a handshake succeeded a plain disconnect is
a server going away (the caller's timeout reports it), but a failed
handshake on a reconnect still counts (a server restarted with other keys).
A watch is cheap: its monitor is read only when an event is waiting, and
events come only when a connection starts or ends.
"""
from __future__ import annotations

from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from boruta.core.errors import BorutaError
from boruta.transport.credentials import Credentials
from boruta.transport.errors import KeyRefusedError, ServerKeyMismatchError

WATCHED_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                  | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                  | zmq.EVENT_DISCONNECTED)

_MISMATCH_EVENTS = (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


def handshake_error(event: int, succeeded: bool, endpoint: str,
                    credentials: Credentials | None) -> BorutaError | None:
    """The error a monitor event means, or None (`succeeded`: a handshake succeeded before)."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        key = credentials.public_key if credentials is not None else "none"
        return KeyRefusedError(f"the server at {endpoint} refused our key ({key}): "
                               "ask an admin to add it (boruta admin user add)")
    if event in _MISMATCH_EVENTS or (event == zmq.EVENT_DISCONNECTED and not succeeded):
        if credentials is None:
            return ServerKeyMismatchError(
                f"the server at {endpoint} requires CURVE: give its public key and your key "
                "file (client.toml, --server-key/--key-file)")
        return ServerKeyMismatchError(
            f"the server's key does not match {credentials.server_key} (or the server at "
            f"{endpoint} does not use CURVE)")
    return None


class HandshakeWatch:
    """The monitor of one connecting socket. Make it before the socket connects (a monitor
    misses what happened before it), close it before the socket."""

    def __init__(self, sock: Any, endpoint: str, credentials: Credentials | None) -> None:
        self.sock = sock
        self.endpoint = endpoint
        self.credentials = credentials
        self.succeeded = False
        self.monitor: Any = sock.get_monitor_socket(WATCHED_EVENTS)
        self._poller: zmq.Poller | None = None

    def feed(self, message: dict[str, Any]) -> BorutaError | None:
        """One monitor message: the error it means, or None."""
        event = message["event"]
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.succeeded = True
            return None
        return handshake_error(event, self.succeeded, self.endpoint, self.credentials)

    def check(self) -> None:
        """Read every waiting monitor message (blocking sockets); raise the first failure."""
        while True:
            try:
                message = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            error = self.feed(message)
            if error is not None:
                raise error

    def poll(self, timeout_ms: int) -> bool:
        """Wait up to `timeout_ms` for the socket to be readable (blocking sockets): True if it
        is; a failed handshake meanwhile is raised at once."""
        if self._poller is None:
            self._poller = zmq.Poller()
            self._poller.register(self.sock, zmq.POLLIN)
            self._poller.register(self.monitor, zmq.POLLIN)
        ready = dict(self._poller.poll(timeout_ms))
        if self.monitor in ready:
            self.check()
        return self.sock in ready

    async def failure(self) -> BorutaError:
        """Wait (asyncio sockets) until a handshake fails; returns its error."""
        while True:
            error = self.feed(await recv_monitor_message(self.monitor))
            if error is not None:
                return error

    def close(self) -> None:
        """Stop monitoring (before the socket closes)."""
        if self.monitor is None:
            return
        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(0)
        self.monitor = None
        self._poller = None
