"""Upstream's recorded answers (http/server/api/v1/testdata), replayed against a live server.

Each case is the request upstream's handler test made and the files it
recorded: `NAME-METHOD.json` (the body) and `NAME.headers` (a JSON object of
header lists). What holds on a live server is checked exactly: the error
bodies and statuses, the Boruta header names, the JSON field names and
shapes. Values a mocked backend chose (request 1 with fixed times, worker
"0") are not compared; nor is `worker-set-state-valid` (202 `null`, which
upstream's own client cannot read: we answer 204).
"""
from __future__ import annotations

import base64
import http.client
import json
import os
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest

from boruta.core.users import token_hash
from boruta.http.api_v1 import LIST_HEADERS
from boruta.testing.processes import ServerProcess
from e2e_helpers import unique_caps

TESTDATA = Path(os.environ.get("BORUTA_UPSTREAM_TESTDATA",
                               "/work/shared/upstream-http-v1/testdata"))
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not TESTDATA.is_dir(), reason=f"upstream's recorded answers are not in {TESTDATA}")]

TOKEN = "replay-token"
MISSING_UUID = "ec4898ac-0853-407c-8501-cbb24ef6bd77"
BAD_ID, BAD_UUID = "test", "test"
TRUNCATED = '{"Priority":4,"Caps":{"architecture":"armv7l"'
VALID_REQ = ('{"Priority":8,"Deadline":"2200-12-31T01:02:03Z","ValidAfter":'
             '"2100-01-01T04:05:06Z","Caps":{"architecture":"armv7l","monitor":"yes"}}')
R, W = "/api/v1/reqs", "/api/v1/workers"

# name -> (method, path, body); {req} is a live request's ID, {uuid} a live worker's,
# {missing} an ID no request has.
ERRORS: dict[str, tuple[str, str, str | None]] = {
    "acquire-worker-bad-id": ("POST", f"{R}/{BAD_ID}/acquire_worker", None),
    "acquire-worker-missing": ("POST", f"{R}/{{missing}}/acquire_worker", None),
    "close-req-bad-id": ("POST", f"{R}/{BAD_ID}/close", None),
    "close-req-missing": ("POST", f"{R}/{{missing}}/close", None),
    "filter-reqs-bad-sorter-item": ("POST", f"{R}/list",
                                    '{"Sorter":{"Item":"foobarbaz","Order":"ascending"}}'),
    "filter-reqs-malformed-json": ("POST", f"{R}/list", TRUNCATED),
    "filter-workers-bad-sorter-item": ("POST", f"{W}/list",
                                       '{"Sorter":{"Item":"foobarbaz","Order":"ascending"}}'),
    "filter-workers-malformed-json": ("POST", f"{W}/list", TRUNCATED),
    "new-req-bad-prio": ("POST", f"{R}/", VALID_REQ.replace('"Priority":8', '"Priority":32')),
    "new-req-malformed-json": ("POST", f"{R}/", TRUNCATED),
    "prolong-access-bad-id": ("POST", f"{R}/{BAD_ID}/prolong", None),
    "prolong-access-missing": ("POST", f"{R}/{{missing}}/prolong", None),
    "req-info-bad-id": ("GET", f"{R}/{BAD_ID}", None),
    "req-info-missing": ("GET", f"{R}/{{missing}}", None),
    "update-req-bad-id": ("POST", f"{R}/{BAD_ID}", '{"Priority":4}'),
    "update-req-empty": ("POST", f"{R}/{{req}}", ""),
    "update-req-malformed-json": ("POST", f"{R}/{{req}}", TRUNCATED),
    "update-req-mismatch": ("POST", f"{R}/{{missing}}", '{"ID":1,"Priority":4}'),
    "update-req-missing": ("POST", f"{R}/{{missing}}", '{"Priority":4}'),
    "worker-deregister-bad-uuid": ("POST", f"{W}/{BAD_UUID}/deregister", None),
    "worker-deregister-missing": ("POST", f"{W}/{MISSING_UUID}/deregister", None),
    "worker-info-bad-uuid": ("GET", f"{W}/{BAD_UUID}", None),
    "worker-info-missing": ("GET", f"{W}/{MISSING_UUID}", None),
    "worker-set-groups-bad-uuid": ("POST", f"{W}/{BAD_UUID}/setgroups", '["a"]'),
    "worker-set-groups-malformed-json": ("POST", f"{W}/{{uuid}}/setgroups", '["a"'),
    "worker-set-groups-missing": ("POST", f"{W}/{MISSING_UUID}/setgroups", '["a"]'),
    "worker-set-state-bad-uuid": ("POST", f"{W}/{BAD_UUID}/setstate",
                                  '{"WorkerState":"IDLE"}'),
    "worker-set-state-malformed-json": ("POST", f"{W}/{{uuid}}/setstate", TRUNCATED),
    "worker-set-state-missing": ("POST", f"{W}/{MISSING_UUID}/setstate",
                                 '{"WorkerState":"IDLE"}'),
}
# name -> (method, path, body, status): answers whose shape (not values) holds.
SHAPES: dict[str, tuple[str, str, str | None, int]] = {
    "new-req-valid": ("POST", f"{R}/", VALID_REQ, 201),
    "req-info": ("GET", f"{R}/{{req}}", None, 200),
    "worker-info-valid": ("GET", f"{W}/{{uuid}}", None, 200),
    "filter-workers-nomatch": ("POST", f"{W}/list",
                               '{"Filter":{"Groups":["Fern Flower"],"Capabilities":null}}', 200),
    "filter-reqs-nomatch-all": ("POST", f"{R}/list", '{"Filter":{"States":["INVALID"]}}', 200),
    "api-version": ("GET", "/api/v1/version", None, 200),
}


def recorded(name: str) -> tuple[dict[str, list[str]], Any]:
    headers = json.loads((TESTDATA / f"{name}.headers").read_text())
    bodies = sorted(TESTDATA.glob(f"{name}-*.json"))
    body = json.loads(bodies[0].read_text()) if bodies else None
    return headers, body


def status_of(body: Any) -> int:
    """Upstream's status for a recorded error body: 404 for not found, else 400."""
    return 404 if body["message"].endswith("not found") else 400


def shape(value: Any) -> Any:
    """Field names and kinds, not values (lists by their first item)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__ if value is not None else None


class Live:
    def __init__(self, server: ServerProcess, auth: str) -> None:
        self.server = server
        parts = urlsplit(server.http)
        self.host, self.port = parts.hostname, parts.port
        self.auth = auth
        self.fill: dict[str, Any] = {}

    def send(self, method: str, path: str, body: str | None
             ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        headers = {"Authorization": self.auth}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path.format(**self.fill),
                         body=None if body is None else body.encode(), headers=headers)
            resp = conn.getresponse()
            return resp.status, {k.title(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    server = ServerProcess(tmp_path_factory.mktemp("replay") / "server.log").start()
    admin = server.client()
    admin.user_token(name="admin", token_hash=token_hash(TOKEN))
    auth = "Basic " + base64.b64encode(f"admin:{TOKEN}".encode()).decode()
    caps = unique_caps()
    farm = server.farm(1, caps=caps)
    req = admin.new_request(caps, 8)
    result = Live(server, auth)
    result.fill = {"req": req, "uuid": farm.dryads[0].uuid, "missing": req + 10**9}
    yield result
    log = server.log()
    server.close()
    assert "Traceback" not in log


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_error_answers_are_upstreams(live: Live, name: str) -> None:
    headers, body = recorded(name)
    status, got_headers, got = live.send(*ERRORS[name])
    assert status == status_of(body)
    assert json.loads(got) == body
    assert got_headers["Content-Type"] == headers["Content-Type"][0]
    assert got_headers["Content-Length"] == headers["Content-Length"][0]
    boruta_headers = {h: v for h, v in got_headers.items() if h.startswith("Boruta-")}
    if name.startswith("filter-"):
        # our one departure: a list error carries zero list headers, which upstream's
        # client reads before the status (without them it reports a missing header)
        assert boruta_headers == {h: "0" for h in LIST_HEADERS}
    else:
        assert not boruta_headers


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_answers_have_upstreams_shape_and_headers(live: Live, name: str) -> None:
    headers, body = recorded(name)
    method, path, request_body, expected = SHAPES[name]
    status, got_headers, got = live.send(method, path, request_body)
    assert status == expected
    assert got_headers["Content-Type"] == headers["Content-Type"][0]
    wanted = {h for h in headers if h.startswith("Boruta-")}
    assert wanted <= {h for h in got_headers if h.startswith("Boruta-")}
    doc = json.loads(got)
    if name == "api-version":
        assert set(doc) == set(body) and doc["API_Version"] == "v1"
    elif name.startswith("filter-"):
        assert doc == body == []
    else:
        recorded_shape, live_shape = shape(body), shape(doc)
        assert set(live_shape) == set(recorded_shape)
        for key in ("Owner", "Job"):                 # nested objects: the same fields
            if isinstance(recorded_shape.get(key), dict):
                assert set(live_shape[key]) == set(recorded_shape[key])


def test_a_running_requests_answer_has_upstreams_shape(live: Live) -> None:
    """req-info-running and acquire-worker-valid: a job's fields and headers."""
    admin = live.server.client()
    uuid = live.fill["uuid"]
    admin.set_state(uuid, "IDLE")
    req = live.fill["req"]
    admin.wait_request(req, timeout=10)
    headers, body = recorded("req-info-running")
    status, got_headers, got = live.send("GET", f"{R}/{req}", None)
    assert status == 200
    assert {h for h in headers if h.startswith("Boruta-")} <= set(got_headers)
    doc = json.loads(got)
    assert set(doc) == set(body) and set(doc["Job"]) == set(body["Job"])
    assert got_headers["Boruta-Job-Timeout"].endswith("Z")
    headers, body = recorded("acquire-worker-valid")
    status, _, got = live.send("POST", f"{R}/{req}/acquire_worker", None)
    assert status == 200
    access = json.loads(got)
    assert set(access) == set(body) and set(access["Addr"]) == set(body["Addr"])
    assert access["Key"].startswith("-----BEGIN RSA PRIVATE KEY-----\n")
    assert all(len(line) <= 64 for line in access["Key"].splitlines())
