"""The dryad link end to end: heartbeats, lost and returning dryads, command deadlines."""
from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Callable

import pytest

from boruta.core.types import ReqState, WorkerState
from boruta.transport.errors import DryadError
from e2e_helpers import ROOT, ServerProcess, server_factory, unique_caps, wait_until  # noqa: F401

pytestmark = pytest.mark.slow

QUICK = {"heartbeat_interval": 0.3, "heartbeat_liveness": 3, "dryad_reply_timeout": 1.0}


def state_of(client: Any, uuid: str) -> WorkerState:
    return client.get_worker_info(uuid).state


def test_lost_dryad_fails_its_worker_and_comes_back(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory(**QUICK)
    caps = unique_caps()
    farm = server.farm(1, caps=caps)
    client = server.client()
    dryad = farm.dryads[0]
    client.set_state(dryad.uuid, "IDLE")
    req_id = client.new_request(caps, 4)
    client.acquire_worker(req_id, timeout=5)
    farm.remove(dryad)                                   # the board loses power
    assert client.wait_request(req_id, [ReqState.FAILED], timeout=5).state is ReqState.FAILED
    info = client.get_worker_info(dryad.uuid)
    assert info.state is WorkerState.FAIL and info.fail_reason.startswith("dryad lost")
    back = farm.add(dryad.uuid, caps)                    # the dryad restarts: new connection
    farm.wait_registered(5, [back])
    wait_until(lambda: state_of(client, dryad.uuid) is WorkerState.IDLE, 5, what="re-registered worker IDLE")
    assert back.public_key is not None                   # prepared through the new link


def test_silent_dryad_command_deadline(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory(**QUICK)
    caps = unique_caps()
    farm = server.farm(2, caps=caps)
    client = server.client()
    mute, slow = farm.dryads
    mute.silent = True
    start = time.monotonic()
    client.set_state(mute.uuid, "IDLE")
    wait_until(lambda: state_of(client, mute.uuid) is WorkerState.FAIL, 5, what="prepare deadline")
    assert 0.8 < time.monotonic() - start < 4
    assert "no reply to prepare" in client.get_worker_info(mute.uuid).fail_reason
    # Maintenance that never completes fails the same way.
    mute.silent = False
    mute.silent_ops = {"put_in_maintenance"}
    client.set_state(mute.uuid, "MAINTENANCE")
    assert state_of(client, mute.uuid) is WorkerState.BUSY
    wait_until(lambda: state_of(client, mute.uuid) is WorkerState.FAIL, 5, what="maintenance deadline")
    # A slow but timely dryad is fine; its heartbeats keep flowing meanwhile.
    slow.delay = 0.5
    client.set_state(slow.uuid, "IDLE")
    wait_until(lambda: state_of(client, slow.uuid) is WorkerState.IDLE, 5)


def test_reregister_from_new_identity_replaces_old(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory(**QUICK)
    caps = unique_caps()
    farm = server.farm(1, caps=caps)
    client = server.client()
    first = farm.dryads[0]
    first.silent = True                                  # still connected, but hung
    first.link.paused = True
    second = farm.add(first.uuid, caps)                  # same UUID, new DEALER identity
    farm.wait_registered(5, [second])
    client.set_state(first.uuid, "IDLE")
    wait_until(lambda: state_of(client, first.uuid) is WorkerState.IDLE, 5)
    assert second.public_key is not None and "prepare" not in first.commands
    farm.remove(first)


def test_dryad_reregisters_after_server_restart(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory(**QUICK)
    dryad_ep = server.dryad
    caps = unique_caps()
    farm = server.farm(1, caps=caps)
    dryad = farm.dryads[0]
    assert server.stop() == 0
    port = dryad_ep.rsplit(":", 1)[1]
    # The same farm's server again: its identity, and the dryad's enrolment (in memory).
    again = server_factory(**QUICK, dryad_listen=f"tcp://127.0.0.1:{port}",
                           identity_dir=server.settings["identity_dir"])
    client = again.client()
    client.dryad_enroll(uuid=dryad.uuid, key=dryad.link.credentials.client.public)
    wait_until(lambda: any(w.worker_uuid == dryad.uuid for w in client.list_workers()[0]), 10,
               what="dryad registered with the new server")
    wait_until(lambda: dryad.link.registrations >= 2, 5, what="second registration")
    farm.close()


def test_healthcheck_on_request(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory(**QUICK)
    farm = server.farm(1, caps=unique_caps())
    client = server.client()
    dryad = farm.dryads[0]
    client.set_state(dryad.uuid, "IDLE")
    wait_until(lambda: state_of(client, dryad.uuid) is WorkerState.IDLE, 5)
    client.healthcheck(dryad.uuid)
    assert dryad.commands.count("healthcheck") == 1
    dryad.fail_healthcheck = "DUT does not boot"
    with pytest.raises(DryadError, match="DUT does not boot"):
        client.healthcheck(dryad.uuid)
    info = client.get_worker_info(dryad.uuid)
    assert info.state is WorkerState.FAIL and "DUT does not boot" in info.fail_reason


def test_periodic_healthcheck_of_idle_workers(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory(**QUICK, healthcheck_interval=0.3)
    farm = server.farm(2, caps=unique_caps())
    client = server.client()
    good, bad = farm.dryads
    bad.fail_healthcheck = "STM not responding"
    for dryad in farm.dryads:
        client.set_state(dryad.uuid, "IDLE")
    wait_until(lambda: state_of(client, bad.uuid) is WorkerState.FAIL, 5, what="periodic healthcheck")
    assert "STM not responding" in client.get_worker_info(bad.uuid).fail_reason
    wait_until(lambda: good.commands.count("healthcheck") >= 2, 5)
    assert state_of(client, good.uuid) is WorkerState.IDLE


def test_tunnel_that_cannot_open_leaves_nothing_behind(server_factory: Callable[..., ServerProcess]) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    try:
        server = server_factory(**QUICK, tunnel_ports=f"{port}-{port}")
        caps = unique_caps()
        farm = server.farm(1, caps=caps)
        client = server.client()
        uuid = farm.dryads[0].uuid
        client.set_state(uuid, "IDLE")
        req_id = client.new_request(caps, 4)
        wait_until(lambda: state_of(client, uuid) is WorkerState.FAIL, 5, what="worker failed")
        assert "tunnel" in client.get_worker_info(uuid).fail_reason
        info = client.get_request_info(req_id)
        assert info.state is ReqState.WAIT and info.job is None        # back in the queue
        blocker.close()                                                 # the port is free again
        client.set_state(uuid, "MAINTENANCE")
        wait_until(lambda: state_of(client, uuid) is WorkerState.MAINTENANCE, 5)
        client.set_state(uuid, "IDLE")
        access = client.acquire_worker(req_id, timeout=5)
        assert access.addr[1] == port
    finally:
        blocker.close()


def test_simdryad_command_runs_many_dryads(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory(**QUICK)
    proc = subprocess.Popen(
        [sys.executable, "-m", "boruta.sim.dryads", "--count", "30", "--server",
         server.dryad, "--caps", "board=sim30", "--echo", "--seed", "7",
         "--client-config", str(server.client_config)],      # enrols its dryads as the admin
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    try:
        client = server.client()
        wait_until(lambda: client.list_workers()[1].total_items == 30, 15, what="30 dryads")
        workers, _ = client.list_workers()
        assert all(w.caps["board"] == "sim30" for w in workers)
        assert len({w.ssh_address for w in workers}) == 1          # the shared echo server
        uuid = workers[0].worker_uuid
        client.set_state(uuid, "IDLE")
        req_id = client.new_request({"UUID": uuid}, 3)
        access = client.acquire_worker(req_id, timeout=5)
        with socket.create_connection(access.addr, timeout=5) as conn:
            conn.sendall(b"hello sshd")
            assert conn.recv(64) == b"hello sshd"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert re.search(r"simdryad ready count=30", out)
