"""The Boruta server: one asyncio loop around the core Scheduler.

Sockets (all endpoints configurable, see boruta.server.config):

- a ROUTER for clients (Requests and Workers operations),
- a ROUTER for dryads, which connect out as DEALER peers (register,
  set_fail, heartbeat; the server sends them prepare, put_in_maintenance
  and healthcheck and waits for the reply with a deadline),
- an XPUB for the event stream (topic-prefixed msgpack frames).

Every message is handled synchronously on the loop: decode, check, call the
scheduler, reply, then carry out the scheduler's effects (commands to
dryads, tunnels, parked replies, events, logs) and re-arm the one timer at
`scheduler.next_timer()`. Keys are made in an executor and kept in a pool.
Nothing a peer sends can stop the loop: every failure becomes an error
reply with a stable code (docs/protocol.md).

Durability (`state_dir`, boruta/server/store.py): a *turn* is every message that
was already waiting on the sockets (up to TURN_MAX per socket), plus the
timers and dryad completions of that loop iteration. Everything a turn
sends (client replies, dryad replies, events) waits in an outbox; at the
end of the turn one `_flush` commits the scheduler's changes in one
transaction (group commit), and only then lets the outbox go. Commands to
dryads wait for that commit too. If the commit fails (disk full), the
turn's successful replies become `storage_failed` errors, nothing else
leaves, and the changes are kept and committed with the next turn. On
start the server restores the books from the store: requests, timers,
workers (which wait `restart_grace` seconds for their dryads), jobs in
progress (their tunnels reopen when their dryads are back) and the ID
counter (docs/operations.md).
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import zmq

import boruta
from boruta.core import effects as fx
from boruta.core.errors import (BadArgumentError, BorutaError, InMaintenanceError,
                                NotFoundError, WorkerNotAssignedError)
from boruta.core.records import Changes
from boruta.core.scheduler import Scheduler
from boruta.core.types import AccessInfo, ReqState, WorkerState, iso
from boruta.server.store import Store, StoreError
from boruta.transport import addresses, codec, documents, operations
from boruta.transport.errors import StorageFailedError, BadFrameError, DeregisteredError, DryadError, NotRegisteredError, PROTOCOL_VERSION, RateLimitedError, RequestEndedError, ServerBusyError, ShuttingDownError, UnknownOperationError, WaitTimeoutError
from boruta.server.config import (ConfigError, ServerConfig, default_state_dir)
from boruta.server.gcfreeze import GcFreezer
from boruta.server.keys import JobKey, KeyPool, decode_key, encode_key
from boruta.logs import setup_logging
from boruta.transport.loopsocket import LoopSocket
from boruta.server.tunnels import TunnelError, TunnelManager

log = logging.getLogger("boruta.server")

PARKED = object()            # a handler's answer: "the reply comes later"
TURN_MAX = 256               # messages of one socket handled in one turn (then a commit)
ALL_BUT_WAIT = frozenset(s for s in ReqState if s is not ReqState.WAIT)
NOT_AN_ACK = object()        # outbox entries that acknowledge nothing
OUTBOX_HELD_MAX = 10000      # events and dryad messages held while the store fails
STORAGE_RETRY = 1.0          # seconds between commit attempts while the store fails
HISTORY_CHUNK = 5_000        # finished requests loaded per loop iteration after a restart
ID_OPS = frozenset({"update_request", "close_request", "get_request_info", "acquire_worker",
                    "prolong_access", "wait_request"})
RESTART_REASON = "dryad did not come back after restart"


@dataclass(eq=False)
class DryadLink:
    """The connection of one worker's dryad: its ROUTER identity and when it last spoke."""

    uuid: str
    identity: bytes
    peer_ip: str | None
    last_seen: float


@dataclass(eq=False)
class Job:
    req_id: int
    worker_uuid: str
    username: str
    key: JobKey
    port: int


@dataclass(eq=False)
class Parked:
    kind: str                                  # "acquire" | "wait"
    req_id: int
    route: tuple[bytes, tuple[bytes, ...]]     # identity, envelope prefix
    msg_id: Any
    timeout: float | None
    states: frozenset[ReqState] = ALL_BUT_WAIT
    timer: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


@dataclass
class Stats:
    client_msgs: int = 0
    dryad_msgs: int = 0
    errors: int = 0
    events: int = 0
    commits: int = 0
    commit_seconds: float = 0.0
    storage_failures: int = 0
    started: float = field(default_factory=time.time)


class Server:
    def __init__(self, config: ServerConfig, scheduler: Scheduler | None = None) -> None:
        self.cfg = config
        self.sched = scheduler or Scheduler(config=config.scheduler, matcher=config.matcher)
        self.stats = Stats()
        self.endpoints: dict[str, str] = {}
        self.ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self.client_sock: LoopSocket | None = None
        self.dryad_sock: LoopSocket | None = None
        self.events_sock: LoopSocket | None = None
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="boruta-keys")
        self.keys = KeyPool(config.key_type, config.key_pool_size, self.executor, config.rsa_bits)
        self.tunnels = TunnelManager(config.tunnel_host, config.tunnel_ports,
                                     config.tunnel_connect_timeout)
        self.links: dict[str, DryadLink] = {}           # worker uuid -> its dryad's link
        self.identities: dict[bytes, str] = {}          # ROUTER identity -> worker uuid
        self.deregistered: dict[bytes, str] = {}        # identities of deregistered workers
        self.jobs: dict[int, Job] = {}
        self.parked: dict[int, list[Parked]] = {}
        self.parked_count = 0
        self._pending: dict[int, tuple[asyncio.Future[Any], bytes]] = {}
        self._cmd_ids = itertools.count(1)
        self._buckets: dict[bytes, _Bucket] = {}
        self._rate, self._burst = float(config.peer_rate), float(config.peer_burst)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._housekeeping_task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._event_seq = 0
        self._sent_event_seq = 0                        # ticks and hellos report this one
        # Topics someone subscribes to (XPUB reports each new subscription and the
        # last unsubscription of a topic): with none, events are not even packed.
        self._subscriptions: set[bytes] = set()
        self._healthchecks: set[str] = set()
        self._stop = asyncio.Event()
        self._stopping = False
        self.loop: asyncio.AbstractEventLoop | None = None
        # Durable state (None: in memory, every send leaves at once).
        self.store: Store | None = None
        self.restored = False
        self._outbox: list[tuple[LoopSocket, list[bytes], Any]] = []
        self._flush_handle: asyncio.Handle | None = None
        self._retry_handle: asyncio.TimerHandle | None = None
        self._unsaved: Changes | None = None            # a failed commit, retried next turn
        self._unsaved_ports: dict[int, int | None] = {}
        self._ports: dict[int, int | None] = {}         # tunnel ports opened/closed this turn
        self._restored_ports: dict[int, int] = {}       # job ports before the restart
        self._durable_waiters: list[asyncio.Future[None]] = []
        self._restart_deadline: float | None = None     # monotonic end of restart_grace
        self._grace_handle: asyncio.TimerHandle | None = None
        self._link_waiters: dict[str, asyncio.Event] = {}
        # After a restart the finished requests load in the background, from
        # request ID `_history_after` on; list calls wait for them (frames kept).
        self._history_after: int | None = None
        self._history_task: asyncio.Task[Any] | None = None
        self._after_history: list[list[bytes]] = []
        self._client_ops: dict[str, Callable[..., Any]] = {
            "ping": self._op_ping,
            "new_request": self._op_new_request,
            "update_request": self._op_update_request,
            "close_request": self._op_close_request,
            "get_request_info": self._op_get_request_info,
            "list_requests": self._op_list_requests,
            "acquire_worker": self._op_acquire_worker,
            "prolong_access": self._op_prolong_access,
            "wait_request": self._op_wait_request,
            "list_workers": self._op_list_workers,
            "get_worker_info": self._op_get_worker_info,
            "set_state": self._op_set_state,
            "set_groups": self._op_set_groups,
            "deregister": self._op_deregister,
            "healthcheck": self._op_healthcheck,
        }
        self._dryad_ops: dict[str, Callable[..., Any]] = {
            "register": self._op_register,
            "set_fail": self._op_set_fail,
            "heartbeat": self._op_heartbeat,
        }
        assert set(self._client_ops) == set(operations.CLIENT_OPS)
        assert set(self._dryad_ops) == set(operations.DRYAD_OPS)
        self._effect_handlers: dict[type, Callable[[Any], None]] = {
            fx.RequestChanged: self._fx_request_changed,
            fx.WorkerChanged: self._fx_worker_changed,
            fx.WorkerRemoved: self._fx_worker_removed,
            fx.PrepareWorker: self._fx_prepare,
            fx.PutInMaintenance: self._fx_maintenance,
            fx.StartJob: self._fx_start_job,
            fx.FinishJob: self._fx_finish_job,
            fx.ResumeJob: self._fx_resume_job,
        }

    # ================================================================== life cycle
    async def start(self) -> dict[str, str]:
        """Restore the state, bind every socket and start the loops; returns the endpoints.

        Raises StoreError (clear message) when the state directory cannot be
        used, ConfigError when an endpoint cannot be bound.
        """
        self.loop = asyncio.get_running_loop()
        if self.cfg.durable and self.store is None:
            self.open_state()
        self.ctx = zmq.Context()
        linger = int(self.cfg.shutdown_grace * 1000)
        hard_limit = self.cfg.max_frame_bytes * 16 + 4096

        def make(kind: int, endpoint: str, name: str, handler: Callable[[list[Any]], None],
                 copy: bool = True) -> LoopSocket:
            assert self.ctx is not None
            sock = self.ctx.socket(kind)
            sock.setsockopt(zmq.LINGER, linger)
            if kind != zmq.XPUB:
                sock.setsockopt(zmq.MAXMSGSIZE, hard_limit)
                sock.setsockopt(zmq.RCVHWM, 10000)
            sock.setsockopt(zmq.SNDHWM, 10000)
            if kind == zmq.XPUB:
                sock.setsockopt(zmq.XPUB_VERBOSE, 1)
            if name == "dryad":
                sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                sock.close(0)
                raise ConfigError(f"cannot bind the {name} endpoint {endpoint}: {exc}") from None
            self.endpoints[name] = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            return LoopSocket(sock, handler, copy=copy, turn_max=TURN_MAX,
                              end_turn=self._end_turn)

        try:
            self.client_sock = make(zmq.ROUTER, self.cfg.listen, "listen", self._on_client)
            self.dryad_sock = make(zmq.ROUTER, self.cfg.dryad_listen, "dryad", self._on_dryad,
                                   copy=False)
            self.events_sock = make(zmq.XPUB, self.cfg.events, "events", self._on_subscription)
        except ConfigError:
            self.ctx.destroy(0)
            if self.store is not None:
                self.store.close()
                self.store = None
            raise
        self.keys.start()
        for reader in (self.client_sock, self.dryad_sock, self.events_sock):
            reader.start(self.loop)
        self._housekeeping_task = asyncio.create_task(self._housekeeping())
        if (self.cfg.tunnel_host in ("0.0.0.0", "::", "", "*")
                and self.cfg.public_host in ("127.0.0.1", "localhost", "::1")):
            log.warning("tunnels listen on every interface but clients are told to use %s; "
                        "set public_host for remote clients", self.cfg.public_host)
        log.info("boruta server ready", extra={"fields": {
            "listen": self.endpoints["listen"], "dryad": self.endpoints["dryad"],
            "events": self.endpoints["events"], "matcher": self.sched.matcher_kind,
            "key_type": self.cfg.key_type, "version": boruta.__version__,
            "state_dir": self.store.state_dir if self.store is not None else None}})
        if self.restored:
            waiting = self.sched.overdue_dryads()
            if waiting:
                self._restart_deadline = time.monotonic() + self.cfg.restart_grace
                self._grace_handle = self.loop.call_later(self.cfg.restart_grace,
                                                          self._restart_grace_over)
        self._on_timer()          # timers that passed while the server was down fire now
        if self._history_after is not None:
            self._history_task = asyncio.create_task(self._load_history())
        if self.restored:
            self._spawn(self._check_state())
        return dict(self.endpoints)

    # ================================================================== durable state
    def open_state(self) -> None:
        """Open the store in `state_dir` and restore the books from it (StoreError if unusable)."""
        assert self.cfg.state_dir is not None
        state_dir = os.path.expanduser(self.cfg.state_dir)
        started = time.monotonic()
        store = Store(state_dir, self.cfg.state_sync.upper(), lock=True)
        # A big restore creates millions of objects at once: with the collector on,
        # its full passes over them would double the time. They all live on, so
        # afterwards they are frozen out of its way (gc.freeze).
        collecting = gc.isenabled()
        gc.disable()
        try:
            if not store.is_empty():
                # The live requests first; the finished ones (the history, possibly
                # millions) follow in the background once the server answers again.
                snapshot = store.load(history=False)
                for record in snapshot.workers:
                    record["key"] = decode_key(record["key"])
                try:
                    sched = Scheduler.restore(snapshot, config=self.cfg.scheduler,
                                              matcher=self.cfg.matcher)
                except (KeyError, TypeError, ValueError) as exc:
                    raise StoreError(f"state database {store.path} holds a record this server "
                                     f"cannot restore ({type(exc).__name__}: {exc}); restore a "
                                     "dump into an empty state directory") from None
                self.sched = sched
                self._restored_ports = store.tunnel_ports()
                self.restored = True
                self._history_after = 0
                counts = sched.counts()
                log.info("state restored", extra={"fields": {
                    "state_dir": state_dir, "requests": counts["requests"],
                    "workers": counts["workers"], "ready": counts["ready"],
                    "seconds": round(time.monotonic() - started, 3)}})
        except BaseException:
            store.close()
            raise
        finally:
            if collecting:
                gc.freeze()
                gc.enable()
        self.store = store

    async def _check_state(self) -> None:
        """Read every page of the restored database once, off the loop (SQLite works
        without the GIL), so that damage the start-up reads did not touch is reported."""
        assert self.store is not None
        path = self.store.state_dir

        def check() -> None:
            reader = Store(path, readonly=True)
            try:
                reader.check()
            finally:
                reader.close()
        try:
            await asyncio.to_thread(check)
        except StoreError as exc:
            log.error("the state database is damaged; the server goes on with what it "
                      "loaded, but stop it soon and restore a dump: %s", exc)

    async def _load_history(self) -> None:
        """Finished requests from the store into the books, a chunk per loop iteration."""
        assert self.store is not None
        started = time.monotonic()
        loaded = 0
        collecting = gc.isenabled()
        gc.disable()
        try:
            while self._history_after is not None:
                records = self.store.history(self._history_after, HISTORY_CHUNK)
                if not records:
                    break
                self._history_after = records[-1]["id"]
                loaded += self.sched.add_history(records)
                await asyncio.sleep(0)
        except StoreError as exc:
            log.error("cannot load the history of finished requests: %s", exc)
        finally:
            if collecting:
                gc.freeze()
                gc.enable()
            self._history_after = None
            self._history_task = None
        log.info("history loaded", extra={"fields": {
            "requests": loaded, "seconds": round(time.monotonic() - started, 3)}})
        waiting, self._after_history = self._after_history, []
        for frames in waiting:
            self._on_client(frames)

    def _history_lookup(self, req_id: Any) -> None:
        """While the history loads: a request named by a call is fetched at once."""
        if (self._history_after is None or self.store is None or not isinstance(req_id, int)
                or isinstance(req_id, bool) or req_id <= self._history_after
                or self.sched.has_request(req_id)):
            return
        record = self.store.load_request(req_id)
        if record is not None:
            self.sched.add_history([record])

    def _restart_grace_over(self) -> None:
        """Restored workers whose dryads stayed away: FAILED (their jobs too)."""
        self._grace_handle = None
        self._restart_deadline = None
        overdue = self.sched.overdue_dryads()
        for uuid in overdue:
            try:
                self.sched.set_fail(uuid, RESTART_REASON)
            except (InMaintenanceError, NotFoundError):
                pass
        if overdue:
            log.warning("dryads did not come back after restart", extra={"fields": {
                "workers": len(overdue), "grace": self.cfg.restart_grace}})
        for event in self._link_waiters.values():
            event.set()
        self._link_waiters.clear()
        self._after_turn()

    def _send(self, sock: LoopSocket | None, frames: list[bytes],
              ack: Any = NOT_AN_ACK) -> None:
        """Send at the end of the turn, once its changes are durable (with a store).

        In memory too: a turn's replies leave together, which lets libzmq
        write them to each peer in one go instead of waking its I/O thread
        for every reply (about a quarter of the server's time per call in
        bench/e2e_server.py part (a)).

        `ack`: the message ID when `frames` is a success reply (it becomes a
        `storage_failed` error if the commit fails).
        """
        assert sock is not None
        self._outbox.append((sock, frames, ack))
        if self._flush_handle is None:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_handle is None and self.loop is not None:
            self._flush_handle = self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        """End of a turn: commit what it changed, then let its messages go."""
        self._flush_handle = None
        outbox, self._outbox = self._outbox, []
        if self.store is not None and not self._commit(self.store, outbox):
            return
        for sock, frames, _ in outbox:
            sock.send(frames)
        self._sent_event_seq = self._event_seq
        waiters, self._durable_waiters = self._durable_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _commit(self, store: Store,
                outbox: list[tuple[LoopSocket, list[bytes], Any]]) -> bool:
        """Save the turn's changes; False when they could not be (the outbox is dealt with)."""
        changes = self.sched.drain_changes()
        for record in changes.workers:
            record["key"] = encode_key(record["key"])
        ports, self._ports = self._ports, {}
        if self._unsaved is not None:
            changes = _merge_changes(self._unsaved, changes)
            ports = {**self._unsaved_ports, **ports}
        if changes or ports:
            started = time.perf_counter()
            try:
                store.commit(changes, ports)
            except Exception as exc:   # sqlite3.Error, OSError: disk full, I/O error...
                self._commit_failed(changes, ports, outbox, exc)
                return False
            self.stats.commits += 1
            self.stats.commit_seconds += time.perf_counter() - started
            if self._unsaved is not None:
                log.warning("state saved again after storage failures",
                            extra={"fields": {"failures": self.stats.storage_failures}})
            self._unsaved, self._unsaved_ports = None, {}
        return True

    def _commit_failed(self, changes: Changes, ports: dict[int, int | None],
                       outbox: list[tuple[LoopSocket, list[bytes], Any]],
                       exc: Exception) -> None:
        self.stats.storage_failures += 1
        self._unsaved, self._unsaved_ports = changes, ports
        if self.stats.storage_failures == 1 or self.stats.storage_failures % 100 == 0:
            log.error("cannot save the state: changes are not acknowledged", extra={"fields": {
                "error": f"{type(exc).__name__}: {exc}", "failures": self.stats.storage_failures}})
        error = StorageFailedError(f"the server could not save its state ({exc}); the change "
                                   "was not acknowledged: check with a read before retrying")
        held = []
        for sock, frames, ack in outbox:
            if ack is not NOT_AN_ACK:
                sock.send([*frames[:-1], codec.error_frame(ack, error)])
            elif sock is self.client_sock:
                sock.send(frames)              # an error reply acknowledges nothing
            else:
                held.append((sock, frames, ack))    # events, dryad replies: after the save
        self._outbox = held[-OUTBOX_HELD_MAX:] + self._outbox
        if self._retry_handle is None and self.loop is not None and not self._stopping:
            self._retry_handle = self.loop.call_later(STORAGE_RETRY, self._retry_flush)

    def _retry_flush(self) -> None:
        self._retry_handle = None
        if self._unsaved is not None or self._outbox:
            self._schedule_flush()

    def _end_turn(self) -> None:
        """A socket's turn is over: commit and send now, not an iteration later."""
        if self._flush_handle is not None:
            self.flush_now()

    def flush_now(self) -> None:
        """Commit and send at once (shutdown)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._flush()

    async def _durable(self) -> None:
        """Wait until every change made so far is committed (commands to dryads wait so)."""
        if self.store is None or (self._flush_handle is None and self._unsaved is None):
            return
        assert self.loop is not None
        fut: asyncio.Future[None] = self.loop.create_future()
        self._durable_waiters.append(fut)
        self._schedule_flush()
        try:
            await asyncio.wait_for(fut, self.cfg.dryad_reply_timeout)
        except asyncio.TimeoutError:
            raise DryadError("the server could not save its state; command not sent") from None

    def ready_line(self) -> str:
        return ("boruta server ready listen={listen} dryad={dryad} events={events}"
                .format(**self.endpoints))

    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("stopping")
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def close(self) -> None:
        """Drain: refuse nothing half-done, answer every parked call, close everything."""
        self._stopping = True
        if self._grace_handle is not None:
            self._grace_handle.cancel()
        if self.client_sock is not None:
            self.client_sock.stop()               # no new client calls from here on
        stopped = [t for t in (self._housekeeping_task, self._history_task) if t is not None]
        for task in stopped:
            task.cancel()
        await asyncio.gather(*stopped, return_exceptions=True)
        self._after_history.clear()
        for req_id in list(self.parked):
            for p in list(self.parked.get(req_id, ())):
                self._answer(p, error=ShuttingDownError())
        # Dryad commands in flight get a short grace to finish (the dryad socket is
        # still read, so their replies and completions are applied), then whatever
        # is left is cancelled.
        inflight = [t for t in self._tasks if not t.done()]
        if inflight:
            await asyncio.wait(inflight, timeout=self.cfg.shutdown_grace)
        for reader in (self.dryad_sock, self.events_sock):
            if reader is not None:
                reader.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._timer is not None:
            self._timer.cancel()
        if self._retry_handle is not None:
            self._retry_handle.cancel()
        self.flush_now()                          # the last turn's changes and replies
        self.tunnels.close_all()
        self.keys.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.ctx is not None:
            self.ctx.destroy(linger=int(self.cfg.shutdown_grace * 1000))
        if self.store is not None:
            self.store.close()
            self.store = None
        commits = self.stats.commits
        log.info("stopped", extra={"fields": {
            "client_msgs": self.stats.client_msgs, "dryad_msgs": self.stats.dryad_msgs,
            "commits": commits, "commit_ms_avg": round(1000 * self.stats.commit_seconds
                                                       / commits, 3) if commits else None}})

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ================================================================== turns
    def _after_turn(self) -> None:
        """Carry out the scheduler's effects, then re-arm its timer (and commit at turn end)."""
        while True:
            effects = self.sched.drain_effects()
            if not effects:
                break
            for effect in effects:
                try:
                    self._effect_handlers[type(effect)](effect)
                except Exception:
                    log.exception("failed to carry out %r", effect)
        self._arm_timer()
        self._schedule_flush()

    def _arm_timer(self) -> None:
        when = self.sched.next_timer()
        if when == self._timer_at and (when is None or self._timer is not None):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is None or self.loop is None or self._stopping:
            return
        delay = min(max(0.0, when - time.time()) + 0.001, 3600.0)
        self._timer = self.loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            self.sched.advance()
        except Exception:
            log.exception("scheduler timer failed")
        self._after_turn()

    def _allow(self, identity: bytes) -> bool:
        """Per-peer token bucket: `peer_rate` messages/s, bursts of `peer_burst`."""
        now = time.monotonic()
        burst = self._burst
        bucket = self._buckets.get(identity)
        if bucket is None:
            bucket = self._buckets[identity] = _Bucket(burst, now)
        tokens = bucket.tokens + (now - bucket.at) * self._rate
        if tokens > burst:
            tokens = burst
        bucket.at = now
        if tokens < 1.0:
            bucket.tokens = tokens
            return False
        bucket.tokens = tokens - 1.0
        return True

    @staticmethod
    def _peek_id(payload: bytes, limit: int) -> Any:
        if len(payload) > limit:
            return None
        try:
            obj = codec.unpack(payload)
        except BorutaError:
            return None
        msg_id = obj.get("id") if isinstance(obj, dict) else None
        return msg_id if codec.is_id(msg_id) else None

    # ================================================================== client endpoint
    def _on_client(self, frames: list[bytes]) -> None:
        self.stats.client_msgs += 1
        identity = frames[0]
        if len(frames) == 2:
            prefix: tuple[bytes, ...] = ()
            payload = frames[1]
        elif len(frames) == 3 and frames[1] == b"":
            prefix, payload = (b"",), frames[2]          # a REQ peer
        else:
            self._reply((identity, ()), codec.error_frame(None, BadFrameError(
                f"expected one frame per message, got {len(frames) - 1}")))
            return
        route = (identity, prefix)
        if not self._allow(identity):
            self.stats.errors += 1
            self._reply(route, codec.error_frame(self._peek_id(payload, 4096), RateLimitedError(
                f"more than {self.cfg.peer_rate:g} messages/s from this peer: slow down")))
            return
        msg_id = None
        try:
            msg_id, name, raw_args = codec.decode_request(payload, self.cfg.max_frame_bytes)
            op = operations.CLIENT_OPS.get(name)
            if op is None:
                hint = " (a dryad operation: use the dryad endpoint)" if name in operations.DRYAD_OPS else ""
                raise UnknownOperationError(f"unknown operation {name!r}{hint}")
            args = op.check(raw_args)
            if self._history_after is not None:
                if name == "list_requests":
                    self._after_history.append(frames)     # answered once all is loaded
                    return
                if name in ID_OPS:
                    self._history_lookup(args.get("id"))
            result = self._client_ops[name](route, msg_id, args)
        except BorutaError as exc:
            self.stats.errors += 1
            self._reply(route, codec.error_frame(getattr(exc, "msg_id", msg_id), exc))
        except Exception as exc:
            self.stats.errors += 1
            log.exception("internal error in a client call")
            self._reply(route, codec.error_frame(msg_id, ("internal", f"internal server error: {exc}")))
        else:
            if result is not PARKED:
                self._reply(route, codec.ok_frame(msg_id, result), msg_id)
        self._after_turn()

    def _reply(self, route: tuple[bytes, tuple[bytes, ...]], frame: bytes,
               ack: Any = NOT_AN_ACK) -> None:
        """A reply to a client; `ack` (its message ID) for a success reply."""
        self._send(self.client_sock, [route[0], *route[1], frame], ack)

    # ------------------------------------------------------------------ Requests
    def _op_ping(self, route: Any, msg_id: Any, args: dict[str, Any]) -> Any:
        return {"server": boruta.__version__, "protocol": PROTOCOL_VERSION,
                "matcher": self.sched.matcher_kind, "endpoints": dict(self.endpoints),
                "heartbeat_interval": self.cfg.heartbeat_interval}

    def _op_new_request(self, route: Any, msg_id: Any, a: dict[str, Any]) -> Any:
        req_id = self.sched.new_request(a["caps"], a["priority"], None, a["valid_after"],
                                        a["deadline"],
                                        queue_unsatisfiable=bool(a["queue_unsatisfiable"]))
        return {"id": req_id}

    def _op_update_request(self, route: Any, msg_id: Any, a: dict[str, Any]) -> Any:
        self.sched.update_request(a["id"], a["priority"], a["valid_after"], a["deadline"])
        return None

    def _op_close_request(self, route: Any, msg_id: Any, a: dict[str, Any]) -> Any:
        self.sched.close_request(a["id"])
        return None

    def _op_get_request_info(self, route: Any, msg_id: Any, a: dict[str, Any]) -> Any:
        return documents.request_out(self.sched.get_request_info(a["id"]))

    def _op_list_requests(self, route: Any, msg_id: Any, a: dict[str, Any]) -> Any:
        items, info = self.sched.list_requests(a["filter"], a["sorter"], a["paginator"])
        return documents.list_out([documents.request_out(i) for i in items], info)

    def _op_prolong_access(self, route: Any, msg_id: Any, a: dict[str, Any]) -> Any:
        self.sched.prolong_access(a["id"])
        return None

    def _op_acquire_worker(self, route: Any, msg_id: Any, a: dict[str, Any]) -> Any:
        req_id, timeout = a["id"], a["timeout"]
        info = self.sched.get_request_info(req_id)
        job = self.jobs.get(req_id)
        if info.state is ReqState.INPROGRESS and job is not None:
            return self._access_doc(job)
        if info.state.terminal:
            raise WorkerNotAssignedError(f"worker not assigned: request {req_id} is {info.state}")
        if timeout == 0:
            raise WaitTimeoutError(f"request {req_id} is {info.state}: no worker assigned yet")
        return self._park(Parked("acquire", req_id, route, msg_id, timeout))

    def _op_wait_request(self, route: Any, msg_id: Any, a: dict[str, Any]) -> Any:
        req_id, timeout = a["id"], a["timeout"]
        states = a["states"] or ALL_BUT_WAIT
        info = self.sched.get_request_info(req_id)
        if info.state in states:
            return documents.request_out(info)
        if info.state.terminal:
            raise self._ended(req_id, info.state, states)
        if timeout == 0:
            raise WaitTimeoutError(f"request {req_id} is {info.state}")
        return self._park(Parked("wait", req_id, route, msg_id, timeout, states))

    @staticmethod
    def _ended(req_id: int, state: ReqState, states: frozenset[ReqState]) -> RequestEndedError:
        wanted = ", ".join(sorted(str(s) for s in states))
        return RequestEndedError(f"request {req_id} ended {state}; it will never be {wanted}")

    def _access_doc(self, job: Job) -> dict[str, Any]:
        access = AccessInfo(job.username, job.key.private_text, job.worker_uuid,
                            addr=(self.cfg.public_host, job.port), key_type=job.key.key_type)
        return documents.access_out(access, job.key.private_text, job.key.key_type)

    # ------------------------------------------------------------------ parked replies
    def _park(self, parked: Parked) -> Any:
        if self.parked_count >= self.cfg.max_parked:
            raise ServerBusyError(f"server busy: {self.parked_count} calls already waiting")
        self.parked.setdefault(parked.req_id, []).append(parked)
        self.parked_count += 1
        if parked.timeout is not None and self.loop is not None:
            parked.timer = self.loop.call_later(parked.timeout, self._expire, parked)
        return PARKED

    def _answer(self, parked: Parked, result: Any = None, error: BorutaError | None = None) -> None:
        waiting = self.parked.get(parked.req_id)
        if waiting is None or parked not in waiting:
            return
        waiting.remove(parked)
        if not waiting:
            del self.parked[parked.req_id]
        self.parked_count -= 1
        if parked.timer is not None:
            parked.timer.cancel()
        if error is not None:
            self._reply(parked.route, codec.error_frame(parked.msg_id, error))
        else:
            self._reply(parked.route, codec.ok_frame(parked.msg_id, result), parked.msg_id)

    def _expire(self, parked: Parked) -> None:
        parked.timer = None
        try:
            state = self.sched.request_state(parked.req_id)
        except BorutaError:
            state = None
        self._answer(parked, error=WaitTimeoutError(
            f"request {parked.req_id} still {state} after {parked.timeout:g}s"))
        self._after_turn()

    def _wake_parked(self, req_id: int, state: ReqState) -> None:
        for parked in list(self.parked.get(req_id, ())):
            if parked.kind == "acquire":
                if state.terminal:
                    self._answer(parked, error=WorkerNotAssignedError(
                        f"worker not assigned: request {req_id} is {state}"))
            elif state in parked.states:
                self._answer(parked, result=documents.request_out(self.sched.get_request_info(req_id)))
            elif state.terminal:
                self._answer(parked, error=self._ended(req_id, state, parked.states))

    # ------------------------------------------------------------------ Workers
    def _op_list_workers(self, route: Any, msg_id: Any, a: dict[str, Any]) -> Any:
        items, info = self.sched.list_workers(a["filter"], a["sorter"], a["paginator"])
        return documents.list_out([documents.worker_out(i) for i in items], info)

    def _op_get_worker_info(self, route: Any, msg_id: Any, a: dict[str, Any]) -> Any:
        return documents.worker_out(self.sched.get_worker_info(a["uuid"]))

    def _op_set_state(self, route: Any, msg_id: Any, a: dict[str, Any]) -> Any:
        self.sched.set_state(a["uuid"], a["state"])
        return None

    def _op_set_groups(self, route: Any, msg_id: Any, a: dict[str, Any]) -> Any:
        self.sched.set_groups(a["uuid"], a["groups"])
        return None

    def _op_deregister(self, route: Any, msg_id: Any, a: dict[str, Any]) -> Any:
        self.sched.deregister(a["uuid"])
        return None

    def _op_healthcheck(self, route: Any, msg_id: Any, a: dict[str, Any]) -> Any:
        uuid = a["uuid"]
        self.sched.get_worker_info(uuid)               # not_found for unknown workers
        self._spawn(self._healthcheck(uuid, (route, msg_id)))
        return PARKED

    async def _healthcheck(self, uuid: str, reply_to: Any = None) -> None:
        self._healthchecks.add(uuid)
        try:
            await self._command(uuid, "healthcheck", {})
        except DryadError as exc:
            reason = f"healthcheck failed: {exc.message}"
            log.warning("healthcheck failed", extra={"fields": {"worker_uuid": uuid,
                                                                 "reason": exc.message}})
            with contextlib.suppress(BorutaError):
                self.sched.set_fail(uuid, reason)
            self._after_turn()
            if reply_to is not None:
                self._reply(reply_to[0], codec.error_frame(reply_to[1], DryadError(reason)))
        else:
            if reply_to is not None:
                self._reply(reply_to[0], codec.ok_frame(reply_to[1], None), reply_to[1])
        finally:
            self._healthchecks.discard(uuid)

    # ================================================================== dryad endpoint
    def _on_dryad(self, frames: list[zmq.Frame]) -> None:
        self.stats.dryad_msgs += 1
        identity = frames[0].bytes
        if len(frames) != 2:
            self._reply_dryad(identity, codec.error_frame(None, BadFrameError(
                f"expected one frame per message, got {len(frames) - 1}")))
            return
        frame = frames[1]
        payload = frame.bytes
        if not self._allow(identity):
            self._reply_dryad(identity, codec.error_frame(
                self._peek_id(payload, 4096), RateLimitedError(
                    f"more than {self.cfg.peer_rate:g} messages/s from this peer: slow down")))
            return
        uuid = self.identities.get(identity)
        if uuid is not None:
            self.links[uuid].last_seen = time.monotonic()
        msg_id = None
        try:
            env = codec.decode(payload, self.cfg.max_frame_bytes)
            msg_id = env.id
            if not env.is_request:
                self._on_command_reply(identity, env)
                return
            assert env.op is not None and env.args is not None
            op = operations.DRYAD_OPS.get(env.op)
            if op is None:
                hint = " (a client operation: use the client endpoint)" if env.op in operations.CLIENT_OPS else ""
                raise UnknownOperationError(f"unknown operation {env.op!r}{hint}")
            args = op.check(env.args)
            result = self._dryad_ops[env.op](identity, frame, args)
        except BorutaError as exc:
            self.stats.errors += 1
            self._reply_dryad(identity, codec.error_frame(getattr(exc, "msg_id", msg_id), exc))
        except Exception as exc:
            self.stats.errors += 1
            log.exception("internal error in a dryad call")
            self._reply_dryad(identity, codec.error_frame(
                msg_id, ("internal", f"internal server error: {exc}")))
        else:
            self._reply_dryad(identity, codec.ok_frame(msg_id, result))
        self._after_turn()

    def _reply_dryad(self, identity: bytes, frame: bytes) -> None:
        """A reply to a dryad: leaves with the turn's other messages, after its commit."""
        self._send(self.dryad_sock, [identity, frame])

    def _send_dryad(self, identity: bytes, frame: bytes) -> bool:
        """A command to a dryad, at once (callers first wait for `_durable`)."""
        assert self.dryad_sock is not None
        return self.dryad_sock.send([identity, frame])

    def _op_register(self, identity: bytes, frame: zmq.Frame, a: dict[str, Any]) -> Any:
        try:
            peer_ip = frame.get("Peer-Address")
        except Exception:
            peer_ip = None
        dryad_address = addresses.fill_host(a["dryad_address"], peer_ip)
        ssh_address = addresses.fill_host(a["ssh_address"], peer_ip)
        uuid = self.sched.register(a["caps"], dryad_address, ssh_address)
        previous = self.identities.get(identity)
        if previous is not None and previous != uuid and previous in self.links:
            self._dryad_lost(previous, f"its connection registered worker {uuid} instead")
        old = self.links.get(uuid)
        if old is not None and old.identity != identity:
            self.identities.pop(old.identity, None)
            self._fail_pending(old.identity, "dryad re-registered from a new connection")
        self.links[uuid] = DryadLink(uuid, identity, peer_ip, time.monotonic())
        self.identities[identity] = uuid
        self.deregistered.pop(identity, None)
        waiter = self._link_waiters.pop(uuid, None)
        if waiter is not None:
            waiter.set()
        log.info("dryad registered", extra={"fields": {
            "worker_uuid": uuid, "dryad_address": dryad_address, "ssh_address": ssh_address,
            "peer": peer_ip}})
        return {"uuid": uuid, "heartbeat_interval": self.cfg.heartbeat_interval,
                "heartbeat_liveness": self.cfg.heartbeat_liveness}

    def _registered(self, identity: bytes) -> str:
        uuid = self.identities.get(identity)
        if uuid is None:
            gone = self.deregistered.get(identity)
            if gone is not None:
                raise DeregisteredError(f"worker {gone} was deregistered")
            raise NotRegisteredError("this dryad is not registered: send register first")
        return uuid

    def _op_set_fail(self, identity: bytes, frame: Any, a: dict[str, Any]) -> Any:
        uuid = self._registered(identity)
        if a["uuid"] != uuid:
            raise BadArgumentError(f"this dryad is registered as worker {uuid}, not {a['uuid']}")
        self.sched.set_fail(uuid, a["reason"] or "")
        return None

    def _op_heartbeat(self, identity: bytes, frame: Any, a: dict[str, Any]) -> Any:
        uuid = self._registered(identity)
        if a["uuid"] is not None and a["uuid"] != uuid:
            raise NotRegisteredError(f"this connection is registered as worker {uuid}")
        return {}

    # ------------------------------------------------------------------ commands to dryads
    async def _command(self, uuid: str, op: str, args: dict[str, Any]) -> Any:
        """Send `op` to the worker's dryad and await its reply (DryadError on any failure).

        The command leaves once the state that called for it is durable. Just
        after a restart, a dryad not yet back is waited for (`restart_grace`).
        """
        if uuid not in self.links and self._restart_deadline is not None:
            left = self._restart_deadline - time.monotonic()
            if left > 0:
                waiter = self._link_waiters.setdefault(uuid, asyncio.Event())
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(waiter.wait(), left)
        await self._durable()
        link = self.links.get(uuid)
        if link is None:
            raise DryadError(f"dryad of worker {uuid} is not connected")
        cmd_id = next(self._cmd_ids)
        assert self.loop is not None
        fut: asyncio.Future[Any] = self.loop.create_future()
        self._pending[cmd_id] = (fut, link.identity)
        try:
            if not self._send_dryad(link.identity, codec.request_frame(cmd_id, op, args)):
                raise DryadError(f"dryad of worker {uuid} is not connected")
            try:
                return await asyncio.wait_for(fut, self.cfg.dryad_reply_timeout)
            except asyncio.TimeoutError:
                raise DryadError(f"no reply to {op} within {self.cfg.dryad_reply_timeout:g}s") from None
        finally:
            self._pending.pop(cmd_id, None)

    def _on_command_reply(self, identity: bytes, env: codec.Envelope) -> None:
        pending = self._pending.get(env.id) if isinstance(env.id, int) else None
        if pending is None or pending[1] != identity:
            log.debug("late or unknown reply from a dryad", extra={"fields": {"id": env.id}})
            return
        fut = pending[0]
        if fut.done():
            return
        if env.error is not None:
            fut.set_exception(DryadError(f"{env.error['code']}: {env.error['message']}"))
        else:
            fut.set_result(env.ok)

    def _fail_pending(self, identity: bytes, reason: str) -> None:
        for fut, ident in list(self._pending.values()):
            if ident == identity and not fut.done():
                fut.set_exception(DryadError(reason))

    def _drop_link(self, uuid: str, reason: str) -> DryadLink | None:
        link = self.links.pop(uuid, None)
        if link is not None:
            self.identities.pop(link.identity, None)
            self._fail_pending(link.identity, f"dryad connection lost: {reason}")
        return link

    async def _prepare(self, uuid: str, op: int) -> None:
        try:
            key = await self.keys.take()
            reply = await self._command(uuid, "prepare",
                                        {"key": key.public_openssh, "key_type": key.key_type})
            username = reply.get("username") if isinstance(reply, dict) else None
            if not isinstance(username, str) or not username:
                raise DryadError("the dryad's prepare reply lacks a username")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = exc.message if isinstance(exc, BorutaError) else str(exc)
            self.sched.worker_prepare_failed(uuid, op, reason)
        else:
            self.sched.worker_prepared(uuid, op, key, username)
        self._after_turn()

    async def _maintain(self, uuid: str, op: int, message: str) -> None:
        try:
            await self._command(uuid, "put_in_maintenance", {"message": message})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = exc.message if isinstance(exc, BorutaError) else str(exc)
            self.sched.worker_maintenance_failed(uuid, op, reason)
        else:
            self.sched.worker_in_maintenance(uuid, op)
        self._after_turn()

    # ================================================================== effects
    def _fx_prepare(self, e: fx.PrepareWorker) -> None:
        self._spawn(self._prepare(e.worker_uuid, e.op))

    def _fx_maintenance(self, e: fx.PutInMaintenance) -> None:
        self._spawn(self._maintain(e.worker_uuid, e.op, e.message))

    def _fx_start_job(self, e: fx.StartJob) -> None:
        try:
            access = self.sched.acquire_worker(e.req_id)
        except BorutaError:
            return                                   # the request has moved on already
        if access.worker_uuid != e.worker_uuid:
            return
        job = self._open_job(e.req_id, access, "the worker holds no job key",
                             "job start failed", "cannot open tunnel")
        if job is None:
            return
        log.info("job started", extra={"fields": {
            "req_id": e.req_id, "worker_uuid": e.worker_uuid, "tunnel_port": job.port,
            "ssh_address": access.ssh_address, "username": access.username}})
        self._answer_acquires(job)

    def _open_job(self, req_id: int, access: AccessInfo, no_key: str, failed: str,
                  reason: str, prefer: int | None = None) -> Job | None:
        """Open the job's tunnel to its worker (on `prefer` if free) and book the job;
        None when it cannot be opened (then the job start failed, in the core too)."""
        try:
            key = access.key
            if not isinstance(key, JobKey):
                raise TunnelError(no_key)
            if not access.ssh_address:
                raise TunnelError("the worker has no ssh address")
            dest = addresses.split_host_port(access.ssh_address)
            tunnel = self.tunnels.open(req_id, dest, prefer=prefer)
        except (TunnelError, ValueError) as exc:
            log.warning(failed, extra={"fields": {
                "req_id": req_id, "worker_uuid": access.worker_uuid, "reason": str(exc)}})
            self.sched.job_start_failed(req_id, f"{reason}: {exc}")
            return None
        job = Job(req_id, access.worker_uuid, access.username, key, tunnel.port)
        self.jobs[job.req_id] = job
        if self.store is not None:
            self._ports[job.req_id] = job.port
        return job

    def _answer_acquires(self, job: Job) -> None:
        doc = self._access_doc(job)
        for parked in list(self.parked.get(job.req_id, ())):
            if parked.kind == "acquire":
                self._answer(parked, result=doc)

    def _fx_resume_job(self, e: fx.ResumeJob) -> None:
        """After a restart the job's dryad is back: reopen the tunnel, on its old port if free."""
        try:
            access = self.sched.acquire_worker(e.req_id)
        except BorutaError:
            return                                   # the request has moved on already
        if access.worker_uuid != e.worker_uuid or e.req_id in self.jobs:
            return
        old_port = self._restored_ports.pop(e.req_id, None)
        job = self._open_job(e.req_id, access, "the worker's job key was not kept",
                             "job resume failed", "cannot reopen tunnel after restart",
                             prefer=old_port)
        if job is None:
            return
        moved = job.port != old_port
        log.info("job resumed", extra={"fields": {
            "req_id": e.req_id, "worker_uuid": e.worker_uuid, "tunnel_port": job.port,
            "old_port": old_port, "moved": moved}})
        reason = "reopened on a new port after restart" if moved else "reopened after restart"
        self._publish(lambda: (codec.request_topic(e.req_id), {
            "kind": "tunnel", "id": e.req_id, "at": iso_now(), "reason": reason,
            "worker_uuid": e.worker_uuid, "address": f"{self.cfg.public_host}:{job.port}",
            "port": job.port, "old_port": old_port, "moved": moved}))
        self._answer_acquires(job)

    def _fx_finish_job(self, e: fx.FinishJob) -> None:
        job = self.jobs.pop(e.req_id, None)      # the key is forgotten with the job
        closed = self.tunnels.close(e.req_id)
        self._restored_ports.pop(e.req_id, None)
        if self.store is not None:
            self._ports[e.req_id] = None
        if job is not None or closed:
            log.info("job finished", extra={"fields": {"req_id": e.req_id,
                                                        "worker_uuid": e.worker_uuid}})

    def _fx_request_changed(self, e: fx.RequestChanged) -> None:
        state = e.state
        if log.isEnabledFor(logging.INFO):
            log.info(f"request {e.req_id} {state}", extra={"fields": {
                "event": "request", "req_id": e.req_id, "state": str(state),
                "worker_uuid": e.worker_uuid, "reason": e.reason}})
        self._publish(lambda: (codec.request_topic(e.req_id), {
            "kind": "request", "id": e.req_id, "state": str(state), "at": iso_now(),
            "reason": e.reason, "worker_uuid": e.worker_uuid}))
        if e.req_id in self.parked:
            self._wake_parked(e.req_id, state)

    def _fx_worker_changed(self, e: fx.WorkerChanged) -> None:
        state = e.state
        if log.isEnabledFor(logging.INFO):
            log.info(f"worker {e.worker_uuid} {state}", extra={"fields": {
                "event": "worker", "worker_uuid": e.worker_uuid, "state": str(state),
                "reason": e.reason}})
        self._publish(lambda: (codec.worker_topic(e.worker_uuid), {
            "kind": "worker", "uuid": e.worker_uuid, "state": str(state), "at": iso_now(),
            "reason": e.reason}))

    def _fx_worker_removed(self, e: fx.WorkerRemoved) -> None:
        link = self._drop_link(e.worker_uuid, "worker deregistered")
        if link is not None:
            self.deregistered[link.identity] = e.worker_uuid
            while len(self.deregistered) > 10000:
                self.deregistered.pop(next(iter(self.deregistered)))
        log.info(f"worker {e.worker_uuid} removed", extra={"fields": {
            "event": "worker", "worker_uuid": e.worker_uuid, "state": "REMOVED",
            "reason": "deregistered"}})
        self._publish(lambda: (codec.worker_topic(e.worker_uuid), {
            "kind": "worker", "uuid": e.worker_uuid, "state": "REMOVED", "at": iso_now(),
            "reason": "deregistered"}))

    # ================================================================== events
    def _publish(self, event: Callable[[], tuple[bytes, dict[str, Any]]]) -> None:
        """Number the next event; build and send it (`event()`: topic, document) only
        when someone subscribes: the server's busiest calls pay nothing for events."""
        self._event_seq += 1
        self.stats.events += 1
        if self.events_sock is not None and not self._stopping and self._subscriptions:
            topic, doc = event()
            doc["seq"] = self._event_seq
            self._send(self.events_sock, [topic, codec.pack(doc)])

    def _on_subscription(self, frames: list[bytes]) -> None:
        """XPUB: a subscription to hello/<nonce>/ is answered on that topic (subscriber sync)."""
        data = frames[0] if frames else b""
        if data[:1] == b"\x01":
            self._subscriptions.add(data[1:])
        elif data[:1] == b"\x00":
            self._subscriptions.discard(data[1:])
        if data[:1] == b"\x01" and data[1:].startswith(codec.TOPIC_HELLO.encode()):
            assert self.events_sock is not None
            self.events_sock.send([data[1:], codec.pack({
                "kind": "hello", "seq": self._sent_event_seq, "at": iso_now(),
                "heartbeat_interval": self.cfg.heartbeat_interval})])

    # ================================================================== housekeeping
    async def _housekeeping(self) -> None:
        interval = self.cfg.heartbeat_interval
        step = min(interval / 2, 1.0)
        last_tick = last_health = last_purge = time.monotonic()
        limit = interval * self.cfg.heartbeat_liveness
        collector = GcFreezer(last_tick)
        while True:
            # Wake at the earliest liveness deadline, not just every `step`: a dryad
            # that dies right after a heartbeat is FAILED liveness x interval later,
            # not up to a step after that.
            earliest = min((link.last_seen for link in self.links.values()), default=None)
            wait = step
            if earliest is not None:
                wait = min(step, max(0.0, earliest + limit - time.monotonic()) + 0.001)
            await asyncio.sleep(wait)
            now = time.monotonic()
            try:
                collector.tick(now)
                for uuid, link in list(self.links.items()):
                    if now - link.last_seen > limit:
                        self._dryad_lost(uuid, f"no message for {now - link.last_seen:.1f}s")
                if now - last_tick >= interval:
                    last_tick = now
                    if self.events_sock is not None:
                        self.events_sock.send([codec.TOPIC_TICK.encode(), codec.pack({
                            "kind": "tick", "seq": self._sent_event_seq, "at": iso_now(),
                            "heartbeat_interval": interval})])
                    for ident in [i for i, b in self._buckets.items() if now - b.at > 60]:
                        del self._buckets[ident]
                hc = self.cfg.healthcheck_interval
                if hc and now - last_health >= hc:
                    last_health = now
                    self._periodic_healthchecks()
                if now - last_purge >= self.cfg.purge_interval and self._history_after is None:
                    last_purge = now
                    purged = self.sched.purge_history()
                    if purged:
                        log.info("history purged", extra={"fields": {"requests": purged}})
                if self.store is None:
                    self.sched.forget_changes()
                self._after_turn()
            except Exception:
                log.exception("housekeeping failed")

    def _dryad_lost(self, uuid: str, reason: str) -> None:
        self._drop_link(uuid, reason)
        log.warning("dryad lost", extra={"fields": {"worker_uuid": uuid, "reason": reason}})
        try:
            self.sched.set_fail(uuid, f"dryad lost: {reason}")
        except (InMaintenanceError, NotFoundError):
            pass

    def _periodic_healthchecks(self) -> None:
        for uuid in list(self.links):
            if uuid in self._healthchecks:
                continue
            try:
                state = self.sched.get_worker_info(uuid).state
            except BorutaError:
                continue
            if state is WorkerState.IDLE:
                self._spawn(self._healthcheck(uuid))


def iso_now() -> str:
    return iso(datetime.now(timezone.utc)) or ""


def _merge_changes(old: Changes, new: Changes) -> Changes:
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


# ====================================================================== entry points
async def serve(config: ServerConfig, ready: Callable[[Server], None] | None = None) -> int:
    """Run a server until SIGTERM/SIGINT (or `server.request_stop()`); returns 0."""
    server = Server(config)
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, server.request_stop)
    print(server.ready_line(), flush=True)
    if ready is not None:
        ready(server)
    try:
        await server.wait_stopped()
    finally:
        await server.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
    return 0


def run_server(config: ServerConfig) -> int:
    """Blocking: logging as configured, uvloop when installed, serve until stopped.

    The state lives in `default_state_dir()` unless the configuration names
    a state directory (or `:memory:`, which keeps nothing).
    """
    setup_logging(config.log_level, config.log_format, config.log_file)
    if config.state_dir is None:
        config = config.replace(state_dir=default_state_dir())
    try:
        import uvloop
    except ImportError:
        uvloop = None
    try:
        if uvloop is not None:
            return uvloop.run(serve(config))
        return asyncio.run(serve(config))
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    except StoreError as exc:
        log.error("cannot start: %s", exc)
        return 1
