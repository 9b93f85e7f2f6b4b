"""The audit log as the server's endpoints write it: in process, then from a real server."""
from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any, Iterator

import pytest
import zmq

from boruta.core.errors import BorutaError
from boruta.logs import JsonFormatter
from boruta.server.audit import FLUSH_DELAY
from boruta.server.app import Server
from boruta.server.config import ServerConfig
from boruta.transport import codec
from e2e_helpers import server_factory, unique_caps, wait_until  # noqa: F401

PEER = b"\x00\x80\x00\x00\x01"
DRYAD = b"\x00\x80\x00\x00\x02"
UUID = "00000000-0000-4000-8000-0000000000a1"


class Sent:
    """Stands in for the ROUTER: keeps what the server sends."""

    def __init__(self) -> None:
        self.frames: list[list[Any]] = []

    def send(self, frames: list[Any]) -> bool:
        self.frames.append(frames)
        return True


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.docs: list[dict[str, Any]] = []
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.docs += [json.loads(line) for line in self.format(record).splitlines()]


@pytest.fixture
def lines() -> Iterator[Lines]:
    logger = logging.getLogger("boruta.audit")
    saved = logger.level, logger.propagate, logger.disabled
    handler = Lines()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate, logger.disabled = False, False
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(saved[0])
    logger.propagate, logger.disabled = saved[1], saved[2]


def serve(calls: list[tuple[bytes, str, str, dict[str, Any]]]) -> None:
    """Feed (peer, endpoint, op, args) to a fresh in-memory server, one turn, then let the
    loop run until the audit's batches are written (FLUSH_DELAY after they began)."""
    async def run() -> None:
        server = Server(ServerConfig(insecure=True))
        server.loop = asyncio.get_running_loop()
        for endpoint in (server.client_endpoint, server.dryad_endpoint):
            endpoint.sock = Sent()  # type: ignore[assignment]
        for n, (peer, endpoint, op, args) in enumerate(calls):
            frame = codec.request_frame(n + 1, op, args)
            if endpoint == "dryad":
                server.dryad_endpoint.on_frames([zmq.Frame(peer), zmq.Frame(frame)])
            else:
                server.client_endpoint.on_frames([peer, frame])
        server.outbox.flush_now()
        # The batches' timers were set before this sleep's, for earlier: they run first,
        # in the order the batches began.
        await asyncio.sleep(FLUSH_DELAY * 2)
    asyncio.run(run())


def test_endpoints_record_changes_with_ids_and_results(lines: Lines) -> None:
    register = {"caps": {"UUID": UUID, "device_type": "rpi4", "secret": "hush"},
                "dryad_address": "127.0.0.1:7175", "ssh_address": "127.0.0.1:22"}
    new = {"caps": {"device_type": "rpi4", "token": "hush"}, "priority": 4,
           "queue_unsatisfiable": True}
    serve([(DRYAD, "dryad", "register", register),
           (DRYAD, "dryad", "heartbeat", {"uuid": UUID}),
           (PEER, "client", "new_request", new),
           (PEER, "client", "list_requests", {}),
           (PEER, "client", "get_request_info", {"id": 1}),
           (PEER, "client", "close_request", {"id": 1}),
           (PEER, "client", "close_request", {"id": 999}),
           (PEER, "client", "close_request", {"id": "nope"}),
           (PEER, "client", "set_state", {"uuid": UUID, "state": "IDLE"}),
           (PEER, "client", "no_such_op", {})])
    got = [(d["endpoint"], d["op"], d.get("req_id"), d.get("uuid"), d["result"], d["peer"])
           for d in lines.docs]
    assert got == [
        ("dryad", "register", None, UUID, "ok", DRYAD.hex()),
        ("client", "new_request", 1, None, "ok", PEER.hex()),
        ("client", "close_request", 1, None, "ok", PEER.hex()),
        ("client", "close_request", 999, None, "not_found", PEER.hex()),
        ("client", "close_request", None, None, "bad_argument", PEER.hex()),
        ("client", "set_state", None, UUID, "ok", PEER.hex()),
    ]
    assert not any("hush" in json.dumps(d) or "rpi4" in json.dumps(d) for d in lines.docs)


def test_audit_off_records_nothing(lines: Lines) -> None:
    new = (PEER, "client", "new_request", {"caps": {"a": "b"}, "priority": 4,
                                           "queue_unsatisfiable": True})
    logging.getLogger("boruta.audit").disabled = True
    serve([new])
    assert lines.docs == []
    logging.getLogger("boruta.audit").disabled = False
    serve([new])
    assert [d["op"] for d in lines.docs] == ["new_request"]


@pytest.mark.slow
def test_real_server_writes_audit_lines(server_factory, tmp_path: Path) -> None:  # noqa: F811
    """A real server, a real dryad and client: the log holds one JSON audit line per change,
    the dryad's with the IP it connected from."""
    server = server_factory(log_format="json", log_level="warning")
    caps = unique_caps()
    farm = server.farm(1, caps=caps)
    uuid = farm.dryads[0].uuid
    client = server.client()
    client.set_state(uuid, "IDLE")
    req_id = client.new_request(caps, priority=4)
    client.close_request(req_id)
    with pytest.raises(BorutaError) as refused:
        client.close_request(req_id)
    client.list_requests()

    def audit() -> list[dict[str, Any]]:
        docs = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        return [d for d in docs if d["logger"] == "boruta.audit"]

    docs = wait_until(lambda: (a := audit()) and len(a) >= 6 and a, 10, what="audit lines")
    dryad = [d for d in docs if d["endpoint"] == "dryad"]        # the two endpoints' lines
    calls = [d for d in docs if d["endpoint"] != "dryad"]         # are not ordered together
    got = [(d["op"], d.get("req_id"), d.get("uuid"), d["result"]) for d in dryad + calls]
    assert got == [("register", None, uuid, "ok"),
                   ("dryad_enroll", None, uuid, "ok"),          # the harness, as the admin
                   ("set_state", None, uuid, "ok"),
                   ("new_request", req_id, None, "ok"), ("close_request", req_id, None, "ok"),
                   ("close_request", req_id, None, refused.value.code)]
    assert dryad[0]["ip"] == "127.0.0.1"
    peers = {d["peer"] for d in calls[1:]}
    assert len(peers) == 1 and dryad[0]["peer"] not in peers     # the client's connection


def test_audit_file_and_audit_off_are_server_settings(server_factory, tmp_path: Path) -> None:  # noqa: F811
    """`audit_file` sends the audit lines to their own file, none in the server log;
    `audit = false` writes none at all."""
    audit_path = tmp_path / "audit.log"
    own = server_factory(audit_file=str(audit_path), log_level="info")
    client = own.client()
    req_id = client.new_request(unique_caps(), 4, queue_unsatisfiable=True)
    wait_until(lambda: audit_path.exists() and f"req_id={req_id}" in audit_path.read_text(),
               10, what="the audit line in its own file")
    assert "op=new_request" in audit_path.read_text() and "op=new_request" not in own.log()

    off = server_factory(audit="false", log_level="info")
    client = off.client()
    req_id = client.new_request(unique_caps(), 4, queue_unsatisfiable=True)
    client.close_request(req_id)
    wait_until(lambda: f"request {req_id} CANCELLED" in off.log(), 10, what="the close logged")
    assert f"request {req_id} CANCELLED" in off.log() and "op=new_request" not in off.log()
