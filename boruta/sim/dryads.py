"""Simulated dryads: DEALER peers that behave like boards, for tests, demos and benchmarks.

A SimDryad registers, heartbeats and answers `prepare` (returning its
session user name), `put_in_maintenance` and `healthcheck`. Faults can be
injected at any time: failing prepare / maintenance / healthcheck with a
reason, never answering (all commands or some), a delay before answering,
and reporting a failure (set_fail).

What a simulated board offers as its sshd, for the tunnel to reach:

* nothing (the default, `--ssh-address`): the cheapest, for hundreds of
  dryads in one process;
* `--echo`: one TCP echo server for all of them, so a tunnel carries real
  bytes (not SSH: an SSH client would wait for the server's banner forever);
* `--ssh`: each board runs the dryad's embedded SSH server (paramiko), which
  lets in the job's user with the job's key, as a real board does: a real
  SSH login works (a listening socket and a thread per board).

Many dryads run in one process and one event loop:

    python -m boruta.sim.dryads --count 50 --server tcp://127.0.0.1:7176

A secure server lets a dryad register only a UUID an admin enrolled for its
key. With an admin's client config (`--client-config`, by default the one
`boruta server` writes for its admin on this machine) the sim enrols each of
its dryads itself, each with a fresh keypair, the way an admin enrols a
real board; `--insecure` speaks plain text to an `insecure = true` server.

`SimFarm` runs them in a background thread for tests (thread-safe helpers);
its `credentials_for` is how a test harness enrols each dryad.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import signal
import sys
import threading
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any, Callable, Coroutine, Iterable, Mapping

import zmq
import zmq.asyncio

from boruta.core.addresses import join_host_port
from boruta.core.errors import BorutaError
from boruta.dryad.link import NO_REPLY, DryadLink
from boruta.logs import setup_logging
from boruta.transport.addresses import CLIENT_ENDPOINT, DRYAD_ENDPOINT
from boruta.transport.client import Client
from boruta.transport.credentials import (SERVER_KEY_ENV, Credentials, KeyPair,
                                          client_config_path, load_client_config, new_keypair)

log = logging.getLogger("boruta.simdryad")

CONFIG_WAIT = 10.0        # seconds the sim waits for a client config the server has yet to write

#: How a SimFarm gets each dryad's identity: called with the dryad's UUID, before it starts.
CredentialsFor = Callable[[str], Credentials | None]


def enrol(admin: Client, server_key: str, uuid: str, pair: KeyPair | None = None
          ) -> Credentials:
    """Enrol `uuid` through an admin's client with a fresh keypair (or `pair`); the
    dryad's credentials.

    A key per dryad, as on a real farm (a server lets one key serve one worker
    unless told otherwise); enrolling an enrolled UUID again replaces its key.
    """
    pair = pair or new_keypair()
    admin.dryad_enroll(uuid=uuid, key=pair.public)
    return Credentials(server_key, pair)


class SimFault(BorutaError):
    code = "dryad_fault"
    default_message = "simulated failure"


class SimDryad:
    """One simulated board. With a `session` (an embedded SSH server, see
    `start_ssh_session`), `prepare` lets the job's key in and `put_in_maintenance`
    revokes it, and the board advertises the session's address as its sshd."""

    def __init__(self, server: str = DRYAD_ENDPOINT, uuid: str | None = None,
                 caps: Mapping[str, str] | None = None, *, ssh_address: str = ":22",
                 dryad_address: str = ":7175", username: str = "boruta-user",
                 ctx: zmq.asyncio.Context | None = None, reply_timeout: float = 5.0,
                 session: Any = None, credentials: Credentials | None = None) -> None:
        self.uuid = uuid or str(uuidlib.uuid4())
        self.caps = {"UUID": self.uuid, "device_type": "sim", **dict(caps or {})}
        self.caps["UUID"] = self.uuid
        self.username = username
        # Faults (change them at any time).
        self.fail_prepare: str | None = None         # reason: prepare answers an error
        self.fail_maintenance: str | None = None
        self.fail_healthcheck: str | None = None
        self.silent: bool = False                    # answer no command at all
        self.silent_ops: set[str] = set()            # answer none of these commands
        self.delay: float = 0.0                      # seconds before each answer
        # What the board would hold.
        self.public_key: str | None = None
        self.key_type: str | None = None
        self.maintenance_message: str | None = None
        self.commands: list[str] = []
        self.session = session
        if session is not None:
            ssh_address = join_host_port(*session.address())
        self.link = DryadLink(server, self.caps, dryad_address, ssh_address, self.handle,
                              ctx=ctx, reply_timeout=reply_timeout, name=self.uuid[:8],
                              credentials=credentials)

    async def handle(self, op: str, args: dict[str, Any]) -> Any:
        self.commands.append(op)
        if self.silent or op in self.silent_ops:
            return NO_REPLY
        if self.delay:
            await asyncio.sleep(self.delay)
        if op == "prepare":
            if self.fail_prepare:
                raise SimFault(self.fail_prepare)
            self.public_key, self.key_type = args["key"], args.get("key_type")
            self.maintenance_message = None
            username = self.username
            if self.session is not None:
                username = await asyncio.to_thread(self.session.set_job_key, self.username,
                                                   self.public_key)
            return {"username": username}
        if op == "put_in_maintenance":
            if self.fail_maintenance:
                raise SimFault(self.fail_maintenance)
            self.public_key = None
            if self.session is not None:
                await asyncio.to_thread(self.session.revoke)
            self.maintenance_message = args.get("message") or "maintenance"
            return None
        if op == "healthcheck":
            if self.fail_healthcheck:
                raise SimFault(self.fail_healthcheck)
            return None
        raise SimFault(f"unknown command {op}")

    async def run(self) -> None:
        await self.link.run()

    def stop(self) -> None:
        self.link.stop()

    async def set_fail(self, reason: str) -> None:
        await self.link.set_fail(reason)


def start_ssh_session(host: str = "127.0.0.1") -> Any:
    """A started embedded SSH server on a free port of `host` (blocking: call it in a thread).

    Imported here, not at the top: paramiko costs a fifth of a second to
    import, and only boards that run SSH need it.
    """
    from boruta.dryad.embedded_ssh import EmbeddedSSHServer
    server = EmbeddedSSHServer(host, 0)
    server.start()
    return server


async def echo_server(host: str = "127.0.0.1", port: int = 0) -> asyncio.base_events.Server:
    """A TCP echo server (stands in for sshd where only bytes through the tunnel matter)."""
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            writer.close()
    return await asyncio.start_server(echo, host, port)


class SimFarm:
    """N simulated dryads on a background thread's event loop (for tests).

    `credentials_for(uuid)` (None: plain text) gives each dryad its identity;
    it runs on the caller's thread before the dryad starts, so it may enrol
    the UUID through a blocking admin Client.
    """

    def __init__(self, server: str, count: int = 0, *, caps: Callable[[int], Mapping[str, str]]
                 | Mapping[str, str] | None = None, ssh_address: str = ":22",
                 uuids: Iterable[str] | None = None, username: str = "boruta-user",
                 ssh: bool = False, credentials_for: CredentialsFor | None = None) -> None:
        self.server = server
        self.credentials_for = credentials_for
        self.ssh_address = ssh_address
        self.ssh = ssh                    # every board runs an embedded SSH server
        self.username = username
        self.loop = asyncio.new_event_loop()
        self.ctx: zmq.asyncio.Context | None = None
        self.dryads: list[SimDryad] = []
        self._tasks: dict[int, asyncio.Future[Any]] = {}
        self._closed = False
        self._thread = threading.Thread(target=self.loop.run_forever, name="simfarm", daemon=True)
        self._thread.start()
        self.run(self._init_ctx())
        uuid_list = list(uuids or [])
        for index in range(count):
            the_caps = caps(index) if callable(caps) else (caps or {})
            self.add(uuid_list[index] if index < len(uuid_list) else None, the_caps)

    async def _init_ctx(self) -> None:
        self.ctx = zmq.asyncio.Context()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        """Run a coroutine on the farm's loop and wait for its result (bounded)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        async def wrapper() -> Any:
            return fn()
        return self.run(wrapper(), timeout)

    def add(self, uuid: str | None = None, caps: Mapping[str, str] | None = None,
            ssh_address: str | None = None) -> SimDryad:
        uuid = uuid or str(uuidlib.uuid4())
        credentials = self.credentials_for(uuid) if self.credentials_for is not None else None

        async def make() -> SimDryad:
            session = await asyncio.to_thread(start_ssh_session) if self.ssh else None
            dryad = SimDryad(self.server, uuid, caps, ssh_address=ssh_address or self.ssh_address,
                             username=self.username, ctx=self.ctx, session=session,
                             credentials=credentials)
            self._tasks[id(dryad)] = asyncio.ensure_future(dryad.run())
            return dryad
        dryad = self.run(make())
        self.dryads.append(dryad)
        return dryad

    def remove(self, dryad: SimDryad, timeout: float = 5.0) -> None:
        """Stop one dryad (its process 'dies': no more heartbeats)."""
        async def halt() -> None:
            dryad.stop()
            task = self._tasks.pop(id(dryad), None)
            if task is not None:
                await asyncio.wait([task], timeout=timeout)
            await stop_sessions([dryad])
        self.run(halt(), timeout + 1)
        if dryad in self.dryads:
            self.dryads.remove(dryad)

    def wait_registered(self, timeout: float = 10.0, dryads: Iterable[SimDryad] | None = None) -> None:
        async def wait() -> None:
            await asyncio.gather(*(d.link.registered.wait() for d in (dryads or self.dryads)))
        self.run(asyncio.wait_for(wait(), timeout), timeout + 1)

    def echo_server(self) -> tuple[str, int]:
        """Start a TCP echo server on the farm's loop; returns (host, port)."""
        server = self.run(echo_server())
        return server.sockets[0].getsockname()[:2]

    def close(self, timeout: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True

        async def halt() -> None:
            for dryad in self.dryads:
                dryad.stop()
            if self._tasks:
                await asyncio.wait(list(self._tasks.values()), timeout=timeout)
            await stop_sessions(self.dryads)
            if self.ctx is not None:
                self.ctx.destroy(0)
        with contextlib.suppress(Exception):
            self.run(halt(), timeout + 2)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()

    def __enter__(self) -> "SimFarm":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


async def stop_sessions(dryads: Iterable[SimDryad]) -> None:
    """Stop the embedded SSH servers of these dryads (their jobs' connections close)."""
    sessions = [d.session for d in dryads if d.session is not None]
    await asyncio.gather(*(asyncio.to_thread(session.stop) for session in sessions))


def _parse_caps(items: list[str]) -> dict[str, str]:
    caps: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--caps {item!r}: expected KEY=VALUE")
        caps[key] = value
    return caps


def _identities(args: argparse.Namespace, uuids: list[str]) -> list[Credentials | None]:
    """Each dryad's credentials: enrolled through the admin's client config when it has
    keys; plain text with --insecure or a config without keys."""
    if args.insecure:
        log.warning("--insecure: plain text, for a server run with insecure = true")
        return [None] * len(uuids)
    path = args.client_config or client_config_path()
    if not path.exists() and not os.environ.get(SERVER_KEY_ENV):
        _wait_for(path, min(CONFIG_WAIT, args.ready_timeout))
    config = load_client_config(path)
    if config.credentials is None:
        log.warning("no server key in %s: plain text, for a server run with insecure = true "
                    "(enrolling needs an admin's client config: --client-config)",
                    config.path or "the client config")
        return [None] * len(uuids)
    admin = Client(config.server or CLIENT_ENDPOINT, credentials=config.credentials,
                   timeout=args.ready_timeout, retries=1)
    try:
        identities: list[Credentials | None] = [
            enrol(admin, config.credentials.server_key, uuid) for uuid in uuids]
    finally:
        admin.close()
    log.warning("enrolled %d dryad(s), a key each, as the admin of %s (%s)", len(uuids),
                config.path or "the client config", admin.endpoint)
    return identities


def _wait_for(path: Path, seconds: float) -> None:
    """Wait (bounded) for a client config `boruta server` is about to write: started
    together (`boruta server & python -m boruta.sim.dryads &`), the sim may come first."""
    log.warning("waiting up to %gs for %s (`boruta server` writes it when it starts)",
                seconds, path)
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


async def _main(args: argparse.Namespace, uuids: list[str],
                identities: list[Credentials | None]) -> int:
    ctx = zmq.asyncio.Context()
    ssh_address = args.ssh_address
    echo = None
    if args.echo:
        echo = await echo_server()
        host, port = echo.sockets[0].getsockname()[:2]
        ssh_address = f"{host}:{port}"
    caps = _parse_caps(args.caps)
    sessions: list[Any] = [None] * args.count
    if args.ssh:
        sessions = await asyncio.gather(*(asyncio.to_thread(start_ssh_session)
                                          for _ in range(args.count)))
    dryads = []
    for index in range(args.count):
        dryad = SimDryad(args.server, uuids[index], caps, ssh_address=ssh_address,
                         username=args.username, ctx=ctx, session=sessions[index],
                         credentials=identities[index])
        dryad.fail_prepare = "simulated prepare failure" if args.fail_prepare else None
        dryad.silent = args.silent
        dryads.append(dryad)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(d.run()) for d in dryads]
    try:
        await asyncio.wait_for(asyncio.gather(*(d.link.registered.wait() for d in dryads)),
                               args.ready_timeout)
        print(f"simdryad ready count={len(dryads)} server={args.server}", flush=True)
        for d in dryads:
            ssh = f" ssh={join_host_port(*d.session.address())}" if d.session is not None else ""
            print(f"dryad {d.uuid}{ssh}", flush=True)
    except asyncio.TimeoutError:
        log.warning("not every dryad registered within %ss", args.ready_timeout)
    done_early = asyncio.ensure_future(asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION))
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait([done_early, stopper], return_when=asyncio.FIRST_COMPLETED)
    for d in dryads:
        d.stop()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    await stop_sessions(dryads)
    stopper.cancel()
    done_early.cancel()
    if echo is not None:
        echo.close()
    ctx.destroy(0)
    failures = [r for r in results if isinstance(r, BaseException)]
    for failure in failures[:3]:
        log.error("dryad stopped: %s", failure)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m boruta.sim.dryads",
                                     description="Run simulated dryads against a Boruta server.")
    parser.add_argument("--server", default=DRYAD_ENDPOINT, help="the server's dryad endpoint")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--caps", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--ssh-address", default=":22",
                        help="address advertised for sshd (empty host: the server fills it)")
    sshd = parser.add_mutually_exclusive_group()
    sshd.add_argument("--echo", action="store_true",
                      help="serve a TCP echo server and advertise it as sshd (bytes, not SSH)")
    sshd.add_argument("--ssh", action="store_true",
                      help="each board runs an embedded SSH server that lets in the job's key")
    parser.add_argument("--username", default="boruta-user")
    parser.add_argument("--seed", type=int, help="deterministic UUIDs")
    parser.add_argument("--fail-prepare", action="store_true")
    parser.add_argument("--silent", action="store_true", help="never answer commands")
    identity = parser.add_mutually_exclusive_group()
    identity.add_argument("--client-config", type=Path, metavar="PATH",
                          help="an admin's client config: each dryad is enrolled through it "
                          "with a key of its own (default: $BORUTA_CLIENT_CONFIG, else "
                          "~/.config/boruta/client.toml, which `boruta server` writes)")
    identity.add_argument("--insecure", action="store_true",
                          help="plain text, for a server run with insecure = true")
    parser.add_argument("--ready-timeout", type=float, default=30.0)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    setup_logging(args.log_level)
    rng = random.Random(args.seed) if args.seed is not None else None
    uuids = [str(uuidlib.UUID(int=rng.getrandbits(128), version=4) if rng else uuidlib.uuid4())
             for _ in range(args.count)]
    try:
        identities = _identities(args, uuids)
    except BorutaError as exc:
        parser.exit(2, f"{parser.prog}: cannot enrol the dryads: {exc}\n")
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_main(args, uuids, identities))
    return uvloop.run(_main(args, uuids, identities))


if __name__ == "__main__":
    sys.exit(main())
