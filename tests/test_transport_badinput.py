"""Bad input: every case gets an error reply with its code, and the server keeps serving."""
from __future__ import annotations

import threading
import time
from typing import Any, Iterator

import msgpack
import pytest
import zmq

from boruta.transport.client import Client
from e2e_helpers import ServerProcess, unique_caps, wait_until

pytestmark = pytest.mark.slow

MAX_FRAME = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("bad") / "server.log",
                        max_frame_bytes=MAX_FRAME, peer_rate=100, peer_burst=40)
    srv.start()
    yield srv
    srv.close()


def dealer(ctx: zmq.Context, server: ServerProcess, dryad: str | None = None,
           user: Client | None = None) -> zmq.Socket:
    """A raw client of `server` with the admin's key (or `user`'s), or with `dryad` a raw
    dryad whose key is enrolled for that UUID."""
    sock = ctx.socket(zmq.DEALER)
    if user is not None and user.credentials is not None:
        user.credentials.apply(sock)
    else:
        server.secure(sock, dryad)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.dryad if dryad is not None else server.listen)
    return sock


def ask(sock: zmq.Socket, *frames: bytes, timeout: float = 3.0) -> dict[str, Any]:
    sock.send_multipart(list(frames))
    assert sock.poll(int(timeout * 1000)), "no reply"
    return msgpack.unpackb(sock.recv_multipart()[-1])


def request(op: str, args: Any = None, msg_id: Any = 1, v: Any = 1) -> bytes:
    return msgpack.packb({"v": v, "id": msg_id, "op": op, "args": args if args is not None else {}})


def code_of(reply: dict[str, Any]) -> str:
    assert "error" in reply, reply
    return reply["error"]["code"]


@pytest.fixture(autouse=True)
def still_serving(server: ServerProcess) -> Iterator[None]:
    """After every bad-input case the server is alive and answers a normal call."""
    yield
    assert server.alive()
    assert server.client(timeout=3).ping()["protocol"] == 1


def test_malformed_msgpack(server: ServerProcess, ctx: zmq.Context) -> None:
    reply = ask(dealer(ctx, server), b"\xc1\xc1\xc1 not msgpack")
    assert code_of(reply) == "bad_frame" and reply["id"] is None and reply["v"] == 1


def test_frame_not_a_map(server: ServerProcess, ctx: zmq.Context) -> None:
    reply = ask(dealer(ctx, server), msgpack.packb(["get_request_info", 1]))
    assert code_of(reply) == "bad_frame"
    assert "map" in reply["error"]["message"]


def test_wrong_envelope_version(server: ServerProcess, ctx: zmq.Context) -> None:
    reply = ask(dealer(ctx, server), request("ping", msg_id=77, v=99))
    assert code_of(reply) == "unsupported_version" and reply["id"] == 77
    assert "99" in reply["error"]["message"]


def test_unknown_operation(server: ServerProcess, ctx: zmq.Context) -> None:
    sock = dealer(ctx, server)
    assert code_of(ask(sock, request("launch_missiles"))) == "unknown_operation"
    reply = ask(sock, request("register", {"caps": {}}))        # a dryad op on the client port
    assert code_of(reply) == "unknown_operation" and "dryad endpoint" in reply["error"]["message"]


def test_missing_argument(server: ServerProcess, ctx: zmq.Context) -> None:
    reply = ask(dealer(ctx, server), request("new_request", {"caps": {"a": "b"}}))
    assert code_of(reply) == "bad_argument" and "priority" in reply["error"]["message"]


def test_mistyped_argument(server: ServerProcess, ctx: zmq.Context) -> None:
    sock = dealer(ctx, server)
    assert code_of(ask(sock, request("get_request_info", {"id": "seven"}))) == "bad_argument"
    assert code_of(ask(sock, request("new_request", {"caps": {"a": 1}, "priority": 4}))) == "bad_argument"
    assert code_of(ask(sock, request("new_request", {"caps": {}, "priority": 4,
                                                     "deadline": "next tuesday"}))) == "bad_argument"
    assert code_of(ask(sock, request("acquire_worker", {"id": 1, "timeout": -5}))) == "bad_argument"
    assert code_of(ask(sock, request("ping", [1, 2]))) == "bad_argument"
    assert code_of(ask(sock, request("list_requests", {"sorter": {"item": "id",
                                                                  "order": "up"}}))) == "wrong_sort_order"
    assert code_of(ask(sock, request("ping", {"extra": 1}))) == "bad_argument"


def test_oversize_frame(server: ServerProcess, ctx: zmq.Context) -> None:
    sock = dealer(ctx, server)
    big = request("new_request", {"caps": {"pad": "x" * (MAX_FRAME + 10)}, "priority": 4})
    reply = ask(sock, big)
    assert code_of(reply) == "frame_too_large" and str(MAX_FRAME) in reply["error"]["message"]
    assert ask(sock, request("ping", msg_id=2))["id"] == 2        # the same peer carries on


def test_multipart_message(server: ServerProcess, ctx: zmq.Context) -> None:
    reply = ask(dealer(ctx, server), request("ping"), request("ping"))
    assert code_of(reply) == "bad_frame"


def test_unknown_ids(server: ServerProcess, ctx: zmq.Context) -> None:
    sock = dealer(ctx, server)
    for op, args in [("get_request_info", {"id": 10**12}), ("close_request", {"id": 999999}),
                     ("acquire_worker", {"id": 999999, "timeout": 1}),
                     ("wait_request", {"id": 999999}),
                     ("get_worker_info", {"uuid": "no-such-worker"}),
                     ("set_state", {"uuid": "no-such-worker", "state": "IDLE"}),
                     ("deregister", {"uuid": "no-such-worker"})]:
        reply = ask(sock, request(op, args))
        assert code_of(reply) == "not_found", (op, reply)
    assert ask(sock, request("list_requests", {"paginator": {"id": 999999}}))["error"][
        "message"] == "request not found"


def test_reply_shaped_message_to_client_port(server: ServerProcess, ctx: zmq.Context) -> None:
    reply = ask(dealer(ctx, server), msgpack.packb({"v": 1, "id": 3, "ok": None}))
    assert code_of(reply) == "bad_frame" and reply["id"] == 3


def test_flooding_peer_is_limited_and_cannot_stall_others(server: ServerProcess,
                                                          ctx: zmq.Context) -> None:
    flooder = dealer(ctx, server, user=server.user("flooder"))   # limited per user
    flooder.setsockopt(zmq.SNDHWM, 100000)
    payload = request("list_requests", {})
    stop = threading.Event()
    sent = [0]

    def flood() -> None:
        while not stop.is_set() and sent[0] < 20000:
            try:
                flooder.send(payload, zmq.DONTWAIT)
                sent[0] += 1
            except zmq.Again:
                time.sleep(0.001)

    thread = threading.Thread(target=flood)
    thread.start()
    try:
        wait_until(lambda: sent[0] > 2000, 10, what="flood under way")
        client = server.client(timeout=3, retries=1)
        for _ in range(5):                                  # a polite client is served promptly
            start = time.monotonic()
            client.ping()
            assert time.monotonic() - start < 1.5
    finally:
        stop.set()
        thread.join(10)
    codes: dict[str, int] = {}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and flooder.poll(300):
        reply = msgpack.unpackb(flooder.recv())
        key = reply["error"]["code"] if "error" in reply else "ok"
        codes[key] = codes.get(key, 0) + 1
        if codes.get("rate_limited", 0) > 100 and codes.get("ok"):
            break
    assert codes.get("rate_limited", 0) > 100, codes
    assert codes.get("ok", 0) >= 1, codes


def test_dryad_endpoint_bad_input(server: ServerProcess, ctx: zmq.Context) -> None:
    uuid = f"bad-{unique_caps()['device_type']}"
    sock = dealer(ctx, server, dryad=uuid)                  # a dryad with a key, enrolled
    assert code_of(ask(sock, b"\x93garbage")) == "bad_frame"
    assert code_of(ask(sock, request("heartbeat"))) == "not_registered"
    assert code_of(ask(sock, request("set_fail", {"uuid": "x", "reason": "r"}))) == "not_registered"
    assert code_of(ask(sock, request("register", {"caps": {"a": "b"}, "dryad_address": ":1",
                                                  "ssh_address": ":22"}))) == "missing_uuid"
    assert code_of(ask(sock, request("register", {"caps": {"UUID": uuid}, "dryad_address": "",
                                                  "ssh_address": ":22"}))) == "missing_ip"
    assert code_of(ask(sock, request("register", {"caps": {"UUID": uuid},
                                                  "dryad_address": "1.2.3.4:0",
                                                  "ssh_address": ":22"}))) == "missing_port"
    assert code_of(ask(sock, request("new_request", {"caps": {}, "priority": 1}))) == "unknown_operation"
    # A reply to a command the server never sent is ignored; the link keeps working.
    sock.send(msgpack.packb({"v": 1, "id": 123456, "ok": {"username": "x"}}))
    caps = {"UUID": uuid}
    reply = ask(sock, request("register", {"caps": caps, "dryad_address": ":1",
                                           "ssh_address": ":22"}, msg_id=9))
    assert reply["id"] == 9 and reply["ok"]["uuid"] == caps["UUID"]
    assert ask(sock, request("heartbeat", {"uuid": "someone-else"}))["error"]["code"] == "not_registered"
    assert ask(sock, request("set_fail", {"uuid": "someone-else"}))["error"]["code"] == "bad_argument"
    assert "ok" in ask(sock, request("heartbeat", {"uuid": caps["UUID"]}))
