"""End to end: a real server process, real clients, simulated dryads on loopback."""
from __future__ import annotations

import asyncio
import socket
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from boruta.core.errors import (NotFoundError, NoMatchingWorkerError, WorkerNotAssignedError)
from boruta.core.types import ReqState, RequestFilter, SortInfo, WorkerState
from boruta.transport import AsyncClient
from boruta.transport.client import WaitTimeoutError
from boruta.transport.errors import RequestEndedError
from e2e_helpers import ServerProcess, shared_server, unique_caps, wait_until  # noqa: F401

pytestmark = pytest.mark.slow



def idle(client, farm, timeout: float = 5.0) -> None:
    """Bring every dryad of `farm` to IDLE through the server."""
    for dryad in farm.dryads:
        client.set_state(dryad.uuid, "IDLE")
    for dryad in farm.dryads:
        wait_until(lambda: client.get_worker_info(dryad.uuid).state in (WorkerState.IDLE, WorkerState.RUN),
                   timeout, what=f"{dryad.uuid} IDLE")


def test_ping(shared_server: ServerProcess) -> None:
    info = shared_server.client().ping()
    assert info["protocol"] == 1 and info["endpoints"]["listen"] == shared_server.listen


def test_full_lifecycle_to_done(shared_server: ServerProcess) -> None:
    caps = unique_caps()
    farm = shared_server.farm(1, caps=caps)
    client = shared_server.client()
    dryad = farm.dryads[0]
    worker = client.get_worker_info(dryad.uuid)
    assert worker.state is WorkerState.MAINTENANCE and worker.caps["device_type"] == caps["device_type"]
    assert worker.ssh_address == "127.0.0.1:22"                      # empty host filled in
    idle(client, farm)
    assert dryad.public_key and dryad.public_key.startswith("ssh-ed25519 ")

    req_id = client.new_request(caps, 4)
    access = client.acquire_worker(req_id, timeout=5)
    assert access.username == "boruta-user" and access.worker_uuid == dryad.uuid
    assert access.addr[0] == "127.0.0.1" and access.addr[1] > 0
    assert access.key_type == "ssh-ed25519" and "OPENSSH PRIVATE KEY" in access.key
    info = client.get_request_info(req_id)
    assert info.state is ReqState.INPROGRESS and info.job.worker_uuid == dryad.uuid
    assert client.get_worker_info(dryad.uuid).state is WorkerState.RUN
    client.prolong_access(req_id)

    first_key = dryad.public_key
    client.close_request(req_id)
    assert client.wait_request(req_id, timeout=5).state is ReqState.DONE
    wait_until(lambda: client.get_worker_info(dryad.uuid).state is WorkerState.IDLE, 5,
               what="worker prepared again")
    assert dryad.public_key != first_key                              # a fresh key per job
    with pytest.raises(WorkerNotAssignedError):
        client.acquire_worker(req_id, timeout=1)
    farm.close()


def test_priorities_and_fifo(shared_server: ServerProcess) -> None:
    caps = unique_caps()
    farm = shared_server.farm(1, caps=caps)
    client = shared_server.client()
    prios = [8, 4, 8, 4, 1, 16]
    ids = [client.new_request(caps, p) for p in prios]
    listed, info = client.list_requests(RequestFilter(ids=tuple(ids)), SortInfo("priority"))
    assert [r.id for r in listed] == [ids[4], ids[1], ids[3], ids[0], ids[2], ids[5]]
    assert info.total_items == 6
    idle(client, farm)
    served = []
    for _ in ids:
        running, _ = client.list_requests(RequestFilter(ids=tuple(ids),
                                                        states=(ReqState.INPROGRESS,)))
        if not running:
            running = [wait_until(lambda: next(
                (r for r in client.list_requests(RequestFilter(
                    ids=tuple(ids), states=(ReqState.INPROGRESS,)))[0]), None), 5,
                what="next assignment")]
        served.append(running[0].id)
        client.close_request(running[0].id)
    assert served == [ids[4], ids[1], ids[3], ids[0], ids[2], ids[5]]
    farm.close()


def test_blocking_acquire_answered_on_assignment(shared_server: ServerProcess) -> None:
    caps = unique_caps()
    farm = shared_server.farm(1, caps=caps)
    client = shared_server.client()
    req_id = client.new_request(caps, 4)
    result: dict = {}

    def acquire() -> None:
        c = shared_server.client()
        start = time.monotonic()
        try:
            result["access"] = c.acquire_worker(req_id, timeout=10)
        except Exception as exc:  # pragma: no cover - reported below
            result["error"] = exc
        result["elapsed"] = time.monotonic() - start

    thread = threading.Thread(target=acquire)
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive()                                          # parked while WAITING
    idle(client, farm)
    thread.join(10)
    assert not thread.is_alive() and "error" not in result, result
    assert result["access"].worker_uuid == farm.dryads[0].uuid
    assert result["elapsed"] < 8
    client.close_request(req_id)
    farm.close()


def test_acquire_timeout(shared_server: ServerProcess) -> None:
    caps = unique_caps()
    farm = shared_server.farm(1, caps=caps)                           # stays in MAINTENANCE
    client = shared_server.client()
    req_id = client.new_request(caps, 4)
    start = time.monotonic()
    with pytest.raises(WaitTimeoutError) as info:
        client.acquire_worker(req_id, timeout=0.5)
    assert 0.4 < time.monotonic() - start < 3
    assert info.value.code == "wait_timeout"
    with pytest.raises(WaitTimeoutError):
        client.acquire_worker(req_id, timeout=0)
    with pytest.raises(WaitTimeoutError):
        client.wait_request(req_id, timeout=0.2)
    assert client.get_request_info(req_id).state is ReqState.WAIT
    client.close_request(req_id)
    farm.close()


def test_cancel_while_waiting_answers_parked_calls(shared_server: ServerProcess) -> None:
    caps = unique_caps()
    farm = shared_server.farm(1, caps=caps)
    client = shared_server.client()
    req_id = client.new_request(caps, 4)
    outcome: dict = {}

    def park(kind: str) -> None:
        c = shared_server.client()
        try:
            if kind == "acquire":
                c.acquire_worker(req_id, timeout=10)
            else:
                c.wait_request(req_id, [ReqState.INPROGRESS], timeout=10)
        except Exception as exc:
            outcome[kind] = exc

    threads = [threading.Thread(target=park, args=(k,)) for k in ("acquire", "wait")]
    for t in threads:
        t.start()
    time.sleep(0.3)
    start = time.monotonic()
    client.close_request(req_id)
    for t in threads:
        t.join(5)
    assert time.monotonic() - start < 3
    assert isinstance(outcome["acquire"], WorkerNotAssignedError)
    assert "CANCELLED" in outcome["acquire"].message
    assert isinstance(outcome["wait"], RequestEndedError)
    assert client.wait_request(req_id, timeout=1).state is ReqState.CANCEL
    farm.close()


def test_maintenance_and_failure_seen_by_clients(shared_server: ServerProcess) -> None:
    caps = unique_caps()
    farm = shared_server.farm(2, caps=caps)
    client = shared_server.client()
    idle(client, farm)
    a, b = farm.dryads
    # Maintenance during a job: the request FAILS, the dryad shows the message.
    req1 = client.new_request({**caps, "UUID": a.uuid}, 4)
    client.acquire_worker(req1, timeout=5)
    client.set_state(a.uuid, "MAINTENANCE")
    assert client.wait_request(req1, timeout=5).state is ReqState.FAILED
    wait_until(lambda: client.get_worker_info(a.uuid).state is WorkerState.MAINTENANCE, 5)
    assert a.maintenance_message == "maintenance"
    # The dryad reports a failure: the reason is stored and shown.
    req2 = client.new_request({**caps, "UUID": b.uuid}, 4)
    client.acquire_worker(req2, timeout=5)
    farm.run(b.set_fail("power supply lost"))
    assert client.wait_request(req2, timeout=5).state is ReqState.FAILED
    info = client.get_worker_info(b.uuid)
    assert info.state is WorkerState.FAIL and info.fail_reason == "power supply lost"
    # A failing prepare: the worker goes FAILED with the dryad's reason.
    a.fail_prepare = "no space left on device"
    client.set_state(a.uuid, "IDLE")
    wait_until(lambda: client.get_worker_info(a.uuid).state is WorkerState.FAIL, 5)
    assert "no space left on device" in client.get_worker_info(a.uuid).fail_reason
    # Deregistering the only capable workers makes a queued request INVALID.
    req3 = client.new_request(caps, 4)
    client.deregister(a.uuid)
    client.deregister(b.uuid)
    assert client.wait_request(req3, timeout=5).state is ReqState.INVALID
    with pytest.raises(NotFoundError):
        client.get_worker_info(a.uuid)
    with pytest.raises(NoMatchingWorkerError):
        client.new_request(caps, 4)
    wait_until(lambda: a.link.deregistered and b.link.deregistered, 5,
               what="dryads told they are deregistered")
    farm.close()


def test_event_stream_each_transition_once_in_order(shared_server: ServerProcess) -> None:
    caps = unique_caps()
    farm = shared_server.farm(1, caps=caps)
    client = shared_server.client()
    uuid = farm.dryads[0].uuid
    worker_events = client.events(worker_uuid=uuid)
    req_id = client.new_request(caps, 4)
    request_events = client.events(request_id=req_id)       # subscribed after WAITING
    idle(client, farm)
    client.acquire_worker(req_id, timeout=5)
    client.close_request(req_id)
    wait_until(lambda: client.get_worker_info(uuid).state is WorkerState.IDLE, 5)

    def take(stream, n):
        got = []
        try:
            for _ in range(n):
                got.append(stream.next(timeout=3))
        except WaitTimeoutError:
            raise AssertionError(f"only {got}") from None
        return got

    got = take(worker_events, 5)
    assert [(e["kind"], e["uuid"], e["state"]) for e in got] == [
        ("worker", uuid, s) for s in ("PREPARE", "IDLE", "RUNNING", "PREPARE", "IDLE")]
    assert all(e["at"].endswith("Z") for e in got)
    seqs = [e["seq"] for e in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    got = take(request_events, 2)
    assert [(e["id"], e["state"]) for e in got] == [(req_id, "IN PROGRESS"), (req_id, "DONE")]
    assert got[0]["worker_uuid"] == uuid and got[1]["reason"] == "closed by owner"
    with pytest.raises(WaitTimeoutError):                    # nothing more, nothing twice
        request_events.next(timeout=0.5)
    worker_events.close()
    request_events.close()
    farm.close()


def test_many_clients_at_once(shared_server: ServerProcess) -> None:
    caps = unique_caps()
    farm = shared_server.farm(4, caps=caps)
    admin = shared_server.client()
    idle(admin, farm)
    errors: list[BaseException] = []
    done: list[int] = []

    def job_cycles(n: int) -> None:
        c = shared_server.client(timeout=10)
        try:
            for _ in range(n):
                req_id = c.new_request(caps, 8)
                access = c.acquire_worker(req_id, timeout=20)
                assert access.addr[1] > 0
                c.close_request(req_id)
                done.append(req_id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=job_cycles, args=(3,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(done) == 24 and len(set(done)) == 24
    for req_id in done:
        assert admin.get_request_info(req_id).state is ReqState.DONE
    farm.close()


def test_async_client(shared_server: ServerProcess) -> None:
    caps = unique_caps()
    farm = shared_server.farm(1, caps=caps)

    async def scenario() -> None:
        async with AsyncClient(shared_server.listen, events_endpoint=shared_server.events,
                               timeout=5, credentials=shared_server.credentials) as client:
            uuid = farm.dryads[0].uuid
            await client.set_state(uuid, "IDLE")
            ids = await asyncio.gather(*(client.new_request(caps, 5) for _ in range(3)))
            assert sorted(ids) == list(range(min(ids), min(ids) + 3))
            access = await client.acquire_worker(ids[0], timeout=5)
            assert access.worker_uuid == uuid
            infos = await asyncio.gather(*(client.get_request_info(i) for i in ids))
            assert [i.state for i in infos] == [ReqState.INPROGRESS, ReqState.WAIT, ReqState.WAIT]
            stream = await client.events(request_id=ids[1])
            # Waiting requests first: closing the job first frees the worker,
            # which may then start ids[1] before its own close arrives.
            for req_id in reversed(ids):
                await client.close_request(req_id)
            event = await asyncio.wait_for(stream.__anext__(), 5)
            assert (event["id"], event["state"]) == (ids[1], "CANCELLED")
            stream.close()
            with pytest.raises(NotFoundError):
                await client.get_request_info(10**9)

    asyncio.run(asyncio.wait_for(scenario(), 30))
    farm.close()


def test_tunnel_forwards_to_the_workers_sshd(shared_server: ServerProcess) -> None:
    caps = unique_caps()
    farm = shared_server.farm()
    host, port = farm.echo_server()                                   # stands in for sshd
    dryad = farm.add(caps=caps, ssh_address=f"{host}:{port}")
    farm.wait_registered(5)
    client = shared_server.client()
    idle(client, farm)
    req_id = client.new_request(caps, 4)
    access = client.acquire_worker(req_id, timeout=5)
    assert access.worker_uuid == dryad.uuid
    payload = bytes(range(256)) * 400                                 # 100 KiB both ways
    with socket.create_connection(access.addr, timeout=5) as conn:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    assert received == payload
    with socket.create_connection(access.addr, timeout=5) as conn:   # a second session
        conn.sendall(b"ping")
        assert conn.recv(4) == b"ping"
    client.close_request(req_id)
    client.wait_request(req_id, timeout=5)

    def refused() -> bool:
        try:
            socket.create_connection(access.addr, timeout=1).close()
        except OSError:
            return True
        return False
    wait_until(refused, 5, what="tunnel closed with the job")
    farm.close()


def test_valid_after_and_deadline_times(shared_server: ServerProcess) -> None:
    caps = unique_caps()
    farm = shared_server.farm(1, caps=caps)
    client = shared_server.client()
    idle(client, farm)
    now = datetime.now(timezone.utc)
    later = client.new_request(caps, 4, valid_after=now + timedelta(seconds=0.6))
    assert client.get_request_info(later).state is ReqState.WAIT      # not valid yet
    access = client.acquire_worker(later, timeout=5)                  # the server's timer fires
    assert access.worker_uuid == farm.dryads[0].uuid
    soon = datetime.now(timezone.utc) + timedelta(seconds=0.5)
    doomed = client.new_request(caps, 4, deadline=soon.timestamp())  # epoch seconds work too
    assert client.wait_request(doomed, timeout=5).state is ReqState.TIMEOUT
    info = client.get_request_info(later)
    assert info.valid_after.tzinfo is not None
    assert abs((info.valid_after - (now + timedelta(seconds=0.6))).total_seconds()) < 0.01
    client.close_request(later)
    farm.close()
