"""The dashboard's routes over real HTTP, against a real in-process server.

`DashboardServer` runs a real `Server` (insecure, in memory, its HTTP face on
loopback) on a loop of its own, so that a test can change its books directly and
watch the page or the feed; the browser tests reuse it. With `token` set, the face
authenticates as a secure server would: only `Bearer TOKEN` passes. The last test
runs a real server process with a real token.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import socket
import threading
import time
import uuid as uuidlib
from typing import Any, Awaitable, Callable, Iterator, TypeVar

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from boruta.core.types import WorkerState
from boruta.core.users import token_hash
from boruta.http import dashboard
from boruta.http.auth import HttpUnauthorized
from boruta.server.app import Server
from boruta.server.config import ServerConfig
from boruta.server.identities import INSECURE
from boruta.testing.processes import LOOPBACK, wait_until
from e2e_helpers import server_factory  # noqa: F401

T = TypeVar("T")
SETTINGS = {k: v for k, v in LOOPBACK.items() if k in ("listen", "dryad_listen", "events")}
TOKEN = "let-me-in"


class DashboardServer:
    """A real server and the dashboard on a loop of its own (a thread), for tests that
    drive it from outside (a browser) or from inside (`run`, `act`)."""

    def __init__(self, token: str = "", **settings: Any) -> None:
        self.token = token
        self.settings = {"heartbeat_interval": 0.5, "tunnel_host": "127.0.0.1", **SETTINGS,
                         **settings}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.url = ""

    def __enter__(self) -> "DashboardServer":
        self.thread.start()
        self.run(self._start())
        return self

    def __exit__(self, *exc: Any) -> None:
        self.run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _start(self) -> None:
        self.server = Server(ServerConfig(insecure=True, http_listen="127.0.0.1:0",
                                          **self.settings))
        face = self.server.http
        assert face is not None
        if self.token:
            face.user_of = self._token_holder          # type: ignore[method-assign]
        self.dashboard = face.dashboard
        await self.server.start()
        self.url = self.server.endpoints["http"] + "/"

    def _token_holder(self, request: web.BaseRequest) -> Any:
        """Authentication on, as the HTTP face has it: only `Bearer TOKEN` passes."""
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            raise HttpUnauthorized("unknown token (mistyped, revoked, or never issued)")
        return INSECURE

    async def _stop(self) -> None:
        await self.server.close()

    def run(self, coro: Awaitable[T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore

    def act(self, fn: Callable[[Server], T]) -> T:
        """Call fn(server) on the server's loop, then carry out its effects (a turn)."""
        async def turn() -> T:
            result = fn(self.server)
            self.server.after_turn()
            return result
        return self.run(turn())

    def add_workers(self, count: int, device_type: str = "rpi4") -> list[str]:
        return self.act(lambda s: [
            s.sched.register({"UUID": str(uuidlib.uuid4()), "device_type": device_type},
                             f"127.0.0.1:{7000 + i % 1000}", f"127.0.0.1:{22000 + i % 1000}")
            for i in range(count)])

    def fail(self, uuid: str) -> None:
        """Ask for IDLE: the worker goes PREPARE, then FAILED (no dryad answers here)."""
        self.act(lambda s: s.sched.set_state(uuid, WorkerState.IDLE))
        wait_until(lambda: self.act(lambda s: s.sched.get_worker_info(uuid).state)
                   is WorkerState.FAIL, what=f"worker {uuid} FAILED")

    def new_request(self, priority: int = 8, device_type: str = "rpi4") -> int:
        return self.act(lambda s: s.sched.new_request(
            {"device_type": device_type}, priority, queue_unsatisfiable=True))


@pytest.fixture
def farm() -> Iterator[DashboardServer]:
    with DashboardServer() as server:
        yield server


def get(farm: DashboardServer, path: str, **headers: str) -> tuple[int, CIMultiDict[str], bytes]:
    async def fetch() -> tuple[int, CIMultiDict[str], bytes]:
        async with aiohttp.ClientSession() as session:
            async with session.get(farm.url + path, headers=headers) as r:
                return r.status, r.headers.copy(), await r.read()
    return asyncio.run(fetch())


def get_json(farm: DashboardServer, path: str, **headers: str) -> Any:
    status, _, body = get(farm, path, **headers)
    assert status == 200, body
    return json.loads(body)


# ---------------------------------------------------------------- static files
def test_the_page_and_its_files_are_served_from_the_package(farm: DashboardServer) -> None:
    status, headers, body = get(farm, "")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'src="static/app.js"' in body and b"http" not in body.split(b"<body>")[0].replace(
        b'http-equiv', b'')                          # nothing fetched from elsewhere
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    status, headers, body = get(farm, "static/app.js")
    assert status == 200 and headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert b"dashboard/events" in body and headers["Cache-Control"] == "no-cache"
    status, again, _ = get(farm, "static/app.js", **{"If-None-Match": headers["ETag"]})
    assert status == 304 and again["ETag"] == headers["ETag"]
    status, headers, _ = get(farm, "static/style.css")
    assert status == 200 and headers["Content-Type"] == "text/css; charset=utf-8"


@pytest.mark.parametrize("path", ["static/../dashboard.py", "static/%2e%2e/dashboard.py",
                                  "static/dashboard.py", "static/", "static/app.js/x",
                                  "static/..%2Fdashboard.py"])
def test_nothing_but_the_page_files_is_served(farm: DashboardServer, path: str) -> None:
    status, _, body = get(farm, path)
    assert status in (404, 308) and b"import" not in body


# ---------------------------------------------------------------- snapshots
def test_workers_are_paged_by_uuid_with_their_job_and_heartbeat(farm: DashboardServer) -> None:
    uuids = sorted(farm.add_workers(5))
    farm.fail(uuids[1])
    first = get_json(farm, "dashboard/workers?limit=2")
    assert [w["uuid"] for w in first["items"]] == uuids[:2]
    assert (first["total"], first["remaining"]) == (5, 3)
    row = first["items"][1]
    assert row["state"] == "FAILED" and "not connected" in row["fail_reason"]
    assert row["caps"]["device_type"] == "rpi4" and row["groups"] == []
    assert row["job"] is None and row["heartbeat_age"] is None     # no dryad ever spoke
    second = get_json(farm, f"dashboard/workers?limit=2&after={uuids[1]}")
    assert [w["uuid"] for w in second["items"]] == uuids[2:4]
    back = get_json(farm, f"dashboard/workers?limit=2&before={uuids[2]}")
    assert [w["uuid"] for w in back["items"]] == uuids[:2]
    failed = get_json(farm, "dashboard/workers?state=FAILED")
    assert [w["uuid"] for w in failed["items"]] == [uuids[1]]


@pytest.mark.parametrize("query, message", [
    ("limit=0", "limit must be an integer from 1 to 65535"),
    ("limit=x", "limit must be an integer from 1 to 65535"),
    ("state=SLEEPING", "state must be one of"),
    ("after=a&before=b", "give after or before, not both"),
])
def test_bad_worker_queries_are_refused_naming_the_problem(farm: DashboardServer, query: str,
                                                           message: str) -> None:
    status, headers, body = get(farm, f"dashboard/workers?{query}")
    assert status == 400 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["message"].startswith(message)


def test_an_unknown_border_worker_is_a_404(farm: DashboardServer) -> None:
    status, _, body = get(farm, "dashboard/workers?after=no-such-worker")
    assert status == 404 and "not found" in json.loads(body)["message"]


def test_the_queue_is_in_scheduling_order(farm: DashboardServer) -> None:
    ids = [farm.new_request(priority) for priority in (8, 2, 8, 4, 2)]
    queue = get_json(farm, "dashboard/queue")
    expected = [ids[1], ids[4], ids[3], ids[0], ids[2]]      # priority, then arrival
    assert [r["id"] for r in queue["items"]] == expected and queue["total"] == 5
    farm.act(lambda s: s.sched.close_request(ids[4]))
    page = get_json(farm, f"dashboard/queue?limit=2&after={ids[1]}")
    assert [r["id"] for r in page["items"]] == [ids[3], ids[0]] and page["remaining"] == 1


def test_the_queue_follows_new_started_and_reprioritised_requests(farm: DashboardServer) -> None:
    first = [farm.new_request(priority) for priority in (8, 4)]
    assert [r["id"] for r in get_json(farm, "dashboard/queue")["items"]] == [first[1], first[0]]
    later = farm.new_request(6)                                  # after the first read
    farm.act(lambda s: s.sched.update_request(first[0], priority=2))
    farm.act(lambda s: s.sched.close_request(first[1]))
    queue = get_json(farm, "dashboard/queue")
    assert [(r["id"], r["priority"]) for r in queue["items"]] == [(first[0], 2), (later, 6)]
    assert queue["total"] == 2
    summary = get_json(farm, "dashboard/summary")
    assert summary["waiting"] == 2 and summary["waits"][0]["waiting"] == 2


def test_the_summary_counts_workers_and_waiting_requests(farm: DashboardServer) -> None:
    get_json(farm, "dashboard/summary")          # someone looks: the dashboard follows events
    uuids = farm.add_workers(3)
    farm.fail(uuids[0])
    farm.new_request(4, device_type="odroid")
    summary = get_json(farm, "dashboard/summary")
    assert summary["workers"][str(WorkerState.MAINTENANCE)] == 2
    assert summary["workers"][str(WorkerState.FAIL)] == 1 and summary["waiting"] == 1
    assert [w["device_type"] for w in summary["waits"]] == ["odroid"]
    assert summary["waits"][0]["waiting"] == 1 and summary["waits"][0]["jobs"] == 0
    kinds = [(t["kind"], t["state"]) for t in summary["transitions"]]
    assert ("worker", "FAILED") in kinds and ("request", "WAITING") in kinds


def test_an_unwatched_dashboard_follows_no_events_and_wakes_when_read(farm: DashboardServer
                                                                      ) -> None:
    board = farm.server.http.dashboard
    farm.add_workers(1)
    assert board.stop_listening is None and not board.transitions    # nobody looked yet
    get_json(farm, "dashboard/summary")
    assert board.stop_listening is not None
    farm.new_request(4, device_type="odroid")
    kinds = [(t["kind"], t["state"]) for t in get_json(farm, "dashboard/summary")["transitions"]]
    assert ("request", "WAITING") in kinds
    board.last_use -= dashboard.IDLE_SLEEP + 1   # long unused, no feed open: it sleeps
    farm.act(lambda server: board._maybe_sleep())
    assert board.stop_listening is None


def test_waits_per_device_type_come_from_started_jobs() -> None:
    waits = dashboard.WaitTimes()
    for seconds in (1.0, 2.0, 3.0, 10.0):
        waits.by_type.setdefault("rpi4", dashboard.deque()).append(seconds)
    rows = waits.summary({"rpi4": [90.0], "odroid": [95.0, 99.0]}, now=100.0)
    assert rows == [
        {"device_type": "odroid", "jobs": 0, "p50": None, "p90": None, "max": None,
         "waiting": 2, "oldest": 5.0},
        {"device_type": "rpi4", "jobs": 4, "p50": 3.0, "p90": 10.0, "max": 10.0,
         "waiting": 1, "oldest": 10.0}]


# ---------------------------------------------------------------- the live feed
async def read_until(stream: aiohttp.StreamReader, needle: bytes, timeout: float) -> bytes:
    seen = b""
    async with asyncio.timeout(timeout):
        while needle not in seen:
            chunk = await stream.readany()
            if not chunk:
                raise ConnectionError(f"feed closed before {needle!r}: {seen[-300:]!r}")
            seen += chunk
    return seen


def test_the_feed_says_hello_then_sends_events_and_keep_alives(farm: DashboardServer) -> None:
    uuid = farm.add_workers(1)[0]

    async def follow() -> tuple[bytes, bytes, bytes]:
        async with aiohttp.ClientSession() as session:
            async with session.get(farm.url + "dashboard/events") as r:
                assert r.headers["Content-Type"] == "text/event-stream"
                hello = await read_until(r.content, b"\n\n", 5)
                await asyncio.to_thread(farm.fail, uuid)
                event = await read_until(r.content, b'"FAILED"', 2)
                quiet = await read_until(r.content, b": keep-alive\n\n", 2)  # interval 0.5 s
                return hello, event, quiet
    hello, event, quiet = asyncio.run(follow())
    assert hello.startswith(b"retry: 2000\nevent: hello\ndata: ")
    assert json.loads(hello.split(b"data: ")[1])["heartbeat_interval"] == 0.5
    data = json.loads(event.split(b"data: ")[-1].split(b"\n")[0])
    assert (data["kind"], data["uuid"], data["state"]) == ("worker", uuid, "FAILED")
    assert "not connected" in data["reason"]
    assert b"id: %d\n" % data["seq"] in event


def test_a_client_too_far_behind_is_dropped_and_the_loop_goes_on(farm: DashboardServer) -> None:
    def burst(server: Server) -> None:
        for _ in range(dashboard.FEED_BACKLOG + 50):    # one turn: more than a feed may hold
            server.sched.new_request({"device_type": "burst"}, 8, queue_unsatisfiable=True)

    async def follow() -> bytes:
        async with aiohttp.ClientSession() as session:
            async with session.get(farm.url + "dashboard/events") as r:
                await read_until(r.content, b"\n\n", 5)
                await asyncio.to_thread(farm.act, burst)
                rest = b""
                async with asyncio.timeout(5):
                    while chunk := await r.content.readany():
                        rest += chunk
                return rest
    try:
        rest = asyncio.run(follow())
    except aiohttp.ClientPayloadError:
        rest = b""                                     # closed mid-chunk: dropped all the same
    assert rest.count(b"data: ") < dashboard.FEED_BACKLOG
    assert farm.dashboard.dropped == 1 and not farm.dashboard.feeds
    assert get_json(farm, "dashboard/summary")["waiting"] == dashboard.FEED_BACKLOG + 50


def test_head_on_the_feed_answers_at_once(farm: DashboardServer) -> None:
    async def head() -> tuple[int, str]:
        async with aiohttp.ClientSession() as session:
            async with asyncio.timeout(5):
                async with session.head(farm.url + "dashboard/events") as r:
                    return r.status, r.headers["Content-Type"]
    assert asyncio.run(head()) == (200, "text/event-stream")


def test_an_open_feed_does_not_hold_up_a_stopping_server() -> None:
    farm = DashboardServer(heartbeat_interval=30.0).__enter__()
    host, port = farm.url.split("//")[1].rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GET /dashboard/events HTTP/1.1\r\nHost: farm\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200 OK")
        start = time.monotonic()
        farm.__exit__(None, None, None)
        took = time.monotonic() - start
    assert took < dashboard.STOP_NOTICED + 0.5, f"close took {took:.2f}s"


# ---------------------------------------------------------------- authentication
def test_with_authentication_every_data_route_wants_the_token() -> None:
    with DashboardServer(token=TOKEN) as farm:
        for path in ("dashboard/workers", "dashboard/queue", "dashboard/summary",
                     "dashboard/events"):
            status, headers, body = get(farm, path)
            assert status == 401 and "WWW-Authenticate" not in headers, path
            assert json.loads(body)["message"].startswith("unknown token")
            assert get(farm, path, Authorization="Bearer nope")[0] == 401
        assert get(farm, "")[0] == 200 and get(farm, "static/app.js")[0] == 200
        assert get_json(farm, "dashboard/queue", Authorization=f"Bearer {TOKEN}")["total"] == 0


@pytest.mark.slow
def test_a_real_server_serves_it_to_token_holders(server_factory: Any) -> None:  # noqa: F811
    server = server_factory()
    server.user("viewer")
    token = secrets.token_urlsafe(32)
    server.client().user_token("viewer", token_hash(token))
    base = server.http.rstrip("/") + "/"

    async def fetch(path: str, **headers: str) -> tuple[int, CIMultiDict[str], bytes]:
        async with aiohttp.ClientSession() as session:
            async with session.get(base + path, headers=headers) as r:
                return r.status, r.headers.copy(), await r.read()

    async def run() -> None:
        status, headers, body = await fetch("")
        assert status == 200 and b"static/app.js" in body
        status, headers, body = await fetch("dashboard/workers")
        assert status == 401 and "WWW-Authenticate" not in headers
        assert json.loads(body)["message"].startswith("credentials required")
        status, _, body = await fetch("dashboard/queue", Authorization=f"Bearer {token}")
        assert status == 200 and json.loads(body)["total"] == 0
    asyncio.run(run())
