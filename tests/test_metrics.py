"""Prometheus metrics (boruta.http.metrics) in process: a Server without sockets, its books
moved by hand, the exposition parsed with prometheus-client's own parser.

The end-to-end tests (a real server process, simulated dryads, scrapes over HTTP) are in
test_metrics_e2e.py.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request
from prometheus_client.openmetrics.parser import \
    text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from boruta.core import effects
from boruta.core.clock import ManualClock
from boruta.core.scheduler import Scheduler
from boruta.http import metrics as metrics_module
from boruta.http.auth import HttpUnauthorized
from boruta.http.errors import HttpError
from boruta.http.metrics import Metrics, acceptable, register
from boruta.http.routing import Found, Router
from boruta.server.app import Server
from boruta.server.config import ServerConfig
from boruta.server.dryads import DryadPeer
from boruta.server.identities import INSECURE
from boruta.server.store import Store
from boruta.sim.dryads import echo_server
from boruta.transport import codec
from boruta.transport.operations import CLIENT_OPS
from tests.test_audit_endpoint import Sent

Samples = dict[str, dict[frozenset[tuple[str, str]], float]]


class Face:
    """What register() needs of the HTTP face: the app, a router, the user of a request."""

    def __init__(self, app: Server, refuse: bool = False) -> None:
        self.app = app
        self.router = Router()
        self.refuse = refuse

    def user_of(self, request: Any) -> Any:
        if self.refuse:
            raise HttpUnauthorized("credentials required")
        return INSECURE


def make_server(**settings: Any) -> Server:
    config = ServerConfig(insecure=True, http_listen="", **settings)
    return Server(config, Scheduler(clock=ManualClock(time.time()), config=config.scheduler))


def samples(text: str, parser: Any = text_string_to_metric_families) -> Samples:
    """Every sample of an exposition: name -> {labels: value}."""
    found: Samples = {}
    for family in parser(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return found


def scrape(metrics: Metrics) -> Samples:
    body, content_type = metrics.render("")
    assert content_type.startswith("text/plain; version=0.0.4")
    return samples(body.decode())


def value(found: Samples, name: str, **labels: str) -> float:
    return found[name][frozenset(labels.items())]


def settle(app: Server) -> list[effects.PrepareWorker]:
    """The shell's part without dryads or tunnels: the scheduler's state changes become
    events, the turn is flushed (listeners run); prepare requests are handed back."""
    prepares = []
    while drained := app.sched.drain_effects():
        for effect in drained:
            if isinstance(effect, effects.RequestChanged):
                app._request_changed(effect)
            elif isinstance(effect, effects.WorkerChanged):
                app._worker_changed(effect)
            elif isinstance(effect, effects.PrepareWorker):
                prepares.append(effect)
    app.outbox.flush_now()
    return prepares


def make_idle(app: Server, uuid: str) -> None:
    app.sched.set_state(uuid, "IDLE")
    (prepare,) = settle(app)
    app.sched.worker_prepared(uuid, prepare.op, object(), "boruta-user")
    settle(app)


def register_worker(app: Server, uuid: str, **caps: str) -> None:
    app.sched.register({"UUID": uuid, **caps}, "127.0.0.1:7000", "127.0.0.1:22")
    settle(app)


# --------------------------------------------------------------------------- the books
def test_requests_and_workers_are_counted_when_scraped_and_move_with_the_farm() -> None:
    app = make_server()
    metrics = register(Face(app))
    register_worker(app, "w1", device_type="rpi4")
    register_worker(app, "w2", device_type="rpi4")
    register_worker(app, "w3")                                   # no device_type
    make_idle(app, "w1")
    found = scrape(metrics)
    assert value(found, "boruta_workers", state="IDLE", device_type="rpi4") == 1
    assert value(found, "boruta_workers", state="MAINTENANCE", device_type="rpi4") == 1
    assert value(found, "boruta_workers", state="MAINTENANCE", device_type="") == 1
    assert sum(found["boruta_requests"].values()) == 0

    make_idle(app, "w2")
    running = app.sched.new_request({"device_type": "rpi4"}, 3)          # takes w1
    app.sched.set_fail("w2", "board on fire")
    waiting = app.sched.new_request({"device_type": "rpi4"}, 5)
    closed = app.sched.new_request({}, 5)
    app.sched.close_request(closed)
    settle(app)
    assert app.sched.request_state(running) == "IN PROGRESS"
    assert app.sched.request_state(waiting) == "WAITING"
    found = scrape(metrics)
    assert value(found, "boruta_requests", state="IN PROGRESS", priority="3") == 1
    assert value(found, "boruta_requests", state="WAITING", priority="5") == 1
    assert value(found, "boruta_requests", state="CANCELLED", priority="5") == 1
    assert sum(found["boruta_requests"].values()) == 3
    assert value(found, "boruta_workers", state="RUNNING", device_type="rpi4") == 1
    assert value(found, "boruta_workers", state="FAILED", device_type="rpi4") == 1
    assert value(found, "boruta_workers", state="IDLE", device_type="rpi4") == 0
    assert sum(found["boruta_workers"].values()) == 3
    # every state of every priority is a series, zero or not: graphs never lose one
    assert len(found["boruta_requests"]) == 7 * 16


def test_a_restored_scheduler_is_the_one_counted() -> None:
    app = make_server()
    metrics = register(Face(app))
    register_worker(app, "w1", device_type="rpi4")
    app.sched = Scheduler()                                     # what a restore does
    app.sched.register({"UUID": "w9", "device_type": "x86"}, "127.0.0.1:1", "127.0.0.1:2")
    found = scrape(metrics)
    assert value(found, "boruta_workers", state="MAINTENANCE", device_type="x86") == 1
    assert not any(dict(labels)["device_type"] == "rpi4" for labels in found["boruta_workers"])


# --------------------------------------------------------------------------- waits and jobs
def test_queue_wait_runs_from_valid_after_and_job_duration_from_assignment() -> None:
    app = make_server()
    metrics = register(Face(app))
    now = [0.0]
    metrics.jobs.clock = lambda: now[0]
    register_worker(app, "w1", device_type="rpi4")
    make_idle(app, "w1")
    app.sched.set_state("w1", "MAINTENANCE")        # no idle worker: the next request waits
    settle(app)
    req_id = app.sched.new_request({"device_type": "rpi4"}, 4)
    settle(app)
    created = app.sched.clock.now()
    assert metrics.jobs.running == {}                # a waiting request costs no entry
    app.sched.worker_in_maintenance("w1", app.sched._workers["w1"].op)
    now[0] = created + 90                            # assigned 90 s after it could run
    make_idle(app, "w1")
    assert app.sched.request_state(req_id) == "IN PROGRESS"
    assert set(metrics.jobs.running) == {req_id}
    now[0] = created + 90 + 700                      # a 700 s job
    app.sched.close_request(req_id)
    settle(app)
    assert metrics.jobs.running == {}                # dropped at the end
    found = scrape(metrics)
    wait = found["boruta_queue_wait_seconds_bucket"]
    assert wait[frozenset({("device_type", "rpi4"), ("le", "60.0")})] == 0
    assert wait[frozenset({("device_type", "rpi4"), ("le", "120.0")})] == 1
    assert value(found, "boruta_queue_wait_seconds_sum", device_type="rpi4") == pytest.approx(90)
    job = found["boruta_job_duration_seconds_bucket"]
    assert job[frozenset({("device_type", "rpi4"), ("le", "600.0")})] == 0
    assert job[frozenset({("device_type", "rpi4"), ("le", "1800.0")})] == 1
    assert value(found, "boruta_job_duration_seconds_count", device_type="rpi4") == 1


def test_a_job_that_never_started_has_no_duration() -> None:
    app = make_server()
    metrics = register(Face(app))
    register_worker(app, "w1", device_type="rpi4")
    register_worker(app, "w2", device_type="rpi4")
    make_idle(app, "w1")
    req_id = app.sched.new_request({"device_type": "rpi4"}, 4)
    settle(app)
    assert set(metrics.jobs.running) == {req_id}
    app.sched.job_start_failed(req_id, "no tunnel")          # back in the queue
    settle(app)
    app.sched.close_request(req_id)                          # CANCELLED from WAITING
    settle(app)
    assert metrics.jobs.running == {}                        # its failed start is forgotten
    found = scrape(metrics)
    assert value(found, "boruta_queue_wait_seconds_count", device_type="rpi4") == 1
    assert "boruta_job_duration_seconds_count" not in found


def test_the_running_jobs_kept_are_bounded(monkeypatch) -> None:
    app = make_server()
    metrics = register(Face(app))
    monkeypatch.setattr(metrics_module, "RUNNING_KEPT", 3)
    for req_id in range(1, 11):
        metrics.jobs.on_event({"kind": "request", "id": req_id, "state": "IN PROGRESS",
                               "worker_uuid": None})
        metrics.jobs.on_event({"kind": "request", "id": 100 + req_id, "state": "WAITING"})
    assert list(metrics.jobs.running) == [8, 9, 10]          # the newest starts
    metrics.jobs.on_event({"kind": "tunnel", "id": 9, "state": "DONE"})   # not a request's
    metrics.jobs.on_event({"kind": "worker", "uuid": "w9", "state": "FAILED"})
    metrics.jobs.on_event({"kind": "request", "id": 9, "state": "DONE", "worker_uuid": None})
    assert list(metrics.jobs.running) == [8, 10]


# --------------------------------------------------------------------------- calls
def test_calls_errors_and_matching_time_by_operation() -> None:
    app = make_server(peer_rate=1.0, peer_burst=8)
    metrics = register(Face(app))
    app.client_endpoint.sock = app.client_sock = Sent()
    register_worker(app, "w1", device_type="rpi4")

    def send(msg_id: int, op: str, args: dict[str, Any]) -> None:
        app.client_endpoint.on_frames([b"peer", codec.request_frame(msg_id, op, args)])
    ok_args = CLIENT_OPS["new_request"].encode_args({"caps": {"device_type": "rpi4"},
                                                      "priority": 4})
    for msg_id in range(3):
        send(msg_id, "new_request", ok_args)
    send(3, "new_request", {**ok_args, "priority": 99})                   # bad_priority
    send(4, "no_such_operation", {})
    send(5, "list_workers", {})
    app.client_endpoint.on_frames([b"peer", b"x", b"y"])   # two payloads: before the rate
    for msg_id in range(6, 10):                            # the burst of 8 ends at the 8th
        send(msg_id, "list_workers", {})
    found = scrape(metrics)
    assert value(found, "boruta_calls_total", endpoint="client", operation="new_request") == 4
    assert value(found, "boruta_calls_total", endpoint="client", operation="list_workers") == 3
    assert value(found, "boruta_calls_total", endpoint="dryad", operation="heartbeat") == 0
    errors = {tuple(sorted(labels)): count
              for labels, count in found["boruta_call_errors_total"].items()}
    assert errors == {
        (("code", "bad_priority"), ("endpoint", "client"), ("operation", "new_request")): 1,
        (("code", "unknown_operation"), ("endpoint", "client"), ("operation", "")): 1,
        (("code", "bad_frame"), ("endpoint", "client"), ("operation", "")): 1,
        (("code", "rate_limited"), ("endpoint", "client"), ("operation", "")): 2,
    }
    # the three that were filed were timed; the refused one matched nothing
    assert value(found, "boruta_matching_call_seconds_count", operation="new_request") == 3
    assert 0 < value(found, "boruta_matching_call_seconds_sum", operation="new_request") < 1
    assert value(found, "boruta_matching_call_seconds_count", operation="set_state") == 0


def test_a_call_held_back_counts_once_and_an_internal_failure_is_an_error() -> None:
    app = make_server()
    metrics = register(Face(app))
    endpoint = app.client_endpoint
    endpoint.sock = app.client_sock = Sent()
    held: list[list[bytes]] = []
    endpoint.gate = lambda name, args, frames: not held and not held.append(frames)
    endpoint.on_frames([b"peer", codec.request_frame(1, "list_workers", {})])
    endpoint.gate = None
    endpoint.on_frames(held[0])                        # replayed once the history is in

    def broken(call: Any, args: Any) -> Any:
        raise RuntimeError("a bug")
    endpoint.handlers["list_requests"] = broken
    endpoint.on_frames([b"peer", codec.request_frame(2, "list_requests", {})])
    found = scrape(metrics)
    assert value(found, "boruta_calls_total", endpoint="client", operation="list_workers") == 1
    assert value(found, "boruta_calls_total", endpoint="client", operation="list_requests") == 1
    assert value(found, "boruta_call_errors_total", endpoint="client",
                 operation="list_requests", code="internal") == 1


# --------------------------------------------------------------------------- dryads
def test_heartbeat_ages_are_one_histogram_and_a_maximum() -> None:
    app = make_server(heartbeat_interval=2.0)
    metrics = register(Face(app))
    now = time.monotonic()
    for index, age in enumerate((0.1, 0.9, 1.5, 2.5, 7.0)):
        uuid = f"w{index}"
        app.dryads.peers[uuid] = DryadPeer(uuid, uuid.encode(), None, now - age)
    found = scrape(metrics)
    buckets = {dict(labels)["le"]: count
               for labels, count in found["boruta_dryad_heartbeat_age_seconds_bucket"].items()}
    # bounds are multiples of the heartbeat interval (2 s): 0.5 1 2 3 4 5 6 10 +Inf
    assert buckets == {"0.5": 1, "1.0": 2, "2.0": 3, "3.0": 4, "4.0": 4, "5.0": 4, "6.0": 4,
                       "10.0": 5, "+Inf": 5}
    assert value(found, "boruta_dryad_heartbeat_age_seconds_count") == 5
    assert 7.0 <= value(found, "boruta_dryad_heartbeat_age_max_seconds") < 8.0
    assert len(found["boruta_dryad_heartbeat_age_seconds_bucket"]) == 9   # not per worker


# --------------------------------------------------------------------------- tunnels
def test_tunnel_bytes_count_both_ways_and_outlive_the_tunnel() -> None:
    app = make_server(tunnel_host="127.0.0.1", tunnel_ports=(0, 0))
    metrics = register(Face(app))

    async def carry() -> tuple[Samples, Samples]:
        sshd = await echo_server()
        port = sshd.sockets[0].getsockname()[1]
        tunnel = app.jobs.tunnels.open(1, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection("127.0.0.1", tunnel.port)
        writer.write(b"x" * 100_000)
        await writer.drain()
        assert len(await reader.readexactly(100_000)) == 100_000
        during = scrape(metrics)
        writer.close()
        app.jobs.tunnels.close(1)
        sshd.close()
        return during, scrape(metrics)
    during, after = asyncio.run(asyncio.wait_for(carry(), 10))
    assert value(during, "boruta_tunnels_open") == 1
    for found in (during, after):
        assert value(found, "boruta_tunnel_bytes_total", direction="to_worker") == 100_000
        assert value(found, "boruta_tunnel_bytes_total", direction="to_client") == 100_000
    assert value(after, "boruta_tunnels_open") == 0


# --------------------------------------------------------------------------- the store
def test_each_commit_is_one_observation_of_its_latency(tmp_path) -> None:
    app = make_server()
    metrics = register(Face(app))
    app.store = Store(str(tmp_path / "state"))
    try:
        for _ in range(3):
            app.sched.new_request({"a": "b"}, 4, queue_unsatisfiable=True)
            app.outbox.flush_now()
        app.outbox.flush_now()                     # nothing changed: no commit
        found = scrape(metrics)
    finally:
        app.store.close()
    assert app.stats.commits == 3
    assert value(found, "boruta_store_commit_seconds_count") == 3
    assert value(found, "boruta_store_commit_seconds_sum") == pytest.approx(
        app.stats.commit_seconds)


# --------------------------------------------------------------------------- the route
def request(method: str = "GET", accept: str | None = None) -> Any:
    headers = {} if accept is None else {"Accept": accept}
    return make_mocked_request(method, "/metrics", headers=headers)


def test_get_and_head_are_routed_and_other_methods_get_a_405_naming_get() -> None:
    app = make_server()
    face = Face(app)
    metrics = register(face)
    for method in ("GET", "HEAD"):
        found = face.router.resolve(method, "/metrics")
        assert isinstance(found, Found) and found.handler == metrics.get
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        found = face.router.resolve(method, "/metrics")
        assert isinstance(found, Found)
        with pytest.raises(HttpError) as refused:
            asyncio.run(found.handler(request(method), {}))
        assert refused.value.status == 405
        assert refused.value.headers == {"Allow": "GET, HEAD"}
        assert f"use GET (or HEAD), not {method}" in refused.value.message


@pytest.mark.parametrize("accept, ok", [
    (None, True), ("", True), ("*/*", True), ("text/plain", True), ("text/*;q=0.5", True),
    ("text/html,application/xhtml+xml,*/*;q=0.8", True),              # a browser
    ("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5", True),
    ("application/json", False), ("text/html", False), ("text/plain;q=0", False),
    ("image/png, application/xml", False),
])
def test_an_accept_header_that_admits_neither_format_gets_a_406(accept, ok) -> None:
    app = make_server()
    metrics = register(Face(app))
    assert acceptable(accept or "") is ok
    if ok:
        response = asyncio.run(metrics.get(request(accept=accept), {}))
        assert response.status == 200 and response.headers["Cache-Control"] == "no-store"
        return
    with pytest.raises(HttpError) as refused:
        asyncio.run(metrics.get(request(accept=accept), {}))
    assert refused.value.status == 406
    assert "text/plain or application/openmetrics-text" in refused.value.message


def test_openmetrics_is_served_when_asked_for() -> None:
    app = make_server()
    metrics = register(Face(app))
    response = asyncio.run(metrics.get(request(
        accept="application/openmetrics-text;version=1.0.0"), {}))
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    text = response.body.decode()
    assert text.endswith("# EOF\n")
    found = samples(text, openmetrics_families)
    assert value(found, "boruta_tunnel_bytes_total", direction="to_worker") == 0


def test_the_farm_is_read_only_by_a_user() -> None:
    app = make_server()
    metrics = register(Face(app, refuse=True))
    with pytest.raises(HttpUnauthorized):
        asyncio.run(metrics.get(request(), {}))


def test_every_server_has_its_own_registry() -> None:
    first, second = make_server(), make_server()
    one, two = register(Face(first)), register(Face(second))
    register_worker(first, "w1", device_type="rpi4")
    assert "rpi4" in one.render("")[0].decode() and "rpi4" not in two.render("")[0].decode()


# --------------------------------------------------------------------------- cost
@pytest.mark.slow
def test_a_scrape_of_a_large_farm_stays_cheap() -> None:
    """10,000 workers, 100,000 requests: one pass over the books, no documents."""
    app = make_server()
    metrics = register(Face(app))
    sched = app.sched
    for index in range(10_000):
        sched.register({"UUID": f"w{index:05}", "device_type": f"type{index % 20}"},
                       "127.0.0.1:7000", "127.0.0.1:22")
    for index in range(100_000):
        sched.new_request({"device_type": f"type{index % 20}"}, 1 + index % 16)
    sched.drain_effects()
    best = min(_timed(lambda: metrics.render("")) for _ in range(3))
    found = scrape(metrics)
    assert sum(found["boruta_requests"].values()) == 100_000
    assert sum(found["boruta_workers"].values()) == 10_000
    assert best < 0.25, f"a scrape took {best * 1000:.0f} ms"


def _timed(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started
