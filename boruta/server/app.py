"""The Boruta server: one asyncio loop around the core Scheduler, made of parts with one job each.

Sockets (endpoints configurable, boruta.server.config):

- a ROUTER for clients, served by an `Endpoint` over the client operations;
- a ROUTER for dryads (DEALER peers that connect out), served by an
  `Endpoint` over the dryad operations; the server also sends dryads
  commands on it and awaits their replies;
- an XPUB for the event stream.

The parts, in the order a call meets them (docs/ARCHITECTURE.md draws it):

- `endpoint.Endpoint`: rate limit, decode, look up the operation, convert its
  arguments, call its handler, reply;
- `client_operations.ClientOperations` and `dryads.DryadRegistry`: the
  handlers; the registry also owns commands to dryads, liveness and health
  checks;
- `parked.ParkedCalls`: acquire_worker and wait_request answered later;
- `jobs.JobBook`: jobs and their tunnels;
- `events.EventPublisher`: the event stream;
- `outbox.Outbox`: what a turn sends, after the turn's changes are committed
  (group commit with `store.Store`);
- `restore.StateLoader`: the state directory at start, the history after;
- `keys.KeyPool`: job keys made off the loop.

Every message is handled synchronously on the loop; after it, `after_turn`
carries out the scheduler's effects (each effect type has one handler
below) and re-arms the one timer at `scheduler.next_timer()`.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import zmq

import boruta
from boruta.core import effects
from boruta.core.scheduler import Scheduler
from boruta.http.face import HttpFace
from boruta.logs import setup_logging
from boruta.server.admin_operations import AdminOperations
from boruta.server.authorisation import authorise
from boruta.server.client_operations import ClientOperations
from boruta.server.config import ConfigError, ServerConfig, default_state_dir
from boruta.server.dryads import DryadRegistry
from boruta.server.endpoint import Endpoint
from boruta.server.events import EventPublisher
from boruta.server.gcfreeze import GcFreezer
from boruta.server.identities import CLIENT_DOMAIN, DRYAD_DOMAIN, EVENTS_DOMAIN, Identities
from boruta.server.jobs import JobBook
from boruta.server.keyring import Keyring
from boruta.server.keys import KeyPool
from boruta.server.outbox import Outbox
from boruta.server.parked import ParkedCalls
from boruta.server.ratelimit import RateLimiter
from boruta.server.replybytes import PeerBuffers
from boruta.server.restore import StateLoader
from boruta.server.store import Store, StoreError
from boruta.transport.credentials import client_config_path
from boruta.transport.errors import ShuttingDownError
from boruta.transport.loopsocket import LoopSocket
from boruta.transport.operations import CLIENT_OPS, DRYAD_OPS

log = logging.getLogger("boruta.server")

TURN_MAX = 256               # messages of one socket handled in one turn (then a commit)
SOCKET_HWM = 10000           # messages queued per peer before ZeroMQ drops (send) or stalls
CLIENT_PEER_HWM = 1000       # replies queued per client peer (small ones: large are in bytes)
TIMER_MAX_DELAY = 3600.0     # the core's timer is re-armed at least hourly
# libzmq checks MAXMSGSIZE against a frame as it crosses the wire: under CURVE that is
# the message plus its MESSAGE command (name, nonce, MAC: 33 bytes), so the limit
# leaves room for it and a message is judged by its own size, encrypted or not.
CURVE_FRAME_OVERHEAD = 256


@dataclass
class Stats:
    client_msgs: int = 0
    dryad_msgs: int = 0
    errors: int = 0
    events: int = 0
    commits: int = 0
    commit_seconds: float = 0.0
    storage_failures: int = 0
    replies_dropped: int = 0          # a client peer that does not read (replybytes)
    replies_undeliverable: int = 0    # a client peer gone before its reply
    peers_dropped: int = 0            # client peers whose replies started being dropped
    started: float = field(default_factory=time.time)


class Server:
    def __init__(self, config: ServerConfig, scheduler: Scheduler | None = None) -> None:
        self.cfg = config
        self.sched = scheduler or Scheduler(config=config.scheduler, matcher=config.matcher)
        self.stats = Stats()
        self.endpoints: dict[str, str] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self.client_sock: LoopSocket | None = None
        self.dryad_sock: LoopSocket | None = None
        self.events_sock: LoopSocket | None = None
        self.store: Store | None = None               # None: in memory
        self.stopping = False
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="boruta-keys")
        self.keys = KeyPool(config.key_type, config.key_pool_size, self.executor, config.rsa_bits)
        self.limiter = RateLimiter(config.peer_rate, config.peer_burst)
        self.events = EventPublisher(self)
        self.outbox = Outbox(self, on_flushed=self.events.flushed)
        self.parked = ParkedCalls(self)
        self.jobs = JobBook(self)
        self.dryads = DryadRegistry(self)
        self.state = StateLoader(self)
        self.replies = PeerBuffers(config.max_peer_buffer_bytes, self.stats, CLIENT_PEER_HWM)
        self.identities = Identities(self)
        self.keyring: Keyring | None = None
        self.http: HttpFace | None = HttpFace(self) if config.http_listen else None
        # A secure endpoint reads each message's connection key from its identity frame.
        self.client_endpoint = Endpoint(
            self, "client", CLIENT_OPS, ClientOperations(self), AdminOperations(self),
            other_table=DRYAD_OPS, other_name="dryad", acknowledges=True, buffers=self.replies,
            identity_frame=not config.insecure, users=self.identities, authorise=authorise)
        self.dryad_endpoint = Endpoint(
            self, "dryad", DRYAD_OPS, self.dryads, other_table=CLIENT_OPS,
            other_name="client", acknowledges=False, on_reply=self.dryads.on_command_reply,
            on_message=self.dryads.seen, zero_copy=True)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._housekeeping_task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._stop = asyncio.Event()
        self._effect_handlers: dict[type, Callable[[Any], None]] = {
            effects.RequestChanged: self._request_changed,
            effects.WorkerChanged: self._worker_changed,
            effects.WorkerRemoved: self._worker_removed,
            effects.PrepareWorker: lambda e: self.spawn(self.dryads.prepare(e.worker_uuid, e.op)),
            effects.PutInMaintenance: lambda e: self.spawn(
                self.dryads.maintain(e.worker_uuid, e.op, e.message)),
            effects.StartJob: self.jobs.start,
            effects.FinishJob: self.jobs.finish,
            effects.ResumeJob: self.jobs.resume,
        }

    # ================================================================== life cycle
    async def start(self) -> dict[str, str]:
        """Restore the state, bind every socket and start the loops; returns the endpoints.

        Raises StoreError (clear message) when the state directory cannot be
        used, ConfigError when an endpoint cannot be bound.
        """
        self.loop = asyncio.get_running_loop()
        cfg = self.cfg
        if cfg.insecure:
            log.warning("INSECURE: no encryption and no authentication; every peer is an "
                        "admin (insecure = true is for development only)")
        else:
            self.keyring = Keyring.open(cfg.keys_dir)
        if cfg.durable and self.store is None:
            self.store = self.state.open()
        self.identities.load(self.keyring)
        self.ctx = zmq.Context()
        self.identities.start(self.ctx)
        try:
            self.client_sock = self._bind(zmq.ROUTER, cfg.listen, "listen",
                                          self.client_endpoint.on_frames, CLIENT_DOMAIN,
                                          identity_frame=not cfg.insecure,
                                          on_refused=self.replies.refused)
            self.dryad_sock = self._bind(zmq.ROUTER, cfg.dryad_listen, "dryad",
                                         self.dryad_endpoint.on_frames, DRYAD_DOMAIN, copy=False)
            self.events_sock = self._bind(zmq.XPUB, cfg.events, "events",
                                          self.events.on_subscription, EVENTS_DOMAIN)
            if self.http is not None:
                self.endpoints["http"] = await self.http.start()
        except ConfigError:
            if self.http is not None:
                await self.http.close()
            self.identities.stop()
            self.ctx.destroy(0)
            if self.store is not None:
                self.store.close()
                self.store = None
            raise
        self.client_endpoint.sock, self.dryad_endpoint.sock = self.client_sock, self.dryad_sock
        if self.keyring is not None:
            self.keyring.write_client_configs(self.endpoints, cfg.client_config
                                              if cfg.client_config is not None
                                              else str(client_config_path()))
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
            "events": self.endpoints["events"], "http": self.endpoints.get("http"),
            "matcher": self.sched.matcher_kind,
            "key_type": self.cfg.key_type, "version": boruta.__version__,
            "secure": self.keyring is not None, "users": len(self.identities.users),
            "server_key": self.keyring.server.public if self.keyring is not None else None,
            "state_dir": self.store.state_dir if self.store is not None else None}})
        if self.state.restored and self.sched.overdue_dryads():
            self.dryads.await_restored(self.cfg.restart_grace)
        self._on_timer()          # timers that passed while the server was down fire now
        self.state.start_background()
        return dict(self.endpoints)

    def _bind(self, kind: int, endpoint: str, name: str, handler: Callable[[list[Any]], None],
              domain: str, copy: bool = True, identity_frame: bool = False,
              on_refused: Callable[[list[Any], zmq.ZMQError], None] | None = None) -> LoopSocket:
        assert self.ctx is not None
        sock = self.ctx.socket(kind)
        if self.keyring is not None:
            # A CurveZMQ server: every peer proves its key, every frame is encrypted;
            # the ZAP domain tells the authenticator which keys this socket accepts.
            sock.curve_server = True
            sock.curve_secretkey = self.keyring.server.secret.encode("ascii")
            sock.zap_domain = domain.encode("ascii")
        sock.setsockopt(zmq.LINGER, int(self.cfg.shutdown_grace * 1000))
        if kind == zmq.XPUB:
            sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        else:
            # Frames far beyond the limit are dropped by ZeroMQ with the connection;
            # those up to 16x get a frame_too_large reply.
            sock.setsockopt(zmq.MAXMSGSIZE, self.cfg.max_frame_bytes * 16 + 4096
                            + CURVE_FRAME_OVERHEAD)
            sock.setsockopt(zmq.RCVHWM, SOCKET_HWM)
        # A client that does not read must not grow our memory: its full queue
        # refuses a send (counted) rather than growing; large replies are bounded
        # in bytes before they get here (replybytes).
        sock.setsockopt(zmq.SNDHWM, CLIENT_PEER_HWM if name == "listen" else SOCKET_HWM)
        if kind == zmq.ROUTER:
            # A send to a full queue or a gone peer fails (EAGAIN, EHOSTUNREACH)
            # instead of vanishing: a command to a gone dryad, a dropped reply.
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise ConfigError(f"cannot bind the {name} endpoint {endpoint}: {exc}") from None
        self.endpoints[name] = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        return LoopSocket(sock, handler, copy=copy, identity_frame=identity_frame,
                          turn_max=TURN_MAX,
                          end_turn=self.outbox.end_turn, on_refused=on_refused)

    def ready_line(self) -> str:
        line = ("boruta server ready listen={listen} dryad={dryad} events={events}"
                .format(**self.endpoints))
        return line + (f" http={self.endpoints['http']}" if "http" in self.endpoints else "")

    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("stopping")
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def close(self) -> None:
        """Drain: refuse nothing half-done, answer every parked call, close everything."""
        self.stopping = True
        self.dryads.close()
        if self.client_sock is not None:
            self.client_sock.stop()               # no new client calls from here on
        if self.http is not None:
            await self.http.close()               # nor HTTP requests
        if self._housekeeping_task is not None:
            self._housekeeping_task.cancel()
            await asyncio.gather(self._housekeeping_task, return_exceptions=True)
        await self.state.stop()
        self.parked.close(ShuttingDownError())
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
        self.outbox.close()                       # the last turn's changes and replies
        for endpoint in (self.client_endpoint, self.dryad_endpoint):
            endpoint.audit.flush()                # the last audit lines
        self.jobs.close_all()
        self.keys.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.identities.stop()
        if self.ctx is not None:
            self.ctx.destroy(linger=int(self.cfg.shutdown_grace * 1000))
        if self.store is not None:
            self.store.close()
            self.store = None
        stats = self.stats
        stats.client_msgs = self.client_endpoint.messages
        stats.dryad_msgs = self.dryad_endpoint.messages
        log.info("stopped", extra={"fields": {
            "client_msgs": stats.client_msgs, "dryad_msgs": stats.dryad_msgs,
            "commits": stats.commits, "replies_dropped": stats.replies_dropped,
            "peers_dropped": stats.peers_dropped,
            "replies_undeliverable": stats.replies_undeliverable, "commit_ms_avg": round(
                1000 * stats.commit_seconds / stats.commits, 3) if stats.commits else None}})

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """A task the server waits for (briefly) and cancels at shutdown."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ================================================================== turns
    def after_turn(self) -> None:
        """Carry out the scheduler's effects, then re-arm its timer (and commit at turn end)."""
        while True:
            drained = self.sched.drain_effects()
            if not drained:
                break
            for effect in drained:
                try:
                    self._effect_handlers[type(effect)](effect)
                except Exception:
                    log.exception("failed to carry out %r", effect)
        self._arm_timer()
        self.outbox.schedule_flush()

    def _arm_timer(self) -> None:
        when = self.sched.next_timer()
        if when == self._timer_at and (when is None or self._timer is not None):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is None or self.loop is None or self.stopping:
            return
        delay = min(max(0.0, when - time.time()) + 0.001, TIMER_MAX_DELAY)
        self._timer = self.loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            self.sched.advance()
        except Exception:
            log.exception("scheduler timer failed")
        self.after_turn()

    # ================================================================== effects
    def _request_changed(self, e: effects.RequestChanged) -> None:
        if log.isEnabledFor(logging.INFO):
            log.info(f"request {e.req_id} {e.state}", extra={"fields": {
                "event": "request", "req_id": e.req_id, "state": str(e.state),
                "worker_uuid": e.worker_uuid, "reason": e.reason}})
        self.events.request(e.req_id, e.state, e.reason, e.worker_uuid)
        if e.req_id in self.parked.by_request:
            self.parked.wake(e.req_id, e.state)

    def _worker_changed(self, e: effects.WorkerChanged) -> None:
        if log.isEnabledFor(logging.INFO):
            log.info(f"worker {e.worker_uuid} {e.state}", extra={"fields": {
                "event": "worker", "worker_uuid": e.worker_uuid, "state": str(e.state),
                "reason": e.reason}})
        self.events.worker(e.worker_uuid, str(e.state), e.reason)

    def _worker_removed(self, e: effects.WorkerRemoved) -> None:
        self.dryads.removed(e.worker_uuid)
        log.info(f"worker {e.worker_uuid} removed", extra={"fields": {
            "event": "worker", "worker_uuid": e.worker_uuid, "state": "REMOVED",
            "reason": "deregistered"}})
        self.events.worker(e.worker_uuid, "REMOVED", "deregistered")

    # ================================================================== housekeeping
    async def _housekeeping(self) -> None:
        """Liveness, ticks, periodic health checks, history purge: a few times a second."""
        interval = self.cfg.heartbeat_interval
        step = min(interval / 2, 1.0)
        last_tick = last_health = last_purge = time.monotonic()
        limit = interval * self.cfg.heartbeat_liveness
        collector = GcFreezer(last_tick)
        while True:
            # Wake at the earliest liveness deadline, not just every `step`: a dryad
            # that dies right after a heartbeat is FAILED liveness x interval later,
            # not up to a step after that.
            deadline = self.dryads.next_deadline(limit)
            wait = step
            if deadline is not None:
                wait = min(step, max(0.0, deadline - time.monotonic()) + 0.001)
            await asyncio.sleep(wait)
            now = time.monotonic()
            try:
                collector.tick(now)
                self.dryads.check_liveness(now, limit)
                if now - last_tick >= interval:
                    last_tick = now
                    self.events.tick()
                    self.limiter.forget_idle(now)
                    self.replies.sweep(now)
                every = self.cfg.healthcheck_interval
                if every and now - last_health >= every:
                    last_health = now
                    self.dryads.periodic_healthchecks()
                if now - last_purge >= self.cfg.purge_interval and not self.state.loading:
                    last_purge = now
                    purged = self.sched.purge_history()
                    if purged:
                        log.info("history purged", extra={"fields": {"requests": purged}})
                if self.store is None:
                    self.sched.forget_changes()
                self.after_turn()
            except Exception:
                log.exception("housekeeping failed")


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
    setup_logging(config.log_level, config.log_format, config.log_file, audit=config.audit,
                  audit_path=config.audit_file)
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
