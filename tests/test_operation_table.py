"""The operation table is the one declaration: dispatch, clients and docs agree with it."""
from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest

import boruta
from boruta.core.errors import BadArgumentError, BorutaError
from boruta.server.admin_operations import AdminOperations
from boruta.server.client_operations import ClientOperations
from boruta.server.dryads import DryadRegistry
from boruta.server.endpoint import handlers_for
from boruta.transport import codec
from boruta.transport.async_client import AsyncClient
from boruta.transport.client import Client
from boruta.transport.operations import (ALL_TABLES, CLIENT_OPS, DRYAD_OPS, SERVER_COMMANDS,
                                         Endpoint, markdown_block)

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
KEY = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"      # a CurveZMQ public key (ZeroMQ's example)
CLIENT_PLUMBING = {"call", "perform", "events", "close", "events_endpoint", "from_config"}


def test_every_client_and_dryad_operation_has_exactly_one_handler() -> None:
    client_handlers = handlers_for(CLIENT_OPS, ClientOperations.__new__(ClientOperations),
                                   AdminOperations.__new__(AdminOperations))
    assert set(client_handlers) == set(CLIENT_OPS)
    dryad_handlers = handlers_for(DRYAD_OPS, DryadRegistry.__new__(DryadRegistry))
    assert set(dryad_handlers) == set(DRYAD_OPS)


def test_a_handler_object_that_does_not_match_the_table_is_refused() -> None:
    class Missing:
        def op_ping(self, call, args):  # pragma: no cover - never called
            return None

    with pytest.raises(TypeError, match=r"missing \['acquire_worker'"):
        handlers_for(CLIENT_OPS, Missing())

    class Extra(ClientOperations):
        def op_reboot(self, call, args):  # pragma: no cover - never called
            return None

    with pytest.raises(TypeError, match=r"not declared \['reboot'\]"):
        handlers_for(CLIENT_OPS, Extra.__new__(Extra), AdminOperations.__new__(AdminOperations))
    with pytest.raises(TypeError, match=r"not declared \['ping'\]"):     # served twice
        handlers_for(CLIENT_OPS, ClientOperations.__new__(ClientOperations),
                     AdminOperations.__new__(AdminOperations), Missing())


@pytest.mark.parametrize("cls", [Client, AsyncClient])
def test_client_methods_are_the_table(cls: type) -> None:
    public = {name for name in dir(cls) if not name.startswith("_")}
    assert public - CLIENT_PLUMBING == set(CLIENT_OPS)
    for name, op in CLIENT_OPS.items():
        method = getattr(cls, name)
        assert method.operation is op
        params = list(inspect.signature(method).parameters)
        assert params == ["self", *(arg.python_name for arg in op.args)], name
        for arg in op.args:
            param = inspect.signature(method).parameters[arg.python_name]
            assert (param.default is inspect.Parameter.empty) == arg.required, (name, arg.name)
        assert inspect.iscoroutinefunction(method) == (cls is AsyncClient)
        assert method.__doc__.startswith(op.summary)


def test_client_encodes_what_the_server_converts() -> None:
    """Every argument a client sends with its defaults is accepted by the declaration."""
    samples = {"caps": {"device_type": "rpi4"}, "priority": 4, "req_id": 7, "uuid": "u-1",
               "state": "idle", "timeout": 1.5, "name": "alice", "key": KEY, "keys": [KEY],
               "token_hash": "0" * 64, "ids": [7, 8]}
    for op in CLIENT_OPS.values():
        values = {arg.python_name: samples[arg.python_name]
                  for arg in op.args if arg.required}
        wire = op.encode_args(values)
        assert list(wire) == [arg.name for arg in op.args]
        checked = op.check(codec.unpack(codec.pack(wire)))
        assert set(checked) == set(wire)


def test_check_names_the_missing_and_the_unknown_argument() -> None:
    op = CLIENT_OPS["close_request"]
    with pytest.raises(BadArgumentError, match="close_request: missing argument 'id'"):
        op.check({})
    with pytest.raises(BadArgumentError, match="close_request: unknown argument 'ids'"):
        op.check({"id": 1, "ids": [1]})


def test_declared_errors_are_error_classes_with_codes() -> None:
    for table in ALL_TABLES.values():
        for op in table.values():
            for cls in op.errors:
                assert issubclass(cls, BorutaError) and cls.code != "internal", op.name


@pytest.mark.parametrize("endpoint", list(Endpoint))
def test_protocol_doc_holds_the_generated_tables(endpoint: Endpoint) -> None:
    assert markdown_block(endpoint) in DOC.read_text(encoding="utf-8"), (
        "docs/protocol.md is out of date: paste the output of `python -m boruta.transport`")


def test_operation_names_are_unique_per_endpoint_and_commands_are_separate() -> None:
    assert set(CLIENT_OPS).isdisjoint(DRYAD_OPS)
    assert SERVER_COMMANDS["healthcheck"] is not CLIENT_OPS["healthcheck"]


def test_public_surface() -> None:
    assert boruta.Client is Client
    assert boruta.AsyncClient is AsyncClient
    for name in ("Scheduler", "ReqInfo", "WorkerInfo", "ReqState", "WorkerState",
                 "BorutaError", "NotFoundError", "ServerUnreachableError", "WaitTimeoutError",
                 "FrameTooLargeError", "ConfigError"):
        assert name in boruta.__all__, name
    for name in boruta.__all__:
        assert getattr(boruta, name) is not None, name


def test_async_client_method_binds_like_the_sync_one() -> None:
    client = AsyncClient("tcp://127.0.0.1:1", timeout=0.01, retries=1)
    with pytest.raises(TypeError, match="missing a required argument: 'priority'"):
        asyncio.run(client.new_request({"a": "b"}))
