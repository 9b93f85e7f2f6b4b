"""Bad input over HTTP gets upstream's status and `{"message"}` body: never a traceback or a hang."""
from __future__ import annotations

import base64
import http.client
import json
import socket
import time
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest

from boruta.core.users import token_hash
from boruta.testing.processes import ServerProcess

pytestmark = pytest.mark.slow
TOKEN = "bad-input-token"


class Http:
    def __init__(self, url: str, auth: str | None) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.auth = parts.hostname, parts.port, auth

    def send(self, method: str, path: str, body: bytes | str | None = None,
             headers: dict[str, str] | None = None, auth: bool = True
             ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        sent = dict(headers or {})
        if auth and self.auth:
            sent.setdefault("Authorization", self.auth)
        try:
            conn.request(method, path, body=body.encode() if isinstance(body, str) else body,
                         headers=sent)
            resp = conn.getresponse()
            return resp.status, {k.title(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def message(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, str]:
        status, headers, data = self.send(method, path, body, **kw)
        assert headers["Content-Type"] == "application/json", data
        return status, json.loads(data)["message"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("badinput") / "server.log",
                         http_max_body=4096).start()
    proc.client().user_token(name="admin", token_hash=token_hash(TOKEN))
    yield proc
    log = proc.log()
    proc.close()
    assert "Traceback" not in log


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Http:
    return Http(server.http, "Basic " + base64.b64encode(f"admin:{TOKEN}".encode()).decode())


@pytest.mark.parametrize("body, message", [
    ('{"Priority":', "invalid request: unexpected EOF"),
    ("", "no body provided in HTTP request"),
    ("   \n", "no body provided in HTTP request"),
    ('{"Priority":"high","Caps":{}}', "invalid request: json: cannot unmarshal string into "
                                      "Go struct field ReqInfo.Priority of type boruta.Priority"),
    ('{"Priority":300}', "invalid request: json: cannot unmarshal number 300 into Go struct "
                         "field ReqInfo.Priority of type boruta.Priority"),
    ('{"Priority":4.5}', "invalid request: json: cannot unmarshal number 4.5 into Go struct "
                         "field ReqInfo.Priority of type boruta.Priority"),
    ('{"Priority":4,"Caps":["x"]}', "invalid request: json: cannot unmarshal array into Go "
                                    "struct field ReqInfo.Caps of type boruta.Capabilities"),
    ('{"Priority":4,"Caps":{"a":1}}', "invalid request: json: cannot unmarshal number 1 into "
                                      "Go struct field ReqInfo.Caps of type string"),
    ('{"Priority":4,"Deadline":7}', "invalid request: json: cannot unmarshal number 7 into Go "
                                    "struct field ReqInfo.Deadline of type time.Time"),
    ("[1, 2]", "invalid request: json: cannot unmarshal array into Go value of type "
               "boruta.ReqInfo"),
    ('{"Priority":0}', "invalid request: requested priority out of bounds"),
])
def test_new_request_bad_bodies(api: Http, body: str, message: str) -> None:
    assert api.message("POST", "/api/v1/reqs/", body) == (400, message)


def test_a_time_that_is_no_time_is_named(api: Http) -> None:
    status, message = api.message("POST", "/api/v1/reqs/",
                                  '{"Priority":4,"Caps":{},"Deadline":"tomorrow"}')
    assert status == 400 and "deadline" in message and "tomorrow" in message


def test_syntax_errors_and_bad_utf8_are_400(api: Http) -> None:
    status, message = api.message("POST", "/api/v1/reqs/list", '{"Filter": nope}')
    assert status == 400 and message.startswith("invalid request: invalid character 'n'")
    status, message = api.message("POST", "/api/v1/reqs/", b'{"Caps":{"\xff":"x"}}')
    assert status == 400 and message.startswith("invalid request:")
    status, message = api.message("POST", "/api/v1/reqs/", "[" * 100000)
    assert status == 413        # deeper than any body we take: the limit answers first


@pytest.mark.parametrize("body, fragment", [
    ('{"Sorter":{"Item":"id","Order":true}}', "cannot unmarshal bool"),
    ('{"Sorter":{"Item":"id","Order":"sideways"}}', "unknown sort order"),
    ('{"Paginator":{"ID":0,"Direction":"up","Limit":2}}', "unknown direction"),
    ('{"Paginator":{"ID":0,"Direction":false,"Limit":2}}', "cannot unmarshal bool"),
    ('{"Paginator":{"ID":0,"Limit":70000}}', "cannot unmarshal number 70000"),
    ('{"Paginator":{"ID":-1}}', "cannot unmarshal number -1"),
    ('{"Filter":{"Priorities":[256]}}', "cannot unmarshal number 256"),
    ('{"Filter":{"Priorities":"!!"}}', "illegal base64"),
    ('{"Filter":{"States":"WAITING"}}', "cannot unmarshal string"),
    ('{"Filter":7}', "cannot unmarshal number 7"),
])
def test_bad_list_specs(api: Http, body: str, fragment: str) -> None:
    status, headers, data = api.send("POST", "/api/v1/reqs/list", body)
    assert status == 400 and fragment in json.loads(data)["message"]
    assert headers["Boruta-List-Total"] == "0"


def test_request_states_are_matched_exactly(api: Http) -> None:
    """Upstream decodes the filter as it is: `waiting` is no state and matches nothing."""
    assert api.send("POST", "/api/v1/reqs/", '{"Priority":4,"Caps":{"x":"y"}}')[0] == 201
    status, headers, data = api.send("POST", "/api/v1/reqs/list",
                                     '{"Filter":{"States":["waiting"]}}')
    assert (status, json.loads(data), headers["Boruta-List-Total"]) == (200, [], "0")
    status, _, data = api.send("POST", "/api/v1/reqs/list", '{"filter":{"states":["WAITING"]}}')
    assert status == 200 and len(json.loads(data)) >= 1      # Go matches names without case


def test_worker_bodies(api: Http) -> None:
    uuid = "ec4898ac-0853-407c-8501-cbb24ef6bd77"
    assert api.message("POST", f"/api/v1/workers/{uuid}/setstate", '{"WorkerState":"idle"}') \
        == (400, "invalid request: Only state changes to IDLE and MAINTENANCE are allowed")
    assert api.message("POST", f"/api/v1/workers/{uuid}/setstate", '{"WorkerState":5}')[0] \
        == 400
    assert api.message("POST", f"/api/v1/workers/{uuid}/setgroups", '{"a":1}') == (
        400, "invalid request: json: cannot unmarshal object into Go value of type "
             "boruta.Groups")
    assert api.message("POST", f"/api/v1/workers/{uuid}/setgroups", "null") == (
        404, "Worker not found")


@pytest.mark.parametrize("path, message", [
    ("/api/v1/reqs/-1", "invalid request: ID provided in URL isn't valid"),
    ("/api/v1/reqs/1.5", "invalid request: ID provided in URL isn't valid"),
    ("/api/v1/reqs/18446744073709551616", "invalid request: ID provided in URL isn't valid"),
    ("/api/v1/reqs/%D9%A1", "invalid request: ID provided in URL isn't valid"),
    ("/api/v1/reqs/18446744073709551615", "Request not found"),
    ("/api/v1/workers/EC4898AC-0853-407C-8501-CBB24EF6BD77",
     "invalid request: ID provided in URL isn't valid UUID"),
    ("/api/v1/workers/ec4898ac-0853-407c-8501-cbb24ef6bd7", 
     "invalid request: ID provided in URL isn't valid UUID"),
])
def test_bad_ids(api: Http, path: str, message: str) -> None:
    status, got = api.message("GET", path)
    assert got == message and status == (404 if "not found" in message else 400)


def test_unknown_paths_and_methods(api: Http) -> None:
    assert api.message("DELETE", "/api/v1/reqs/1") == (404, "/api/v1/reqs/1 not found")
    assert api.message("GET", "/api/v1/reqs/") == (404, "/api/v1/reqs/ not found")
    assert api.message("GET", "/api/v1/nothing/here") == (404, "/api/v1/nothing/here not found")
    assert api.message("OPTIONS", "/api/v1/reqs/") == (404, "/api/v1/reqs/ not found")
    status, headers, body = api.send("GET", "/no/such/page")
    assert (status, body) == (404, b"404 page not found\n")
    assert headers["Content-Type"].startswith("text/plain")


def test_redirects_keep_method_body_and_query(api: Http) -> None:
    status, headers, _ = api.send("POST", "/api/reqs?x=1", "{}")
    assert (status, headers["Location"]) == (308, "/api/v1/reqs?x=1")
    status, headers, _ = api.send("POST", "/api/v1/reqs?x=1", "{}")
    assert (status, headers["Location"]) == (308, "/api/v1/reqs/?x=1")
    status, headers, _ = api.send("GET", "/api/v1/reqs/1/")
    assert (status, headers["Location"]) == (308, "/api/v1/reqs/1")


def test_huge_bodies_are_refused_before_they_are_read(api: Http) -> None:
    status, message = api.message("POST", "/api/v1/reqs/", "x" * 5000)
    assert status == 413 and "http_max_body" in message
    status, message = api.message("POST", "/api/v1/reqs/1/close", "x" * 5000)
    assert status == 413
    # no Content-Length (chunked): counted as it arrives
    conn = http.client.HTTPConnection(api.host, api.port, timeout=10)
    conn.putrequest("POST", "/api/v1/reqs/list")
    conn.putheader("Authorization", api.auth or "")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    for _ in range(5):
        conn.send(b"400\r\n" + b" " * 1024 + b"\r\n")
    conn.send(b"0\r\n\r\n")
    resp = conn.getresponse()
    assert resp.status == 413 and "http_max_body" in json.loads(resp.read())["message"]
    conn.close()


def test_oversized_headers_are_refused_by_the_parser(api: Http) -> None:
    status, _, _ = api.send("GET", "/api/v1/version", headers={"X-Big": "y" * 9000})
    assert status in (400, 431)
    status, _, _ = api.send("GET", "/api/v1/version",
                            headers={f"X-H{i}": "1" for i in range(200)})
    assert status in (400, 431)


@pytest.mark.parametrize("auth, fragment", [
    (None, "credentials required"),
    ("Basic " + base64.b64encode(b"admin:wrong").decode(), "unknown token"),
    ("Bearer wrong", "unknown token"),
    ("Basic %%%", "malformed Authorization header"),
    ("Digest abc", "malformed Authorization header"),
])
def test_bad_credentials_are_401(server: ServerProcess, auth: str | None, fragment: str) -> None:
    api = Http(server.http, auth)
    status, headers, body = api.send("POST", "/api/v1/reqs/list", "")
    assert status == 401 and fragment in json.loads(body)["message"]
    assert headers["Www-Authenticate"].startswith("Basic")
    assert headers["Boruta-List-Total"] == "0"       # a list's error, for the Go client


def test_a_slow_client_does_not_hold_up_others(api: Http) -> None:
    slow = socket.create_connection((api.host, api.port))
    try:
        slow.sendall(b"POST /api/v1/reqs/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                     b"Authorization: " + (api.auth or "").encode() + b"\r\n\r\n{\"Pri")
        started = time.monotonic()
        status, _, _ = api.send("GET", "/api/v1/version")
        assert status == 200 and time.monotonic() - started < 1.0
    finally:
        slow.close()


def test_cors_as_upstream(api: Http) -> None:
    status, headers, _ = api.send("GET", "/api/v1/version", headers={"Origin": "http://x.org"})
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "Boruta-List-Total" in headers["Access-Control-Expose-Headers"]
    assert headers["Vary"] == "Origin"
    status, headers, body = api.send("OPTIONS", "/api/v1/reqs/list", headers={
        "Origin": "http://x.org", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"}, auth=False)
    assert (status, body) == (204, b"")
    assert headers["Access-Control-Allow-Methods"] == "POST"
    assert headers["Access-Control-Allow-Headers"] == "Content-Type"
    assert headers["Access-Control-Max-Age"] == "86400"
    status, headers, _ = api.send("OPTIONS", "/api/v1/reqs/list", headers={
        "Origin": "http://x.org", "Access-Control-Request-Method": "DELETE"}, auth=False)
    assert status == 204 and "Access-Control-Allow-Origin" not in headers
