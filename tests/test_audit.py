"""The audit log: which calls it records, what a line holds (and never holds), how it is routed."""
from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path
from typing import Any, Iterator

import pytest

from boruta.core.errors import NotFoundError
from boruta.logs import AUDIT_LOGGER_NAME, LOGGER_NAME, JsonFormatter, TextFormatter, setup_logging
from boruta.server.audit import MAX_ID_CHARS, AuditLog, audited
from boruta.server.endpoint import Call
from boruta.server.parked import PARKED
from boruta.transport.operations import CLIENT_OPS, DRYAD_OPS

PEER = b"\x00\x80\x00\x00\x2a"
OTHER = b"\x00\x80\x00\x00\x2b"
SECRET = "s3cr3t-caps-value"
UUID = "4f9c1c0e-8a0b-4c4e-9a51-0d9b0c7f2e11"


def call(identity: bytes = PEER) -> Call:
    return Call((identity, ()), 7)


class Captured:
    """An AuditLog on its own logger, its lines captured in the given format."""

    def __init__(self, fmt: str = "json", endpoint: str = "client") -> None:
        self.stream = io.StringIO()
        self.logger = logging.getLogger(f"test.audit.{id(self)}")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        handler = logging.StreamHandler(self.stream)
        handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
        self.logger.addHandler(handler)
        table = CLIENT_OPS if endpoint == "client" else DRYAD_OPS
        self.audit = AuditLog(endpoint, table, logger=self.logger, flush_delay=0)

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def docs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines()]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """setup_logging changes process-wide loggers: put them back."""
    saved = {}
    for name in (LOGGER_NAME, AUDIT_LOGGER_NAME):
        lg = logging.getLogger(name)
        saved[name] = (list(lg.handlers), lg.level, lg.propagate, lg.disabled)
    yield
    for name, (handlers, level, propagate, disabled) in saved.items():
        lg = logging.getLogger(name)
        for handler in list(lg.handlers):
            lg.removeHandler(handler)
            handler.close()
        for handler in handlers:
            lg.addHandler(handler)
        lg.setLevel(level)
        lg.propagate, lg.disabled = propagate, disabled


# --------------------------------------------------------------------------- which calls
def test_audited_operations_are_the_state_changing_and_admin_ones() -> None:
    assert audited(CLIENT_OPS) == {"new_request", "update_request", "close_request",
                                   "prolong_access", "set_state", "set_groups", "deregister",
                                   "healthcheck", "user_add", "user_set", "user_remove",
                                   "user_list", "user_token", "dryad_enroll", "dryad_revoke",
                                   "dryad_list"}
    assert audited(DRYAD_OPS) == {"register", "set_fail"}


def test_reads_are_not_recorded() -> None:
    cap = Captured()
    for name in ("ping", "get_request_info", "list_requests", "list_workers",
                 "acquire_worker", "wait_request"):
        cap.audit.record(CLIENT_OPS[name], call(), {"id": 1}, {"id": 1})
    cap.audit.flush()
    assert cap.lines() == []


# --------------------------------------------------------------------------- what a line holds
def test_new_request_line_names_the_new_id_and_no_caps() -> None:
    cap = Captured()
    args = {"caps": {"device_type": "rpi4", "token": SECRET}, "priority": 4,
            "valid_after": None, "deadline": None, "queue_unsatisfiable": False}
    cap.audit.record(CLIENT_OPS["new_request"], call(), args, {"id": 42})
    [doc] = cap.docs()
    assert doc["logger"] == cap.logger.name and doc["level"] == "info"
    assert doc["msg"] == "audit" and doc["ts"].endswith("Z")
    assert {k: doc[k] for k in ("op", "req_id", "result", "peer", "endpoint")} == {
        "op": "new_request", "req_id": 42, "result": "ok", "peer": PEER.hex(),
        "endpoint": "client"}
    assert SECRET not in cap.stream.getvalue() and "rpi4" not in cap.stream.getvalue()
    assert "uuid" not in doc and "ip" not in doc           # nothing touched, nothing known


def test_refused_call_names_the_error_code() -> None:
    cap = Captured()
    cap.audit.record(CLIENT_OPS["close_request"], call(), {"id": 9},
                     NotFoundError("request 9 not found"))
    [doc] = cap.docs()
    assert (doc["op"], doc["req_id"], doc["result"]) == ("close_request", 9, "not_found")
    assert "not found" not in cap.stream.getvalue()        # the code, not the message


def test_internal_failure_and_call_answered_later() -> None:
    cap = Captured()
    cap.audit.record(CLIENT_OPS["set_state"], call(), {"uuid": UUID, "state": "IDLE"},
                     RuntimeError("boom"))
    cap.audit.record(CLIENT_OPS["healthcheck"], call(), {"uuid": UUID}, PARKED)
    docs = cap.docs()
    assert [(d["op"], d["uuid"], d["result"]) for d in docs] == [
        ("set_state", UUID, "internal"), ("healthcheck", UUID, "accepted")]
    assert "IDLE" not in cap.stream.getvalue() and "boom" not in cap.stream.getvalue()


def test_register_names_the_worker_from_result_or_caps() -> None:
    cap = Captured(endpoint="dryad")
    args = {"caps": {"UUID": UUID, "secret": SECRET}, "dryad_address": ":7175",
            "ssh_address": ":22"}
    cap.audit.record(DRYAD_OPS["register"], call(), args, {"uuid": UUID,
                                                          "heartbeat_interval": 5.0})
    cap.audit.record(DRYAD_OPS["register"], call(OTHER), {**args, "ssh_address": "x"},
                     NotFoundError("refused"))
    docs = cap.docs()
    assert [(d["uuid"], d["result"], d["endpoint"]) for d in docs] == [
        (UUID, "ok", "dryad"), (UUID, "not_found", "dryad")]
    assert SECRET not in cap.stream.getvalue()


def test_ids_a_peer_sends_are_cut_and_cannot_forge_lines() -> None:
    cap = Captured(fmt="text")
    forged = "x\n2026-01-01 INFO audit op=deregister %s %d"
    long_uuid = "u" * 10_000
    cap.audit.record(CLIENT_OPS["deregister"], call(), {"uuid": forged}, None)
    cap.audit.record(CLIENT_OPS["deregister"], call(), {"uuid": long_uuid}, None)
    lines = cap.lines()
    assert len(lines) == 2                                  # the line feed stayed inside
    assert f"uuid={json.dumps(forged)} result=ok" in lines[0]
    assert "u" * MAX_ID_CHARS + "..." in lines[1] and "u" * (MAX_ID_CHARS + 1) not in lines[1]
    assert all(line.split(" ", 3)[1:3] == ["INFO", "audit"] for line in lines)


def test_json_lines_keep_percent_and_quotes() -> None:
    cap = Captured()
    odd = 'a"b%s\\c'
    cap.audit.record(CLIENT_OPS["set_groups"], call(), {"uuid": odd, "groups": ["g"]}, None)
    cap.audit.record(CLIENT_OPS["set_groups"], call(), {"uuid": odd, "groups": ["g"]}, None)
    assert [d["uuid"] for d in cap.docs()] == [odd, odd]


# --------------------------------------------------------------------------- one record a turn
def test_a_turn_is_written_once_after_it_in_call_order() -> None:
    cap = Captured()
    writes: list[int] = []
    cap.logger.addFilter(lambda record: writes.append(len(record.runs)) or True)
    op = CLIENT_OPS["new_request"]

    async def turn() -> list[str]:
        cap.audit.record(op, call(PEER), {}, {"id": 1})
        cap.audit.record(op, call(PEER), {}, {"id": 2})
        cap.audit.record(op, call(OTHER), {}, {"id": 3})
        cap.audit.record(op, call(PEER), {}, NotFoundError("x"))
        cap.audit.record(op, call(PEER), {}, {"id": 4})
        before = cap.lines()
        await asyncio.sleep(0)                              # the loop's next iteration
        return before

    assert asyncio.run(turn()) == []                        # nothing during the turn
    docs = cap.docs()
    assert [(d.get("req_id"), d["peer"], d["result"]) for d in docs] == [
        (1, PEER.hex(), "ok"), (2, PEER.hex(), "ok"), (3, OTHER.hex(), "ok"),
        (None, PEER.hex(), "not_found"), (4, PEER.hex(), "ok")]
    assert len(writes) == 1                                 # one log record for the turn


def test_text_lines() -> None:
    cap = Captured(fmt="text")
    cap.audit.record(CLIENT_OPS["close_request"], call(), {"id": 5}, None)
    cap.audit.record(CLIENT_OPS["new_request"], call(), {}, {"id": 6})
    first, second = cap.lines()
    assert first.endswith(f" INFO audit req_id=5 op=close_request result=ok "
                          f"peer={PEER.hex()} endpoint=client")
    assert " req_id=6 op=new_request result=ok " in second


def test_who_can_be_replaced() -> None:
    cap = Captured()
    cap.audit.who = lambda c: "alice"
    cap.audit.record(CLIENT_OPS["close_request"], call(), {"id": 5}, None)
    assert cap.docs()[0]["peer"] == "alice"


# --------------------------------------------------------------------------- routing
def _audit_once() -> None:
    AuditLog("client", CLIENT_OPS).record(CLIENT_OPS["close_request"], call(), {"id": 77}, None)


def test_audit_goes_with_the_server_log_whatever_its_level(tmp_path: Path,
                                                             restore_logging: None) -> None:
    log = tmp_path / "server.log"
    setup_logging("warning", "json", str(log))
    logging.getLogger("boruta.server").info("not shown at warning")
    _audit_once()
    logging.getLogger(LOGGER_NAME).handlers[0].flush()
    docs = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(d["logger"], d["op"], d["req_id"]) for d in docs] == [
        (AUDIT_LOGGER_NAME, "close_request", 77)]


def test_audit_file_of_its_own(tmp_path: Path, restore_logging: None) -> None:
    log, audit_log = tmp_path / "server.log", tmp_path / "audit.log"
    setup_logging("info", "text", str(log), audit_path=str(audit_log))
    logging.getLogger("boruta.server").info("a server line")
    _audit_once()
    for lg in (LOGGER_NAME, AUDIT_LOGGER_NAME):
        for handler in logging.getLogger(lg).handlers:
            handler.flush()
    assert "a server line" in log.read_text() and "audit" not in log.read_text()
    [line] = audit_log.read_text().splitlines()
    assert " INFO audit req_id=77 op=close_request result=ok " in line


def test_audit_off(tmp_path: Path, restore_logging: None) -> None:
    log = tmp_path / "server.log"
    setup_logging("debug", "json", str(log), audit=False)
    _audit_once()
    logging.getLogger(LOGGER_NAME).handlers[0].flush()
    assert log.read_text() == ""


def test_a_burst_is_written_together_after_the_flush_delay() -> None:
    """With a flush delay, the lines of several turns wait, then go out as one record;
    nothing is lost, and the order is the calls' order."""
    cap = Captured()
    cap.audit.flush_delay = 0.01
    writes: list[int] = []
    cap.logger.addFilter(lambda record: writes.append(len(record.runs)) or True)
    op = CLIENT_OPS["new_request"]

    async def turns() -> tuple[list[str], list[str]]:
        for n in range(1, 4):
            cap.audit.record(op, call(PEER), {}, {"id": n})
            await asyncio.sleep(0)                          # a turn ends
        early = cap.lines()
        deadline = asyncio.get_running_loop().time() + 5
        while not cap.lines() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.005)
        return early, cap.lines()

    early, late = asyncio.run(turns())
    assert early == []
    assert [json.loads(line)["req_id"] for line in late] == [1, 2, 3]
    assert writes == [1]                                    # one run, one record, three lines
