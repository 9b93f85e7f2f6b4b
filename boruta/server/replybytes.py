"""The bytes the server sends a client: one reply bounded, and what one peer has not read.

ZeroMQ bounds what it queues for a peer by messages (SNDHWM), not bytes: a
peer that sent 4,000 `list_workers` and never read the 900 KB answers held
2.4 GB of the server's memory. Two bounds, in bytes:

- one reply: a list larger than `max_reply_bytes` is cut to the items that
  fit (at least one), and its `remaining` grows by what was cut, so a client
  pages on from the last item as it would after a full page. (An error
  instead would leave a client no way to list at all without guessing a
  smaller page.) Any other reply is one document, whose size is bounded by
  the frames that built it.
- one peer: a reply of TRACKED_FROM bytes or more leaves as a zero-copy
  frame whose tracker says when ZeroMQ is done with it (written to the
  kernel, or discarded); a peer holding `max_peer_buffer_bytes` or more gets
  no more such replies until it reads. Smaller replies are bounded by count:
  the client socket's per-peer SNDHWM with ROUTER_MANDATORY refuses a send
  to a full queue instead of growing it.

A refused reply is discarded and counted (Stats.replies_dropped); the peer
is logged once, when its replies start being dropped, and again with the
count once it has been quiet for a while. The other peers go on.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import zmq

from boruta.transport import codec

if TYPE_CHECKING:
    from boruta.server.app import Stats

log = logging.getLogger("boruta.server")

TRACKED_FROM = 8192          # replies this large and larger are counted in bytes per peer
QUIET_AFTER = 10.0           # seconds without a drop after which a dropped peer is summed up


def fit_list(msg_id: Any, doc: dict[str, Any], backward: bool, limit: int) -> bytes:
    """The ok frame of the list document `doc` with as many items as fit in `limit` bytes.

    Forward pages keep their first items, backward pages their last (the
    ones next to the border), so the next page asked from the kept edge
    continues where this one stopped. At least one item is kept.
    """
    items = doc["items"]
    frame = codec.ok_frame(msg_id, {**doc, "items": []})
    room = limit - len(frame) - 5                       # 5: the largest msgpack array header
    order = reversed(items) if backward else iter(items)
    kept = 0
    for item in order:
        room -= len(codec.pack(item))
        if room < 0 and kept:
            break
        kept += 1
    page = items[len(items) - kept:] if backward else items[:kept]
    cut = len(items) - kept
    return codec.ok_frame(msg_id, {**doc, "items": page, "remaining": doc["remaining"] + cut})


@dataclass(slots=True)
class _Held:
    """Large replies handed to ZeroMQ for one peer and not yet released by it."""

    trackers: deque[tuple[zmq.MessageTracker, int]] = field(default_factory=deque)
    bytes: int = 0

    def release(self) -> int:
        """Forget what ZeroMQ is done with; the bytes still held.

        One peer's replies leave in order, so they are released in order; one
        released early (refused by a full queue) counts until those before it
        are released too: an overestimate for a moment, never an under one.
        """
        trackers = self.trackers
        while trackers and trackers[0][0].done:
            self.bytes -= trackers.popleft()[1]
        return self.bytes


@dataclass(slots=True)
class _Dropping:
    dropped: int = 0
    last: float = 0.0


class PeerBuffers:
    """What the replies to each peer hold: admitted in bytes, refused when the peer does not read.

    Peers are ROUTER identities; a user replacing the peer (once calls
    carry one) would key these dicts by the user instead.
    """

    def __init__(self, limit: int, stats: "Stats", hwm: int) -> None:
        self.limit = limit
        self.stats = stats
        self.hwm = hwm                                   # the socket's SNDHWM, for the log
        self._held: dict[bytes, _Held] = {}
        self._dropping: dict[bytes, _Dropping] = {}

    def admit(self, identity: bytes, payload: bytes) -> Any:
        """What to queue for the peer: `payload`, a tracked frame of it, or None (dropped)."""
        if len(payload) < TRACKED_FROM:
            return payload
        held = self._held.get(identity)
        if held is None:
            held = self._held[identity] = _Held()
        elif held.release() >= self.limit:
            self.dropped(identity, f"{held.bytes} bytes of replies unread "
                                   f"(max_peer_buffer_bytes {self.limit})")
            return None
        frame = zmq.Frame(payload, copy=False, track=True)
        held.trackers.append((frame.tracker, len(payload)))
        held.bytes += len(payload)
        return frame

    def held(self, identity: bytes) -> int:
        """Bytes of large replies ZeroMQ still holds for the peer."""
        held = self._held.get(identity)
        return held.release() if held is not None else 0

    def refused(self, frames: list[Any], exc: zmq.ZMQError) -> None:
        """The socket refused a reply: the peer's queue is full, or the peer is gone."""
        if exc.errno == zmq.EAGAIN:
            self.dropped(frames[0], f"{self.hwm} replies unread")
        else:
            self.stats.replies_undeliverable += 1

    def dropped(self, identity: bytes, why: str) -> None:
        self.stats.replies_dropped += 1
        state = self._dropping.get(identity)
        if state is None:
            state = self._dropping[identity] = _Dropping()
            self.stats.peers_dropped += 1
            log.warning("a client does not read its replies: dropping them",
                        extra={"fields": {"peer": identity.hex(), "why": why}})
        state.dropped += 1
        state.last = time.monotonic()

    def sweep(self, now: float) -> None:
        """Housekeeping: forget released replies, sum up peers quiet again."""
        for identity in [i for i, h in self._held.items() if not h.release()]:
            del self._held[identity]
        for identity, state in list(self._dropping.items()):
            if now - state.last >= QUIET_AFTER:
                del self._dropping[identity]
                log.info("replies dropped for a client that did not read them",
                         extra={"fields": {"peer": identity.hex(), "dropped": state.dropped}})
