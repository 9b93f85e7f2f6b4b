"""The server process: clean SIGTERM, key types, structured logs, configuration file."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from cryptography.hazmat.primitives import serialization

from boruta.core.types import ReqState
from boruta.transport.errors import ShuttingDownError
from e2e_helpers import ROOT, ServerProcess, server_factory, unique_caps, wait_until  # noqa: F401

pytestmark = pytest.mark.slow


def test_sigterm_drains_and_exits_zero(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory()
    caps = unique_caps()
    farm = server.farm(1, caps=caps)
    client = server.client()
    req_id = client.new_request(caps, 4)                      # waits: the worker is in MAINTENANCE
    outcome: dict[str, Any] = {}

    def park() -> None:
        try:
            server.client(timeout=5, retries=1).acquire_worker(req_id, timeout=30)
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=park)
    thread.start()
    time.sleep(0.3)
    start = time.monotonic()
    assert server.stop(signal.SIGTERM, timeout=10) == 0
    assert time.monotonic() - start < 5
    thread.join(5)
    assert isinstance(outcome.get("error"), ShuttingDownError)
    log = server.log()
    assert "stopping" in log and "stopped" in log and "Traceback" not in log
    farm.close()


def test_sigterm_lets_dryad_commands_in_flight_finish(
        server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory(shutdown_grace=2.0)
    farm = server.farm(1, caps=unique_caps())
    dryad = farm.dryads[0]
    dryad.delay = 0.4                                           # a prepare in flight at SIGTERM
    server.client().set_state(dryad.uuid, "IDLE")
    assert server.stop(signal.SIGTERM, timeout=10) == 0
    log = server.log()
    assert log.index(f"worker {dryad.uuid} IDLE") < log.index(" stopped ")
    farm.close()


def test_rsa_keys_are_pkcs1_and_match_what_the_dryad_installed(
        server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory(key_type="rsa", key_pool_size=1)
    caps = unique_caps()
    farm = server.farm(1, caps=caps)
    client = server.client()
    dryad = farm.dryads[0]
    client.set_state(dryad.uuid, "IDLE")
    req_id = client.new_request(caps, 2)
    access = client.acquire_worker(req_id, timeout=10)
    assert access.key_type == "ssh-rsa"
    assert access.key.startswith("-----BEGIN RSA PRIVATE KEY-----\n")
    private = serialization.load_pem_private_key(access.key.encode(), None)
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
    assert dryad.public_key.split()[:2] == public.split()[:2]
    assert dryad.key_type == "ssh-rsa"
    client.close_request(req_id)


def test_json_logs_one_line_per_transition(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory(log_format="json")
    caps = unique_caps()
    farm = server.farm(1, caps=caps)
    client = server.client()
    uuid = farm.dryads[0].uuid
    client.set_state(uuid, "IDLE")
    req_id = client.new_request(caps, 4)
    client.acquire_worker(req_id, timeout=5)
    client.close_request(req_id)
    assert client.wait_request(req_id, timeout=5).state is ReqState.DONE
    wait_until(lambda: client.get_worker_info(uuid).state.name == "IDLE", 5)
    farm.close()
    assert server.stop() == 0
    lines = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    assert all({"ts", "level", "msg"} <= set(line) for line in lines)
    assert any(line["msg"] == "boruta server ready" for line in lines)
    req_lines = [line for line in lines if line.get("event") == "request" and line["req_id"] == req_id]
    assert [(line["state"], line["reason"]) for line in req_lines] == [
        ("WAITING", "created"), ("IN PROGRESS", "assigned"), ("DONE", "closed by owner")]
    assert req_lines[1]["worker_uuid"] == uuid
    worker_states = [line["state"] for line in lines
                     if line.get("event") == "worker" and line.get("worker_uuid") == uuid]
    assert worker_states[:6] == ["MAINTENANCE", "PREPARE", "IDLE", "RUNNING", "PREPARE", "IDLE"]


def test_config_file_and_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text('listen = "tcp://127.0.0.1:*"\ndryad_listen = "tcp://127.0.0.1:*"\n'
                      'events = "tcp://127.0.0.1:*"\nlog_level = "warning"\n'
                      '[scheduler]\njob_timeout = 1.5\n')
    proc = subprocess.Popen([sys.executable, "-m", "boruta.cli", "server", "--state-dir", ":memory:", "--config",
                             str(config), "--log-format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = proc.stdout.readline()                # the ready line comes first, then nothing
        assert line.startswith("boruta server ready listen=tcp://127.0.0.1:")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    bad = subprocess.run([sys.executable, "-m", "boruta.cli", "server", "--state-dir", ":memory:", "--config",
                          str(config), "--set", "heartbeat_intervall=1"],
                         capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert bad.returncode == 2 and "heartbeat_intervall" in bad.stderr


def test_job_timeout_ends_the_job(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory(job_timeout=0.6)
    caps = unique_caps()
    farm = server.farm(1, caps=caps)
    client = server.client()
    client.set_state(farm.dryads[0].uuid, "IDLE")
    req_id = client.new_request(caps, 4)
    access = client.acquire_worker(req_id, timeout=5)
    assert access.addr[1] > 0
    info = client.wait_request(req_id, [ReqState.DONE], timeout=5)   # fired by the loop's timer
    assert info.state is ReqState.DONE
    events = [e for e in server.log().splitlines() if f"request {req_id} DONE" in e]
    assert events and "job timeout" in events[0]
