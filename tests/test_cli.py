"""The `boruta` command against a fake client: global options, help, errors, entry point.

What each noun's commands do is tested beside this file (test_cli_request.py,
test_cli_worker.py); tests/test_cli_e2e.py runs the commands against a real
server.
"""
from __future__ import annotations

import socket
import sys
import types
from typing import Any

import pytest

from boruta.cli import app as cli
from boruta.cli import session
from boruta.core.errors import BorutaError, ConfigError, NotFoundError
from boruta.transport.errors import ServerUnreachableError, WaitTimeoutError
from boruta.transport.operations import CLIENT_OPS

pytest_plugins = ["cli_fake"]          # the fixtures `fake` and `run`
pytest.register_assert_rewrite("cli_fake")
from cli_fake import PING, W1  # noqa: E402

# --------------------------------------------------------------------------- global options

@pytest.mark.parametrize("args", [
    ("--json", "request", "list"),
    ("request", "list", "--json"),
    ("request", "--json", "list"),
])
def test_json_anywhere(run, fake, args):
    r = run(*args)
    assert r.code == 0, r
    doc = r.json()
    assert set(doc) == {"items", "total", "remaining"}
    assert r.err == ""


def test_server_option_before_and_after(run, fake):
    assert run("--server", "tcp://a:1", "request", "list").code == 0
    assert run("request", "list", "--server", "tcp://b:2").code == 0
    assert run("worker", "--server", "c:3", "list").code == 0
    assert [e for e, _ in fake.opened] == ["tcp://a:1", "tcp://b:2", "tcp://c:3"]


def test_server_after_verb_wins(run, fake):
    assert run("--server", "tcp://a:1", "request", "list", "--server", "tcp://b:2").code == 0
    assert fake.opened[-1][0] == "tcp://b:2"


def test_server_resolution_env_then_file_then_default(run, fake, monkeypatch, tmp_path):
    assert run("request", "list").code == 0
    assert fake.opened[-1][0] == "tcp://127.0.0.1:7175"
    cfg = tmp_path / "home" / ".config" / "boruta" / "client.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text('server = "tcp://from-file:7175"\n')
    assert run("request", "list").code == 0
    assert fake.opened[-1][0] == "tcp://from-file:7175"
    monkeypatch.setenv("BORUTA_SERVER", "tcp://from-env:7175")
    assert run("request", "list").code == 0
    assert fake.opened[-1][0] == "tcp://from-env:7175"
    assert run("--server", "tcp://opt:1", "request", "list").code == 0
    assert fake.opened[-1][0] == "tcp://opt:1"


def test_bad_client_config_is_usage_error(run, fake, tmp_path):
    cfg = tmp_path / "home" / ".config" / "boruta" / "client.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("server = [\n")
    r = run("request", "list")
    assert r.code == 2 and "client config" in r.err
    assert not fake.opened
    r = run("--json", "request", "list")
    assert r.code == 2 and r.json()["error"]["code"] == "usage"


def test_bad_server_variable_is_named(run, fake, monkeypatch):
    monkeypatch.setenv("BORUTA_SERVER", "http://x")
    message = "BORUTA_SERVER: invalid endpoint 'http://x'; use tcp://HOST:PORT or ipc://PATH"
    r = run("request", "list")
    assert r.code == 2 and r.out == "" and r.err == f"boruta: {message}.\n"
    r = run("--json", "request", "list")
    assert r.code == 2 and r.json() == {"error": {"code": "usage", "message": message}}
    assert not fake.opened
    assert run("--server", "tcp://opt:1", "request", "list").code == 0     # --server wins


@pytest.mark.parametrize("content, problem", [
    ('server = "tcp://farm"\n', "server: invalid endpoint 'tcp://farm': 'farm' is not HOST:PORT"),
    ('server = "tcp://farm:99999"\n',
     "server: invalid endpoint 'tcp://farm:99999': port 99999 out of range 1..65535"),
    ("server = 7175\n", "server: must be a string"),
])
def test_bad_server_in_client_config_names_the_file(run, fake, tmp_path, content, problem):
    cfg = tmp_path / "home" / ".config" / "boruta" / "client.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(content)
    r = run("request", "list")
    assert r.code == 2 and r.err == f"boruta: client config {cfg}: {problem}.\n"
    assert not fake.opened


@pytest.mark.parametrize("args", [
    ("--timeout", "0.5", "request", "list"),
    ("request", "list", "--timeout", "0.5"),
    ("request", "--timeout", "500ms", "list"),
])
def test_timeout_anywhere(run, fake, args):
    r = run(*args)
    if "500ms" in args:
        assert r.code == 2
        return
    assert r.code == 0, r
    assert fake.opened[-1][1] == 0.5


def test_default_timeout(run, fake):
    assert run("request", "show", "7").code == 0
    assert fake.opened[-1][1] == session.RPC_TIMEOUT


@pytest.mark.parametrize("args", [
    ("--timeout", "0", "request", "list"),
    ("--timeout", "-1", "request", "list"),
    ("request", "list", "--timeout", "soon"),
    ("--server", "http://x", "request", "list"),
    ("request", "list", "--server", "tcp://nohost"),
])
def test_bad_global_options_are_usage_errors(run, fake, args):
    r = run(*args)
    assert r.code == 2, r
    assert r.out == ""
    assert r.err.startswith("boruta: ") and r.err.count("\n") == 1
    assert not fake.opened


def test_client_is_closed(run, fake):
    run("request", "show", "7")
    fake.answers["get_request_info"] = NotFoundError("Request")
    run("request", "show", "7")
    assert fake.closed == 2


# --------------------------------------------------------------------------- help

COMMANDS = [
    (), ("request",), ("request", "new"), ("request", "list"), ("request", "show"),
    ("request", "update"), ("request", "close"), ("request", "acquire"), ("request", "prolong"),
    ("request", "wait"), ("worker",), ("worker", "list"), ("worker", "show"),
    ("worker", "set-state"), ("worker", "set-groups"), ("worker", "deregister"), ("events",), ("top",),
    ("worker", "healthcheck"), ("ping",), ("server",), ("dryad",), ("dryad", "init"),
    ("admin",), ("admin", "dump"), ("admin", "restore"),
]


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "boruta")
def test_every_command_has_help_with_an_example(run, path):
    r = run(*path, "--help")
    assert r.code == 0, r
    assert "Usage: boruta" in r.out
    assert "Example" in r.out
    assert run(*path, "-h").code == 0


def test_help_before_noun(run):
    r = run("--help", "request", "list")
    assert r.code == 0 and "Usage: boruta" in r.out


def test_no_command(run):
    r = run()
    assert r.code == 2 and "Usage: boruta" in r.err and r.out == ""
    r = run("request")
    assert r.code == 2 and "boruta request" in r.err
    r = run("--json")
    assert r.code == 2 and r.json()["error"]["code"] == "usage"


def test_help_has_no_port_placeholders_left(run):
    texts = [run(*path, "--help").out for path in COMMANDS]
    assert not any("{" in text for text in texts)
    assert "tcp://boruta.example.com:7175" in texts[0]
    assert "(default tcp://*:7176)" in run("server", "--help").out
    assert "tcp://127.0.0.1:7176" in run("dryad", "init", "--help").out


# --------------------------------------------------------------------------- ping

def test_ping(run, fake):
    r = run("ping")
    assert r.code == 0, r
    assert r.out.splitlines() == [
        "Server     0.3.0",
        "Protocol   1",
        "Matcher    compiled",
        "You        alice (admin)",
        "Heartbeat  every 5s",
        "Clients    tcp://0.0.0.0:7175",
        "Dryads     tcp://0.0.0.0:7176",
        "Events     tcp://0.0.0.0:7177",
    ]
    assert fake.called("ping") == [((), {})]
    r = run("ping", "--json")
    assert r.code == 0 and r.json() == PING


def test_ping_unreachable_is_exit_3(run, fake):
    fake.answers["ping"] = ServerUnreachableError("no answer from tcp://h:7175 to ping within 5s")
    r = run("ping")
    assert r.code == 3 and r.err == "boruta: no answer from tcp://h:7175 to ping within 5s.\n"


# --------------------------------------------------------------------------- operations

# The arguments that make each command call its operation (and nothing else fail).
SAMPLE_ARGS = {
    "request new": ["--caps", "a=b"], "request show": ["7"],
    "request update": ["7", "--priority", "2"],
    "request close": ["7"], "request acquire": ["7"], "request prolong": ["7"],
    "request wait": ["7"], "request renew": ["7"], "request position": ["7"],
    "request explain": ["7"],
    "worker show": [W1], "worker set-state": [W1, "idle"],
    "worker set-groups": [W1, "lab"], "worker deregister": [W1], "worker healthcheck": [W1],
    "admin user add": ["bob"], "admin user set": ["alice", "--max-open", "3"],
    "admin user remove": ["alice"], "admin user token": ["alice"],
    "admin dryad enroll": [W1], "admin dryad revoke": [W1],
}


def test_every_client_operation_has_a_command():
    assert set(cli.OPERATION_COMMANDS) == set(CLIENT_OPS)


@pytest.mark.parametrize("op, command", sorted(cli.OPERATION_COMMANDS.items()))
def test_each_command_calls_its_operation(run, fake, op, command):
    r = run(*command.split(), *SAMPLE_ARGS.get(command, []), "--json")
    assert r.code == 0, r
    assert [name for name, _, _ in fake.calls][0] == op


# --------------------------------------------------------------------------- errors in general

def test_unexpected_exception_is_one_sentence(run, fake):
    fake.answers["list_requests"] = RuntimeError("boom")
    r = run("request", "list")
    assert r.code == 1
    assert r.err == "boruta: internal error (RuntimeError): boom.\n"
    r = run("request", "list", "--json")
    assert r.json()["error"]["code"] == "internal"


def test_a_server_nobody_answers_for_is_exit_3(capsys, monkeypatch, tmp_path):
    """The real client (no fake): its ServerUnreachableError is exit 3, in time."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("BORUTA_SERVER", raising=False)
    with socket.socket() as s:                     # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = cli.run(["--timeout", "0.2", "request", "show", "7", "--json",
                    "--server", f"tcp://127.0.0.1:{port}"])
    doc = __import__("json").loads(capsys.readouterr().out)
    assert code == 3
    assert doc["error"]["code"] == "unreachable"
    assert doc["error"]["message"].startswith(f"no answer from tcp://127.0.0.1:{port}")


def test_server_error_is_exit_1_with_its_code(run, fake):
    class Refused(BorutaError):
        code = "some_refusal"
    fake.answers["list_requests"] = Refused("not today")
    r = run("request", "list", "--json")
    assert r.code == 1 and r.json() == {"error": {"code": "some_refusal", "message": "not today"}}


def test_interrupted(run, fake):
    fake.answers["list_requests"] = KeyboardInterrupt()
    r = run("request", "list")
    assert r.code == 130 and r.err == "boruta: interrupted.\n"


def test_unknown_command_and_option(run, fake):
    r = run("requests", "list")
    assert r.code == 2 and "No such command" in r.err
    r = run("request", "list", "--colour")
    assert r.code == 2 and "--colour" in r.err
    r = run("request", "list", "--colour", "--json")
    assert r.code == 2 and r.json()["error"]["code"] == "usage"


ID_RANGE = "request IDs run from 1 to 9223372036854775807"


@pytest.mark.parametrize("args, code, message", [
    (("request", "new", "--caps", "a=\x00"), 0, ""),
    (("request", "show", "99999999999999999999999"),
     2, f"Invalid value for 'ID': 99999999999999999999999 is out of range: {ID_RANGE}."),
    (("request", "list", "--sort", ":"), 2, "Invalid value for '--sort': invalid sort ':'"),
    (("request", "list", "--after", "1e9"),
     2, "Invalid value for '--after': '1e9' is not a whole number."),
    (("worker", "show", " "), 2, "Invalid value for 'UUID': a worker UUID cannot be empty."),
    (("events", "--request", "x"), 2, "Invalid value for '--request': 'x' is not a whole number."),
    (("request", "new", "--caps"), 2, "Option '--caps' requires an argument."),
    (("--timeout", "nan", "request", "list"),
     2, "Invalid value for '--timeout': invalid duration 'nan'"),
    (("request", "wait", "1", "--until", ""),
     2, "Invalid value for '--until': unknown request state ''"),
    (("request", "update", "1", "--valid-after", "+1000000000000d"),
     2, "Invalid value for '--valid-after': time '+1000000000000d' is too far in the future."),
    (("worker", "set-groups"), 2, "Missing argument 'UUID'."),
    (("--server", "", "request", "list"), 2, "Invalid value for '--server': empty endpoint"),
    (("request", "new", "--wait"), 2, "Missing option '--caps'."),
    (("request", "list", "--timeout", "99999999999999999999d"),
     2, "Invalid value for '--timeout': duration '99999999999999999999d' is too long; "
        "the most is 3650d."),
])
def test_odd_inputs(run, fake, args, code, message):
    r = run(*args)
    assert r.code == code, r
    if code == 0:
        assert r.out == "7\n" and r.err == ""
        return
    assert r.out == "" and r.err.startswith("boruta: " + message), r
    assert r.err.count("\n") == 1
    assert not fake.opened


# --------------------------------------------------------------------------- server

@pytest.fixture
def fake_server(monkeypatch):
    seen: dict[str, Any] = {}
    config_mod = types.ModuleType("boruta.server.config")
    server_mod = types.ModuleType("boruta.server.app")

    def load_server_config(path, overrides):
        seen["path"], seen["overrides"] = path, dict(overrides)
        if seen.get("bad_config"):
            raise ConfigError("listen: 'x' is not a ZeroMQ endpoint (tcp://HOST:PORT)")
        return ("config", path)

    def run_server(config):
        seen["config"] = config
        if seen.get("interrupt"):
            raise KeyboardInterrupt
        if seen.get("oserror"):
            raise OSError(98, "Address already in use")
        return seen.get("rc", 0)

    config_mod.load_server_config = load_server_config
    server_mod.run_server = run_server
    monkeypatch.setitem(sys.modules, "boruta.server.config", config_mod)
    monkeypatch.setitem(sys.modules, "boruta.server.app", server_mod)
    return seen


def test_server_passes_flags(run, fake_server):
    r = run("server", "--config", "s.toml", "--state-dir", "/var/lib/boruta", "--listen",
            "tcp://*:7175", "--dryad-listen", "tcp://*:7176", "--events", "tcp://*:7177",
            "--public-host", "farm.example.com", "--log-level", "DEBUG", "--log-format", "json")
    assert r.code == 0, r
    assert fake_server["path"] == "s.toml"
    assert fake_server["overrides"] == {
        "state_dir": "/var/lib/boruta", "listen": "tcp://*:7175", "dryad_listen": "tcp://*:7176",
        "events": "tcp://*:7177", "public_host": "farm.example.com", "log_level": "debug",
        "log_format": "json"}
    assert fake_server["config"] == ("config", "s.toml")


def test_server_set(run, fake_server):
    r = run("server", "--listen", "tcp://*:1", "--set", "heartbeat_interval=0.5",
            "--set", " job_timeout = 60 ", "--set", "listen=tcp://*:2")
    assert r.code == 0, r
    assert fake_server["overrides"] == {"listen": "tcp://*:2", "heartbeat_interval": "0.5",
                                        "job_timeout": "60"}
    r = run("server", "--set", "heartbeat_interval")
    assert r.code == 2 and r.err.startswith(
        "boruta: Invalid value for '--set': invalid setting 'heartbeat_interval'; use KEY=VALUE, "
        "e.g. heartbeat_interval=0.5.")
    assert run("server", "--set", "=1").code == 2


def test_server_defaults(run, fake_server):
    assert run("server").code == 0
    assert fake_server["path"] is None and fake_server["overrides"] == {}


def test_server_errors(run, fake_server):
    fake_server["bad_config"] = True
    r = run("server", "--listen", "x")
    assert r.code == 2 and "invalid server configuration" in r.err
    fake_server["bad_config"] = False
    fake_server["oserror"] = True
    r = run("server")
    assert r.code == 1 and "Address already in use" in r.err
    fake_server["oserror"] = False
    fake_server["interrupt"] = True
    assert run("server").code == 0
    fake_server["interrupt"] = False
    fake_server["rc"] = 2
    assert run("server").code == 2
    assert run("server", "--log-level", "loud").code == 2
    assert run("server", "--log-format", "xml").code == 2
    fake_server["bad_config"] = True
    r = run("server", "--json")
    assert r.code == 2 and "invalid server configuration" in r.json()["error"]["message"]


# --------------------------------------------------------------------------- entry point

def test_main_exits_with_the_code(fake, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["request", "show", "x"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        cli.main(["request", "show", "7"])
    assert exc.value.code == 0


def test_wait_timeout_code_is_exit_3(run, fake):
    fake.answers["wait_request"] = WaitTimeoutError("request 7 still WAITING after 0.999999s")
    r = run("request", "wait", "7", "--timeout", "1", "--json")
    assert r.code == 3
    assert r.json() == {"error": {"code": "wait_timeout",
                                  "message": "request 7 is still WAITING after 1s"}}
