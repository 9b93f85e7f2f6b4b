"""`boruta worker ...` and `boruta events` against a fake client."""
from __future__ import annotations

import json
from typing import Any

import pytest

from boruta.core.errors import BorutaError, NotFoundError
from boruta.core.types import Paginator, ReqState, SortInfo, WorkerFilter, WorkerState
from boruta.transport.addresses import connectable_endpoint
from boruta.transport.errors import DryadError, ServerUnreachableError

pytest_plugins = ["cli_fake"]          # the fixtures `fake` and `run`
pytest.register_assert_rewrite("cli_fake")
from cli_fake import T0, W1, W2, wrk  # noqa: E402

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
                               "caps": {"UUID": W1, "device_type": "rpi4"}, "fail_reason": None,
                               "dryad_address": "10.0.0.5:7176", "ssh_address": "10.0.0.5:22"}
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


def test_worker_show_json_has_the_addresses(run, fake):
    r = run("worker", "show", W1, "--json")
    assert r.code == 0, r
    assert r.json() == {"uuid": W1, "state": "IDLE", "groups": ["lab"],
                        "caps": {"UUID": W1, "device_type": "rpi4"}, "fail_reason": None,
                        "dryad_address": "10.0.0.5:7176", "ssh_address": "10.0.0.5:22"}
    text = run("worker", "show", W1).out.splitlines()
    assert text[-2:] == ["Dryad        10.0.0.5:7176", "SSH          10.0.0.5:22"]
    fake.answers["get_worker_info"] = wrk(dryad_address=None, ssh_address=None)
    doc = run("worker", "show", W1, "--json").json()
    assert doc["dryad_address"] is None and doc["ssh_address"] is None


def test_worker_healthcheck(run, fake):
    r = run("worker", "healthcheck", W1)
    assert r.code == 0 and r.out == f"Worker {W1} passed its healthcheck.\n" and r.err == ""
    assert fake.called("healthcheck") == [((W1,), {})]
    assert run("worker", "healthcheck", W1, "--json").json() == {"uuid": W1, "healthy": True}


def test_worker_healthcheck_failure_names_the_reason(run, fake):
    fake.answers["healthcheck"] = DryadError("healthcheck failed: board did not answer")
    r = run("worker", "healthcheck", W1)
    assert r.code == 1 and r.out == ""
    assert r.err == "boruta: healthcheck failed: board did not answer.\n"
    r = run("worker", "healthcheck", W1, "--json")
    assert r.code == 1
    assert r.json() == {"error": {"code": "dryad_error",
                                  "message": "healthcheck failed: board did not answer"}}
    fake.answers["healthcheck"] = NotFoundError("Worker")
    assert run("worker", "healthcheck", W2).err == "boruta: Worker not found.\n"
    assert run("worker", "healthcheck", " ").code == 2


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
    assert connectable_endpoint(reported, client) == expected


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
