"""Wire protocol, configuration, keys and client plumbing (in-process, no server)."""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import msgpack
import pytest
import zmq
from cryptography.hazmat.primitives import serialization

from boruta.core.errors import (BadArgumentError, BorutaError, NotFoundError,
                                PriorityError, WrongListDirectionError, WrongSortOrderError)
from boruta.core.types import Paginator, ReqState, RequestFilter, SortInfo, WorkerFilter, iso
from boruta.transport import addresses, arguments, codec, operations
from boruta.transport.errors import FrameTooLargeError
from boruta.transport.client import Client
from boruta.transport.errors import ServerUnreachableError, WaitTimeoutError, error_from_wire
from boruta.server.config import ConfigError, ServerConfig, load_server_config
from boruta.server.keys import generate_key


# ----------------------------------------------------------------------------- codec
def test_request_round_trip() -> None:
    env = codec.decode(codec.request_frame(7, "get_request_info", {"id": 3}))
    assert (env.id, env.op, env.args) == (7, "get_request_info", {"id": 3})
    assert env.is_request


def test_replies_round_trip() -> None:
    ok = codec.decode(codec.ok_frame("a", {"x": 1}))
    assert (ok.id, ok.ok, ok.error, ok.is_request) == ("a", {"x": 1}, None, False)
    err = codec.decode(codec.error_frame(5, NotFoundError("Request")))
    assert err.error == {"code": "not_found", "message": "Request not found"}


@pytest.mark.parametrize("payload, code, msg_id", [
    (b"\xc1\x00garbage", "bad_frame", None),
    (msgpack.packb([1, 2, 3]), "bad_frame", None),
    (msgpack.packb({"v": 1, "op": "ping"}), "bad_frame", None),              # no id
    (msgpack.packb({"v": 2, "id": 9, "op": "ping"}), "unsupported_version", 9),
    (msgpack.packb({"v": "1", "id": 9, "op": "ping"}), "bad_frame", 9),
    (msgpack.packb({"v": 1, "id": 9, "op": 5}), "bad_frame", 9),
    (msgpack.packb({"v": 1, "id": 9, "op": "ping", "args": [1]}), "bad_argument", 9),
    (msgpack.packb({"v": 1, "id": 9}), "bad_frame", 9),
    (msgpack.packb({1: 2}), "bad_frame", None),                                # non-string key
])
def test_decode_rejects(payload: bytes, code: str, msg_id: object) -> None:
    with pytest.raises(BorutaError) as info:
        codec.decode(payload)
    assert info.value.code == code
    assert getattr(info.value, "msg_id", None) == msg_id


def test_decode_size_limit() -> None:
    frame = codec.request_frame(1, "ping", {"pad": "x" * 5000})
    with pytest.raises(FrameTooLargeError):
        codec.decode(frame, max_bytes=4096)
    assert codec.decode(frame, max_bytes=len(frame)).op == "ping"


# ----------------------------------------------------------------------------- arguments
def test_op_check_missing_unknown_mistyped() -> None:
    op = operations.CLIENT_OPS["new_request"]
    with pytest.raises(BadArgumentError, match="missing argument 'priority'"):
        op.check({"caps": {}})
    with pytest.raises(BadArgumentError, match="unknown argument 'prio'"):
        op.check({"caps": {}, "priority": 1, "prio": 2})
    with pytest.raises(BadArgumentError, match="'priority' must be an integer"):
        op.check({"caps": {}, "priority": "high"})
    with pytest.raises(BadArgumentError):
        op.check({"caps": {"a": 1}, "priority": 1})
    with pytest.raises(BadArgumentError):
        op.check({"caps": {}, "priority": True})
    args = op.check({"caps": {"a": "b"}, "priority": 3})
    assert args == {"caps": {"a": "b"}, "priority": 3, "valid_after": None, "deadline": None,
                    "queue_unsatisfiable": None, "expr": None, "lease": None}


def test_times_iso_and_epoch() -> None:
    want = datetime(2027, 1, 15, 8, 0, tzinfo=timezone.utc)
    assert arguments.as_time("t", "2027-01-15T08:00:00Z") == want
    assert arguments.as_time("t", "2027-01-15T10:00:00+02:00") == want
    assert arguments.as_time("t", "2027-01-15T08:00:00") == want                      # naive = UTC
    assert arguments.as_time("t", want.timestamp()) == want
    assert arguments.as_time("t", int(want.timestamp())) == want
    for bad in ("+10m", "tomorrow", True, [1], float("nan")):
        with pytest.raises(BadArgumentError):
            arguments.as_time("t", bad)
    assert iso(want) == "2027-01-15T08:00:00Z"


def test_list_specs_round_trip() -> None:
    flt = RequestFilter(ids=(1, 2), priorities=(3,), states=(ReqState.WAIT, ReqState.INPROGRESS))
    assert arguments.request_filter_in("f", arguments.request_filter_out(flt)) == flt
    assert arguments.request_filter_in("f", {"states": ["wait", "In Progress"]}).states == (
        ReqState.WAIT, ReqState.INPROGRESS)
    wf = WorkerFilter(groups=("g",), caps={"a": "b"})
    assert arguments.worker_filter_in("f", arguments.worker_filter_out(wf)) == wf
    sorter = SortInfo("priority", True)
    assert arguments.sorter_in("s", arguments.sorter_out(sorter)) == sorter
    pag = Paginator(5, True, 10)
    assert arguments.paginator_in("p", arguments.paginator_out(pag), int) == pag
    with pytest.raises(WrongSortOrderError):
        arguments.sorter_in("s", {"item": "id", "order": "sideways"})
    with pytest.raises(WrongListDirectionError):
        arguments.paginator_in("p", {"direction": True}, int)
    with pytest.raises(BadArgumentError):
        arguments.paginator_in("p", {"limit": 70000}, int)
    with pytest.raises(BadArgumentError):
        arguments.request_filter_in("f", {"states": ["NOPE"]})


def test_fill_host() -> None:
    assert addresses.fill_host(":22", "10.0.0.5") == "10.0.0.5:22"
    assert addresses.fill_host(":22", None) == "127.0.0.1:22"
    assert addresses.fill_host(":22", "fe80::1") == "[fe80::1]:22"
    assert addresses.fill_host("192.168.1.2:2222", "10.0.0.5") == "192.168.1.2:2222"
    assert addresses.fill_host("", "10.0.0.5") == ""                               # the core refuses it
    assert addresses.split_host_port("[::1]:22") == ("::1", 22)


# ----------------------------------------------------------------------------- errors
def test_error_codes_map_to_core_classes() -> None:
    exc = error_from_wire("not_found", "Request not found")
    assert isinstance(exc, NotFoundError) and exc.what == "Request" and exc.message == "Request not found"
    assert isinstance(error_from_wire("bad_priority", "x"), PriorityError)
    assert isinstance(error_from_wire("wait_timeout", "x"), WaitTimeoutError)
    assert isinstance(error_from_wire("wait_timeout", "x"), ServerUnreachableError)
    odd = error_from_wire("from_the_future", "something new")
    assert type(odd) is BorutaError and odd.code == "from_the_future"


def test_error_codes_are_unique_per_class() -> None:
    from boruta.core.errors import all_error_classes
    owners: dict[str, set[str]] = {}
    for cls in all_error_classes():
        if "code" in cls.__dict__:
            owners.setdefault(cls.code, set()).add(cls.__name__)
    # Only documented aliases share a code.
    shared = {code: names for code, names in owners.items() if len(names) > 1}
    assert set(shared) <= {"internal", "bad_frame", "wait_timeout"}, shared


# ----------------------------------------------------------------------------- config
def test_config_file_and_overrides(tmp_path) -> None:
    path = tmp_path / "server.toml"
    path.write_text('listen = "tcp://127.0.0.1:9000"\nkey_type = "ed25519"\n'
                    'tunnel_ports = "7200-7209"\n[scheduler]\njob_timeout = 60\n')
    cfg = load_server_config(path, {"log-level": "DEBUG", "prolong_limit": 3, "events": None})
    assert cfg.listen == "tcp://127.0.0.1:9000"
    assert cfg.events == ServerConfig().events
    assert cfg.key_type == "ed25519" and cfg.tunnel_ports == (7200, 7209)
    assert cfg.scheduler.job_timeout == 60.0 and cfg.scheduler.prolong_limit == 3
    assert cfg.log_level == "debug"
    assert load_server_config(None, {"scheduler.prolong_limit": "none"}).scheduler.prolong_limit is None


@pytest.mark.parametrize("overrides", [
    {"lisen": "tcp://*:1"}, {"key_type": "dsa"}, {"tunnel_ports": "9-1"},
    {"heartbeat_interval": "fast"}, {"listen": "7175"}, {"job_timeout": -1},
    {"log_format": "xml"},
])
def test_config_refuses(overrides) -> None:
    with pytest.raises(ConfigError):
        load_server_config(None, overrides)


def test_config_missing_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_server_config(tmp_path / "nope.toml")


# ----------------------------------------------------------------------------- keys
@pytest.mark.parametrize("kind, header, ssh_type", [
    ("rsa", "-----BEGIN RSA PRIVATE KEY-----", "ssh-rsa"),
    ("ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----", "ssh-ed25519"),
])
def test_generated_keys(kind: str, header: str, ssh_type: str) -> None:
    key = generate_key(kind)
    assert key.private_text.startswith(header)
    assert key.key_type == ssh_type and key.public_openssh.startswith(ssh_type + " ")
    if kind == "rsa":
        private = serialization.load_pem_private_key(key.private_text.encode(), None)
        assert private.key_size == 2048
    else:
        private = serialization.load_ssh_private_key(key.private_text.encode(), None)
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
    assert key.public_openssh.split()[:2] == public.split()[:2]
    assert "PRIVATE" not in repr(key)


# ----------------------------------------------------------------------------- client plumbing
def test_events_endpoint_default() -> None:
    assert addresses.endpoint_with_port("tcp://10.1.2.3:7175", 7177) == "tcp://10.1.2.3:7177"
    assert Client("tcp://127.0.0.1:7175").events_endpoint == "tcp://127.0.0.1:7177"


class _SilentRouter:
    """A ROUTER that counts requests and answers only what `answer` returns."""

    def __init__(self, answer=None) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.ops: list[str] = []
        self.answer = answer
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.sock.poll(50):
                ident, payload = self.sock.recv_multipart()
                env = codec.decode(payload)
                self.ops.append(env.op)
                if self.answer is not None:
                    self.sock.send_multipart([ident, self.answer(env)])

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.sock.close(0)
        self.ctx.term()


def test_lazy_pirate_retries_reads_only() -> None:
    router = _SilentRouter()
    try:
        client = Client(f"tcp://127.0.0.1:{router.port}", timeout=0.2, retries=3)
        start = time.monotonic()
        with pytest.raises(ServerUnreachableError, match="3 attempts"):
            client.get_request_info(1)
        assert 0.5 < time.monotonic() - start < 3.0
        with pytest.raises(ServerUnreachableError, match="may or may not"):
            client.close_request(1)
        time.sleep(0.1)
        assert router.ops.count("get_request_info") == 3
        assert router.ops.count("close_request") == 1
        client.close()
    finally:
        router.close()


def test_client_ignores_stale_replies_and_raises_core_errors() -> None:
    def answer(env: codec.Envelope) -> bytes:
        if env.op == "get_request_info":
            return codec.error_frame(env.id, NotFoundError("Request"))
        return codec.ok_frame(env.id, {"server": "x"})

    router = _SilentRouter(answer)
    try:
        client = Client(f"tcp://127.0.0.1:{router.port}", timeout=2, retries=1)
        with pytest.raises(NotFoundError) as info:
            client.get_request_info(42)
        assert info.value.code == "not_found"
        assert client.ping() == {"server": "x"}
        client.close()
    finally:
        router.close()


def test_unreachable_server_is_reported_quickly() -> None:
    client = Client("tcp://127.0.0.1:1", timeout=0.1, retries=2)
    with pytest.raises(ServerUnreachableError):
        client.list_workers()
    with pytest.raises(ServerUnreachableError):
        client.new_request({"a": "b"}, 4, deadline=datetime.now(timezone.utc) + timedelta(hours=1))
    client.close()


def test_an_empty_client_config_setting_means_write_none(tmp_path) -> None:
    path = tmp_path / "server.toml"
    path.write_text('client_config = ""\n')
    assert load_server_config(path).client_config == ""
    assert load_server_config(None, {"client_config": ""}).client_config == ""
    assert load_server_config(None, {}).client_config is None          # the default place
