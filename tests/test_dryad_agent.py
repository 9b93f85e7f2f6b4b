"""The dryad agent in process: `boruta dryad init`, config errors, command handling,
backoff, and an in-process `DryadAgent` (simulated board we can inspect) against a
real server process: maintenance blinking, healthcheck failures, reconnection, stop.
"""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from boruta.cli import app as cli
from boruta.core.types import WorkerState
from boruta.dryad.agent import RETRY_BASE, RETRY_MAX, AgentError, DryadAgent, ready_line
from boruta.dryad.board import SimulatedBoard
from boruta.dryad.config import load_config, parse_config
from boruta.dryad.embedded_ssh import EmbeddedSSHServer
from boruta.dryad.link import retry_wait
from boruta.dryad.operations import OFF, YELLOW, HealthcheckFailed
from boruta.transport.errors import DryadError
from boruta.server.keyring import Keyring
from boruta.transport.credentials import Credentials, new_keypair, write_key_file
from e2e_helpers import ServerProcess, server_factory, unique_caps, wait_until  # noqa: F401

UUID = "4f1a2b3c-0000-4000-8000-000000000001"


# --------------------------------------------------------------------------- helpers

def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.run(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def public_key() -> str:
    private = ed25519.Ed25519PrivateKey.generate()
    return private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                             serialization.PublicFormat.OpenSSH).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def config_text(server: str = "tcp://127.0.0.1:7176", **extra: str) -> str:
    lines = [f'server = "{server}"', *[f"{k} = {v}" for k, v in extra.items()],
             "[caps]", f'UUID = "{UUID}"']
    return "\n".join(lines) + "\n"


class AgentThread:
    """A DryadAgent on its own event loop in a background thread (blocking helpers)."""

    def __init__(self, config: Any, board: SimulatedBoard | None = None, **kw: Any) -> None:
        self.board = board or SimulatedBoard()
        self.agent = DryadAgent(config, board=self.board, **kw)
        self.loop = asyncio.new_event_loop()
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._main, daemon=True, name="agent")
        self.thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.agent.run())
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc
        finally:
            self.done.set()

    def run(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def wait_ready(self, timeout: float = 10.0) -> None:
        wait_until(lambda: self.agent.ready is not None and self.agent.ready.is_set()
                   or self.done.is_set(), timeout, what="agent registered")
        assert self.error is None, self.error
        assert not self.done.is_set()

    def stop(self, timeout: float = 10.0) -> None:
        self.agent.stop()
        assert self.done.wait(timeout), "agent did not stop"
        self.thread.join(timeout)
        self.loop.close()


@pytest.fixture
def agents() -> Iterator[Callable[..., AgentThread]]:
    started: list[AgentThread] = []

    def start(config: Any, **kw: Any) -> AgentThread:
        a = AgentThread(config, **kw)
        started.append(a)
        return a

    yield start
    for a in started:
        if not a.done.is_set():
            a.stop()


def agent_config(server: str, caps: dict[str, str], **extra: Any) -> Any:
    lines = [f'server = "{server}"']
    lines += [f"{k} = {v}" for k, v in extra.items() if "." not in k]
    lines += ["[caps]", f'UUID = "{caps["UUID"]}"']
    lines += [f'{k} = "{v}"' for k, v in caps.items() if k != "UUID"]
    lines += ["[maintenance]", f"blink_period = {extra.get('maintenance.blink_period', 0.05)}"]
    if "healthcheck.current_min" in extra:
        lines += ["[healthcheck]", f"current_min = {extra['healthcheck.current_min']}",
                  "power_tick_seconds = 0.01"]
    else:
        lines += ["[healthcheck]", "power_tick_seconds = 0.01"]
    return parse_config("\n".join(lines) + "\n")


def identity(credentials: Any, key_dir: Path, uuid: str) -> dict[str, str]:
    """The dryad config lines (TOML values) that give an agent these credentials."""
    key_file = write_key_file(key_dir / f"{uuid}.key", credentials.client)
    return {"server_key": f'"{credentials.server_key}"', "key_file": f'"{key_file}"'}


def enrolled(server: Any, caps: dict[str, str], key_dir: Path, **extra: Any) -> Any:
    """The config of an agent whose UUID is enrolled on `server` with a fresh key."""
    return agent_config(server.dryad, caps, **identity(server.enrol(caps["UUID"]), key_dir,
                                                       caps["UUID"]), **extra)


def new_caps() -> dict[str, str]:
    import uuid
    return {"UUID": str(uuid.uuid4()), **unique_caps()}


# --------------------------------------------------------------------------- dryad init

def test_init_writes_a_config_that_loads(tmp_path: Path, capsys) -> None:
    path = tmp_path / "dryad.toml"
    code, out, err = run_cli(capsys, "dryad", "init", "--config", str(path),
                             "--caps", "device_type=rpi4", "--caps", "ram=4G",
                             "--server", "tcp://boruta.example.com:7176", "--board", "stm",
                             "--session", "system", "--ssh-listen", "0.0.0.0:2222",
                             "--user", "tester")
    assert code == 0, err
    cfg = load_config(path)
    assert cfg.caps["device_type"] == "rpi4" and cfg.caps["ram"] == "4G"
    assert str(__import__("uuid").UUID(cfg.uuid)) == cfg.uuid
    assert cfg.server == "tcp://boruta.example.com:7176"
    assert cfg.board.backend == "stm" and cfg.session.backend == "system"
    assert (cfg.session.listen_host, cfg.session.listen_port) == ("0.0.0.0", 2222)
    assert cfg.user == "tester"
    assert cfg.uuid in out and str(path) in out
    text = path.read_text()
    assert text.count("#") > 10                               # commented for the operator


def test_init_defaults_and_fresh_uuids(tmp_path: Path, capsys) -> None:
    a, b = tmp_path / "a.toml", tmp_path / "sub" / "dir" / "b.toml"
    assert run_cli(capsys, "dryad", "init", "--config", str(a))[0] == 0
    assert run_cli(capsys, "dryad", "--config", str(b), "init")[0] == 0   # the group's --config
    code, out, _ = run_cli(capsys, "dryad", "init", "--config", str(tmp_path / "c.toml"),
                           "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["board"] == "simulated" and doc["session"] == "embedded"
    assert doc["user"] == "boruta-user" and doc["server"] == "tcp://127.0.0.1:7176"
    ca, cb = load_config(a), load_config(b)                  # parent directories made
    assert ca.uuid != cb.uuid != doc["uuid"]
    assert (ca.session.listen_host, ca.session.listen_port) == ("127.0.0.1", 0)


def test_init_keeps_a_given_uuid(tmp_path: Path, capsys) -> None:
    path = tmp_path / "d.toml"
    assert run_cli(capsys, "dryad", "init", "--config", str(path), "--caps", f"UUID={UUID}")[0] == 0
    assert load_config(path).uuid == UUID


def test_init_refuses_to_overwrite(tmp_path: Path, capsys) -> None:
    path = tmp_path / "d.toml"
    path.write_text("precious\n")
    code, out, err = run_cli(capsys, "dryad", "init", "--config", str(path))
    assert code == 2 and out == ""
    assert "already exists" in err and err.count("\n") == 1
    assert path.read_text() == "precious\n"
    code, out, _ = run_cli(capsys, "dryad", "init", "--config", str(path), "--json")
    assert code == 2 and json.loads(out)["error"]["code"] == "exists"


@pytest.mark.parametrize("args, field", [
    (("--caps", "UUID=not-a-uuid"), "caps.UUID"),
    (("--ssh-listen", "nohost"), "session.listen"),
    (("--ssh-listen", "127.0.0.1:99999"), "session.listen"),
    (("--user", "Bad User"), "user.name"),
    (("--server", "http://x:1"), "server"),
])
def test_init_bad_values_write_nothing(tmp_path: Path, capsys, args, field) -> None:
    path = tmp_path / "d.toml"
    code, out, err = run_cli(capsys, "dryad", "init", "--config", str(path), *args)
    assert code == 2 and field in err and err.count("\n") == 1, err
    assert not path.exists()


def test_init_bad_choices_are_usage_errors(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "dryad", "init", "--config", str(tmp_path / "d"),
                           "--board", "muxpi")
    assert code == 2 and "--board" in err


# --------------------------------------------------------------------------- bad configs

@pytest.mark.parametrize("text, field", [
    ('server = "tcp://127.0.0.1:7176"\n', "caps.UUID"),
    (config_text(heartbeat_interval="-1"), "heartbeat_interval"),
    (config_text(heartbeat_interval='"5"'), "heartbeat_interval"),
    (config_text() + '[board]\nbackend = "muxpi"\n', "board.backend"),
    (config_text() + '[session]\nlisten = "127.0.0.1"\n', "session.listen"),
    (config_text(colour='"red"'), "colour"),
    (config_text(server="tcp://nohost"), "server"),
    ("this is = = not toml\n", "not valid TOML"),
    ('[caps]\nUUID = "zz"\n', "caps.UUID"),
])
def test_bad_config_is_one_line_exit_2(tmp_path: Path, capsys, text: str, field: str) -> None:
    path = tmp_path / "dryad.toml"
    path.write_text(text)
    code, out, err = run_cli(capsys, "dryad", "--config", str(path))
    assert code == 2, err
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert f"{field}:" in err and str(path) in err
    code, out, _ = run_cli(capsys, "dryad", "--config", str(path), "--json")
    assert code == 2 and json.loads(out)["error"]["code"] == "bad_config"


def test_missing_config_file(tmp_path: Path, capsys) -> None:
    code, out, err = run_cli(capsys, "dryad", "--config", str(tmp_path / "none.toml"))
    assert code == 2 and "no such file" in err and "boruta dryad init" in err


# --------------------------------------------------------------------------- the handler

def test_backoff_doubles_up_to_the_maximum() -> None:
    assert [retry_wait(n, 0.5, 10.0) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0,
                                                                10.0, 10.0]
    assert retry_wait(1, RETRY_BASE, RETRY_MAX) == RETRY_BASE
    assert retry_wait(40, RETRY_BASE, RETRY_MAX) == RETRY_MAX
    assert retry_wait(3, 2.0, 1.0) == 2.0               # a maximum below the base: the base


def test_handler_runs_the_operations(tmp_path: Path) -> None:
    """The command handler without a server: prepare, maintenance, healthcheck."""
    cfg = agent_config("tcp://127.0.0.1:1", {"UUID": UUID})
    board = SimulatedBoard()
    session = EmbeddedSSHServer("127.0.0.1", 0)
    session.start()
    agent = DryadAgent(cfg, board=board, session=session)

    async def scenario() -> None:
        await agent._start_parts()
        assert agent.ops is not None
        await agent.handle("put_in_maintenance", {"message": "flashing  the DUT"})
        assert board.oled == [(0, 0, "flashing the DUT")] and agent.ops.blinking
        key = public_key()
        assert await agent.handle("prepare", {"key": key, "key_type": "ssh-ed25519"}) == {
            "username": "boruta-user"}
        assert not agent.ops.blinking and board.oled == []
        assert session.user == "boruta-user"
        assert await agent.handle("healthcheck", {}) is None
        board.current = 99.0
        board.power = True
        with pytest.raises(HealthcheckFailed, match="outside"):
            await agent.handle("healthcheck", {})
        with pytest.raises(Exception, match="bad|public key|base64"):
            await agent.handle("prepare", {"key": "ssh-ed25519 bad"})
        assert session.user == "boruta-user"               # a bad key changes nothing
        with pytest.raises(Exception, match="unknown command"):
            await agent.handle("reboot", {})
        await agent._stop_parts()

    try:
        asyncio.run(scenario())
    finally:
        session.stop()
    assert agent.commands[:2] == ["put_in_maintenance", "prepare"]


def test_board_that_cannot_open_is_an_agent_error(tmp_path: Path) -> None:
    cfg = parse_config(config_text() + f'[board]\nbackend = "stm"\nstm_path = "{tmp_path}/none"\n'
                       "stm_timeout = 0.2\n")
    with pytest.raises(AgentError, match="cannot open the board"):
        asyncio.run(DryadAgent(cfg).run())


def test_busy_ssh_port_is_an_agent_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        cfg = parse_config(config_text() + f'[session]\nlisten = "127.0.0.1:{port}"\n')
        with pytest.raises(AgentError, match="cannot listen"):
            asyncio.run(DryadAgent(cfg).run())


def test_stop_before_start_runs_nothing() -> None:
    cfg = parse_config(config_text())
    agent = DryadAgent(cfg, board=SimulatedBoard())
    agent.stop()
    asyncio.run(asyncio.wait_for(agent.run(), 10))
    assert agent.link is None


# --------------------------------------------------------------------------- against a server

QUICK = {"heartbeat_interval": 0.2, "heartbeat_liveness": 5, "dryad_reply_timeout": 3.0}


@pytest.mark.slow
def test_maintenance_blinks_until_prepare(server_factory, agents, tmp_path: Path) -> None:
    server = server_factory(**QUICK)
    caps = new_caps()
    a = agents(enrolled(server, caps, tmp_path))
    a.wait_ready()
    client = server.client()
    uuid = caps["UUID"]
    assert client.get_worker_info(uuid).state is WorkerState.MAINTENANCE     # registered, not asked yet
    assert a.agent.link.heartbeat_interval == pytest.approx(0.2)

    client.set_state(uuid, "IDLE")
    wait_until(lambda: client.get_worker_info(uuid).state is WorkerState.IDLE, 5, what="IDLE")
    client.set_state(uuid, "MAINTENANCE")
    wait_until(lambda: client.get_worker_info(uuid).state is WorkerState.MAINTENANCE, 5,
               what="MAINTENANCE")
    board = a.board
    assert board.oled and board.oled[0][2] == "maintenance"
    start = len(board.calls)

    def blinked(b: SimulatedBoard) -> bool:
        leds = [c.args for c in b.calls[start:] if c.op == "set_led"]
        return ((1, *YELLOW) in leds and (2, *YELLOW) in leds
                and leds.count((1, *OFF)) >= 1 and len(leds) >= 6)
    assert board.wait_for(blinked, 5), board.calls[start:]
    assert a.run(_blinking(a.agent))

    client.set_state(uuid, "IDLE")                                  # prepare stops the blinker
    wait_until(lambda: client.get_worker_info(uuid).state is WorkerState.IDLE, 5, what="IDLE again")
    assert not a.run(_blinking(a.agent))
    assert board.leds == {1: OFF, 2: OFF} and board.oled == []
    n = len(board.calls_of("set_led"))                             # 4 blink periods: quiet
    assert not board.wait_for(lambda b: len(b.calls_of("set_led")) > n, 0.2)

    # maintenance again, then the agent is stopped: the blinker is cancelled cleanly
    client.set_state(uuid, "MAINTENANCE")
    wait_until(lambda: a.run(_blinking(a.agent)), 5, what="blinking again")
    ssh_port = a.agent.session.address()[1]
    assert port_open(ssh_port)
    a.stop()
    assert a.error is None
    assert board.leds == {1: OFF, 2: OFF} and board.oled == []
    assert not port_open(ssh_port)                                  # session backend stopped


async def _blinking(agent: DryadAgent) -> bool:
    return agent.ops is not None and agent.ops.blinking


@pytest.mark.slow
def test_healthcheck_failure_is_reported_and_stored(server_factory, agents,
                                                    tmp_path: Path) -> None:
    server = server_factory(**QUICK)
    caps = new_caps()
    a = agents(enrolled(server, caps, tmp_path, **{"healthcheck.current_min": 0.1}))
    a.wait_ready()
    client = server.client()
    uuid = caps["UUID"]
    client.set_state(uuid, "IDLE")
    wait_until(lambda: client.get_worker_info(uuid).state is WorkerState.IDLE, 5, what="IDLE")
    a.board.power = True                                            # 0.25 A: healthy
    client.healthcheck(uuid)
    assert client.get_worker_info(uuid).state is WorkerState.IDLE
    a.board.current = 0.0                                           # DUT draws nothing
    with pytest.raises(DryadError, match="DUT current"):
        client.healthcheck(uuid)
    info = client.get_worker_info(uuid)
    assert info.state is WorkerState.FAIL
    assert "DUT current 0.000 A is outside [0.1, 5] A" in info.fail_reason
    assert a.agent.commands.count("healthcheck") == 2


@pytest.mark.slow
def test_heartbeats_at_its_own_shorter_interval(server_factory, agents, tmp_path: Path) -> None:
    server = server_factory(heartbeat_interval=2.0, heartbeat_liveness=3)
    caps = new_caps()
    a = agents(enrolled(server, caps, tmp_path, heartbeat_interval=0.1))
    a.wait_ready()
    assert a.agent.link.heartbeat_interval == pytest.approx(0.1)
    wait_until(lambda: a.agent.link.heartbeats >= 5, 3, what="heartbeats")


@pytest.mark.slow
def test_reconnects_with_backoff_and_registers_again(tmp_path: Path, agents) -> None:
    """No server yet: the agent retries with growing waits; a server appears, it
    registers; the server is killed and another starts: it registers again."""
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    caps = new_caps()
    # Both servers are one farm's server: one identity directory, made before either starts.
    keys = Keyring.open(tmp_path / "identity")
    pair = new_keypair()
    farm = {"dryad_listen": endpoint, "identity_dir": str(keys.directory), **QUICK}
    a = agents(agent_config(endpoint, caps, **identity(Credentials(keys.server.public, pair),
                                                       tmp_path, caps["UUID"])),
               reply_timeout=0.2, retry_base=0.05, retry_max=0.2)
    wait_until(lambda: a.agent.link is not None and a.agent.link.attempts >= 4, 10,
               what="several connection attempts")
    assert a.agent.link.retry_interval == pytest.approx(0.2)         # grew to the maximum
    first = ServerProcess(tmp_path / "s1.log", **farm).start()
    try:
        first.client().dryad_enroll(uuid=caps["UUID"], key=pair.public)
        a.wait_ready()
        link = a.agent.link
        assert link.attempts == 0 and link.retry_interval == pytest.approx(0.05)
        assert first.client().get_worker_info(caps["UUID"]).state is WorkerState.MAINTENANCE
        before = link.registrations
        first.kill()
    finally:
        first.close()
    second = ServerProcess(tmp_path / "s2.log", **farm).start()
    try:
        second.client().dryad_enroll(uuid=caps["UUID"], key=pair.public)
        wait_until(lambda: link.registrations > before, 10, what="registered again")
        assert second.client().get_worker_info(caps["UUID"]).state is WorkerState.MAINTENANCE
    finally:
        second.close()


@pytest.mark.slow
def test_ready_line_names_uuid_and_ssh_address(server_factory, agents, tmp_path: Path) -> None:
    server = server_factory(**QUICK)
    caps = new_caps()
    seen: list[str] = []
    a = agents(enrolled(server, caps, tmp_path), on_ready=lambda ag: seen.append(ready_line(ag)))
    a.wait_ready()
    wait_until(lambda: seen, 2, what="on_ready")
    port = a.agent.session.address()[1]
    assert seen == [f"boruta dryad ready uuid={caps['UUID']} server={server.dryad} "
                    f"ssh=127.0.0.1:{port}"]
    assert server.client().get_worker_info(caps["UUID"]).ssh_address == f"127.0.0.1:{port}"
    assert server.client().get_worker_info(caps["UUID"]).dryad_address == "127.0.0.1:7175"


# --------------------------------------------------------------------------- fixes elsewhere

def test_quick_command_does_not_overtake_the_exec_reply(monkeypatch) -> None:
    """boruta/dryad/embedded_ssh.py: a command starts only after the reply to its exec
    request was sent. Made deterministic by slowing the transport thread down right
    after the request callback: before the fix `true` exited and closed the channel
    before the reply, and paramiko's client raised "Channel closed."."""
    import io as _io

    import paramiko

    from boruta.dryad import embedded_ssh
    original = embedded_ssh._Connection.check_channel_exec_request

    def slow(self, channel, command):
        ok = original(self, channel, command)
        time.sleep(0.3)                      # the transport thread is descheduled
        return ok

    monkeypatch.setattr(embedded_ssh._Connection, "check_channel_exec_request", slow)
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    pub = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                            serialization.PublicFormat.OpenSSH).decode()
    server = EmbeddedSSHServer("127.0.0.1", 0)
    server.start()
    try:
        server.set_job_key("boruta-user", pub)
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        client.connect("127.0.0.1", server.port, username="boruta-user",
                       pkey=paramiko.Ed25519Key.from_private_key(_io.StringIO(pem)),
                       allow_agent=False, look_for_keys=False, timeout=10)
        try:
            for _ in range(2):
                _, out, _ = client.exec_command("true", timeout=10)
                assert out.channel.recv_exit_status() == 0
        finally:
            client.close()
    finally:
        server.stop()
