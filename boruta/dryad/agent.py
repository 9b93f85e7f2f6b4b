"""The dryad agent: `boruta dryad --config dryad.toml`.

One asyncio loop joins the local parts of `boruta.dryad` (board, session
backend, DryadOperations) to the server through `DryadLink`
(boruta.dryad.link), the dryad's side of the wire protocol:

* the agent starts the session backend (the embedded SSH server binds its
  port, or the system backend checks its tools and removes a session user
  a crash left behind), then connects out to the server's dryad endpoint
  as a DEALER and registers `caps`, `dryad_address` and the SSH address;
* it heartbeats at the server's interval (or its own `heartbeat_interval`
  when that is shorter); when the server stops answering it recreates its
  socket and registers again, retrying with exponential backoff (and
  ZeroMQ's own reconnect backoff underneath), so it finds its way back
  after a server restart or a network cut;
* a new process has no job session, so after its first registration it
  reports `set_fail` ("dryad restarted: ...") and registers again: a worker
  the server still believed IDLE or RUNNING (a restart quicker than the
  liveness window) goes FAIL -> PREPARE -> IDLE with a fresh key instead
  of handing out a key nobody installed (MAINTENANCE/BUSY refuse set_fail
  and stay);
* it answers the server's commands: `prepare` (a fresh session for the job
  user with the job's public key; the previous key is revoked; the reply
  carries the username), `put_in_maintenance` (message on the OLED, LEDs
  blink until the next prepare) and `healthcheck` (a failure is reported
  with `set_fail` and the problems as the reason, then answered with an
  error, which the server stores as the worker's failure reason too);
* SIGTERM or SIGINT stop it cleanly: the link closes, the blinker is
  cancelled (LEDs off, OLED cleared), the session backend stops (every
  job connection is closed, the system user removed), the board is closed.

The dryad has no inbound port for the server: `dryad_address` is only
informational (`boruta.dryad.link.DRYAD_ADDRESS`: upstream's dryad port
without a host; the server fills in the address the dryad connects from).

A worker is recognised across restarts by its UUID. The server takes a
re-registration whose SSH address differs from the previous one as a
changed configuration: a BUSY worker goes to MAINTENANCE. An embedded SSH
server on port 0 gets a new port at every start, so give it a fixed port
(`[session] listen = "0.0.0.0:2222"`) on a real installation.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Callable

import zmq.asyncio

from boruta.core.addresses import join_host_port
from boruta.core.errors import BorutaError
from boruta.dryad.config import DryadConfig
from boruta.dryad.link import DRYAD_ADDRESS, DryadLink, RemoteError
from boruta.dryad.operations import DryadOperations, HealthcheckFailed
from boruta.transport.errors import UnknownOperationError

__all__ = ["AgentError", "DryadAgent", "run_agent"]

log = logging.getLogger(__name__)

#: Reconnection: the first retry comes after about RETRY_BASE seconds, each failed
#: attempt doubles the wait up to RETRY_MAX; a successful registration resets it.
RETRY_BASE = 0.5
RETRY_MAX = 10.0


class AgentError(Exception):
    """The agent cannot run (board, SSH server, or the server refused it). One line."""


class DryadAgent:
    """A dryad: a board and a session backend, answering a Boruta server.

    `board` / `session`: ready-made parts (tests pass a SimulatedBoard they
    inspect); by default the configuration makes them. `on_ready(agent)` is
    called once, at the first registration. `ctx`: a ZeroMQ asyncio context
    to share (many agents in one process); by default the agent has its own.

    `run()` serves until `stop()` (callable from any thread) and raises
    AgentError when it cannot start or the server refuses the registration.
    """

    def __init__(self, config: DryadConfig, *, board: Any = None, session: Any = None,
                 ctx: zmq.asyncio.Context | None = None,
                 on_ready: Callable[["DryadAgent"], None] | None = None,
                 reply_timeout: float = 5.0, retry_base: float = RETRY_BASE,
                 retry_max: float = RETRY_MAX) -> None:
        self.config = config
        self._board = board
        self._session = session
        self._ctx = ctx
        self.on_ready = on_ready
        self.reply_timeout = reply_timeout
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.board: Any = None
        self.session: Any = None
        self.ops: DryadOperations | None = None
        self.link: DryadLink | None = None
        self.ssh_address: str | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ready: asyncio.Event | None = None
        self.commands: list[str] = []                    # ops answered, in order (inspection)
        self._stop_requested = False
        self._stopped: asyncio.Event | None = None

    @property
    def uuid(self) -> str:
        return self.config.uuid

    # ------------------------------------------------------------------ running
    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.ready = asyncio.Event()
        self._stopped = asyncio.Event()
        try:
            await self._start_parts()
            if self._stop_requested:
                return
            assert self.ops is not None and self.session is not None
            host, port = self.config.ssh_advertised(self.session.address())
            self.ssh_address = join_host_port(host, port) if host else f":{port}"
            if self.config.groups:
                log.info("groups in the configuration are not sent at registration (protocol "
                         "v1 has no place for them): an administrator sets them with "
                         "`boruta worker set-groups`")
            self.link = DryadLink(
                self.config.server, self.config.caps, DRYAD_ADDRESS, self.ssh_address,
                self.handle, ctx=self._ctx, reply_timeout=self.reply_timeout,
                name=self.uuid[:8], max_heartbeat_interval=self.config.heartbeat_interval,
                retry_base=self.retry_base, retry_max=self.retry_max,
                credentials=self.config.credentials())
            log.info("dryad %s connecting to %s (ssh %s)", self.uuid, self.config.server,
                     self.ssh_address)
            announcer = asyncio.create_task(self._announce(self.link))
            try:
                await self.link.run()
            except RemoteError as exc:
                raise AgentError(f"the server refused to register worker {self.uuid}: "
                                 f"{exc.code}: {exc.message}") from None
            finally:
                announcer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await announcer
        finally:
            await self._stop_parts()
            self._stopped.set()

    def stop(self) -> None:
        """Ask the agent to stop; thread-safe, idempotent."""
        loop = self.loop
        if loop is not None and loop.is_running():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:
                loop.call_soon_threadsafe(self._stop_now)
                return
        self._stop_now()

    def _stop_now(self) -> None:
        if not self._stop_requested:
            log.info("dryad %s stopping", self.uuid)
        self._stop_requested = True
        if self.link is not None:
            self.link.stop()

    async def _announce(self, link: DryadLink) -> None:
        await link.registered.wait()
        await self._fresh_start(link)
        assert self.ready is not None
        self.ready.set()
        log.info("dryad %s registered with %s (ssh %s, heartbeat every %gs)", self.uuid,
                 self.config.server, self.ssh_address, link.heartbeat_interval)
        if self.on_ready is not None:
            try:
                self.on_ready(self)
            except Exception:
                log.exception("on_ready callback failed")

    async def _fresh_start(self, link: DryadLink) -> None:
        """After this process's first registration: make the server forget old sessions.

        A new process has no job session (the embedded server starts empty,
        the system backend removes a left-over account). If the dryad was
        restarted before the server noticed its silence, the server still
        holds the worker IDLE (with a key nobody installed) or RUNNING (with
        a session that is gone). So the dryad reports the failure and
        registers again, which the server takes as FAIL -> PREPARE: a fresh
        key, then IDLE. A worker in MAINTENANCE or BUSY refuses set_fail
        (`in_maintenance`) and stays as it is.
        """
        reason = "dryad restarted: the sessions of its previous run are gone"
        if await self.report_failure(reason):
            try:
                await link.register_again()
            except Exception as exc:                 # lost again: the link registers anyway
                log.info("registering again after a restart failed: %s", exc)

    async def _start_parts(self) -> None:
        try:
            self.board = self._board if self._board is not None else self.config.make_board()
        except BorutaError as exc:
            raise AgentError(f"cannot open the board ({self.config.board.backend}): "
                             f"{exc.message}") from None
        except (OSError, ValueError) as exc:
            raise AgentError(f"cannot open the board ({self.config.board.backend}): {exc}") from None
        try:
            self.session = (self._session if self._session is not None
                            else self.config.make_session_backend())
            if self._session is None:
                await asyncio.to_thread(self.session.start)
        except BorutaError as exc:
            raise AgentError(f"cannot start the {self.config.session.backend} session backend: "
                             f"{exc.message}") from None
        except (OSError, ValueError) as exc:
            raise AgentError(f"cannot start the {self.config.session.backend} session backend: "
                             f"{exc}") from None
        self.ops = self.config.make_operations(self.board, self.session)

    async def _stop_parts(self) -> None:
        if self.ops is not None:
            with contextlib.suppress(Exception):
                await self.ops.close()              # the blinker stops, the LEDs go dark
        if self.session is not None and self._session is None:
            try:
                await asyncio.to_thread(self.session.stop)
            except Exception as exc:
                log.warning("stopping the session backend failed: %s", exc)
        if self.board is not None and self._board is None:
            with contextlib.suppress(Exception):
                self.board.close()

    async def wait_stopped(self) -> None:
        if self._stopped is not None:
            await self._stopped.wait()

    # ------------------------------------------------------------------ commands
    async def handle(self, op: str, args: dict[str, Any]) -> Any:
        """The server's commands (DryadLink calls this; errors become error replies)."""
        assert self.ops is not None
        self.commands.append(op)
        if op == "prepare":
            username = await self.ops.prepare(args["key"])
            log.info("dryad %s: prepared a session for %s (%s key)", self.uuid[:8], username,
                     args.get("key_type") or "unknown")
            return {"username": username}
        if op == "put_in_maintenance":
            message = args.get("message") or "maintenance"
            await self.ops.put_in_maintenance(message)
            log.info("dryad %s: in maintenance: %r", self.uuid[:8], message)
            return None
        if op == "healthcheck":
            problems = await self.ops.healthcheck()
            if not problems:
                return None
            failure = HealthcheckFailed(problems)
            log.warning("healthcheck failed: %s", failure.message)
            await self.report_failure(f"healthcheck: {failure.message}")
            raise failure
        raise UnknownOperationError(f"unknown command {op!r}")

    async def report_failure(self, reason: str) -> bool:
        """Tell the server this worker failed (set_fail); False if it could not be told."""
        link = self.link
        if link is None or not link.registered.is_set():
            return False
        try:
            await link.set_fail(reason)
        except RemoteError as exc:
            # in_maintenance: an administrator already has it; nothing to report.
            log.info("set_fail not taken: %s: %s", exc.code, exc.message)
            return False
        except Exception as exc:        # the link went away meanwhile
            log.info("set_fail not sent: %s", exc)
            return False
        return True


# ---------------------------------------------------------------------- process entry

def ready_line(agent: DryadAgent) -> str:
    return (f"boruta dryad ready uuid={agent.uuid} server={agent.config.server} "
            f"ssh={agent.ssh_address}")


# Signals the agent may have been started ignoring (under nohup, or as a background
# job of a script) that a job's commands must not inherit ignored.
_SESSION_SIGNALS = ("SIGHUP", "SIGQUIT")


def _still_ignore(name: str) -> Callable[[], None]:
    def note() -> None:
        log.info("signal ignored, as when the dryad was started", extra={"fields": {
            "signal": name}})
    return note


async def _serve(agent: DryadAgent) -> None:
    import signal

    loop = asyncio.get_running_loop()
    handled = [signal.SIGTERM, signal.SIGINT]
    ignored = []
    for sig in handled:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, agent.stop)
    # An ignored signal stays ignored across exec, a handled one is reset to the
    # default: so the agent keeps ignoring these, by a handler, and a job's commands
    # start with the defaults, as sshd's sessions do (a client's hang-up ends them).
    for name in _SESSION_SIGNALS:
        sig = getattr(signal, name)
        if signal.getsignal(sig) is signal.SIG_IGN:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, _still_ignore(name))
                ignored.append(sig)
    try:
        await agent.run()
    finally:
        for sig in handled + ignored:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
        for sig in ignored:
            signal.signal(sig, signal.SIG_IGN)          # as it was


def run_agent(config: DryadConfig, *, log_level: str = "info", log_format: str = "text",
              announce: bool = True) -> int:
    """Blocking: run one agent until SIGTERM/SIGINT; 0 on a clean stop.

    Raises AgentError (one line, for the caller to print) when it cannot run.
    """
    from boruta.logs import setup_logging

    logger = setup_logging(log_level, log_format)
    # paramiko logs every client that hangs up abruptly as an ERROR: keep it for debugging.
    noisy = logging.getLogger("paramiko")
    noisy.handlers[:] = list(logger.handlers)
    noisy.setLevel(logging.WARNING if log_level == "debug" else logging.CRITICAL)
    noisy.propagate = False

    def on_ready(agent: DryadAgent) -> None:
        if announce:
            print(ready_line(agent), flush=True)

    agent = DryadAgent(config, on_ready=on_ready)
    try:
        import uvloop
    except ImportError:
        uvloop = None
    if uvloop is not None:
        uvloop.run(_serve(agent))
    else:
        asyncio.run(_serve(agent))
    return 0
