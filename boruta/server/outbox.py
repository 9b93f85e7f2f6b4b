"""The outbox and group commit: nothing leaves before the changes behind it are saved.

A *turn* is every message already waiting on the sockets (up to a limit per
socket), plus the timers and dryad completions of that loop iteration.
Everything a turn sends (client replies, dryad replies, events) waits here;
at the end of the turn one flush commits the scheduler's changes in one
transaction, and only then lets the messages go. Commands to dryads wait for
that commit too (`durable`).

In memory (no store) a turn's messages still leave together, which lets
libzmq write them to each peer in one go instead of waking its I/O thread
for every reply.

If the commit fails (disk full), the turn's success replies become
`storage_failed` errors, error replies go (they acknowledge nothing), events
and dryad messages are held, and the changes are kept and committed with the
next turn; a retry runs every STORAGE_RETRY seconds meanwhile.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from boruta.core.records import Changes
from boruta.server.keys import encode_key
from boruta.transport import codec
from boruta.transport.errors import DryadError, StorageFailedError
from boruta.transport.loopsocket import LoopSocket

if TYPE_CHECKING:
    from boruta.server.app import Server

log = logging.getLogger("boruta.server")

NOT_AN_ACK = object()        # outbox entries that acknowledge nothing
OUTBOX_HELD_MAX = 10000      # events and dryad messages held while the store fails
STORAGE_RETRY = 1.0          # seconds between commit attempts while the store fails

Entry = tuple[LoopSocket, list[bytes], Any]


class Outbox:
    def __init__(self, app: "Server", on_flushed: Callable[[], None]) -> None:
        self.app = app
        self._on_flushed = on_flushed
        self._entries: list[Entry] = []
        self._flush_handle: asyncio.Handle | None = None
        self._retry_handle: asyncio.TimerHandle | None = None
        self.unsaved: Changes | None = None             # a failed commit, retried next turn
        self._unsaved_ports: dict[int, int | None] = {}
        self._ports: dict[int, int | None] = {}         # tunnel ports opened/closed this turn
        self._durable_waiters: list[asyncio.Future[None]] = []
        # Called with each commit's seconds (metrics' histogram); one call per turn.
        self.on_commit: Callable[[float], None] | None = None

    def send(self, sock: LoopSocket | None, frames: list[bytes], ack: Any = NOT_AN_ACK) -> None:
        """Send at the end of the turn, once its changes are durable (with a store).

        `ack`: the message ID when `frames` is a success reply (it becomes a
        `storage_failed` error if the commit fails).
        """
        assert sock is not None
        self._entries.append((sock, frames, ack))
        if self._flush_handle is None:
            self.schedule_flush()

    def note_port(self, req_id: int, port: int | None) -> None:
        """A job's tunnel port opened (or closed: None), saved with the turn."""
        if self.app.store is not None:
            self._ports[req_id] = port

    def schedule_flush(self) -> None:
        loop = self.app.loop
        if self._flush_handle is None and loop is not None:
            self._flush_handle = loop.call_soon(self._flush)

    def end_turn(self) -> None:
        """A socket's turn is over: commit and send now, not an iteration later."""
        if self._flush_handle is not None:
            self.flush_now()

    def flush_now(self) -> None:
        """Commit and send at once (end of a turn, shutdown)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._flush()

    def _flush(self) -> None:
        self._flush_handle = None
        entries, self._entries = self._entries, []
        store = self.app.store
        if store is not None and not self._commit(store, entries):
            return
        for sock, frames, _ in entries:
            sock.send(frames)
        self._on_flushed()
        waiters, self._durable_waiters = self._durable_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _commit(self, store: Any, entries: list[Entry]) -> bool:
        """Save the turn's changes; False when they could not be (the entries are dealt with)."""
        stats = self.app.stats
        changes = self.app.sched.drain_changes()
        for record in changes.workers:
            record["key"] = encode_key(record["key"])
        ports, self._ports = self._ports, {}
        if self.unsaved is not None:
            changes = merge_changes(self.unsaved, changes)
            ports = {**self._unsaved_ports, **ports}
        if changes or ports:
            started = time.perf_counter()
            try:
                store.commit(changes, ports)
            except Exception as exc:   # sqlite3.Error, OSError: disk full, I/O error...
                self._commit_failed(changes, ports, entries, exc)
                return False
            elapsed = time.perf_counter() - started
            stats.commits += 1
            stats.commit_seconds += elapsed
            if self.on_commit is not None:
                self.on_commit(elapsed)
            if self.unsaved is not None:
                log.warning("state saved again after storage failures",
                            extra={"fields": {"failures": stats.storage_failures}})
            self.unsaved, self._unsaved_ports = None, {}
        return True

    def _commit_failed(self, changes: Changes, ports: dict[int, int | None],
                       entries: list[Entry], exc: Exception) -> None:
        stats = self.app.stats
        stats.storage_failures += 1
        self.unsaved, self._unsaved_ports = changes, ports
        if stats.storage_failures == 1 or stats.storage_failures % 100 == 0:
            log.error("cannot save the state: changes are not acknowledged", extra={"fields": {
                "error": f"{type(exc).__name__}: {exc}", "failures": stats.storage_failures}})
        error = StorageFailedError(f"the server could not save its state ({exc}); the change "
                                   "was not acknowledged: check with a read before retrying")
        held = []
        for sock, frames, ack in entries:
            if ack is not NOT_AN_ACK:
                sock.send([*frames[:-1], codec.error_frame(ack, error)])
            elif sock is self.app.client_sock:
                sock.send(frames)              # an error reply acknowledges nothing
            else:
                held.append((sock, frames, ack))    # events, dryad replies: after the save
        self._entries = held[-OUTBOX_HELD_MAX:] + self._entries
        loop = self.app.loop
        if self._retry_handle is None and loop is not None and not self.app.stopping:
            self._retry_handle = loop.call_later(STORAGE_RETRY, self._retry_flush)

    def _retry_flush(self) -> None:
        self._retry_handle = None
        if self.unsaved is not None or self._entries:
            self.schedule_flush()

    async def durable(self) -> None:
        """Wait until every change made so far is committed (commands to dryads wait so)."""
        if self.app.store is None or (self._flush_handle is None and self.unsaved is None):
            return
        loop = self.app.loop
        assert loop is not None
        fut: asyncio.Future[None] = loop.create_future()
        self._durable_waiters.append(fut)
        self.schedule_flush()
        try:
            await asyncio.wait_for(fut, self.app.cfg.dryad_reply_timeout)
        except asyncio.TimeoutError:
            raise DryadError("the server could not save its state; command not sent") from None

    def close(self) -> None:
        """Shutdown: the last turn's changes and messages, then no more retries."""
        if self._retry_handle is not None:
            self._retry_handle.cancel()
            self._retry_handle = None
        self.flush_now()


def merge_changes(old: Changes, new: Changes) -> Changes:
    """Changes not yet committed (a failed commit), then a later turn's: one set of changes.

    Records are whole rows, so the later one of a record wins. The store
    applies deletions before upserts: a worker removed later is dropped from
    the upserts; one removed earlier and registered again is deleted and
    written back.
    """
    requests = {r["id"]: r for r in old.requests}
    for req_id in new.purged_requests:
        requests.pop(req_id, None)
    requests.update((r["id"], r) for r in new.requests)
    workers = {w["uuid"]: w for w in old.workers}
    for uuid in new.removed_workers:
        workers.pop(uuid, None)
    workers.update((w["uuid"], w) for w in new.workers)
    return Changes(
        requests=list(requests.values()), workers=list(workers.values()),
        removed_workers=old.removed_workers + new.removed_workers,
        purged_requests=old.purged_requests + new.purged_requests,
        last_id=new.last_id if new.last_id is not None else old.last_id,
        last_seq=new.last_seq if new.last_seq is not None else old.last_seq)
