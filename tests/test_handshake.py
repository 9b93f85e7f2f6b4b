"""CURVE handshakes seen from the client: served with good keys, told why within a second
otherwise.

A real CURVE ROUTER and XPUB on loopback, with their own ZAP handler
(pyzmq's ThreadAuthenticator and a key callback), answer like a server would
(each reply carries the ZAP User-Id the frame came with). The clients are
the real ones, with a 5 s timeout: an answer within a second comes from the
handshake watch, not from the timeout.
"""
from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import zmq
from zmq.auth.thread import ThreadAuthenticator

from boruta.cli import app
from boruta.cli.errors import EXIT_AUTH, EXIT_OK
from boruta.dryad.config import write_default_config
from boruta.dryad.link import DryadLink
from boruta.transport import codec
from boruta.transport.async_client import AsyncClient
from boruta.transport.client import Client
from boruta.transport.credentials import (
    Credentials,
    KeyPair,
    new_keypair,
    read_key_file,
    write_client_config,
    write_key_file,
)
from boruta.transport.errors import (
    KeyRefusedError,
    ServerKeyMismatchError,
    ServerUnreachableError,
)

from e2e_helpers import child_env, server_factory, wait_until  # noqa: F401

TIMEOUT = 5.0         # the clients' timeout: far above the bound the watch must meet
BOUND = 1.0           # "told within a second"
UUID = "4f1a2b3c-0000-4000-8000-0000000000aa"


class KnownKeys:
    """The ZAP callback: only the keys in `known` pass."""

    def __init__(self) -> None:
        self.known: set[str] = set()

    def callback(self, domain: str, key: bytes) -> bool:
        return key.decode("ascii") in self.known


class FakeServer:
    """A ROUTER answering every call with the caller's User-Id, and an XPUB answering
    hellos; CURVE with ZAP when `curve`, plain text otherwise. Served by one thread."""

    def __init__(self, curve: bool, port: int = 0, keys: KeyPair | None = None) -> None:
        self.curve = curve
        self.port = port
        self.ctx = zmq.Context()
        self.keys = keys or new_keypair()
        self.zap = KnownKeys()
        self.auth: ThreadAuthenticator | None = None
        if curve:
            self.auth = ThreadAuthenticator(self.ctx)
            self.auth.start()
            for domain in ("client", "events"):
                self.auth.configure_curve_callback(domain, self.zap)
        self.router, self.endpoint = self._bind(zmq.ROUTER, "client")
        self.xpub, self.events = self._bind(zmq.XPUB, "events")
        self.calls: list[tuple[str, str | None]] = []       # (op, User-Id)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _bind(self, kind: int, domain: str) -> tuple[zmq.Socket, str]:
        sock = self.ctx.socket(kind)
        sock.linger = 0
        if self.curve:
            sock.curve_server = True
            sock.curve_publickey = self.keys.public.encode()
            sock.curve_secretkey = self.keys.secret.encode()
            sock.zap_domain = domain.encode()
        if self.port and kind == zmq.ROUTER:
            sock.bind(f"tcp://127.0.0.1:{self.port}")
            return sock, f"tcp://127.0.0.1:{self.port}"
        port = sock.bind_to_random_port("tcp://127.0.0.1")
        return sock, f"tcp://127.0.0.1:{port}"

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.xpub, zmq.POLLIN)
        while not self._stop.is_set():
            ready = dict(poller.poll(20))
            if self.router in ready:
                frames = self.router.recv_multipart(copy=False)
                user = frames[-1].get("User-Id") if self.curve else None
                msg_id, op, _ = codec.decode_request(frames[-1].bytes)
                self.calls.append((op, user))
                self.router.send_multipart(
                    [frames[0].bytes, codec.ok_frame(msg_id, {"user": user, "op": op})])
            if self.xpub in ready:
                data = self.xpub.recv()
                if data[:1] == b"\x01" and data[1:].startswith(codec.TOPIC_HELLO.encode()):
                    self.xpub.send_multipart([data[1:], codec.pack(
                        {"kind": "hello", "seq": 0, "heartbeat_interval": 1.0})])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.destroy(0)


@pytest.fixture
def curve_server() -> Iterator[FakeServer]:
    server = FakeServer(curve=True)
    yield server
    server.close()


@pytest.fixture
def plain_server() -> Iterator[FakeServer]:
    server = FakeServer(curve=False)
    yield server
    server.close()


@pytest.fixture
def user(tmp_path: Path) -> KeyPair:
    """A user's keypair, through a real key file."""
    return read_key_file(write_key_file(tmp_path / "user.key", new_keypair()))


def _case(name: str, curve: FakeServer, plain: FakeServer, user: KeyPair
          ) -> tuple[FakeServer, Credentials | None, type[Exception], str]:
    """(server, our credentials, the error, a phrase of its message) for each bad case."""
    curve.zap.known.add(user.public)
    if name == "unknown client key":
        stranger = new_keypair()
        return curve, Credentials(curve.keys.public, stranger), KeyRefusedError, stranger.public
    if name == "wrong server key":
        other = new_keypair().public
        return curve, Credentials(other, user), ServerKeyMismatchError, f"does not match {other}"
    if name == "plain client, CURVE server":
        return curve, None, ServerKeyMismatchError, "requires CURVE"
    assert name == "CURVE client, plain server"
    return plain, Credentials(curve.keys.public, user), ServerKeyMismatchError, "does not use CURVE"


BAD_CASES = ["unknown client key", "wrong server key", "plain client, CURVE server",
             "CURVE client, plain server"]


def _within_bound(action: Callable[[], Any], error: type[Exception], phrase: str) -> None:
    started = time.monotonic()
    with pytest.raises(error) as caught:
        action()
    elapsed = time.monotonic() - started
    assert elapsed < BOUND, f"told after {elapsed:.2f}s"
    assert phrase in str(caught.value)


# --------------------------------------------------------------------------- blocking client

def test_good_keys_are_served_and_the_server_sees_our_key(curve_server, user, ctx):
    curve_server.zap.known.add(user.public)
    with Client(curve_server.endpoint, timeout=TIMEOUT, events_endpoint=curve_server.events,
                credentials=Credentials(curve_server.keys.public, user), context=ctx) as client:
        assert client.call("ping") == {"user": user.public, "op": "ping"}
        with client.events() as stream:           # the event stream's handshake too
            assert stream.sock is not None
    assert curve_server.calls == [("ping", user.public)]


def test_plain_client_and_plain_server_still_talk(plain_server, ctx):
    with Client(plain_server.endpoint, timeout=TIMEOUT, context=ctx) as client:
        assert client.call("ping") == {"user": None, "op": "ping"}


@pytest.mark.parametrize("case", BAD_CASES)
def test_client_is_told_within_a_second(case, curve_server, plain_server, user, ctx):
    server, creds, error, phrase = _case(case, curve_server, plain_server, user)
    with Client(server.endpoint, timeout=TIMEOUT, credentials=creds, context=ctx) as client:
        _within_bound(lambda: client.call("ping"), error, phrase)
        # a call that changes state is not resent, and is told the same way
        _within_bound(lambda: client.call("new_request", {"caps": {}, "priority": 4}),
                      error, phrase)
    assert server.calls == []


def test_after_a_good_handshake_a_restart_with_other_keys_is_told(curve_server, user, ctx):
    curve_server.zap.known.add(user.public)
    creds = Credentials(curve_server.keys.public, user)
    with Client(curve_server.endpoint, timeout=TIMEOUT, credentials=creds, context=ctx) as client:
        assert client.call("ping")["user"] == user.public
        port = int(curve_server.endpoint.rsplit(":", 1)[1])
        curve_server.close()            # the connection drops: not a failed handshake
        same = FakeServer(curve=True, port=port, keys=curve_server.keys)
        same.zap.known.add(user.public)
        try:
            assert client.call("ping")["user"] == user.public
        finally:
            same.close()
        moved = FakeServer(curve=True, port=port)      # same place, a new server key
        moved.zap.known.add(user.public)
        try:
            _within_bound(lambda: client.call("ping"), ServerKeyMismatchError,
                          f"does not match {curve_server.keys.public}")
        finally:
            moved.close()


def test_refused_key_works_once_an_admin_adds_it(curve_server, user, ctx):
    creds = Credentials(curve_server.keys.public, user)
    with Client(curve_server.endpoint, timeout=TIMEOUT, credentials=creds, context=ctx) as client:
        with pytest.raises(KeyRefusedError, match="boruta admin user add"):
            client.call("ping")
        curve_server.zap.known.add(user.public)
        assert client.call("ping")["user"] == user.public     # a fresh socket, a new handshake


def test_no_server_is_still_a_timeout(ctx, user):
    with zmq.Context() as scratch:                # a port nobody listens on
        probe = scratch.socket(zmq.ROUTER)
        port = probe.bind_to_random_port("tcp://127.0.0.1")
        probe.close(0)
    creds = Credentials(new_keypair().public, user)
    with Client(f"tcp://127.0.0.1:{port}", timeout=0.3, retries=1, credentials=creds,
                context=ctx) as client:
        with pytest.raises(ServerUnreachableError) as caught:
            client.call("ping")
    assert type(caught.value) is ServerUnreachableError


@pytest.mark.parametrize("case", BAD_CASES)
def test_event_stream_is_told_within_a_second(case, curve_server, plain_server, user, ctx):
    server, creds, error, phrase = _case(case, curve_server, plain_server, user)
    with Client(server.endpoint, timeout=TIMEOUT, events_endpoint=server.events,
                credentials=creds, context=ctx) as client:
        _within_bound(lambda: client.events(), error, phrase)


# --------------------------------------------------------------------------- asyncio client

def test_async_good_keys_are_served(curve_server, user):
    curve_server.zap.known.add(user.public)

    async def scenario() -> list[Any]:
        async with AsyncClient(curve_server.endpoint, timeout=TIMEOUT,
                               events_endpoint=curve_server.events,
                               credentials=Credentials(curve_server.keys.public, user)) as client:
            answers = await asyncio.gather(*(client.call("ping") for _ in range(20)))
            stream = await client.events()
            stream.close()
            return answers

    assert asyncio.run(scenario()) == [{"user": user.public, "op": "ping"}] * 20


@pytest.mark.parametrize("case", BAD_CASES)
def test_async_client_is_told_within_a_second(case, curve_server, plain_server, user):
    server, creds, error, phrase = _case(case, curve_server, plain_server, user)

    async def scenario() -> None:
        async with AsyncClient(server.endpoint, timeout=TIMEOUT, events_endpoint=server.events,
                               credentials=creds) as client:
            started = time.monotonic()
            # every call in flight is told, and a later call on a fresh socket too
            results = await asyncio.gather(*(client.call("ping") for _ in range(5)),
                                           return_exceptions=True)
            assert all(isinstance(r, error) and phrase in str(r) for r in results), results
            with pytest.raises(error):
                await client.call("ping")
            with pytest.raises(error):
                await client.events()
            assert time.monotonic() - started < BOUND * 3      # three handshakes, each < 1 s

    asyncio.run(scenario())
    assert server.calls == []


def test_async_refused_key_works_once_an_admin_adds_it(curve_server, user):
    async def scenario() -> Any:
        async with AsyncClient(curve_server.endpoint, timeout=TIMEOUT,
                               credentials=Credentials(curve_server.keys.public, user)) as client:
            started = time.monotonic()
            with pytest.raises(KeyRefusedError):
                await client.call("ping")
            assert time.monotonic() - started < BOUND
            curve_server.zap.known.add(user.public)
            return await client.call("ping")

    assert asyncio.run(scenario())["user"] == user.public


# --------------------------------------------------------------------------- the CLI

@pytest.fixture
def cli_env(monkeypatch, tmp_path):
    for name in ("BORUTA_SERVER", "BORUTA_SERVER_KEY", "BORUTA_KEY_FILE",
                 "BORUTA_CLIENT_CONFIG", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = app.run(list(args))
    cap = capsys.readouterr()
    assert "Traceback" not in cap.out + cap.err
    return code, cap.out, cap.err


def test_cli_exits_4_when_the_key_is_refused(curve_server, tmp_path, cli_env, capsys):
    key_file = write_key_file(tmp_path / "me.key", new_keypair())
    args = ["--server", curve_server.endpoint, "--server-key", curve_server.keys.public,
            "--key-file", str(key_file)]
    started = time.monotonic()
    code, out, err = _run(capsys, *args, "worker", "list")
    assert time.monotonic() - started < BOUND
    assert code == EXIT_AUTH == 4 and out == ""
    assert "refused our key" in err and read_key_file(key_file).public in err
    code, out, _ = _run(capsys, "--json", *args, "worker", "list")
    assert code == 4 and json.loads(out)["error"]["code"] == "key_refused"


def test_cli_exits_4_for_a_plain_client_and_a_curve_server(curve_server, cli_env, capsys):
    code, _, err = _run(capsys, "--server", curve_server.endpoint, "ping")
    assert code == 4 and "requires CURVE" in err and "--server-key" in err


def test_cli_exits_4_when_the_server_key_does_not_match(curve_server, tmp_path, cli_env,
                                                        capsys, user):
    curve_server.zap.known.add(user.public)
    key_file = write_key_file(tmp_path / "me.key", user)
    other = new_keypair().public
    cli_env.setenv("BORUTA_SERVER_KEY", other)          # the environment, with the flag's file
    code, out, err = _run(capsys, "--json", "--server", curve_server.endpoint,
                          "--key-file", str(key_file), "request", "list")
    assert code == 4
    assert json.loads(out)["error"] == {"code": "server_key_mismatch", "message": (
        f"the server's key does not match {other} (or the server at "
        f"{curve_server.endpoint} does not use CURVE)")}


def test_cli_reads_the_client_config(curve_server, tmp_path, cli_env, capsys, user):
    curve_server.zap.known.add(user.public)
    write_key_file(tmp_path / "conf" / "admin.key", user)
    config = write_client_config(tmp_path / "conf" / "client.toml", server=curve_server.endpoint,
                                 events=None, server_key=curve_server.keys.public,
                                 key_file="admin.key")
    cli_env.setenv("BORUTA_CLIENT_CONFIG", str(config))
    code, out, err = _run(capsys, "--json", "ping")
    assert (code, err) == (EXIT_OK, "")
    assert json.loads(out) == {"user": user.public, "op": "ping"}
    assert curve_server.calls == [("ping", user.public)]


def test_cli_bad_server_key_flag_is_a_usage_error(cli_env, capsys):
    code, _, err = _run(capsys, "--server-key", "short", "ping")
    assert code == 2 and "--server-key" in err and "not a CURVE public key" in err


# --------------------------------------------------------------------------- the dryad

def test_dryad_logs_a_refused_key_and_keeps_trying(curve_server, user, caplog):
    caplog.set_level(logging.WARNING, logger="boruta.dryad.link")

    async def handler(op: str, args: dict[str, Any]) -> Any:
        return {}

    async def scenario() -> None:
        link = DryadLink(curve_server.endpoint, {"UUID": UUID}, ":7175", "127.0.0.1:22",
                         handler, retry_base=0.05, retry_max=0.2, reply_timeout=TIMEOUT,
                         credentials=Credentials(curve_server.keys.public, user))
        runner = asyncio.create_task(link.run())
        try:
            started = time.monotonic()
            while link.handshake_error is None:
                assert time.monotonic() - started < BOUND, "no refusal seen within a second"
                await asyncio.sleep(0.01)
            assert isinstance(link.handshake_error, KeyRefusedError)
            while link.attempts < 3:                   # it retries, waiting longer each time
                await asyncio.sleep(0.01)
            assert link.retry_interval > link.retry_base
            assert not link.registered.is_set()
            curve_server.zap.known.add(user.public)     # the admin enrols it
            await asyncio.wait_for(link.registered.wait(), 5)
        finally:
            link.stop()
            await asyncio.wait_for(runner, 5)

    asyncio.run(scenario())
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refusals and all(
        f"the server refused this dryad's key ({user.public}): enroll it with "
        f"boruta admin dryad enroll {UUID}" in m for m in refusals)
    assert ("register", user.public) in curve_server.calls



@pytest.mark.slow
def test_real_dryad_with_keys_in_its_config(server_factory, tmp_path):
    """`boruta dryad` processes against a real secure server: an enrolled dryad registers
    with the keys of its configuration; an unenrolled one says so and keeps trying until
    an admin enrols it."""
    server = server_factory()
    enrolled, later = str(uuidlib.uuid4()), str(uuidlib.uuid4())
    creds = server.enrol(enrolled)
    assert creds is not None
    waiting = new_keypair()
    dryads = []
    for uuid, pair in ((enrolled, creds.client), (later, waiting)):
        write_key_file(tmp_path / f"{uuid}.key", pair)
        config = tmp_path / f"{uuid}.toml"
        write_default_config(config, caps={"UUID": uuid}, server=server.dryad,
                             server_key=creds.server_key, key_file=f"{uuid}.key")
        log_path = tmp_path / f"{uuid}.log"
        out = open(tmp_path / f"{uuid}.out", "w")
        err = open(log_path, "w")
        proc = subprocess.Popen([sys.executable, "-m", "boruta.cli", "dryad", "--config",
                                 str(config)], stdout=out, stderr=err, env=child_env())
        dryads.append((proc, tmp_path / f"{uuid}.out", log_path, out, err))
    try:
        ready = f"boruta dryad ready uuid={enrolled}"
        wait_until(lambda: ready in dryads[0][1].read_text(), 20, what="enrolled dryad ready")
        refusal = (f"the server refused this dryad's key ({waiting.public}): enroll it with "
                   f"boruta admin dryad enroll {later}")
        wait_until(lambda: refusal in dryads[1][2].read_text(), 20, what="refusal logged")
        assert dryads[1][0].poll() is None                   # still running, still trying
        server.enrol(later, waiting)
        wait_until(lambda: f"boruta dryad ready uuid={later}" in dryads[1][1].read_text(), 20,
                   what="dryad ready once enrolled")
    finally:
        for proc, _, _, out, err in dryads:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            out.close()
            err.close()
