"""The HTTP face's parts without a server: routing rules, CORS, upstream's JSON, the error table."""
from __future__ import annotations

import base64
import json

import pytest
from aiohttp.test_utils import make_mocked_request

from boruta.core import errors as core_errors
from boruta.http import upstream
from boruta.http.cors import Cors
from boruta.http.errors import RULES, HttpError, from_boruta
from boruta.http.routing import Found, NotFound, Redirect, Router
from boruta.transport import errors as wire_errors


async def _handler(request, params):  # pragma: no cover - never awaited here
    raise AssertionError


def _router() -> Router:
    router = Router()
    for method, path in [("POST", "/api/v1/reqs/"), ("POST", "/api/v1/reqs/list"),
                         ("GET", "/api/v1/reqs/:id"), ("POST", "/api/v1/reqs/:id"),
                         ("POST", "/api/v1/reqs/:id/close"), ("GET", "/api/v1/version"),
                         ("GET", "/static/*path")]:
        router.add(method, path, _handler)
    return router


# ---------------------------------------------------------------- routing
def test_static_segments_win_over_parameters() -> None:
    found = _router().resolve("POST", "/api/v1/reqs/list")
    assert isinstance(found, Found) and found.params == {}
    found = _router().resolve("POST", "/api/v1/reqs/7")
    assert isinstance(found, Found) and found.params == {"id": "7"}


def test_trailing_slash_and_version_redirects() -> None:
    router = _router()
    assert router.resolve("POST", "/api/reqs", "a=1") == Redirect("/api/v1/reqs?a=1")
    assert router.resolve("POST", "/api/v1/reqs") == Redirect("/api/v1/reqs/")
    assert router.resolve("GET", "/api/v1/reqs/1/") == Redirect("/api/v1/reqs/1")
    missing = router.resolve("GET", "/api/v1/reqs")            # no GET on /reqs/: a 404
    assert isinstance(missing, NotFound) and missing.api


def test_head_double_slashes_catch_all_and_404s() -> None:
    router = _router()
    assert isinstance(router.resolve("HEAD", "/api/v1//version"), Found)
    found = router.resolve("GET", "/static/a/b.css")
    assert isinstance(found, Found) and found.params == {"path": "a/b.css"}
    assert isinstance(router.resolve("DELETE", "/api/v1/reqs/1"), NotFound)
    outside = router.resolve("GET", "/elsewhere")
    assert isinstance(outside, NotFound) and not outside.api
    with pytest.raises(ValueError):
        router.add("GET", "/api/v1/version", _handler)


# ---------------------------------------------------------------- CORS
def test_cors_origins() -> None:
    assert Cors("*").all and Cors("").all and Cors("http://a, *").all
    some = Cors("http://a.org, HTTP://B.org")
    assert some.allows("http://B.org") and some.allows("http://a.org")
    assert not some.allows("https://a.org") and not some.allows("http://a.org:81")


def test_cors_preflight_and_actual_request() -> None:
    cors = Cors("http://a.org")
    request = make_mocked_request("OPTIONS", "/api/v1/reqs/", headers={
        "Origin": "http://a.org", "Access-Control-Request-Method": "post",
        "Access-Control-Request-Headers": "content-type, authorization"})
    assert cors.is_preflight(request)
    answer = cors.preflight(request)
    assert answer.status == 204
    assert answer.headers["Access-Control-Allow-Origin"] == "http://a.org"
    assert answer.headers["Access-Control-Allow-Methods"] == "POST"
    assert answer.headers["Access-Control-Allow-Headers"] == "Content-Type, Authorization"
    refused = cors.preflight(make_mocked_request("OPTIONS", "/", headers={
        "Origin": "http://evil.org", "Access-Control-Request-Method": "POST"}))
    assert "Access-Control-Allow-Origin" not in refused.headers
    from aiohttp import web
    response = web.Response()
    cors.decorate(make_mocked_request("GET", "/", headers={"Origin": "http://evil.org"}),
                  response)
    assert response.headers["Vary"] == "Origin"
    assert "Access-Control-Allow-Origin" not in response.headers


# ---------------------------------------------------------------- upstream's JSON
def test_times_as_go_writes_them() -> None:
    assert upstream.go_time("2026-01-02T03:04:05.120000Z") == "2026-01-02T03:04:05.12Z"
    assert upstream.go_time("2026-01-02T03:04:05.000000Z") == "2026-01-02T03:04:05Z"
    assert upstream.go_time("2026-01-02T03:04:05Z") == "2026-01-02T03:04:05Z"
    assert upstream.header_time("2026-01-02T03:04:05.5Z") == "2026-01-02T03:04:05Z"
    assert upstream.time_value("0001-01-01T00:00:00Z", "x") is None
    assert upstream.time_value("2026-01-02T03:04:05.123456789+02:00", "x") == \
        "2026-01-02T03:04:05.123456+02:00"


def test_documents_in_upstreams_shapes() -> None:
    doc = {"id": 3, "priority": 4, "state": "IN PROGRESS", "caps": {"a": "b"},
           "owner": {"name": "alice", "groups": []}, "valid_after": "2026-01-01T00:00:00Z",
           "deadline": "2026-02-01T00:00:00.5Z",
           "job": {"worker_uuid": "u", "timeout": "2026-01-01T01:00:00Z"}}
    assert upstream.req_info(doc) == {
        "ID": 3, "Priority": 4, "Owner": {"Groups": None}, "Deadline": "2026-02-01T00:00:00.5Z",
        "ValidAfter": "2026-01-01T00:00:00Z", "State": "IN PROGRESS",
        "Job": {"WorkerUUID": "u", "Timeout": "2026-01-01T01:00:00Z"}, "Caps": {"a": "b"}}
    assert upstream.worker_info({"uuid": "u", "state": "IDLE", "groups": ["g"], "caps": {}}) \
        == {"WorkerUUID": "u", "State": "IDLE", "Groups": ["g"], "Caps": {}}
    assert upstream.access_info({"host": "10.0.0.1", "port": 2200, "key": "K",
                                 "username": "u"}) == {
        "Addr": {"IP": "10.0.0.1", "Port": 2200, "Zone": ""}, "Key": "K", "Username": "u"}


def test_bodies_read_as_go_reads_them() -> None:
    assert upstream.parse_body(b' {"a": 1} trailing') == {"a": 1}
    with pytest.raises(HttpError) as eof:
        upstream.parse_body(b'{"a": ')
    assert eof.value.message == "invalid request: unexpected EOF"
    with pytest.raises(HttpError) as empty:
        upstream.parse_body(b"\n")
    assert empty.value.message == "no body provided in HTTP request"
    args = upstream.new_request({"priority": 4, "CAPS": {"x": "y"},
                                 "ValidAfter": "0001-01-01T00:00:00Z", "Owner": {"Groups": None},
                                 "Unknown": 1})
    assert args == {"caps": {"x": "y"}, "priority": 4, "valid_after": None, "deadline": None,
                    "queue_unsatisfiable": True, "expr": None}
    # Our capability expressions ride in an Expr field upstream's clients never send.
    assert upstream.new_request({"Priority": 4, "Expr": ["serial in 1,2"]})["expr"] == \
        ["serial in 1,2"]
    with pytest.raises(HttpError, match="Expr"):
        upstream.new_request({"Priority": 4, "Expr": "serial?"})
    doc = {"id": 1, "priority": 4, "owner": {}, "deadline": None, "valid_after": None,
           "state": "WAITING", "job": None, "caps": {}}
    assert "Expr" not in upstream.req_info(doc)
    assert upstream.req_info({**doc, "expr": ["sdmux?"]})["Expr"] == ["sdmux?"]
    assert upstream.update_request({}, 5) is None
    assert upstream.update_request({"ID": 5, "Priority": 3}, 5)["priority"] == 3
    with pytest.raises(HttpError, match="doesn't match"):
        upstream.update_request({"ID": 4, "Priority": 3}, 5)


def test_list_specs() -> None:
    prios = base64.b64encode(bytes([4, 99])).decode()
    args, nothing = upstream.requests_list(json.loads(json.dumps({
        "Filter": {"IDs": [1], "Priorities": prios, "States": ["WAITING", "bogus"]},
        "Sorter": {"Item": "priority", "Order": "descending"},
        "Paginator": {"ID": 2, "Direction": "backward", "Limit": 2}})))
    assert not nothing
    assert args == {"filter": {"ids": [1], "priorities": [4, 99], "states": ["WAITING"]},
                    "sorter": {"item": "priority", "order": "descending"},
                    "paginator": {"id": 2, "direction": "backward", "limit": 2}}
    assert upstream.requests_list({"Filter": {"States": ["WAIT"]}})[1] is True
    assert upstream.requests_list(None) == ({"filter": None, "sorter": None,
                                             "paginator": None}, False)
    assert upstream.workers_list({"Filter": {"Groups": None, "Capabilities": {"a": "b"}},
                                  "Paginator": {"ID": "u"}})["filter"] == {
        "groups": [], "caps": {"a": "b"}}


# ---------------------------------------------------------------- the error table
def test_every_error_code_has_a_status_and_upstreams_text_where_it_has_one() -> None:
    assert from_boruta(core_errors.NotFoundError("Worker")).status == 404
    assert from_boruta(core_errors.NotFoundError("Worker")).message == "Worker not found"
    detailed = core_errors.WorkerNotAssignedError("worker not assigned: request 3 is DONE")
    assert from_boruta(detailed).message == "invalid request: worker not assigned"
    assert from_boruta(wire_errors.WaitTimeoutError("request 3 is WAITING")).message == \
        "invalid request: worker not assigned"
    assert (from_boruta(core_errors.ForbiddenError("not yours")).status,
            from_boruta(core_errors.ForbiddenError("not yours")).message) == (403, "not yours")
    assert from_boruta(wire_errors.RateLimitedError()).status == 429
    assert from_boruta(wire_errors.StorageFailedError()).status == 503
    assert from_boruta(wire_errors.ServerBusyError()).status == 503
    assert from_boruta(core_errors.TooManyOpenRequestsError("5 open")).message == \
        "invalid request: 5 open"
    assert from_boruta(core_errors.BadArgumentError("argument 'x'")).status == 400
    codes = {cls.code for cls in core_errors.all_error_classes()}
    assert set(RULES) - {"unauthenticated"} <= codes
