"""Upstream's Go client (http/client/client.go), method by method, against a real server.

`GoClient` sends exactly what the Go client sends (paths, methods, bodies,
Content-Type, Basic credentials from the base URL's user info) and reads
the answer the way it does (`processResponse`: 204 is nil, >= 400 is a
ServerError read as JSON only when Content-Type is exactly
application/json, anything else is unmarshalled; the HEAD helpers demand
204; the list methods read the Boruta-List-* headers before the status).
Every method runs over HTTP as a user with a token, and the requests it
makes are the same requests ZeroMQ clients see.
"""
from __future__ import annotations

import base64
import http.client
import json
import time
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from boruta.core.users import token_hash
from e2e_helpers import server_factory, unique_caps, wait_until  # noqa: F401

CONTENT_TYPE = "application/json"
ZERO_TIME = "0001-01-01T00:00:00Z"


class GoServerError(Exception):
    """util.ServerError: the status and the server's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class GoClientError(Exception):
    """Any other error the Go client returns (bad status, unmarshalling, wrong key)."""


def go_time(moment: datetime | None) -> str:
    """time.Time as Go's JSON writes it (the zero time when unset)."""
    if moment is None:
        return ZERO_TIME
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


class GoClient:
    """http/client/client.go, in Python, one method per Go method."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port
        self.auth: str | None = None
        if parts.username is not None:          # Go sends the URL's user info as Basic
            pair = f"{parts.username}:{parts.password or ''}"
            self.auth = "Basic " + base64.b64encode(pair.encode()).decode()
        self.prefix = "/api/v1/"                 # url + apiPrefix
        self.timeout = timeout

    # ------------------------------------------------------------------ net/http
    def send(self, method: str, path: str, body: bytes | None = None,
             content_type: str | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        headers = {"User-Agent": "Go-http-client/1.1"}
        if self.auth:
            headers["Authorization"] = self.auth
        if content_type is not None:
            headers["Content-Type"] = content_type
        if method == "POST":
            headers["Content-Length"] = str(len(body or b""))
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            status, got = resp.status, {k.title(): v for k, v in resp.getheaders()}
        finally:
            conn.close()
        if status in (301, 302, 303, 307, 308) and "Location" in got:   # Go follows them
            return self.send(method if status in (307, 308) else "GET", got["Location"],
                             body if status in (307, 308) else None, content_type)
        return status, got, data

    @staticmethod
    def process_response(status: int, headers: dict[str, str], body: bytes) -> Any:
        if status == 204:
            return None
        if status >= 400:
            if headers.get("Content-Type") == CONTENT_TYPE:
                try:
                    message = json.loads(body)["message"]
                except (ValueError, KeyError, TypeError) as exc:
                    raise GoClientError(f"unmarshalling JSON response failed: {exc}") from None
            else:
                message = body.decode()
            raise GoServerError(status, message)
        try:
            value = json.loads(body)
        except ValueError as exc:
            raise GoClientError(f"unmarshalling JSON response failed: {exc}") from None
        if value is None:
            # json.Unmarshal("null", nil) fails in Go: a nil target (SetState & co.)
            raise GoClientError("json: Unmarshal(nil)")
        return value

    def _post(self, path: str, doc: Any = None, with_body: bool = True) -> Any:
        if with_body:
            return self.process_response(*self.send("POST", self.prefix + path,
                                                    json.dumps(doc).encode(), CONTENT_TYPE))
        return self.process_response(*self.send("POST", self.prefix + path, None, ""))

    def _post_nil(self, path: str, doc: Any = None, with_body: bool = True) -> None:
        """processResponse(resp, nil): success must be 204 (a body cannot go into nil)."""
        status, headers, body = self.send(
            "POST", self.prefix + path, json.dumps(doc).encode() if with_body else None,
            CONTENT_TYPE if with_body else "")
        if status == 204:
            return
        self.process_response(status, headers, body)
        raise GoClientError("json: Unmarshal(nil)")

    def _head(self, path: str) -> dict[str, str]:
        status, headers, _ = self.send("HEAD", path)
        if status != 204:
            raise GoClientError(f"bad HTTP status: {status}")
        return headers

    # ------------------------------------------------------------------ boruta.Requests
    def new_request(self, caps: dict[str, str], priority: int, groups: list[str] | None = None,
                    valid_after: datetime | None = None,
                    deadline: datetime | None = None) -> int:
        doc = {"ID": 0, "Priority": priority, "Owner": {"Groups": groups},
               "Deadline": go_time(deadline), "ValidAfter": go_time(valid_after),
               "State": "", "Job": None, "Caps": caps}
        return int(self._post("reqs/", doc)["ReqID"])

    def close_request(self, req_id: int) -> None:
        self._post_nil(f"reqs/{req_id}/close", with_body=False)

    def update_request(self, req_id: int, priority: int = 0, deadline: datetime | None = None,
                       valid_after: datetime | None = None) -> None:
        self._post_nil(f"reqs/{req_id}", {"Priority": priority, "Deadline": go_time(deadline),
                                          "ValidAfter": go_time(valid_after)})

    def get_request_info(self, req_id: int) -> dict[str, Any]:
        return self.process_response(*self.send("GET", f"{self.prefix}reqs/{req_id}"))

    def _list(self, path: str, spec: Any) -> tuple[list[dict[str, Any]], dict[str, int]]:
        status, headers, body = self.send("POST", self.prefix + path,
                                          json.dumps(spec).encode(), CONTENT_TYPE)
        info = {}
        for name in ("Boruta-List-Total", "Boruta-List-Remaining"):
            if name not in headers:
                raise GoClientError(f"couldn't find header: {name}")
            info[name] = int(headers[name])
        return self.process_response(status, headers, body), info

    def list_requests(self, flt: dict[str, Any] | None = None, sorter: dict[str, Any] | None
                      = None, paginator: dict[str, Any] | None = None
                      ) -> tuple[list[dict[str, Any]], dict[str, int]]:
        return self._list("reqs/list", {"Filter": flt, "Sorter": sorter, "Paginator": paginator})

    def acquire_worker(self, req_id: int) -> dict[str, Any]:
        access = self._post(f"reqs/{req_id}/acquire_worker", with_body=False)
        key = access["Key"]
        if not key.startswith("-----BEGIN RSA PRIVATE KEY-----"):
            raise GoClientError("wrong key: " + key)
        parsed = load_pem_private_key(key.encode(), password=None)
        if not isinstance(parsed, rsa.RSAPrivateKey):
            raise GoClientError("not a PKCS#1 RSA key")
        return {"Addr": access["Addr"], "Username": access["Username"], "Key": parsed}

    def prolong_access(self, req_id: int) -> None:
        self._post_nil(f"reqs/{req_id}/prolong", with_body=False)

    # ------------------------------------------------------------------ boruta.Workers
    def list_workers(self, groups: list[str] | None = None, caps: dict[str, str] | None = None,
                     sorter: dict[str, Any] | None = None,
                     paginator: dict[str, Any] | None = None
                     ) -> tuple[list[dict[str, Any]], dict[str, int]]:
        return self._list("workers/list", {"Filter": {"Groups": groups, "Capabilities": caps},
                                           "Sorter": sorter, "Paginator": paginator})

    def get_worker_info(self, uuid: str) -> dict[str, Any]:
        return self.process_response(*self.send("GET", f"{self.prefix}workers/{uuid}"))

    def set_state(self, uuid: str, state: str) -> None:
        self._post_nil(f"workers/{uuid}/setstate", {"WorkerState": state})

    def set_groups(self, uuid: str, groups: list[str] | None) -> None:
        self._post_nil(f"workers/{uuid}/setgroups", groups)

    def deregister(self, uuid: str) -> None:
        self._post_nil(f"workers/{uuid}/deregister", with_body=False)

    # ------------------------------------------------------------------ HEAD helpers
    def get_request_state(self, req_id: int) -> str:
        return self._head(f"{self.prefix}reqs/{req_id}")["Boruta-Request-State"]

    def get_worker_state(self, uuid: str) -> str:
        return self._head(f"{self.prefix}workers/{uuid}")["Boruta-Worker-State"]

    def get_job_timeout(self, req_id: int) -> datetime:
        headers = self._head(f"{self.prefix}reqs/{req_id}")
        if headers.get("Boruta-Request-State") != "IN PROGRESS":
            raise GoClientError('request must be in "IN PROGRESS" state')
        return datetime.fromisoformat(headers["Boruta-Job-Timeout"].replace("Z", "+00:00"))

    def version(self) -> dict[str, str]:
        headers = self._head(self.prefix + "/version")       # url + "/version": a double slash
        return {"Server": headers.get("Boruta-Server-Version", ""),
                "API": headers.get("Boruta-Api-Version", ""),
                "State": headers.get("Boruta-Api-State", "")}


# ====================================================================== helpers
def user_url(server: Any, name: str, **fields: Any) -> str:
    """A user `name` with an HTTP token; the base URL the Go client is given."""
    token = f"tok-{name}-{time.monotonic_ns()}"
    if name != "admin":
        server.user(name, **fields)
    server.client().user_token(name=name, token_hash=token_hash(token))
    return server.http.replace("http://", f"http://{name}:{token}@")


def weles(client: GoClient, caps: dict[str, str], interval: float = 2.0,
          deadline: float = 20.0) -> tuple[int, dict[str, Any]]:
    """Weles's pattern: create, poll the list every `interval` s, acquire once IN PROGRESS."""
    req_id = client.new_request(caps, 8)
    until = time.monotonic() + deadline
    while time.monotonic() < until:
        items, _ = client.list_requests({"IDs": [req_id], "Priorities": None, "States": None})
        if items and items[0]["State"] == "IN PROGRESS":
            return req_id, client.acquire_worker(req_id)
        time.sleep(interval)
    raise TimeoutError(f"request {req_id} never started")


def farmer(client: GoClient, req_id: int, interval: float = 1.0,
           deadline: float = 20.0) -> tuple[dict[str, Any], int]:
    """The farmer's pattern: retry AcquireWorker every `interval` s until it succeeds."""
    tries = 0
    until = time.monotonic() + deadline
    while True:
        tries += 1
        try:
            return client.acquire_worker(req_id), tries
        except GoServerError as exc:
            if exc.message != "invalid request: worker not assigned" or \
                    time.monotonic() > until:
                raise
        time.sleep(interval)


# ====================================================================== tests
@pytest.fixture
def farm_server(server_factory: Callable[..., Any]) -> Any:  # noqa: F811
    return server_factory(key_type="rsa", rsa_bits=2048)   # the Go client takes RSA keys only


@pytest.mark.slow
def test_every_go_client_method_over_http_as_a_user_with_a_token(farm_server: Any) -> None:
    server = farm_server
    caps = unique_caps()
    farm = server.farm(1, caps=caps)
    uuid = farm.dryads[0].uuid
    admin = GoClient(user_url(server, "admin"))
    alice = GoClient(user_url(server, "alice", priorities=[4, 16]))

    assert admin.version() == {"Server": __import__("boruta").__version__, "API": "v1",
                               "State": "devel"}
    assert admin.get_worker_state(uuid) == "MAINTENANCE"
    info = admin.get_worker_info(uuid)
    assert info == {"WorkerUUID": uuid, "State": "MAINTENANCE", "Groups": None,
                    "Caps": {**caps, "UUID": uuid, "device_type": caps["device_type"]}}
    admin.set_groups(uuid, ["lab"])
    assert admin.get_worker_info(uuid)["Groups"] == ["lab"]
    admin.set_groups(uuid, None)
    workers, info = admin.list_workers(None, caps)
    assert [w["WorkerUUID"] for w in workers] == [uuid] and info["Boruta-List-Total"] == 1

    # a request filed before the worker is IDLE waits (upstream queues it)
    req_id = alice.new_request(caps, 8)
    assert alice.get_request_state(req_id) == "WAITING"
    with pytest.raises(GoClientError, match="IN PROGRESS"):
        alice.get_job_timeout(req_id)
    alice.update_request(req_id, priority=5)
    assert alice.get_request_info(req_id)["Priority"] == 5
    with pytest.raises(GoServerError) as refused:
        alice.update_request(req_id, priority=2)        # outside alice's range
    assert refused.value.status == 400 and "priority 2" in refused.value.message
    with pytest.raises(GoServerError) as waiting:
        alice.acquire_worker(req_id)
    assert (waiting.value.status, waiting.value.message) == (
        400, "invalid request: worker not assigned")
    with pytest.raises(GoServerError) as forbidden:
        alice.set_state(uuid, "IDLE")                    # admins only
    assert forbidden.value.status == 403

    admin.set_state(uuid, "IDLE")
    wait_until(lambda: alice.get_request_state(req_id) == "IN PROGRESS", 10,
               what="the request to start")
    access = alice.acquire_worker(req_id)
    assert access["Addr"]["IP"] == "127.0.0.1" and access["Addr"]["Port"] > 0
    assert access["Username"] and access["Key"].key_size >= 2048
    before = alice.get_job_timeout(req_id)
    time.sleep(1.1)
    alice.prolong_access(req_id)
    assert alice.get_job_timeout(req_id) > before
    items, info = alice.list_requests({"IDs": [req_id], "Priorities": None,
                                       "States": ["IN PROGRESS"]})
    assert [r["ID"] for r in items] == [req_id] and items[0]["Job"]["WorkerUUID"] == uuid
    assert info == {"Boruta-List-Total": 1, "Boruta-List-Remaining": 0}
    alice.close_request(req_id)
    assert alice.get_request_state(req_id) == "DONE"

    admin.set_state(uuid, "MAINTENANCE")
    wait_until(lambda: admin.get_worker_state(uuid) == "MAINTENANCE", 10,
               what="the worker in maintenance")
    farm.close()
    admin.deregister(uuid)
    with pytest.raises(GoServerError) as gone:
        admin.get_worker_info(uuid)
    assert (gone.value.status, gone.value.message) == (404, "Worker not found")
    assert "Traceback" not in server.log()


@pytest.mark.slow
def test_a_list_error_reaches_the_go_client_as_the_servers_error(farm_server: Any) -> None:
    client = GoClient(user_url(farm_server, "admin"))
    with pytest.raises(GoServerError) as bad:
        client.list_requests(sorter={"Item": "colour", "Order": "ascending"})
    assert (bad.value.status, bad.value.message) == (
        400, "invalid request: unknown name of item by which list should be sorted")
    with pytest.raises(GoServerError) as missing:
        client.list_workers(paginator={"ID": "ec4898ac-0853-407c-8501-cbb24ef6bd77",
                                       "Direction": "forward", "Limit": 2})
    assert (missing.value.status, missing.value.message) == (404, "worker not found")


@pytest.mark.slow
def test_paginating_requests_walks_the_whole_list(farm_server: Any) -> None:
    client = GoClient(user_url(farm_server, "admin"))
    caps = unique_caps()
    farm_server.farm(1, caps=caps)
    ids = [client.new_request(caps, 8) for _ in range(4)]
    flt = {"IDs": ids, "Priorities": None, "States": None}
    page, info = client.list_requests(flt, None, {"ID": 0, "Direction": "forward", "Limit": 2})
    assert [r["ID"] for r in page] == ids[:2] and info == {"Boruta-List-Total": 4,
                                                           "Boruta-List-Remaining": 2}
    page, info = client.list_requests(flt, None, {"ID": ids[1], "Direction": "forward",
                                                  "Limit": 2})
    assert [r["ID"] for r in page] == ids[2:] and info["Boruta-List-Remaining"] == 0
    page, info = client.list_requests(flt, None, {"ID": ids[3], "Direction": "backward",
                                                  "Limit": 2})
    assert [r["ID"] for r in page] == ids[1:3] and info["Boruta-List-Remaining"] == 1
    prios = base64.b64encode(bytes([8])).decode()        # Go writes []Priority as base64
    page, _ = client.list_requests({"IDs": ids, "Priorities": prios, "States": ["WAITING"]},
                                   {"Item": "id", "Order": "descending"})
    assert [r["ID"] for r in page] == ids[::-1]


@pytest.mark.slow
def test_weles_and_the_farmer_get_their_workers(farm_server: Any) -> None:
    server = farm_server
    caps = unique_caps()
    farm = server.farm(2, caps=caps)
    admin = GoClient(user_url(server, "admin"))
    weles_client = GoClient(user_url(server, "weles"))
    farmer_client = GoClient(user_url(server, "farmer"))

    # the farmer files first, then retries every 0.05 s until a worker is ready
    farmer_req = farmer_client.new_request(caps, 4)
    assert farmer_client.get_request_state(farmer_req) == "WAITING"
    for dryad in farm.dryads:
        admin.set_state(dryad.uuid, "IDLE")
    access, tries = farmer(farmer_client, farmer_req, interval=0.05)
    assert access["Username"] and tries >= 1
    # Weles creates, polls the list every 0.05 s, acquires once IN PROGRESS, closes
    req_id, weles_access = weles(weles_client, caps, interval=0.05)
    assert weles_access["Addr"]["Port"] != access["Addr"]["Port"]
    weles_client.close_request(req_id)
    farmer_client.close_request(farmer_req)
    assert weles_client.get_request_state(req_id) == "DONE"
    with pytest.raises(GoServerError) as other:
        weles_client.close_request(farmer_req)          # not weles's request
    assert other.value.status == 403


@pytest.mark.slow
def test_http_and_zeromq_see_each_others_requests(farm_server: Any) -> None:
    server = farm_server
    caps = unique_caps()
    server.farm(1, caps=caps)
    go = GoClient(user_url(server, "admin"))
    zmq_client = server.client()
    over_http = go.new_request(caps, 6)
    assert zmq_client.get_request_info(over_http).priority == 6
    over_zmq = zmq_client.new_request(caps, 7)
    assert go.get_request_info(over_zmq)["Priority"] == 7
    zmq_client.close_request(over_http)
    assert go.get_request_state(over_http) == "CANCELLED"
    go.close_request(over_zmq)
    assert str(zmq_client.get_request_info(over_zmq).state) == "CANCELLED"


@pytest.mark.slow
def test_an_insecure_server_serves_the_go_client_without_credentials(
        server_factory: Callable[..., Any]) -> None:  # noqa: F811
    server = server_factory(insecure=True)
    client = GoClient(server.http)
    caps = unique_caps()
    server.farm(1, caps=caps)
    req_id = client.new_request(caps, 3)
    assert client.get_request_state(req_id) == "WAITING"
    client.close_request(req_id)
    assert client.get_request_state(req_id) == "CANCELLED"
