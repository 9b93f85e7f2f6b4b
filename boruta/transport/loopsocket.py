"""A plain ZeroMQ socket driven by the asyncio loop's reader callback.

Why not zmq.asyncio: it wraps every send and receive in a Future and
re-checks the socket through extra loop callbacks. For a server that
answers tens of thousands of small calls a second that machinery cost three
times the work of the echo itself (bench/e2e_server.py, part (a) against a
bare echo: 50 µs a call with zmq.asyncio, 18 µs with this). Here the loop
watches the socket's file descriptor, and when it fires we read everything
already waiting, in turns, with non-blocking calls.

A *turn* is up to `turn_max` messages read and handled back to back, then
`end_turn()` (the server commits and sends the turn's replies there). A
socket with more waiting yields to the rest of the loop before its next
turn. A lone message at low load costs one loop iteration: read, handle,
end of turn.

The one subtlety is ZeroMQ's edge-triggered descriptor (zmq_getsockopt,
ZMQ_FD): it signals a *change*, and any operation on the socket, a send
included, may consume that change. So a send made outside a turn schedules
one more look at the socket in the loop's next iteration, as pyzmq's own
asyncio integration does after each operation; the sends made during a
turn (its replies) are followed by one look at ZMQ_EVENTS when it ends.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

import zmq

log = logging.getLogger("boruta.server")

Handler = Callable[[list[Any]], None]
_MORE_NOW = zmq.SNDMORE | zmq.NOBLOCK


def _nothing() -> None:
    pass


class LoopSocket:
    """A socket whose messages are handed to `handler` from the loop, `turn_max` per turn.

    `handler(frames)` runs synchronously for each message; an exception it
    raises is logged and the next message is handled (a bug must not take
    the server down). `end_turn()` runs after each turn that handled a
    message. Sends never wait: a peer that does not read loses messages, it
    never stalls the loop.
    """

    def __init__(self, sock: zmq.Socket, handler: Handler, *, copy: bool = True,
                 identity_frame: bool = False,
                 turn_max: int = 256, end_turn: Callable[[], None] = _nothing,
                 on_refused: Callable[[list[Any], zmq.ZMQError], None] | None = None
                 ) -> None:
        self.sock = sock
        self.handler = handler
        self.end_turn = end_turn
        self.on_refused = on_refused
        self.copy = copy                # False: every frame a zmq.Frame (its metadata)
        # True: the first frame (a ROUTER's peer identity) as a zmq.Frame, the rest as
        # copy says: the connection's metadata (its CURVE key) for a frame object's cost.
        self.first_copy = copy and not identity_frame
        self.turn_max = turn_max
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = sock.getsockopt(zmq.FD)
        self._turn_scheduled = False
        self._reading = False
        self._in_turn = False           # sends now are checked for at the turn's end
        self._sent_in_turn = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Begin reading: from now on messages reach the handler."""
        self._loop = loop
        self._reading = True
        loop.add_reader(self._fd, self._on_descriptor)
        self._schedule_turn()           # messages may already be waiting: no edge for them

    def stop(self) -> None:
        """Stop reading (sends still work until the socket is closed)."""
        if self._reading and self._loop is not None:
            self._loop.remove_reader(self._fd)
        self._reading = False

    def send(self, frames: list[Any]) -> bool:
        """Queue one message without waiting; False when it was dropped (full, peer gone).

        Frame by frame rather than send_multipart, whose checks cost more than
        the sends themselves. ROUTER and XPUB refuse (or drop) a message at
        its first frame, so a refusal never leaves half a message queued.
        """
        send = self.sock.send
        try:
            for frame in frames[:-1]:
                send(frame, _MORE_NOW)
            send(frames[-1], zmq.NOBLOCK)
        except zmq.ZMQError as exc:     # zmq.Again (high-water mark), EHOSTUNREACH
            log.debug("send dropped: %s", exc)
            if self.on_refused is not None:
                self.on_refused(frames, exc)
            return False
        finally:
            if self._in_turn:
                self._sent_in_turn = True
            else:
                self._schedule_turn()
        return True

    # ------------------------------------------------------------------ reading
    def _on_descriptor(self) -> None:
        """The descriptor fired: read now, unless a turn is already queued for this socket."""
        if not self._turn_scheduled:
            self._turn()

    def _schedule_turn(self) -> None:
        """Look at the socket in the loop's next round of callbacks (once, however often asked)."""
        if not self._turn_scheduled and self._reading and self._loop is not None:
            self._turn_scheduled = True
            self._loop.call_soon(self._scheduled_turn)

    def _scheduled_turn(self) -> None:
        self._turn_scheduled = False
        self._turn()

    def _turn(self) -> None:
        """Up to `turn_max` waiting messages, then end_turn(); the rest after the loop's other work."""
        if not self._reading:
            return
        self._in_turn, self._sent_in_turn = True, False
        try:
            drained = self._read_and_handle()
        finally:
            self._in_turn = False
        if not drained:
            self._schedule_turn()       # more may wait: after what the turn queued
        elif self._sent_in_turn and self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            # The turn's sends may have taken the edge of a message that came
            # meanwhile. Asking now (which settles the descriptor) saves the
            # extra loop iteration a scheduled look would cost for every call.
            self._schedule_turn()

    def _read_and_handle(self) -> bool:
        """The turn itself; True when the socket was drained."""
        sock, handler, copy, first_copy = self.sock, self.handler, self.copy, self.first_copy
        recv, more = sock.recv, sock.getsockopt
        handled = 0
        drained = False
        while handled < self.turn_max and self._reading:
            try:
                frames = [recv(zmq.NOBLOCK, copy=first_copy)]
            except zmq.Again:
                drained = True          # the descriptor signals the next arrival
                break
            while more(zmq.RCVMORE):    # the rest of a message is there with its first frame
                frames.append(recv(zmq.NOBLOCK, copy=copy))
            handled += 1
            try:
                handler(frames)
            except Exception:
                log.exception("unexpected error while handling a message")
        if handled:
            try:
                self.end_turn()
            except Exception:
                log.exception("unexpected error at the end of a turn")
        return drained
