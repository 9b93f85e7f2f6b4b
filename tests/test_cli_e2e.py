"""End to end: the real `boruta` command (a subprocess) against a real server and simulated dryads."""
from __future__ import annotations

import json
import os
import queue
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from boruta import __version__ as BORUTA_VERSION
from boruta.core.errors import BorutaError
from e2e_helpers import (ROOT, ServerProcess, child_env, shared_server,  # noqa: F401
                         unique_caps, wait_until)

pytestmark = pytest.mark.slow


class Run:
    def __init__(self, proc: subprocess.CompletedProcess[str], elapsed: float) -> None:
        self.code, self.out, self.err, self.elapsed = proc.returncode, proc.stdout, proc.stderr, elapsed

    def json(self) -> Any:
        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"Run(code={self.code}, out={self.out!r}, err={self.err!r})"


def _env(server: str | None, cwd: Path, client_config: Path | None = None) -> dict[str, str]:
    env = dict(child_env(), HOME=str(cwd))        # no client.toml of the person running tests
    if client_config is not None:                 # the test server's admin: its keys
        env["BORUTA_CLIENT_CONFIG"] = str(client_config)
    env.pop("BORUTA_SERVER", None)
    if server is not None:
        env["BORUTA_SERVER"] = server
    return env


def boruta(*args: str, server: str | None, cwd: Path, timeout: float = 60.0,
           client_config: Path | None = None) -> Run:
    env = _env(server, cwd, client_config)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "boruta.cli", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout)
    run = Run(proc, time.monotonic() - start)
    assert "Traceback" not in run.out + run.err, run
    return run


@pytest.fixture
def cli(shared_server: ServerProcess, tmp_path: Path):
    def _cli(*args: str, **kw: Any) -> Run:
        return boruta(*args, server=shared_server.listen, cwd=tmp_path,
                      client_config=shared_server.client_config, **kw)
    return _cli


def _idle(cli, uuid: str, client) -> None:
    r = cli("worker", "set-state", uuid, "idle")
    assert r.code == 0, r
    wait_until(lambda: str(client.get_worker_info(uuid).state) in ("IDLE", "RUNNING"), 5.0,
               what=f"{uuid} IDLE")


def test_worker_list_json(shared_server: ServerProcess, cli) -> None:
    caps = unique_caps()
    farm = shared_server.farm(2, caps=caps)
    uuids = sorted(d.uuid for d in farm.dryads)

    r = cli("worker", "list", "--json", "--caps", f"device_type={caps['device_type']}")
    assert r.code == 0, r
    doc = r.json()
    assert set(doc) == {"items", "total", "remaining"}
    assert doc["total"] == 2 and doc["remaining"] == 0
    assert sorted(w["uuid"] for w in doc["items"]) == uuids
    for item in doc["items"]:
        assert item["state"] == "MAINTENANCE"
        assert item["caps"]["device_type"] == caps["device_type"]
        assert {"uuid", "state", "groups", "caps", "fail_reason"} <= set(item)

    r = cli("--json", "worker", "list", "--caps", f"device_type={caps['device_type']}",
            "--limit", "1", "--sort", "uuid:desc")
    assert r.code == 0, r
    assert [w["uuid"] for w in r.json()["items"]] == [uuids[-1]]
    assert r.json()["remaining"] == 1

    r = cli("worker", "list", "--caps", f"device_type={caps['device_type']}")
    assert r.code == 0 and r.out.splitlines()[0].split()[:2] == ["UUID", "STATE"]
    assert all(u in r.out for u in uuids)


def test_request_new_acquire_close(shared_server: ServerProcess, cli, tmp_path: Path) -> None:
    caps = unique_caps()
    farm = shared_server.farm(1, caps=caps)
    client = shared_server.client()
    uuid = farm.dryads[0].uuid
    _idle(cli, uuid, client)

    r = cli("request", "new", "--caps", f"device_type={caps['device_type']}", "--priority", "4")
    assert r.code == 0, r
    req_id = int(r.out.strip())

    r = cli("request", "acquire", str(req_id), "--timeout", "20")
    assert r.code == 0, r
    key = tmp_path / f"boruta-{req_id}.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "OPENSSH PRIVATE KEY" in key.read_text() and key.read_text().endswith("\n")
    lines = r.out.splitlines()
    assert lines[0] == f"Request {req_id} is IN PROGRESS on worker {uuid}."
    assert "User:     boruta-user" in lines
    ssh = lines[-1].split()
    assert ssh[:3] == ["ssh", "-i", f"./boruta-{req_id}.key"] and ssh[3] == "-p"
    assert int(ssh[4]) > 0 and ssh[5] == "boruta-user@127.0.0.1"

    r = cli("request", "acquire", str(req_id), "--json", "--key-out", "again.key")
    assert r.code == 0, r
    doc = r.json()
    assert doc == {"host": "127.0.0.1", "port": int(ssh[4]), "username": "boruta-user",
                   "key_file": str(tmp_path / "again.key"), "key_type": "ssh-ed25519"}
    assert stat.S_IMODE((tmp_path / "again.key").stat().st_mode) == 0o600

    r = cli("request", "show", str(req_id), "--json")
    assert r.code == 0, r
    assert r.json()["state"] == "IN PROGRESS" and r.json()["job"]["worker_uuid"] == uuid

    r = cli("request", "close", str(req_id))
    assert r.code == 0 and r.out == f"Request {req_id} closed.\n", r
    r = cli("request", "show", str(req_id), "--json")
    assert r.json()["state"] == "DONE"
    r = cli("request", "prolong", str(req_id), "--json")
    assert r.code == 1 and r.json()["error"]["code"]


def test_request_new_wait_json(shared_server: ServerProcess, cli, tmp_path: Path) -> None:
    caps = unique_caps()
    farm = shared_server.farm(1, caps=caps)
    _idle(cli, farm.dryads[0].uuid, shared_server.client())
    r = cli("request", "new", "--caps", f"device_type={caps['device_type']}", "--wait",
            "--no-lease", "--timeout", "20", "--json")      # prints, then exits: no hold
    assert r.code == 0, r
    doc = r.json()
    assert doc["state"] == "IN PROGRESS" and doc["caps"] == caps
    assert doc["access"]["key_file"] == str(tmp_path / f"boruta-{doc['id']}.key")
    assert stat.S_IMODE(os.stat(doc["access"]["key_file"]).st_mode) == 0o600
    r = cli("request", "wait", str(doc["id"]), "--until", "inprogress", "--json")
    assert r.code == 0 and r.json()["id"] == doc["id"]
    assert cli("request", "close", str(doc["id"])).code == 0


def test_server_refusals(cli) -> None:
    r = cli("request", "show", "987654321", "--json")
    assert r.code == 1 and r.json()["error"]["code"] == "not_found", r
    r = cli("request", "new", "--caps", "device_type=no-such-board-anywhere")
    assert r.code == 1 and r.out == "" and r.err.startswith("boruta: "), r
    r = cli("request", "list", "--sort", "colour", "--json")
    assert r.code == 1 and r.json()["error"]["code"] == "wrong_sort_item", r
    r = cli("request", "new", "--caps", "a=b", "--deadline", "whenever")
    assert r.code == 2, r
    r = cli("request", "show", "18446744073709551616")
    assert r.code == 2 and "out of range: request IDs run from 1 to" in r.err, r
    r = cli("request", "new", "--caps", "a=b", "--priority", "99999999999999999999", "--json")
    assert r.code == 2 and r.json()["error"]["code"] == "usage", r


def test_ping(shared_server: ServerProcess, cli) -> None:
    r = cli("ping", "--json")
    assert r.code == 0, r
    doc = r.json()
    assert doc["server"] == BORUTA_VERSION and doc["protocol"] == 1
    assert doc["endpoints"]["listen"] == shared_server.listen
    assert doc["endpoints"]["events"] == shared_server.events
    r = cli("ping")
    assert r.code == 0 and r.out.splitlines()[0] == f"Server     {BORUTA_VERSION}", r


def test_worker_show_json_has_the_addresses(shared_server: ServerProcess, cli) -> None:
    farm = shared_server.farm(1, caps=unique_caps())
    uuid = farm.dryads[0].uuid
    r = cli("worker", "show", uuid, "--json")
    assert r.code == 0, r
    doc = r.json()
    assert doc["uuid"] == uuid
    assert doc["dryad_address"] == "127.0.0.1:7175" and doc["ssh_address"] == "127.0.0.1:22"
    items = cli("worker", "list", "--json", "--caps", f"UUID={uuid}").json()["items"]
    assert items == [doc]


def test_worker_healthcheck(shared_server: ServerProcess, cli) -> None:
    farm = shared_server.farm(1, caps=unique_caps())
    dryad = farm.dryads[0]
    r = cli("worker", "healthcheck", dryad.uuid)
    assert r.code == 0 and r.out == f"Worker {dryad.uuid} passed its healthcheck.\n", r
    _idle(cli, dryad.uuid, shared_server.client())
    dryad.fail_healthcheck = "the board has no power"
    r = cli("worker", "healthcheck", dryad.uuid, "--json")
    assert r.code == 1, r
    error = r.json()["error"]
    assert error["code"] == "dryad_error" and "the board has no power" in error["message"]
    shown = cli("worker", "show", dryad.uuid, "--json").json()
    assert shown["state"] == "FAILED" and "the board has no power" in shown["fail_reason"]


def test_request_wait_timeout_is_said_for_people(cli) -> None:
    caps = unique_caps()
    r = cli("request", "new", "--caps", f"device_type={caps['device_type']}",
            "--queue-unsatisfiable")
    assert r.code == 0, r
    req_id = int(r.out)
    r = cli("request", "wait", str(req_id), "--timeout", "1")
    assert r.code == 3 and r.err == f"boruta: request {req_id} is still WAITING after 1s.\n", r
    r = cli("request", "acquire", str(req_id), "--timeout", "0.5", "--json")
    assert r.code == 3, r
    assert r.json()["error"] == {"code": "wait_timeout",
                                 "message": f"request {req_id} is still WAITING after 0.5s"}
    assert cli("request", "close", str(req_id)).code == 0


def test_unreachable_server_is_exit_3_fast(tmp_path: Path) -> None:
    with socket.socket() as s:                     # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = f"tcp://127.0.0.1:{port}"
    r = boruta("--timeout", "0.5", "request", "list", server=server, cwd=tmp_path, timeout=30)
    assert r.code == 3, r
    assert r.out == "" and r.err.startswith("boruta: ") and r.err.count("\n") == 1
    assert r.elapsed < 10, r.elapsed
    r = boruta("request", "list", "--json", "--timeout", "0.5", "--server", server,
               server=None, cwd=tmp_path, timeout=30)
    assert r.code == 3 and r.json()["error"]["code"] == "unreachable", r


def test_events_json_lines_until_interrupted(shared_server: ServerProcess, tmp_path: Path) -> None:
    caps = unique_caps()
    farm = shared_server.farm(1, caps=caps)
    uuid = farm.dryads[0].uuid
    client = shared_server.client()
    proc = subprocess.Popen([sys.executable, "-m", "boruta.cli", "events", "--worker", uuid,
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path, env=_env(shared_server.listen, tmp_path,
                                                            shared_server.client_config))
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        first = None
        deadline = time.monotonic() + 20
        states = ["IDLE", "MAINTENANCE"]
        while first is None and time.monotonic() < deadline:
            # The stream is live only once the command has subscribed: change the
            # worker until an event comes through.
            try:
                client.set_state(uuid, states[0])
            except BorutaError:
                pass
            states.reverse()
            try:
                first = lines.get(timeout=0.5)
            except queue.Empty:
                pass
        assert first is not None, proc.stderr.read() if proc.poll() is not None else "no event"
        event = json.loads(first)
        assert event["kind"] == "worker" and event["uuid"] == uuid
        assert event["state"] in ("IDLE", "MAINTENANCE", "PREPARE", "BUSY", "RUNNING")
        assert event["at"].endswith("Z")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise
    assert code == 0
    err = proc.stderr.read()
    assert "Traceback" not in err, err
