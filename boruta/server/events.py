"""The event stream: one numbered event per state change, on an XPUB socket.

Events are numbered (`seq`) whether or not anyone listens, so a subscriber
can tell it lost some; they are built and packed only while someone
subscribes, so the server's busiest calls pay nothing for them. A
subscription to `hello/<nonce>/` is answered on that topic (the subscriber's
proof that its subscriptions are live), and a tick goes out every heartbeat
interval so that subscribers notice a dead server.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable

from boruta.core.types import iso
from boruta.transport import codec

if TYPE_CHECKING:
    from boruta.server.app import Server

log = logging.getLogger("boruta.server")

Listener = Callable[[dict[str, Any]], None]


def iso_now() -> str:
    return iso(datetime.now(timezone.utc)) or ""


class EventPublisher:
    def __init__(self, app: "Server") -> None:
        self.app = app
        self.seq = 0                  # the last event numbered
        self.sent_seq = 0             # the last event that left (ticks and hellos report it)
        # Topics someone subscribes to (XPUB reports each new subscription and the
        # last unsubscription of a topic): with none, events are not even packed.
        self._subscriptions: set[bytes] = set()
        # In-process listeners (the dashboard's live feed, metrics): each gets every
        # event document once the turn that made it is committed.
        self._listeners: list[tuple[Listener, frozenset[str] | None]] = []
        self._pending: list[dict[str, Any]] = []
        self._turn_at: str | None = None

    def listen(self, listener: Listener,
               request_states: Iterable[str] | None = None) -> Callable[[], None]:
        """Call `listener(event)` for every event from now on (after its commit); returns
        the function that stops it. A listener must be quick and must not raise.

        `request_states`: only request events in these states. Events no one wants are
        not even built, so a listener that needs few (metrics: starts and ends) leaves the
        busiest calls (new requests, WAITING) as cheap as with no listener at all."""
        entry = (listener, None if request_states is None else frozenset(request_states))
        self._listeners.append(entry)

        def stop() -> None:
            if entry in self._listeners:
                self._listeners.remove(entry)
        return stop

    def _at(self) -> str:
        """The time of this turn's events, formatted once a turn (they leave together)."""
        at = self._turn_at
        if at is None:
            at = self._turn_at = iso_now()
            loop = self.app.loop
            if loop is not None:
                loop.call_soon(self._turn_over)      # the next turn takes the time anew
        return at

    def _turn_over(self) -> None:
        self._turn_at = None

    def _number(self, request_state: str | None = None) -> bool:
        """Number the next event; True when someone will receive it (then build it)."""
        self.seq += 1
        app = self.app
        app.stats.events += 1
        if app.stopping:
            return False
        if self._subscriptions and app.events_sock is not None:
            return True
        return any(states is None or request_state in states for _, states in self._listeners)

    def _send(self, topic: bytes, doc: dict[str, Any]) -> None:
        doc["seq"] = self.seq
        if self._listeners:
            self._pending.append(doc)
            self.app.outbox.schedule_flush()
        if self._subscriptions and self.app.events_sock is not None:
            self.app.outbox.send(self.app.events_sock, [topic, codec.pack(doc)])

    def flushed(self) -> None:
        """The outbox let the numbered events go (the turn is committed): listeners too."""
        self.sent_seq = self.seq
        if self._pending:
            pending, self._pending = self._pending, []
            listeners = tuple(self._listeners)
            for doc in pending:
                state = doc.get("state") if doc["kind"] == "request" else None
                for listener, states in listeners:
                    if states is not None and state not in states:
                        continue
                    try:
                        listener(doc)
                    except Exception:
                        log.exception("an event listener failed")

    def request(self, req_id: int, state: Any, reason: str | None,
                worker_uuid: str | None) -> None:
        state = str(state)
        if self._number(state):
            self._send(codec.request_topic(req_id), {
                "kind": "request", "id": req_id, "state": state, "at": self._at(),
                "reason": reason, "worker_uuid": worker_uuid})

    def worker(self, uuid: str, state: str, reason: str | None) -> None:
        if self._number():
            self._send(codec.worker_topic(uuid), {
                "kind": "worker", "uuid": uuid, "state": state, "at": self._at(),
                "reason": reason})

    def tunnel(self, req_id: int, worker_uuid: str, reason: str, port: int,
               old_port: int | None) -> None:
        """A job's tunnel was reopened after a restart (not a state transition)."""
        if self._number():
            self._send(codec.request_topic(req_id), {
                "kind": "tunnel", "id": req_id, "at": self._at(), "reason": reason,
                "worker_uuid": worker_uuid, "address": f"{self.app.cfg.public_host}:{port}",
                "port": port, "old_port": old_port, "moved": port != old_port})

    def on_subscription(self, frames: list[bytes]) -> None:
        """XPUB: track topics; answer a subscription to hello/<nonce>/ on that topic."""
        data = frames[0] if frames else b""
        if data[:1] == b"\x01":
            self._subscriptions.add(data[1:])
        elif data[:1] == b"\x00":
            self._subscriptions.discard(data[1:])
        if data[:1] == b"\x01" and data[1:].startswith(codec.TOPIC_HELLO.encode()):
            self._send_direct(data[1:], "hello")

    def tick(self) -> None:
        self._send_direct(codec.TOPIC_TICK.encode(), "tick")

    def _send_direct(self, topic: bytes, kind: str) -> None:
        """Ticks and hellos say nothing new about the books: they need no commit."""
        sock = self.app.events_sock
        if sock is not None:
            sock.send([topic, codec.pack({
                "kind": kind, "seq": self.sent_seq, "at": iso_now(),
                "heartbeat_interval": self.app.cfg.heartbeat_interval})])
