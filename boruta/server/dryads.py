"""The dryad registry: which connection is which worker's dryad, and talking to it.

A dryad is a DEALER that connects out to the dryad endpoint; the server
knows it by its ROUTER identity. This module keeps that map, serves what
dryads send (register, set_fail, heartbeat), sends them commands with a
deadline (prepare, put_in_maintenance, healthcheck) once the state that
called for them is durable, and watches liveness in the Paranoid Pirate way:
any message is a sign of life, and a dryad silent for `heartbeat_interval x
heartbeat_liveness` seconds is lost (its worker FAILED). Just after a
restart, commands to a dryad not yet back wait up to `restart_grace`.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from boruta.core.durations import format_duration
from boruta.core.errors import (
    BadArgumentError,
    BorutaError,
    InMaintenanceError,
    NotEnrolledError,
    NotFoundError,
)
from boruta.core.names import USER_NAME_RULE, is_user_name
from boruta.core.types import UUID_KEY, WorkerState
from boruta.server.endpoint import Call, OperationCounts, Route
from boruta.transport import addresses, codec
from boruta.transport.errors import DeregisteredError, DryadError, NotRegisteredError

if TYPE_CHECKING:
    from boruta.server.app import Server

log = logging.getLogger("boruta.server")

RESTART_REASON = "dryad did not come back after restart"
DEREGISTERED_REMEMBERED = 10000   # identities of deregistered workers kept to tell them so


@dataclass(eq=False)
class DryadPeer:
    """The connection of one worker's dryad: its ROUTER identity and when it last spoke."""

    uuid: str
    identity: bytes
    peer_ip: str | None
    last_seen: float


class DryadRegistry:
    def __init__(self, app: "Server") -> None:
        self.app = app
        self.peers: dict[str, DryadPeer] = {}            # worker uuid -> its dryad
        self.identities: dict[bytes, str] = {}           # ROUTER identity -> worker uuid
        self.deregistered: dict[bytes, str] = {}         # identities of deregistered workers
        self._pending: dict[int, tuple[asyncio.Future[Any], bytes]] = {}
        self._cmd_ids = itertools.count(1)
        self._healthchecks: set[str] = set()
        self.restart_deadline: float | None = None       # monotonic end of restart_grace
        self._grace_handle: asyncio.TimerHandle | None = None
        self._link_waiters: dict[str, asyncio.Event] = {}
        # The worker-idle path runs the matcher too: its scheduler call is timed (metrics).
        self.prepared = OperationCounts(timed=True)

    # ------------------------------------------------------------------ what dryads send
    def seen(self, identity: bytes) -> None:
        """Any message from a dryad is a sign of life."""
        uuid = self.identities.get(identity)
        if uuid is not None:
            self.peers[uuid].last_seen = time.monotonic()

    def op_register(self, call: Call, a: dict[str, Any]) -> Any:
        app = self.app
        identity = call.identity
        peer_ip = call.peer_ip()
        if not app.cfg.insecure:
            self._check_enrolled(call, a["caps"].get(UUID_KEY), peer_ip)
        dryad_address = addresses.fill_host(a["dryad_address"], peer_ip)
        ssh_address = addresses.fill_host(a["ssh_address"], peer_ip)
        uuid = app.sched.register(a["caps"], dryad_address, ssh_address)
        previous = self.identities.get(identity)
        if previous is not None and previous != uuid and previous in self.peers:
            self.lost(previous, f"its connection registered worker {uuid} instead")
        old = self.peers.get(uuid)
        if old is not None and old.identity != identity:
            self.identities.pop(old.identity, None)
            self._fail_pending(old.identity, "dryad re-registered from a new connection")
        self.peers[uuid] = DryadPeer(uuid, identity, peer_ip, time.monotonic())
        self.identities[identity] = uuid
        self.deregistered.pop(identity, None)
        waiter = self._link_waiters.pop(uuid, None)
        if waiter is not None:
            waiter.set()
        log.info("dryad registered", extra={"fields": {
            "worker_uuid": uuid, "dryad_address": dryad_address, "ssh_address": ssh_address,
            "peer": peer_ip}})
        return {"uuid": uuid, "heartbeat_interval": app.cfg.heartbeat_interval,
                "heartbeat_liveness": app.cfg.heartbeat_liveness}

    def _check_enrolled(self, call: Call, uuid: Any, peer_ip: str | None) -> None:
        """A dryad registers only the worker its key was enrolled for (logged when refused:
        a dryad after another worker's UUID is either misconfigured or hostile)."""
        if not isinstance(uuid, str) or not uuid:
            return                             # the scheduler names the missing UUID
        try:
            self.app.identities.dryads.check_register(call.key, uuid)
        except NotEnrolledError:
            log.warning("dryad refused: key not enrolled for this worker", extra={"fields": {
                "worker_uuid": uuid[:64], "key": call.key, "peer": peer_ip}})
            raise

    def revoked(self, uuid: str) -> None:
        """The worker's enrolment was revoked or changed: its connection is trusted no more."""
        if uuid in self.peers:
            self.lost(uuid, "its dryad's key was revoked")

    def op_set_fail(self, call: Call, a: dict[str, Any]) -> Any:
        uuid = self._registered(call.identity)
        if a["uuid"] != uuid:
            raise BadArgumentError(f"this dryad is registered as worker {uuid}, not {a['uuid']}")
        self.app.sched.set_fail(uuid, a["reason"] or "")
        return None

    def op_heartbeat(self, call: Call, a: dict[str, Any]) -> Any:
        uuid = self._registered(call.identity)
        if a["uuid"] is not None and a["uuid"] != uuid:
            raise NotRegisteredError(f"this connection is registered as worker {uuid}")
        return {}

    def _registered(self, identity: bytes) -> str:
        uuid = self.identities.get(identity)
        if uuid is None:
            gone = self.deregistered.get(identity)
            if gone is not None:
                raise DeregisteredError(f"worker {gone} was deregistered")
            raise NotRegisteredError("this dryad is not registered: send register first")
        return uuid

    # ------------------------------------------------------------------ commands
    async def command(self, uuid: str, op: str, args: dict[str, Any]) -> Any:
        """Send `op` to the worker's dryad and await its reply (DryadError on any failure).

        The command leaves once the state that called for it is durable. Just
        after a restart, a dryad not yet back is waited for (`restart_grace`).
        """
        app = self.app
        if uuid not in self.peers and self.restart_deadline is not None:
            left = self.restart_deadline - time.monotonic()
            if left > 0:
                waiter = self._link_waiters.setdefault(uuid, asyncio.Event())
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(waiter.wait(), left)
        await app.outbox.durable()
        peer = self.peers.get(uuid)
        if peer is None:
            raise DryadError(f"dryad of worker {uuid} is not connected")
        cmd_id = next(self._cmd_ids)
        assert app.loop is not None and app.dryad_sock is not None
        fut: asyncio.Future[Any] = app.loop.create_future()
        self._pending[cmd_id] = (fut, peer.identity)
        timeout = app.cfg.dryad_reply_timeout
        try:
            if not app.dryad_sock.send([peer.identity, codec.request_frame(cmd_id, op, args)]):
                raise DryadError(f"dryad of worker {uuid} is not connected")
            try:
                return await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                raise DryadError(f"no reply to {op} within {format_duration(timeout)}") from None
        finally:
            self._pending.pop(cmd_id, None)

    def on_command_reply(self, identity: bytes, env: codec.Envelope) -> None:
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

    async def prepare(self, uuid: str, op: int) -> None:
        """The core's PrepareWorker: a fresh key to the dryad, its session user back."""
        app = self.app
        try:
            key = await app.keys.take()
            reply = await self.command(uuid, "prepare",
                                       {"key": key.public_openssh, "key_type": key.key_type})
            username = _reported_username(reply)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            app.sched.worker_prepare_failed(uuid, op, _reason(exc))
        else:
            started = time.perf_counter()
            app.sched.worker_prepared(uuid, op, key, username)
            self.prepared.add(time.perf_counter() - started)
        app.after_turn()

    async def maintain(self, uuid: str, op: int, message: str) -> None:
        """The core's PutInMaintenance."""
        app = self.app
        try:
            await self.command(uuid, "put_in_maintenance", {"message": message})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            app.sched.worker_maintenance_failed(uuid, op, _reason(exc))
        else:
            app.sched.worker_in_maintenance(uuid, op)
        app.after_turn()

    # ------------------------------------------------------------------ health checks
    async def healthcheck(self, uuid: str, reply_to: tuple[Route, Any] | None = None) -> None:
        """Ask the dryad to check its board; a failure sets the worker FAILED."""
        app = self.app
        self._healthchecks.add(uuid)
        try:
            await self.command(uuid, "healthcheck", {})
        except DryadError as exc:
            reason = f"healthcheck failed: {exc.message}"
            log.warning("healthcheck failed", extra={"fields": {"worker_uuid": uuid,
                                                                 "reason": exc.message}})
            with contextlib.suppress(BorutaError):
                app.sched.set_fail(uuid, reason)
            app.after_turn()
            if reply_to is not None:
                app.client_endpoint.reply(*reply_to, error=DryadError(reason))
        else:
            if reply_to is not None:
                app.client_endpoint.reply(*reply_to, result=None)
        finally:
            self._healthchecks.discard(uuid)

    def periodic_healthchecks(self) -> None:
        """Every IDLE worker with a connected dryad, unless one is already running."""
        for uuid in list(self.peers):
            if uuid in self._healthchecks:
                continue
            try:
                state = self.app.sched.get_worker_info(uuid).state
            except BorutaError:
                continue
            if state is WorkerState.IDLE:
                self.app.spawn(self.healthcheck(uuid))

    # ------------------------------------------------------------------ liveness
    def next_deadline(self, limit: float) -> float | None:
        """When the quietest dryad will have been silent for `limit` seconds."""
        earliest = min((peer.last_seen for peer in self.peers.values()), default=None)
        return None if earliest is None else earliest + limit

    def check_liveness(self, now: float, limit: float) -> None:
        for uuid, peer in list(self.peers.items()):
            if now - peer.last_seen > limit:
                self.lost(uuid, f"no message for {now - peer.last_seen:.1f}s")

    def lost(self, uuid: str, reason: str) -> None:
        """The dryad is gone: forget its connection, the worker FAILED (unless in MAINTENANCE)."""
        self.drop(uuid, reason)
        log.warning("dryad lost", extra={"fields": {"worker_uuid": uuid, "reason": reason}})
        try:
            self.app.sched.set_fail(uuid, f"dryad lost: {reason}")
        except (InMaintenanceError, NotFoundError):
            pass

    def drop(self, uuid: str, reason: str) -> DryadPeer | None:
        peer = self.peers.pop(uuid, None)
        if peer is not None:
            self.identities.pop(peer.identity, None)
            self._fail_pending(peer.identity, f"dryad connection lost: {reason}")
        return peer

    def removed(self, uuid: str) -> None:
        """The worker was deregistered: its dryad is told so when it next speaks."""
        peer = self.drop(uuid, "worker deregistered")
        if peer is not None:
            self.deregistered[peer.identity] = uuid
            while len(self.deregistered) > DEREGISTERED_REMEMBERED:
                self.deregistered.pop(next(iter(self.deregistered)))

    # ------------------------------------------------------------------ after a restart
    def await_restored(self, grace: float) -> None:
        """Restored workers get `grace` seconds for their dryads to register again."""
        app = self.app
        assert app.loop is not None
        self.restart_deadline = time.monotonic() + grace
        self._grace_handle = app.loop.call_later(grace, self.restart_grace_over)

    def restart_grace_over(self) -> None:
        """Restored workers whose dryads stayed away: FAILED (their jobs too)."""
        app = self.app
        self._grace_handle = None
        self.restart_deadline = None
        overdue = app.sched.overdue_dryads()
        for uuid in overdue:
            try:
                app.sched.set_fail(uuid, RESTART_REASON)
            except (InMaintenanceError, NotFoundError):
                pass
        if overdue:
            log.warning("dryads did not come back after restart", extra={"fields": {
                "workers": len(overdue), "grace": app.cfg.restart_grace}})
        for event in self._link_waiters.values():
            event.set()
        self._link_waiters.clear()
        app.after_turn()

    def close(self) -> None:
        if self._grace_handle is not None:
            self._grace_handle.cancel()
            self._grace_handle = None


def _reported_username(reply: Any) -> str:
    """The session user a dryad's prepare reply names, if it is a portable POSIX user name.

    The name reaches clients, which print it into an `ssh USER@HOST` line
    people run in a shell: a name with a newline or `$(...)` in it would run
    the dryad's command on the user's machine, so it never gets that far.
    """
    username = reply.get("username") if isinstance(reply, dict) else None
    if username is None or username == "":
        raise DryadError("the dryad's prepare reply lacks a username")
    if not is_user_name(username):
        shown = f"{username!r:.60}" if isinstance(username, str) else type(username).__name__
        raise DryadError(f"the dryad reported an invalid user name {shown}: {USER_NAME_RULE}")
    return username


def _reason(exc: Exception) -> str:
    return exc.message if isinstance(exc, BorutaError) else str(exc)
