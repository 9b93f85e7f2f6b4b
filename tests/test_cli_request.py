"""`boruta request ...` against a fake client: what each command sends and prints."""
from __future__ import annotations

import os
import stat
import types
from datetime import datetime, timedelta, timezone

import pytest

from boruta.cli import request as request_cmd
from boruta.cli.access import ACQUIRE_TIMEOUT
from boruta.cli.session import RPC_TIMEOUT
from boruta.core.errors import (
    BorutaError,
    DeadlineInThePastError,
    NotFoundError,
    PriorityError,
    WrongSortItemError,
)
from boruta.core.types import ListInfo, Paginator, ReqState, RequestFilter, SortInfo
from boruta.transport.errors import ServerUnreachableError, WaitTimeoutError

pytest_plugins = ["cli_fake"]          # the fixtures `fake` and `run`
pytest.register_assert_rewrite("cli_fake")
from cli_fake import KEY, W1, access, req  # noqa: E402

# --------------------------------------------------------------------------- request new

def test_request_new_prints_the_id(run, fake):
    r = run("request", "new", "--caps", "device_type=rpi4", "--caps", "display=yes")
    assert r.code == 0, r
    assert r.out == "7\n"
    (args, kwargs), = fake.called("new_request")
    assert args == ({"device_type": "rpi4", "display": "yes"}, request_cmd.DEFAULT_PRIORITY)
    assert kwargs == {"valid_after": None, "deadline": None, "queue_unsatisfiable": False,
                      "lease": None, "expr": None}    # no --wait: the request outlives us


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
    assert set(doc) == {"id", "priority", "state", "caps", "owner", "valid_after", "deadline", "job",
                         "lease", "expr"}
    assert doc["valid_after"].endswith("Z")
    assert doc["owner"] == {"name": "alice", "groups": ["lab"]}
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
    assert args == (7,) and kwargs == {"timeout": ACQUIRE_TIMEOUT}


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
    assert fake.opened[-1][1] == RPC_TIMEOUT


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
    assert fake.called("acquire_worker") == [((7,), {"timeout": ACQUIRE_TIMEOUT})]


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
    assert fake.opened[-1][1] == RPC_TIMEOUT
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


# --------------------------------------------------------------------------- limits of the wire

ID_RANGE = "request IDs run from 1 to 9223372036854775807"
PRIORITY_RANGE = "priorities run from 1 (most important) to 16 (least)"
HUGE = "99999999999999999999"


@pytest.mark.parametrize("args, message", [
    (("request", "new", "--caps", "a=b", "--priority", HUGE),
     f"Invalid value for '--priority': {HUGE} is out of range: {PRIORITY_RANGE}."),
    (("request", "new", "--caps", "a=b", "--priority", "-" + HUGE),
     f"Invalid value for '--priority': -{HUGE} is out of range: {PRIORITY_RANGE}."),
    (("request", "show", "18446744073709551616"),
     f"Invalid value for 'ID': 18446744073709551616 is out of range: {ID_RANGE}."),
    (("request", "show", "9223372036854775808"),
     f"Invalid value for 'ID': 9223372036854775808 is out of range: {ID_RANGE}."),
    (("request", "list", "--limit", HUGE),
     f"Invalid value for '--limit': {HUGE} is out of range: a page holds 1 to 65535 items."),
    (("request", "list", "--after", HUGE),
     f"Invalid value for '--after': {HUGE} is out of range: {ID_RANGE}."),
    (("request", "list", "--id", HUGE),
     f"Invalid value for '--id': {HUGE} is out of range: {ID_RANGE}."),
    (("request", "list", "--priority", HUGE),
     f"Invalid value for '--priority': {HUGE} is out of range: {PRIORITY_RANGE}."),
    (("request", "update", "7", "--priority", HUGE),
     f"Invalid value for '--priority': {HUGE} is out of range: {PRIORITY_RANGE}."),
    (("request", "close", HUGE), f"Invalid value for 'ID': {HUGE} is out of range: {ID_RANGE}."),
    (("request", "acquire", HUGE), f"Invalid value for 'ID': {HUGE} is out of range: {ID_RANGE}."),
    (("request", "prolong", HUGE), f"Invalid value for 'ID': {HUGE} is out of range: {ID_RANGE}."),
    (("request", "wait", HUGE), f"Invalid value for 'ID': {HUGE} is out of range: {ID_RANGE}."),
    (("events", "--request", HUGE),
     f"Invalid value for '--request': {HUGE} is out of range: {ID_RANGE}."),
    (("request", "show", "²"), "Invalid value for 'ID': '²' is not a whole number."),
])
def test_an_integer_the_wire_cannot_carry_is_a_usage_error(run, fake, args, message):
    r = run(*args)
    assert r.code == 2, r
    assert r.out == "" and r.err.startswith(f"boruta: {message} See '"), r
    assert not fake.opened
    r = run(*args, "--json")
    assert r.code == 2 and r.json()["error"]["code"] == "usage"
    assert r.json()["error"]["message"].startswith(message)


def test_the_largest_id_and_priority_travel(run, fake):
    assert run("request", "show", "9223372036854775807").code == 0
    assert fake.called("get_request_info") == [((9223372036854775807,), {})]
    assert run("request", "new", "--caps", "a=b", "--priority", "-9223372036854775808").code == 0
    assert fake.called("new_request")[0][0][1] == -9223372036854775808


# --------------------------------------------------------------------------- waits for people

@pytest.mark.parametrize("timeout, shown", [("1", "1s"), ("2.5", "2.5s"), ("10m", "10m"),
                                            ("0.5", "0.5s"), ("90m", "1h30m")])
def test_wait_timeout_names_the_callers_timeout(run, fake, timeout, shown):
    fake.answers["wait_request"] = WaitTimeoutError("request 7 still WAITING after 0.999999s")
    r = run("request", "wait", "7", "--timeout", timeout)
    assert r.code == 3, r
    assert r.err == f"boruta: request 7 is still WAITING after {shown}.\n"


def test_wait_until_states_timeout_names_them(run, fake):
    fake.answers["wait_request"] = WaitTimeoutError("request 7 still IN PROGRESS after 9.999999s")
    r = run("request", "wait", "7", "--until", "done", "--until", "failed", "--timeout", "10",
            "--json")
    assert r.code == 3
    assert r.json() == {"error": {"code": "wait_timeout",
                                  "message": "request 7 is not yet DONE or FAILED after 10s"}}


def test_acquire_timeout_names_the_callers_timeout(run, fake):
    fake.answers["acquire_worker"] = WaitTimeoutError("request 7 still WAITING after 0.999999s")
    r = run("request", "acquire", "7", "--timeout", "1")
    assert r.code == 3 and r.err == "boruta: request 7 is still WAITING after 1s.\n"
    r = run("request", "new", "--caps", "a=b", "--wait", "--timeout", "2h")
    assert r.code == 3
    assert r.err == "boruta: request 7 is still WAITING after 2h (request 7 was created).\n"
