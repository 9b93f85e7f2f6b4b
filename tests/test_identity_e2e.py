"""Identity and trust, end to end: a real secure server (CurveZMQ) with several users and dryads.

What a stranger could do before users existed is tried here and must fail:
closing another user's request, acquiring its key, administering the farm
without being an admin, registering a worker nobody enrolled or taking over
an enrolled one; and each user's limits hold while the others are served.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from boruta.core.errors import (ForbiddenError, PriorityError, NotEnrolledError, NoMatchingWorkerError,
                                PriorityNotAllowedError, TooManyOpenRequestsError,
                                UnknownUserError)
from boruta.core.types import ReqState, WorkerState
from boruta.sim.dryads import SimFarm
from boruta.transport.client import Client
from boruta.transport.credentials import Credentials, new_keypair, write_client_config, write_key_file
from boruta.transport import codec
from boruta.transport.errors import (KeyRefusedError, RateLimitedError, ServerBusyError,
                                     ServerKeyMismatchError, WaitTimeoutError)
from boruta.testing.processes import child_env, wait_until
from tests.e2e_helpers import ROOT, server_factory, unique_caps  # noqa: F401

pytestmark = pytest.mark.slow


def stranger(server, server_key: str | None = None) -> Client:
    """A client with a key no user holds (or a wrong server key)."""
    creds = Credentials(server_key or server.credentials.server_key, new_keypair())
    return server.client(timeout=3, retries=1, credentials=creds)


def worker_state(admin: Client, uuid: str) -> WorkerState:
    return admin.get_worker_info(uuid).state


def idle_worker(server, admin: Client) -> tuple[str, dict[str, str]]:
    """One enrolled simulated dryad, its worker IDLE: (UUID, the caps to ask for)."""
    caps = unique_caps()
    uuid = server.farm(1, caps=caps).dryads[0].uuid
    admin.set_state(uuid, "IDLE")
    wait_until(lambda: worker_state(admin, uuid) is WorkerState.IDLE, 5)
    return uuid, caps


# --------------------------------------------------------------------------- the handshake
def test_a_client_without_a_good_key_is_refused_and_told_within_a_second(server_factory) -> None:
    server = server_factory()
    admin = server.client()
    assert admin.ping()["user"] == {"name": "admin", "role": "admin"}
    cases = [
        (stranger(server), KeyRefusedError, "refused our key"),
        (stranger(server, server_key=new_keypair().public), ServerKeyMismatchError, "key"),
        (server.client(timeout=3, retries=1, credentials=None), ServerKeyMismatchError,
         "requires CURVE"),
    ]
    for client, error, words in cases:
        started = time.monotonic()
        with pytest.raises(error, match=words):
            client.ping()
        assert time.monotonic() - started < 1.0
    assert "handshake refused: unknown key" in server.log()


def test_the_cli_exits_4_for_a_refused_key(server_factory, tmp_path: Path) -> None:
    server = server_factory()
    key_file = write_key_file(tmp_path / "nobody.key", new_keypair())
    config = write_client_config(tmp_path / "client.toml", server=server.listen,
                                 events=server.events,
                                 server_key=server.credentials.server_key, key_file=str(key_file))
    done = subprocess.run([sys.executable, "-m", "boruta.cli", "request", "list"],
                          env=child_env(BORUTA_CLIENT_CONFIG=str(config)), cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 4, done.stderr
    assert "refused our key" in done.stderr and "Traceback" not in done.stderr
    ok = subprocess.run([sys.executable, "-m", "boruta.cli", "request", "list"],
                        env=server.cli_env(), cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr


# --------------------------------------------------------------------------- owners
def test_only_the_owner_or_an_admin_touches_a_request(server_factory) -> None:
    server = server_factory()
    admin = server.client()
    uuid, caps = idle_worker(server, admin)
    admin.set_groups(uuid, ["team-a"])
    alice, bob = server.user("alice", groups=["team-a"]), server.user("bob")
    req = alice.new_request(caps, 8)
    info = bob.get_request_info(req)                       # anyone authenticated may read
    assert (info.owner.name, info.owner.groups) == ("alice", ("team-a",))
    access = alice.acquire_worker(req, timeout=10)
    for attempt in (lambda: bob.acquire_worker(req, timeout=0), lambda: bob.prolong_access(req),
                    lambda: bob.close_request(req), lambda: bob.update_request(req, priority=3),
                    lambda: bob.wait_request(req, timeout=0)):
        with pytest.raises(ForbiddenError, match="belongs to 'alice'"):
            attempt()
    assert alice.get_request_info(req).state is ReqState.INPROGRESS
    assert alice.acquire_worker(req, timeout=0).key == access.key
    mine = [r.id for r in bob.list_requests()[0]]
    assert req in mine                                     # reads are open
    admin.close_request(req)                               # an admin may
    assert alice.get_request_info(req).state is ReqState.DONE


def test_groups_come_from_the_user_record_and_restrict_workers(server_factory) -> None:
    server = server_factory()
    admin = server.client()
    uuid, caps = idle_worker(server, admin)
    admin.set_groups(uuid, ["lab-b"])
    lab_a = server.user("carol", groups=["lab-a"])
    with pytest.raises(NoMatchingWorkerError):
        lab_a.new_request(caps, 8)
    admin.user_set(name="carol", groups=["lab-b"])
    req = lab_a.new_request(caps, 8)
    assert lab_a.acquire_worker(req, timeout=10).worker_uuid == uuid


def test_priority_range_and_open_cap_have_their_own_codes(server_factory) -> None:
    server = server_factory()
    dave = server.user("dave", priorities=[4, 16], max_open=2)
    erin = server.user("erin")
    caps = unique_caps()
    with pytest.raises(PriorityNotAllowedError, match="4 .. 16"):
        dave.new_request(caps, 3, queue_unsatisfiable=True)
    first = dave.new_request(caps, 4, queue_unsatisfiable=True)
    dave.new_request(caps, 16, queue_unsatisfiable=True)
    with pytest.raises(TooManyOpenRequestsError, match="2 open requests"):
        dave.new_request(caps, 8, queue_unsatisfiable=True)
    with pytest.raises(PriorityError):                  # a priority no one may use comes first
        dave.new_request(caps, 17, queue_unsatisfiable=True)
    with pytest.raises(PriorityNotAllowedError):        # the range holds for changes too
        dave.update_request(first, priority=2)
    dave.update_request(first, priority=5)
    assert erin.new_request(caps, 1, queue_unsatisfiable=True)      # the others go on
    dave.close_request(first)
    assert dave.new_request(caps, 8, queue_unsatisfiable=True)       # a slot again


def test_only_admins_administer(server_factory) -> None:
    server = server_factory()
    admin = server.client()
    uuid, _ = idle_worker(server, admin)
    frank = server.user("frank")
    for attempt in (lambda: frank.set_state(uuid, "MAINTENANCE"),
                    lambda: frank.set_groups(uuid, ["x"]), lambda: frank.deregister(uuid),
                    lambda: frank.healthcheck(uuid), lambda: frank.user_list(),
                    lambda: frank.user_add(name="mallory", keys=[new_keypair().public],
                                           role="admin"),
                    lambda: frank.dryad_enroll(uuid="rogue", key=new_keypair().public),
                    lambda: frank.dryad_revoke(uuid=uuid)):
        with pytest.raises(ForbiddenError, match="for admins"):
            attempt()
    assert worker_state(admin, uuid) is WorkerState.IDLE
    assert [u["name"] for u in admin.user_list()] == ["admin", "frank"]
    assert frank.get_worker_info(uuid).groups == ()
    admin.user_set(name="frank", role="admin")
    frank.set_groups(uuid, ["x"])                          # an admin now
    assert admin.get_worker_info(uuid).groups == ("x",)
    # The audit names who did what, refused or not.
    wait_until(lambda: "op=set_groups" in server.log() and "peer=frank" in server.log(), 5)
    audit = [line for line in server.log().splitlines() if " audit " in line]
    assert any("op=user_add user=mallory result=forbidden peer=frank" in line for line in audit)
    assert any("op=user_set user=frank result=ok peer=admin" in line for line in audit)


def test_a_removed_user_is_refused_on_the_connection_they_hold(server_factory) -> None:
    server = server_factory()
    admin = server.client()
    grace = server.user("grace")
    assert grace.ping()["user"]["name"] == "grace"
    admin.user_remove(name="grace")
    with pytest.raises(UnknownUserError):
        grace.ping()


# --------------------------------------------------------------------------- dryads
def test_rogue_dryads_are_refused_and_the_real_worker_keeps_its_state(server_factory) -> None:
    server = server_factory()
    admin = server.client()
    real_uuid, caps = idle_worker(server, admin)
    # An unenrolled key: the handshake is refused, nothing registers.
    unenrolled = SimFarm(server.dryad, 0, credentials_for=lambda uuid: Credentials(
        server.credentials.server_key, new_keypair()))
    try:
        unenrolled.add(uuid="rogue-1", caps=caps)
        wait_until(lambda: server.log().count("handshake refused") >= 1, 5)
        # An enrolled key that claims the real worker's UUID: not_enrolled, logged.
        hijack = Credentials(server.credentials.server_key, new_keypair())
        admin.dryad_enroll(uuid="rogue-2", key=hijack.client.public)
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        hijack.apply(sock)
        sock.connect(server.dryad)
        sock.send(codec.request_frame(1, "register", {
            "caps": {**caps, "UUID": real_uuid}, "dryad_address": ":1", "ssh_address": ":22"}))
        assert sock.poll(5000)
        env = codec.decode(sock.recv())
        sock.close(0)
        assert env.error["code"] == NotEnrolledError.code
        assert "enrolled for rogue-2" in env.error["message"]
        wait_until(lambda: "dryad refused: key not enrolled" in server.log(), 5)
        assert [w.worker_uuid for w in admin.list_workers()[0]] == [real_uuid]
        assert worker_state(admin, real_uuid) is WorkerState.IDLE
        req = admin.new_request({k: v for k, v in caps.items()}, 8)
        assert admin.acquire_worker(req, timeout=10).worker_uuid == real_uuid
    finally:
        unenrolled.close()


def test_a_revoked_dryad_loses_its_worker_and_cannot_register_again(server_factory) -> None:
    server = server_factory()
    admin = server.client()
    uuid, _ = idle_worker(server, admin)
    assert [e["uuid"] for e in admin.dryad_list()] == [uuid]
    admin.dryad_revoke(uuid=uuid)
    wait_until(lambda: worker_state(admin, uuid) is WorkerState.FAIL, 5)
    assert "revoked" in (admin.get_worker_info(uuid).fail_reason or "")
    assert admin.dryad_list() == []


# --------------------------------------------------------------------------- limits per user
def test_parked_calls_are_capped_per_user_across_connections(server_factory) -> None:
    server = server_factory(max_parked_per_peer=2)
    caps = unique_caps()
    henry = server.user("henry")
    henry2 = server.client(credentials=henry.credentials)       # the same user, elsewhere
    iris = server.user("iris")
    reqs = [henry.new_request(caps, 8, queue_unsatisfiable=True) for _ in range(3)]
    socks = []
    try:
        for index, req in enumerate(reqs[:2]):        # two parked, on two connections
            sock = zmq.Context.instance().socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            henry.credentials.apply(sock)
            sock.connect(server.listen)
            sock.send(codec.request_frame(1, "acquire_worker", {"id": req, "timeout": 30}))
            sock.send(codec.request_frame(2, "ping", {}))
            # A connection's calls are served in order: the ping's answer says it is parked.
            assert sock.poll(5000) and codec.decode(sock.recv()).id == 2
            socks.append(sock)
        with pytest.raises(ServerBusyError, match="henry already has 2 calls waiting"):
            henry2.acquire_worker(reqs[2], timeout=5)
        theirs = iris.new_request(caps, 8, queue_unsatisfiable=True)
        with pytest.raises(WaitTimeoutError):          # iris parks, and is answered in time
            iris.acquire_worker(theirs, timeout=0.2)
    finally:
        for sock in socks:
            sock.close(0)


def test_the_rate_limit_is_per_user_across_connections(server_factory) -> None:
    server = server_factory(peer_rate=5, peer_burst=5)
    jack = server.user("jack")
    jack2 = server.client(credentials=jack.credentials)
    kate = server.user("kate")
    limited = 0
    for _ in range(6):
        for client in (jack, jack2):
            try:
                client.ping()
            except RateLimitedError as exc:
                assert "user jack" in exc.message
                limited += 1
    assert limited >= 6                                    # 12 calls, a burst of 5
    assert kate.ping()["user"]["name"] == "kate"           # another user is served


# --------------------------------------------------------------------------- durability
def test_users_and_enrolments_survive_a_restart(server_factory, tmp_path: Path) -> None:
    state = tmp_path / "state"
    server = server_factory(state_dir=str(state))
    admin = server.client()
    lena = server.user("lena", groups=["g"], priorities=[2, 9], max_open=3)
    lena_creds = lena.credentials
    admin.dryad_enroll(uuid="w-1", key=new_keypair().public)
    req = lena.new_request(unique_caps(), 5, queue_unsatisfiable=True)
    server.stop()
    again = server_factory(state_dir=str(state))
    assert again.credentials.server_key == server.credentials.server_key
    back = again.client(credentials=lena_creds)
    assert back.ping()["user"]["name"] == "lena"
    assert back.get_request_info(req).owner.name == "lena"
    users = {u["name"]: u for u in again.client().user_list()}
    assert users["lena"]["priorities"] == [2, 9] and users["lena"]["max_open"] == 3
    assert [e["uuid"] for e in again.client().dryad_list()] == ["w-1"]
    assert state.stat().st_mode & 0o777 == 0o700
    for name in ("server.key", "admin.key", "client.toml"):
        assert (state / name).stat().st_mode & 0o777 == 0o600, name


def test_an_insecure_servers_peers_are_limited_each_alone(server_factory) -> None:
    """Without keys every peer is the same INSECURE user: its limits stay per connection."""
    server = server_factory(insecure=True, peer_rate=5, peer_burst=5)
    noisy, quiet = server.client(retries=1), server.client(retries=1)
    with pytest.raises(RateLimitedError, match="from this peer"):
        for _ in range(20):
            noisy.ping()
    assert quiet.ping()["secure"] is False


def test_a_frame_just_under_the_hard_limit_is_answered_under_curve_too(server_factory) -> None:
    """ZeroMQ drops a message over 16 x max_frame_bytes + 4 KiB with its connection, and
    checks that limit on the wire: CURVE's framing must not make a message under it drop."""
    server = server_factory(max_frame_bytes=4096)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    server.secure(sock)
    sock.connect(server.listen)
    try:
        frame = codec.pack({"v": 1, "id": 7, "op": "ping", "args": {}, "pad": ""})
        frame = codec.pack({"v": 1, "id": 7, "op": "ping", "args": {},
                            "pad": "x" * (16 * 4096 + 4096 - len(frame) - 8)})
        assert 16 * 4096 + 4096 - 16 <= len(frame) <= 16 * 4096 + 4096
        sock.send(frame)
        assert sock.poll(5000), "no answer: the message was dropped"
        assert codec.decode(sock.recv()).error["code"] == "frame_too_large"
    finally:
        sock.close(0)
