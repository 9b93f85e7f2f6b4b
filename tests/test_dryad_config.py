"""Dryad configuration: the written default, the round trip, every ConfigError."""
from __future__ import annotations

import os
import re
import tomllib
import uuid

import pytest

from boruta.core.errors import BorutaError, ConfigError
from boruta.dryad.board import SimulatedBoard
from boruta.dryad.config import (
    ConfigExistsError,
    DryadConfig,
    load_config,
    parse_config,
    write_default_config,
)
from boruta.dryad.embedded_ssh import EmbeddedSSHServer
from boruta.dryad.operations import DryadOperations
from boruta.dryad.system_session import SystemSessionBackend
from boruta.transport.addresses import DRYAD_ENDPOINT

UUID = "6f1c9d7e-3b1a-4c2e-9f00-0123456789ab"


def test_default_config_round_trip(tmp_path):
    path = tmp_path / "dryad.conf"
    written = write_default_config(path)
    text = path.read_text()
    assert text.count("\n#") > 20  # commented for the operator
    loaded = load_config(path)
    assert loaded == written
    assert str(uuid.UUID(loaded.uuid)) == loaded.uuid
    assert uuid.UUID(loaded.uuid).version == 4
    assert loaded.server == DRYAD_ENDPOINT == "tcp://127.0.0.1:7176"
    assert loaded.user == "boruta-user" and loaded.user_groups == () and loaded.groups == ()
    assert loaded.board.backend == "simulated" and loaded.board.stm_path == "/dev/ttyS2"
    assert loaded.session.backend == "embedded"
    assert (loaded.session.listen_host, loaded.session.listen_port) == ("127.0.0.1", 0)
    assert loaded.heartbeat_interval == 5.0 and loaded.blink_period == 1.0
    assert loaded.healthcheck.power_tick is False      # periodic checks never power-cycle by default
    assert loaded.source == str(path)
    # Every setting is spelled out in the file, not only implied by defaults.
    doc = tomllib.loads(text)
    assert set(doc) == {"server", "server_key", "key_file", "heartbeat_interval", "groups",
                        "caps", "user", "board", "session", "maintenance", "healthcheck"}
    assert (doc["server_key"], doc["key_file"]) == ("", "") and loaded.credentials() is None


def test_fresh_uuid_each_time(tmp_path):
    a = write_default_config(tmp_path / "a.conf")
    b = write_default_config(tmp_path / "b.conf")
    assert a.uuid != b.uuid


def test_written_arguments_round_trip(tmp_path):
    path = tmp_path / "dryad.conf"
    caps = {"device_type": "rpi4", "odd key": 'quote " and \\ backslash', "UUID": UUID}
    written = write_default_config(
        path, caps=caps, server="tcp://boruta.example.com:7176", board="stm",
        session="system", ssh_listen="0.0.0.0:2222", user="tester",
        stm_path="unix:/run/stm.text", groups=["lab", "ci"],
        user_groups=["disk", "dialout"], advertise="10.0.0.5:22")
    loaded = load_config(path)
    assert loaded == written
    assert dict(loaded.caps) == caps and loaded.uuid == UUID
    assert loaded.server == "tcp://boruta.example.com:7176"
    assert (loaded.board.backend, loaded.board.stm_path) == ("stm", "unix:/run/stm.text")
    assert loaded.session.backend == "system" and loaded.user == "tester"
    assert (loaded.session.listen_host, loaded.session.listen_port) == ("0.0.0.0", 2222)
    assert loaded.groups == ("lab", "ci") and loaded.user_groups == ("disk", "dialout")
    assert loaded.ssh_advertised() == ("10.0.0.5", 22)


def test_refuses_to_overwrite(tmp_path):
    path = tmp_path / "dryad.conf"
    path.write_text("# precious\n")
    with pytest.raises(ConfigExistsError) as info:
        write_default_config(path)
    assert isinstance(info.value, FileExistsError) and isinstance(info.value, ConfigError)
    assert str(info.value) == (f"{path}: already exists; not overwriting it "
                               "(remove it first to start afresh)")
    assert (info.value.field, info.value.source) == (None, str(path))
    assert path.read_text() == "# precious\n"


@pytest.mark.parametrize("kwargs, field", [
    ({"board": "fpga"}, "board.backend"),
    ({"session": "telnet"}, "session.backend"),
    ({"server": "http://x"}, "server"),
    ({"ssh_listen": "nowhere"}, "session.listen"),
    ({"user": "Bad Name"}, "user.name"),
    ({"caps": {"UUID": "not-a-uuid"}}, "caps.UUID"),
    ({"caps": {"cores": 4}}, "caps.cores"),
    ({"groups": [""]}, "groups[0]"),
    ({"user_groups": [3]}, "user.groups[0]"),
    ({"server": 7176}, "server"),
])
def test_write_refuses_bad_arguments_and_writes_nothing(tmp_path, kwargs, field):
    path = tmp_path / "dryad.conf"
    with pytest.raises(ConfigError) as info:
        write_default_config(path, **kwargs)
    assert info.value.field == field
    assert not path.exists()


def test_write_into_a_missing_directory(tmp_path):
    target = tmp_path / "no" / "such" / "dir.conf"
    with pytest.raises(ConfigError) as info:
        write_default_config(target)
    assert str(info.value) == f"{target}: cannot write: No such file or directory"


MINIMAL = f'[caps]\nUUID = "{UUID}"\n'


def test_minimal_config_takes_the_defaults():
    c = parse_config(MINIMAL)
    assert c == DryadConfig(caps={"UUID": UUID})


def load(text: str) -> DryadConfig:
    """`text` plus a valid [caps] table, unless the text is about the caps."""
    return parse_config(text if "caps" in text else text + "\n" + MINIMAL)


@pytest.mark.parametrize("text, field, problem", [
    # the UUID
    ('server = "tcp://h:1"  # and no caps\n', "caps.UUID", "missing"),
    ("[caps]\ndevice = \"x\"\n", "caps.UUID", "missing"),
    ('[caps]\nUUID = "nope"\n', "caps.UUID", "not a UUID"),
    (f'[caps]\nUUID = "{UUID.upper()}"\n', "caps.UUID", "canonical"),
    (f'[caps]\nUUID = "{UUID.replace("-", "")}"\n', "caps.UUID", "canonical"),
    ("[caps]\nUUID = 5\n", "caps.UUID", "must be a string"),
    (f'[caps]\nUUID = "{UUID}"\ncores = 4\n', "caps.cores", "must be a string"),
    ("caps = 3\n", "caps", "must be a table"),
    # top level
    ('server = "tcp://host"\n', "server", "HOST:PORT"),
    ('server = "tcp://:7176"\n', "server", "no host"),
    ('server = "tcp://h:99999"\n', "server", "port 99999 out of range 1..65535"),
    ('server = "tcp://h:\u00b2"\n', "server", "bad port '\u00b2'"),
    ('server = "udp://h:1"\n', "server", "use tcp://HOST:PORT or ipc://PATH"),
    ('server = "inproc://x"\n', "server", "a dryad reaches its server over tcp://"),
    ("server = 1\n", "server", "must be a string"),
    ("heartbeat_interval = 0\n", "heartbeat_interval", "positive"),
    ('heartbeat_interval = "5"\n', "heartbeat_interval", "must be a number"),
    ("heartbeat_interval = true\n", "heartbeat_interval", "must be a number"),
    ("heartbeat_interval = nan\n", "heartbeat_interval", "positive"),
    ('groups = "lab"\n', "groups", "must be an array"),
    ("groups = [1]\n", "groups[0]", "non-empty string"),
    ("colour = 1\n", "colour", "unknown key"),
    # [user]
    ('user = "x"\n', "user", "must be a table"),
    ("[user]\nname = \"Root User\"\n", "user.name", "not a valid user name"),
    (f"[user]\nname = \"{'u' * 33}\"\n", "user.name", "at most 32 characters"),
    ("[user]\nname = \"a\"\ngroups = [\"\"]\n", "user.groups[0]", "non-empty"),
    ("[user]\nshell = \"/bin/sh\"\n", "user.shell", "unknown key"),
    # [board]
    ('[board]\nbackend = "gpio"\n', "board.backend", "unknown backend"),
    ("[board]\nbackend = 1\n", "board.backend", "must be a string"),
    ('[board]\nbackend = "stm"\nstm_path = ""\n', "board.stm_path", "empty"),
    ('[board]\nstm_path = "tcp://stm:\u0663"\n', "board.stm_path", "bad port '\u0663'"),
    ('[board]\nstm_path = "tcp://stm"\n', "board.stm_path", "'stm' is not HOST:PORT"),
    ("[board]\nstm_timeout = -1\n", "board.stm_timeout", "positive"),
    # [session]
    ('[session]\nbackend = "ssh"\n', "session.backend", "unknown backend"),
    ('[session]\nlisten = "127.0.0.1"\n', "session.listen", "HOST:PORT"),
    ('[session]\nlisten = ":2222"\n', "session.listen",
     "':2222' has no host (use 0.0.0.0 for every interface)"),
    ('[session]\nlisten = "::1:22"\n', "session.listen", "brackets"),
    ('[session]\nlisten = "h:x"\n', "session.listen", "bad port 'x'"),
    ('[session]\nlisten = "h:\u00b2"\n', "session.listen", "bad port '\u00b2'"),
    ('[session]\nadvertise = "h:70000"\n', "session.advertise",
     "port 70000 out of range 0..65535"),
    ('[session]\nworkdir_base = "relative/dir"\n', "session.workdir_base", "absolute"),
    ('[session]\nhost_key = "key"\n', "session.host_key", "absolute"),
    ("[session]\nport = 22\n", "session.port", "unknown key"),
    # [maintenance], [healthcheck]
    ("[maintenance]\nblink_period = 0\n", "maintenance.blink_period", "positive"),
    ('[healthcheck]\npower_tick = "no"\n', "healthcheck.power_tick", "true or false"),
    ("[healthcheck]\npower_tick_seconds = 0\n", "healthcheck.power_tick_seconds", "positive"),
    ("[healthcheck]\npower_tick_seconds = 120\n", "healthcheck.power_tick_seconds", "at most"),
    ("[healthcheck]\ncurrent_min = 2\ncurrent_max = 1\n", "healthcheck.current_max",
     "greater than"),
])
def test_every_config_error_names_its_field(text, field, problem):
    with pytest.raises(ConfigError) as info:
        load(text)
    assert info.value.field == field
    assert problem in info.value.problem
    assert str(info.value) == f"{field}: {info.value.problem}"
    assert isinstance(info.value, BorutaError) and info.value.code == "bad_config"


def test_a_file_that_is_not_toml_is_an_error_of_the_whole_file():
    with pytest.raises(ConfigError) as info:
        parse_config("[caps\n", "dryad.conf")
    assert info.value.field is None and info.value.source == "dryad.conf"
    assert str(info.value).startswith("dryad.conf: not valid TOML: ")


def test_error_from_a_file_names_the_file(tmp_path):
    path = tmp_path / "dryad.conf"
    path.write_text(MINIMAL + "[board]\nbackend = \"fpga\"\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: board.backend: unknown backend 'fpga'")
    missing = tmp_path / "missing.conf"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert str(info.value) == f"{missing}: no such file; `boruta dryad init` writes one"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: not UTF-8: "):
        load_config(path)


def test_ipv6_and_advertised_addresses():
    c = load('[session]\nlisten = "[::1]:0"\n')
    assert (c.session.listen_host, c.session.listen_port) == ("::1", 0)
    # Embedded: the bound address, unless advertised otherwise.
    assert c.ssh_advertised(("::1", 40000)) == ("::1", 40000)
    c = load('[session]\nlisten = "0.0.0.0:0"\nadvertise = "board7.lab:0"\n')
    assert c.ssh_advertised(("0.0.0.0", 40001)) == ("board7.lab", 40001)
    c = load('[session]\nlisten = "0.0.0.0:2222"\n')
    assert c.ssh_advertised(("0.0.0.0", 2222)) == ("", 2222)  # the server fills in our IP
    c = load('[session]\nbackend = "system"\n')
    assert c.ssh_advertised() == ("", 22)
    c = load('[session]\nbackend = "system"\nadvertise = ":2200"\n')
    assert c.ssh_advertised() == ("", 2200)


def test_builds_the_parts(tmp_path):
    c = load(f'[session]\nworkdir_base = "{tmp_path}"\n'
             "[healthcheck]\npower_tick = false\n[maintenance]\nblink_period = 0.5\n")
    board = c.make_board()
    assert isinstance(board, SimulatedBoard)
    session = c.make_session_backend()
    assert isinstance(session, EmbeddedSSHServer)
    ops = c.make_operations(board, session)
    assert isinstance(ops, DryadOperations)
    assert ops.healthcheck_power_tick is False and ops.blink_period == 0.5
    assert ops.user == "boruta-user"
    system = load('[session]\nbackend = "system"\n[user]\ngroups = ["disk"]\n')
    backend = system.make_session_backend()
    assert isinstance(backend, SystemSessionBackend) and backend.groups == ("disk",)
    assert backend.address() == ("", 22)


def test_commented_file_mentions_every_key(tmp_path):
    path = tmp_path / "dryad.conf"
    write_default_config(path)
    text = path.read_text()
    for key in ("server", "heartbeat_interval", "UUID", "name", "groups", "backend",
                "stm_path", "stm_timeout", "listen", "advertise", "workdir_base",
                "host_key", "blink_period", "power_tick", "power_tick_seconds",
                "current_min", "current_max"):
        assert f"\n{key} = " in text, key
    assert os.stat(path).st_mode & 0o777 == 0o644
