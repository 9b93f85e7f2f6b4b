"""The `boruta` command against a fake client: options, output shapes, exit codes.

The fake records every call and answers with real ReqInfo/WorkerInfo values
or raises real error classes, so what is checked here is the CLI's side of
shared/CLI.md; tests/test_cli_e2e.py runs the same commands against a server.
"""
from __future__ import annotations

import json
import os
import stat
import sys
import types
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from boruta.cli import app as cli
from boruta.core.errors import (
    BorutaError,
    DeadlineInThePastError,
    NotFoundError,
    PriorityError,
    WrongSortItemError,
)
from boruta.core.types import (
    AccessInfo,
    JobInfo,
    ListInfo,
    Paginator,
    ReqInfo,
    ReqState,
    RequestFilter,
    SortInfo,
    UserInfo,
    WorkerFilter,
    WorkerInfo,
    WorkerState,
)

try:
    from boruta.transport.client import ServerUnreachableError
except Exception:  # the client is not there yet: the CLI also judges by the code
    class ServerUnreachableError(BorutaError):  # type: ignore[no-redef]
        code = "unreachable"
        default_message = "the server did not answer"

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
W1 = "4f1a2b3c-0000-4000-8000-000000000001"
W2 = "4f1a2b3c-0000-4000-8000-000000000002"

KEY = """-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
-----END OPENSSH PRIVATE KEY-----"""


def req(id: int = 7, state: ReqState = ReqState.WAIT, priority: int = 4,
        worker: str | None = None, caps: dict | None = None) -> ReqInfo:
    return ReqInfo(
        id=id, priority=priority, owner=UserInfo(("lab",)),
        deadline=T0 + timedelta(days=1), valid_after=T0, state=state,
        job=JobInfo(worker, T0 + timedelta(hours=1)) if worker else None,
        caps=caps if caps is not None else {"device_type": "rpi4"})


def wrk(uuid: str = W1, state: WorkerState = WorkerState.IDLE, groups=("lab",),
        reason: str | None = None) -> WorkerInfo:
    return WorkerInfo(worker_uuid=uuid, state=state, groups=tuple(groups),
                      caps={"UUID": uuid, "device_type": "rpi4"}, fail_reason=reason)


def access(key: Any = KEY, key_type: str | None = "ssh-ed25519") -> Any:
    info = AccessInfo(username="boruta-user", key=key, worker_uuid=W1,
                      ssh_address="10.0.0.5:2222", addr=("10.0.0.5", 2222))
    if key_type is None:
        return types.SimpleNamespace(username=info.username, key=key, worker_uuid=W1,
                                     ssh_address=info.ssh_address, addr=info.addr)
    return types.SimpleNamespace(username=info.username, key=key, worker_uuid=W1,
                                 ssh_address=info.ssh_address, addr=info.addr,
                                 key_type=key_type)


class FakeClient:
    """Records calls; answers from `answers` (a value, an exception, or a callable)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []
        self.opened: list[tuple[str, float]] = []
        self.events_endpoints: list[str | None] = []
        self.closed = 0
        self.answers: dict[str, Any] = {
            "new_request": 7,
            "get_request_info": req(),
            "list_requests": ([req(7), req(8, ReqState.INPROGRESS, worker=W1)], ListInfo(2, 0)),
            "list_workers": ([wrk(W1), wrk(W2, WorkerState.FAIL, reason="board did not boot")],
                             ListInfo(2, 0)),
            "get_worker_info": wrk(),
            "acquire_worker": access(),
            "wait_request": req(state=ReqState.INPROGRESS, worker=W1),
            "events": [],
        }

    def open(self, endpoint: str, timeout: float, **kw: Any) -> "FakeClient":
        self.opened.append((endpoint, timeout))
        self.events_endpoints.append(kw.get("events_endpoint"))
        return self

    def close(self) -> None:
        self.closed += 1

    def called(self, name: str) -> list[tuple[tuple, dict]]:
        return [(a, k) for n, a, k in self.calls if n == name]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            answer = self.answers.get(name)
            if isinstance(answer, BaseException):
                raise answer
            if callable(answer):
                return answer(*args, **kwargs)
            return answer
        return call


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> Any:
        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"Result(code={self.code}, out={self.out!r}, err={self.err!r})"


@pytest.fixture
def fake(monkeypatch, tmp_path) -> FakeClient:
    client = FakeClient()
    monkeypatch.setattr(cli, "make_client", client.open)
    monkeypatch.delenv("BORUTA_SERVER", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return client


@pytest.fixture
def run(fake, capsys):
    def _run(*args: str) -> Result:
        code = cli.run(list(args))
        cap = capsys.readouterr()
        result = Result(code, cap.out, cap.err)
        assert "Traceback" not in cap.out + cap.err, result
        return result
    return _run


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
    assert fake.opened[-1][1] == cli.RPC_TIMEOUT


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
    ("worker", "set-state"), ("worker", "set-groups"), ("worker", "deregister"), ("events",),
    ("server",), ("dryad",), ("dryad", "init"), ("admin",), ("admin", "dump"),
    ("admin", "restore"),
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


# --------------------------------------------------------------------------- request new

def test_request_new_prints_the_id(run, fake):
    r = run("request", "new", "--caps", "device_type=rpi4", "--caps", "display=yes")
    assert r.code == 0, r
    assert r.out == "7\n"
    (args, kwargs), = fake.called("new_request")
    assert args == ({"device_type": "rpi4", "display": "yes"}, cli.DEFAULT_PRIORITY)
    assert kwargs == {"valid_after": None, "deadline": None, "queue_unsatisfiable": False}


def test_request_new_options(run, fake):
    before = datetime.now(timezone.utc)
    r = run("request", "new", "--caps", "a=b", "--priority", "2", "--valid-after", "+10m",
            "--deadline", "2026-12-01T10:00:00Z", "--queue-unsatisfiable")
    assert r.code == 0, r
    (args, kwargs), = fake.called("new_request")
    assert args == ({"a": "b"}, 2)
    assert kwargs["queue_unsatisfiable"] is True
    assert kwargs["deadline"] == datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)
    va = kwargs["valid_after"]
    assert va.tzinfo is not None
    assert before + timedelta(minutes=10) <= va <= datetime.now(timezone.utc) + timedelta(minutes=10)


def test_request_new_json_is_the_request(run, fake):
    r = run("request", "new", "--caps", "device_type=rpi4", "--json")
    assert r.code == 0, r
    doc = r.json()
    assert doc == req().to_dict()
    assert set(doc) == {"id", "priority", "state", "caps", "owner", "valid_after", "deadline", "job"}
    assert doc["valid_after"].endswith("Z") and doc["owner"] == {"groups": ["lab"]}
    assert fake.called("get_request_info") == [((7,), {})]


@pytest.mark.parametrize("args, what", [
    (("request", "new"), "--caps"),
    (("request", "new", "--caps", "novalue"), "KEY=VALUE"),
    (("request", "new", "--caps", "=x"), "key is empty"),
    (("request", "new", "--caps", "a=1", "--caps", "a=2"), "twice"),
    (("request", "new", "--caps", "a=1", "--deadline", "tomorrow"), "invalid time"),
    (("request", "new", "--caps", "a=1", "--valid-after", "+5"), "invalid time"),
    (("request", "new", "--caps", "a=1", "--priority", "high"), "--priority"),
    (("request", "new", "--caps", "a=1", "--key-out", "k"), "--wait"),
])
def test_request_new_usage_errors(run, fake, args, what):
    r = run(*args)
    assert r.code == 2, r
    assert what in r.err and r.out == ""
    assert r.err.count("\n") == 1
    assert not fake.called("new_request")
    r = run(*args, "--json")
    assert r.code == 2
    assert r.json()["error"]["code"] == "usage" and what in r.json()["error"]["message"]
    assert r.err == ""


def test_request_new_refused(run, fake):
    fake.answers["new_request"] = PriorityError()
    r = run("request", "new", "--caps", "a=1", "--priority", "0")
    assert r.code == 1
    assert r.err == "boruta: requested priority out of bounds.\n" and r.out == ""
    r = run("request", "new", "--caps", "a=1", "--priority", "0", "--json")
    assert r.code == 1
    assert r.json() == {"error": {"code": "bad_priority",
                                  "message": "requested priority out of bounds"}}


def test_request_new_wait(run, fake):
    r = run("request", "new", "--caps", "a=1", "--wait")
    assert r.code == 0, r
    lines = r.out.splitlines()
    assert lines[0] == "7"
    assert lines[-1] == "ssh -i ./boruta-7.key -p 2222 boruta-user@10.0.0.5"
    assert stat.S_IMODE(os.stat("boruta-7.key").st_mode) == 0o600
    (args, kwargs), = fake.called("acquire_worker")
    assert args == (7,) and kwargs == {"timeout": cli.ACQUIRE_TIMEOUT}


def test_request_new_wait_json(run, fake, tmp_path):
    fake.answers["get_request_info"] = req(state=ReqState.INPROGRESS, worker=W1)
    r = run("request", "new", "--caps", "a=1", "--wait", "--timeout", "30m", "--json",
            "--key-out", "my.key")
    assert r.code == 0, r
    doc = r.json()
    assert doc["id"] == 7 and doc["state"] == "IN PROGRESS"
    assert doc["access"] == {"host": "10.0.0.5", "port": 2222, "username": "boruta-user",
                             "key_file": str(tmp_path / "my.key"), "key_type": "ssh-ed25519"}
    assert fake.called("acquire_worker")[0][1] == {"timeout": 1800.0}
    assert fake.opened[-1][1] == cli.RPC_TIMEOUT


def test_request_new_wait_failure_keeps_the_id(run, fake):
    fake.answers["acquire_worker"] = ServerUnreachableError("the server did not answer")
    r = run("request", "new", "--caps", "a=1", "--wait", "--json")
    assert r.code == 3
    assert r.json()["error"]["code"] == "unreachable"
    assert r.json()["error"]["request_id"] == 7
    r = run("request", "new", "--caps", "a=1", "--wait")
    assert r.code == 3
    assert r.out == "7\n" and "request 7" in r.err


# --------------------------------------------------------------------------- request list

def test_request_list_table(run, fake):
    r = run("request", "list")
    assert r.code == 0, r
    lines = r.out.splitlines()
    assert lines[0].split() == ["ID", "PRIORITY", "STATE", "WORKER", "VALID", "AFTER",
                                "DEADLINE", "CAPS"]
    assert lines[1].split()[:3] == ["7", "4", "WAITING"]
    assert "IN PROGRESS" in lines[2] and W1 in lines[2]
    assert "device_type=rpi4" in lines[1]
    assert "\x1b[" not in r.out
    assert fake.called("list_requests") == [((None, None, None), {})]


def test_request_list_json(run, fake):
    r = run("request", "list", "--json")
    doc = r.json()
    assert doc == {"items": [req(7).to_dict(), req(8, ReqState.INPROGRESS, worker=W1).to_dict()],
                   "total": 2, "remaining": 0}


def test_request_list_filter_sort_page(run, fake):
    r = run("request", "list", "--state", "wait", "--state", "IN PROGRESS", "--priority", "3",
            "--id", "7", "--id", "9", "--sort", "priority:desc", "--limit", "20",
            "--after", "5", "--backward")
    assert r.code == 0, r
    (args, _), = fake.called("list_requests")
    assert args == (RequestFilter(ids=(7, 9), priorities=(3,),
                                  states=(ReqState.WAIT, ReqState.INPROGRESS)),
                    SortInfo("priority", True), Paginator(5, True, 20))


def test_request_list_limit_only(run, fake):
    run("request", "list", "--limit", "1")
    assert fake.called("list_requests")[0][0] == (None, None, Paginator(0, False, 1))


def test_request_list_more_pages_hint(run, fake):
    fake.answers["list_requests"] = ([req(7)], ListInfo(5, 4))
    r = run("request", "list", "--limit", "1")
    assert "1 of 5 requests shown, 4 more" in r.out and "--after 7" in r.out
    assert run("request", "list", "--json").json()["remaining"] == 4


def test_request_list_empty(run, fake):
    fake.answers["list_requests"] = ([], ListInfo(0, 0))
    r = run("request", "list")
    assert r.code == 0 and r.out == "No requests.\n"
    assert run("request", "list", "--json").json() == {"items": [], "total": 0, "remaining": 0}


@pytest.mark.parametrize("args", [
    ("--state", "bogus"), ("--sort", "id:sideways"), ("--limit", "0"), ("--limit", "70000"),
    ("--after", "x"), ("--id", "-1"), ("--priority", "p"),
])
def test_request_list_usage_errors(run, fake, args):
    r = run("request", "list", *args)
    assert r.code == 2, r
    assert not fake.opened


def test_request_list_server_refuses_sort(run, fake):
    fake.answers["list_requests"] = WrongSortItemError()
    r = run("request", "list", "--sort", "colour", "--json")
    assert r.code == 1
    assert r.json()["error"]["code"] == "wrong_sort_item"


# --------------------------------------------------------------------------- show/update/close

def test_request_show(run, fake):
    fake.answers["get_request_info"] = req(state=ReqState.INPROGRESS, worker=W1)
    r = run("request", "show", "7")
    assert r.code == 0
    assert "IN PROGRESS" in r.out and W1 in r.out and "2026-03-01T13:00:00Z" in r.out
    doc = run("request", "show", "7", "--json").json()
    assert doc["job"] == {"worker_uuid": W1, "timeout": "2026-03-01T13:00:00Z"}


def test_request_show_not_found(run, fake):
    fake.answers["get_request_info"] = NotFoundError("Request")
    r = run("request", "show", "99")
    assert r.code == 1 and r.out == ""
    assert r.err == "boruta: Request not found.\n"
    r = run("--json", "request", "show", "99")
    assert r.code == 1 and r.err == ""
    assert r.json() == {"error": {"code": "not_found", "message": "Request not found"}}


@pytest.mark.parametrize("arg", ["x", "0", "-3", "1.5"])
def test_request_show_bad_id(run, fake, arg):
    assert run("request", "show", arg).code == 2


def test_request_update(run, fake):
    r = run("request", "update", "7", "--priority", "2", "--deadline", "2026-12-01T10:00:00Z")
    assert r.code == 0 and r.out == "Request 7 updated.\n"
    (args, kwargs), = fake.called("update_request")
    assert args == (7,)
    assert kwargs == {"priority": 2, "valid_after": None,
                      "deadline": datetime(2026, 12, 1, 10, tzinfo=timezone.utc)}
    assert run("request", "update", "7", "--priority", "2", "--json").json()["id"] == 7


def test_request_update_nothing(run, fake):
    r = run("request", "update", "7")
    assert r.code == 2 and "nothing to update" in r.err


def test_request_update_refused(run, fake):
    fake.answers["update_request"] = DeadlineInThePastError()
    r = run("request", "update", "7", "--deadline", "2000-01-01T00:00:00Z", "--json")
    assert r.code == 1 and r.json()["error"]["code"] == "deadline_in_the_past"


def test_request_close(run, fake):
    r = run("request", "close", "7")
    assert r.code == 0 and r.out == "Request 7 closed.\n"
    assert fake.called("close_request") == [((7,), {})]
    fake.answers["get_request_info"] = req(state=ReqState.CANCEL)
    assert run("request", "close", "7", "--json").json()["state"] == "CANCELLED"


def test_close_json_when_read_back_fails(run, fake):
    fake.answers["get_request_info"] = NotFoundError("Request")
    r = run("request", "close", "7", "--json")
    assert r.code == 0 and r.json() == {"id": 7}


def test_request_prolong(run, fake):
    fake.answers["get_request_info"] = req(state=ReqState.INPROGRESS, worker=W1)
    r = run("request", "prolong", "7")
    assert r.code == 0
    assert r.out == "Request 7 prolonged; its job now ends at 2026-03-01T13:00:00Z.\n"
    assert fake.called("prolong_access") == [((7,), {})]
    assert run("request", "prolong", "7", "--json").json()["job"]["worker_uuid"] == W1


# --------------------------------------------------------------------------- acquire

def test_acquire_writes_the_key_0600(run, fake, tmp_path):
    r = run("request", "acquire", "7")
    assert r.code == 0, r
    path = tmp_path / "boruta-7.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == KEY + "\n"
    assert r.out.splitlines() == [
        f"Request 7 is IN PROGRESS on worker {W1}.",
        "Address:  10.0.0.5:2222",
        "User:     boruta-user",
        "Key:      ./boruta-7.key (ssh-ed25519)",
        "ssh -i ./boruta-7.key -p 2222 boruta-user@10.0.0.5",
    ]
    assert fake.called("acquire_worker") == [((7,), {"timeout": cli.ACQUIRE_TIMEOUT})]


def test_acquire_json(run, fake, tmp_path):
    (tmp_path / "k").mkdir()
    r = run("request", "acquire", "7", "--json", "--key-out", "k/job.key")
    assert r.code == 0, r
    doc = r.json()
    assert doc == {"host": "10.0.0.5", "port": 2222, "username": "boruta-user",
                   "key_file": str(tmp_path / "k" / "job.key"), "key_type": "ssh-ed25519"}
    assert stat.S_IMODE(os.stat(doc["key_file"]).st_mode) == 0o600


def test_acquire_replaces_an_open_key_file(run, fake, tmp_path):
    path = tmp_path / "boruta-7.key"
    path.write_text("old")
    path.chmod(0o644)
    assert run("request", "acquire", "7").code == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == KEY + "\n"


def test_acquire_timeout_is_the_wait(run, fake):
    assert run("request", "acquire", "7", "--timeout", "10m").code == 0
    assert fake.called("acquire_worker")[-1][1] == {"timeout": 600.0}
    assert fake.opened[-1][1] == cli.RPC_TIMEOUT
    assert run("--timeout", "0.5", "request", "acquire", "7").code == 0
    assert fake.called("acquire_worker")[-1][1] == {"timeout": 0.5}
    assert fake.opened[-1][1] == 0.5


def test_acquire_key_type_guessed(run, fake):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
    ed = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()).decode()
    fake.answers["acquire_worker"] = access(key=ed, key_type=None)
    assert run("request", "acquire", "7", "--json").json()["key_type"] == "ssh-ed25519"
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    fake.answers["acquire_worker"] = access(key=rsa_key, key_type="")
    doc = run("request", "acquire", "7", "--json").json()
    assert doc["key_type"] == "ssh-rsa"
    text = open(doc["key_file"]).read()
    assert text.startswith("-----BEGIN OPENSSH PRIVATE KEY-----") and text.endswith("\n")


def test_acquire_address_from_ssh_address(run, fake):
    fake.answers["acquire_worker"] = types.SimpleNamespace(
        username="u", key=KEY.encode(), worker_uuid=W1, ssh_address="[::1]:2200", addr=None,
        key_type="ssh-rsa")
    r = run("request", "acquire", "7")
    assert r.code == 0, r
    assert "Address:  [::1]:2200" in r.out
    assert r.out.splitlines()[-1] == "ssh -i ./boruta-7.key -p 2200 u@::1"


def test_acquire_key_out_quoted_in_ssh_line(run, fake, tmp_path):
    r = run("request", "acquire", "7", "--key-out", "my key")
    assert r.code == 0, r
    assert r.out.splitlines()[-1] == "ssh -i 'my key' -p 2222 boruta-user@10.0.0.5"


@pytest.mark.parametrize("key_out", ["nodir/x.key", "."])
def test_acquire_bad_key_out(run, fake, key_out):
    r = run("request", "acquire", "7", "--key-out", key_out)
    assert r.code == 2 and "--key-out" in r.err
    assert not fake.called("acquire_worker")


def test_acquire_refused_and_unreachable(run, fake):
    fake.answers["acquire_worker"] = BorutaError("request is in a terminal state")
    r = run("request", "acquire", "7")
    assert r.code == 1 and "terminal state" in r.err
    assert not os.path.exists("boruta-7.key")
    fake.answers["acquire_worker"] = ServerUnreachableError("the server did not answer")
    r = run("request", "acquire", "7", "--json")
    assert r.code == 3 and r.json()["error"]["code"] == "unreachable"
    fake.answers["acquire_worker"] = TimeoutError("waited 5 s")
    r = run("request", "acquire", "7", "--json")
    assert r.code == 3 and r.json()["error"]["code"] == "timeout"


def test_acquire_empty_key(run, fake):
    fake.answers["acquire_worker"] = access(key="")
    r = run("request", "acquire", "7")
    assert r.code == 1 and "empty private key" in r.err


# --------------------------------------------------------------------------- wait

def test_request_wait(run, fake):
    r = run("request", "wait", "7")
    assert r.code == 0 and "IN PROGRESS" in r.out
    assert fake.called("wait_request") == [((7,), {"states": None, "timeout": None})]
    r = run("request", "wait", "7", "--until", "done", "--until", "failed", "--timeout", "2h",
            "--json")
    assert r.json()["state"] == "IN PROGRESS"
    assert fake.called("wait_request")[-1] == (
        (7,), {"states": [ReqState.DONE, ReqState.FAILED], "timeout": 7200.0})


def test_request_wait_bad_state(run, fake):
    r = run("request", "wait", "7", "--until", "soon")
    assert r.code == 2 and "unknown request state" in r.err


def test_request_wait_times_out(run, fake):
    fake.answers["wait_request"] = ServerUnreachableError("no answer within 1 s")
    r = run("request", "wait", "7", "--timeout", "1")
    assert r.code == 3 and r.err == "boruta: no answer within 1 s.\n"


# --------------------------------------------------------------------------- workers

def test_worker_list_table(run, fake):
    r = run("worker", "list")
    assert r.code == 0, r
    lines = r.out.splitlines()
    assert lines[0].split() == ["UUID", "STATE", "GROUPS", "CAPS", "FAIL", "REASON"]
    assert lines[1].split() == [W1, "IDLE", "lab", "device_type=rpi4", "-"]
    assert "board did not boot" in lines[2]
    assert fake.called("list_workers") == [((None, None, None), {})]


def test_worker_list_json(run, fake):
    doc = run("worker", "list", "--json").json()
    assert doc["total"] == 2 and doc["remaining"] == 0
    assert doc["items"][0] == {"uuid": W1, "state": "IDLE", "groups": ["lab"],
                               "caps": {"UUID": W1, "device_type": "rpi4"}, "fail_reason": None}
    assert doc["items"][1]["fail_reason"] == "board did not boot"


def test_worker_list_filter_sort_page(run, fake):
    r = run("worker", "list", "--state", "idle", "--state", "fail", "--caps", "a=1",
            "--group", "lab", "--group", "ci", "--sort", "state", "--limit", "3",
            "--after", W1)
    assert r.code == 0, r
    (args, _), = fake.called("list_workers")
    assert args == (WorkerFilter(groups=("lab", "ci"), caps={"a": "1"},
                                 states=(WorkerState.IDLE, WorkerState.FAIL)),
                    SortInfo("state", False), Paginator(W1, False, 3))
    run("worker", "list", "--backward")
    assert fake.called("list_workers")[-1][0][2] == Paginator("", True, 0)


def test_worker_list_usage_errors(run, fake):
    assert run("worker", "list", "--state", "waiting").code == 2
    assert run("worker", "list", "--caps", "x").code == 2
    assert run("worker", "list", "--after", "").code == 2
    assert not fake.opened


def test_worker_show(run, fake):
    fake.answers["get_worker_info"] = wrk(state=WorkerState.FAIL, reason="no power")
    r = run("worker", "show", W1)
    assert r.code == 0 and "FAILED" in r.out and "no power" in r.out
    assert fake.called("get_worker_info") == [((W1,), {})]
    assert run("worker", "show", W1, "--json").json()["fail_reason"] == "no power"
    fake.answers["get_worker_info"] = NotFoundError("Worker")
    r = run("worker", "show", W2, "--json")
    assert r.code == 1 and r.json()["error"] == {"code": "not_found",
                                                 "message": "Worker not found"}


@pytest.mark.parametrize("text, state", [("idle", WorkerState.IDLE),
                                         ("MAINTENANCE", WorkerState.MAINTENANCE),
                                         ("Maintenance", WorkerState.MAINTENANCE)])
def test_worker_set_state(run, fake, text, state):
    r = run("worker", "set-state", W1, text)
    assert r.code == 0 and r.out == f"Worker {W1} set to {state}.\n"
    assert fake.called("set_state") == [((W1, state), {})]


def test_worker_set_state_json_and_errors(run, fake):
    fake.answers["get_worker_info"] = wrk(state=WorkerState.MAINTENANCE)
    assert run("worker", "set-state", W1, "maintenance", "--json").json()["state"] == "MAINTENANCE"
    r = run("worker", "set-state", W1, "running")
    assert r.code == 2 and "IDLE or MAINTENANCE" in r.err
    r = run("worker", "set-state", W1)
    assert r.code == 2


def test_worker_set_groups(run, fake):
    r = run("worker", "set-groups", W1, "lab", "ci")
    assert r.code == 0 and r.out == f"Worker {W1} is now in lab, ci.\n"
    assert fake.called("set_groups") == [((W1, ["lab", "ci"]), {})]
    r = run("worker", "set-groups", W1)
    assert r.code == 0 and "no group" in r.out
    assert fake.called("set_groups")[-1] == ((W1, []), {})
    assert run("worker", "set-groups", W1, "x", "--json").json()["uuid"] == W1


def test_worker_deregister(run, fake):
    r = run("worker", "deregister", W1)
    assert r.code == 0 and r.out == f"Worker {W1} deregistered.\n"
    assert fake.called("deregister") == [((W1,), {})]
    assert run("worker", "deregister", W1, "--json").json() == {"uuid": W1, "deregistered": True}


# --------------------------------------------------------------------------- events

EVENTS = [
    {"kind": "request", "id": 7, "state": ReqState.INPROGRESS, "at": T0, "worker_uuid": W1},
    {"kind": "worker", "uuid": W1, "state": "RUNNING", "at": "2026-03-01T12:00:01Z"},
]


def test_events_json_lines(run, fake):
    fake.answers["events"] = iter(EVENTS)
    r = run("events", "--request", "7", "--json")
    assert r.code == 0, r
    lines = r.out.splitlines()
    assert [json.loads(line) for line in lines] == [
        {"kind": "request", "id": 7, "state": "IN PROGRESS", "at": "2026-03-01T12:00:00Z",
         "worker_uuid": W1},
        {"kind": "worker", "uuid": W1, "state": "RUNNING", "at": "2026-03-01T12:00:01Z"},
    ]
    assert fake.called("events") == [((), {"request_id": 7, "worker_uuid": None})]


def test_events_human(run, fake):
    fake.answers["events"] = iter(EVENTS)
    r = run("events", "--worker", W1)
    assert r.code == 0
    assert r.out.splitlines() == [
        f"2026-03-01T12:00:00Z  request  7  IN PROGRESS  worker_uuid={W1}",
        f"2026-03-01T12:00:01Z  worker  {W1}  RUNNING",
    ]


def test_events_until_interrupted(run, fake):
    def stream(**_: Any):
        yield EVENTS[0]
        raise KeyboardInterrupt
    fake.answers["events"] = stream
    r = run("events")
    assert r.code == 0 and len(r.out.splitlines()) == 1
    assert fake.closed == 2                   # the one that asked where, the one that followed


@pytest.mark.parametrize("reported, client, expected", [
    ("tcp://127.0.0.1:27177", "tcp://127.0.0.1:27175", "tcp://127.0.0.1:27177"),
    ("tcp://0.0.0.0:7177", "tcp://farm.example.com:7175", "tcp://farm.example.com:7177"),
    ("tcp://*:7300", "tcp://10.1.2.3:7175", "tcp://10.1.2.3:7300"),
    ("tcp://[::]:7177", "tcp://[::1]:7175", "tcp://[::1]:7177"),
    ("tcp://*:*", "tcp://h:7175", None),
    ("tcp://0.0.0.0:7177", "ipc:///run/boruta.sock", None),
    ("ipc:///run/events.sock", "ipc:///run/boruta.sock", "ipc:///run/events.sock"),
    (None, "tcp://h:7175", None),
    (7177, "tcp://h:7175", None),
])
def test_connectable_events_endpoint(reported, client, expected):
    assert cli.connectable_events_endpoint(reported, client) == expected


def test_events_asks_the_server_where_the_stream_is(run, fake):
    fake.answers["ping"] = {"endpoints": {"events": "tcp://0.0.0.0:27177"}}
    fake.answers["events"] = iter(EVENTS[:1])
    r = run("events", "--server", "tcp://farm:27175", "--json")
    assert r.code == 0, r
    assert fake.events_endpoints == [None, "tcp://farm:27177"]
    assert fake.closed == 2


def test_events_with_a_server_that_does_not_say(run, fake):
    fake.answers["ping"] = BorutaError("unknown operation")
    fake.answers["events"] = iter(EVENTS[:1])
    assert run("events").code == 0
    assert fake.events_endpoints == [None, None]


def test_events_server_unreachable_at_ping(run, fake):
    fake.answers["ping"] = ServerUnreachableError("the server did not answer")
    r = run("events")
    assert r.code == 3
    assert not fake.called("events")


def test_events_unreachable(run, fake):
    def stream(**_: Any):
        raise ServerUnreachableError("the server did not answer")
        yield  # pragma: no cover
    fake.answers["events"] = stream
    r = run("events", "--json")
    assert r.code == 3 and r.json()["error"]["code"] == "unreachable"


# --------------------------------------------------------------------------- errors in general

def test_unexpected_exception_is_one_sentence(run, fake):
    fake.answers["list_requests"] = RuntimeError("boom")
    r = run("request", "list")
    assert r.code == 1
    assert r.err == "boruta: internal error (RuntimeError): boom.\n"
    r = run("request", "list", "--json")
    assert r.json()["error"]["code"] == "internal"


def test_missing_client_module_is_reported(run, fake, monkeypatch):
    def broken(endpoint: str, timeout: float, **kw: Any) -> Any:
        raise ImportError("No module named 'boruta.transport.client'")
    monkeypatch.setattr(cli, "make_client", broken)
    r = run("request", "list")
    assert r.code == 1 and r.err.startswith("boruta: internal error")


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


@pytest.mark.parametrize("args", [
    ("request", "new", "--caps", "a=\x00"), ("request", "show", "99999999999999999999999"),
    ("request", "list", "--sort", ":"), ("request", "list", "--after", "1e9"),
    ("worker", "show", " "), ("events", "--request", "x"), ("request", "new", "--caps"),
    ("--timeout", "nan", "request", "list"), ("request", "wait", "1", "--until", ""),
    ("request", "update", "1", "--valid-after", "+1000000000000d"),
    ("worker", "set-groups"), ("--server", "", "request", "list"), ("request", "new", "--wait"),
])
def test_odd_inputs_never_trace_back(run, fake, args):
    r = run(*args)
    assert r.code in (0, 1, 2, 3), r


# --------------------------------------------------------------------------- server

@pytest.fixture
def fake_server(monkeypatch):
    seen: dict[str, Any] = {}
    config_mod = types.ModuleType("boruta.server.config")
    server_mod = types.ModuleType("boruta.server.app")

    def load_server_config(path, overrides):
        seen["path"], seen["overrides"] = path, dict(overrides)
        if seen.get("bad_config"):
            raise ValueError("listen: 'x' is not a ZeroMQ endpoint (tcp://HOST:PORT)")
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
    class WaitTimeout(BorutaError):
        code = "wait_timeout"
        default_message = "timeout passed while waiting"
    fake.answers["wait_request"] = WaitTimeout()
    r = run("request", "wait", "7", "--timeout", "1", "--json")
    assert r.code == 3
    assert r.json() == {"error": {"code": "wait_timeout",
                                  "message": "timeout passed while waiting"}}
