"""Prometheus metrics at `GET /metrics`: the farm counted when scraped, the rest read
from plain numbers the server keeps anyway.

A scrape costs the server one pass over its books; a call on the ZeroMQ path
costs what it cost before plus a few additions to plain numbers, and a new
request one look by the event listener:

- requests by state and priority, workers by state and device type: counted
  at scrape time, in one pass over the scheduler's books, by a custom
  collector (no per-call bookkeeping, no documents built);
- calls and errors by operation, and the time of the calls that run the
  matcher: the endpoints' plain counters (boruta.server.endpoint), read here;
- queue wait and job duration by device type: an event listener, called once
  a turn is committed; a request's wait runs from its ValidAfter (when it
  could first run: its creation unless it asked to wait) to its assignment,
  so the listener keeps nothing for a request until it runs, and only its
  start while it runs;
- dryad heartbeat age: a histogram of every connected dryad's silence, made
  at scrape time (a gauge per worker would be 10,000 series on a large farm,
  rewritten each scrape, and useless on a graph; the buckets and the maximum
  say whether dryads are falling silent, and the dashboard names them);
- tunnel bytes: the tunnel manager's totals (closed tunnels included);
- store commit latency: a histogram fed by the outbox, once per commit (a
  commit is per turn, not per call).

Names follow Prometheus' conventions (`_total` counters, `_seconds`, `_bytes`).
Reading the farm needs a user, as every read over HTTP does (a token, or the
anonymous user); the server's own process metrics come along (`process_*`).
"""
from __future__ import annotations

import bisect
import time
from collections import Counter
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (CounterMetricFamily, GaugeMetricFamily,
                                            HistogramMetricFamily, Metric, SummaryMetricFamily)
from prometheus_client.utils import floatToGoString

from boruta.core.types import HI_PRIO, LO_PRIO, ReqState, WorkerState
from boruta.http.errors import HttpError
from boruta.server.endpoint import NO_OPERATION

if TYPE_CHECKING:
    from boruta.server.app import Server
    from boruta.server.endpoint import Endpoint

PATH = "/metrics"
DEVICE_TYPE = "device_type"            # the caps key that names a device's type
RUNNING_KEPT = 100_000                 # job starts remembered for their durations (bounded)
WAIT_BUCKETS = (0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
JOB_BUCKETS = (1, 10, 30, 60, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
COMMIT_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                  1, 2.5)
# Heartbeat age buckets, in heartbeat intervals: a live dryad speaks every interval; one
# silent for `heartbeat_liveness` intervals (3 by default) is lost and its worker FAILED.
HEARTBEAT_BUCKETS = (0.25, 0.5, 1, 1.5, 2, 2.5, 3, 5)
OFFERED = ("text/plain", "application/openmetrics-text")
ACCEPTED_RANGES = frozenset({*OFFERED, "*/*", "text/*"})
NOT_ACCEPTED_Q = frozenset({"q=0", "q=0.0", "q=0.00", "q=0.000"})
METHODS_REFUSED = ("POST", "PUT", "PATCH", "DELETE")
_STATE_PRIORITY = attrgetter("state", "priority")
IN_PROGRESS = ReqState.INPROGRESS.value     # as events say it
# The request events the job histograms need: a start, and every way a request ends.
JOB_STATES = frozenset(str(state) for state in ReqState if state is not ReqState.WAIT)


# ---------------------------------------------------------------------- the books
class Books:
    """The scheduler's books, read in place. Its public reads fire due timers first (they
    change the farm, and from a listener, inside a commit) and build documents; counting
    needs neither, so this reads the records themselves and never writes."""

    def __init__(self, app: "Server") -> None:
        self.app = app                # app.sched, not a copy: a restore replaces it

    def requests(self) -> Iterable[Any]:
        return self.app.sched._requests.values()

    def workers(self) -> Iterable[Any]:
        return self.app.sched._workers.values()

    def request(self, req_id: int) -> Any:
        return self.app.sched._requests.get(req_id)

    def worker(self, uuid: str | None) -> Any:
        return self.app.sched._workers.get(uuid) if uuid is not None else None


def device_type(worker: Any) -> str:
    """A worker's `device_type` cap ("" when it has none, or when the worker is gone)."""
    return worker.caps.get(DEVICE_TYPE, "") if worker is not None else ""


# ---------------------------------------------------------------------- job times
class JobTimes:
    """Queue waits and job durations by the device type of the worker that took the job,
    from the committed request events (the listener runs once per event, so it is cheap:
    a WAITING event costs a look, not an entry)."""

    def __init__(self, books: Books, registry: CollectorRegistry,
                 clock: Callable[[], float] = time.time) -> None:
        self.books = books
        self.clock = clock                  # wall time, as the scheduler's ValidAfter
        self.running: dict[int, tuple[float, str]] = {}     # req ID -> (start, device type)
        self.wait = Histogram(
            "boruta_queue_wait_seconds", "Time from a request's ValidAfter (its creation, "
            "unless it asked to start later) to its assignment, by the device type of the "
            "worker it got", [DEVICE_TYPE], buckets=WAIT_BUCKETS, registry=registry)
        self.duration = Histogram(
            "boruta_job_duration_seconds", "Time from a request's assignment to its end "
            "(closed, timed out or failed), by the device type of its worker", [DEVICE_TYPE],
            buckets=JOB_BUCKETS, registry=registry)

    def on_event(self, doc: dict[str, Any]) -> None:
        """A request's start or end (the listener asks for nothing else: WAITING, the
        busiest event, is not even built for it)."""
        if doc["kind"] != "request":
            return
        if doc["state"] == IN_PROGRESS:
            self.started(doc["id"], doc.get("worker_uuid"), self.clock())
            return
        begun = self.running.pop(doc["id"], None)
        # An end without a worker came from the queue (a job start that failed sent the
        # request back): its job never ran, so it has no duration.
        if begun is not None and doc.get("worker_uuid") is not None:
            self.duration.labels(begun[1]).observe(max(0.0, self.clock() - begun[0]))

    def started(self, req_id: int, worker_uuid: str | None, now: float) -> None:
        kind = device_type(self.books.worker(worker_uuid))
        req = self.books.request(req_id)
        if req is not None:
            self.wait.labels(kind).observe(max(0.0, now - req.valid_after))
        running = self.running
        running[req_id] = (now, kind)
        while len(running) > RUNNING_KEPT:
            running.pop(next(iter(running)))   # the oldest start: its duration is lost


# ---------------------------------------------------------------------- the farm
class FarmCollector:
    """Everything counted or read when scraped: the books, the endpoints' counters, the
    dryads' silence, the tunnels' bytes. Nothing of it costs a call anything."""

    def __init__(self, app: "Server", books: Books) -> None:
        self.app = app
        self.books = books

    def describe(self) -> list[Metric]:
        return []                       # no name clashes to check: this registry is ours

    def collect(self) -> Iterator[Metric]:
        yield self.requests()
        yield self.workers()
        yield from self.calls()
        yield self.matching()
        yield from self.heartbeats()
        yield from self.tunnels()

    def requests(self) -> Metric:
        family = GaugeMetricFamily(
            "boruta_requests", "Requests in the books by state and priority (closed ones "
            "until the history purge)", labels=["state", "priority"])
        counts = Counter(map(_STATE_PRIORITY, self.books.requests()))
        for state in ReqState:
            for priority in range(HI_PRIO, LO_PRIO + 1):
                family.add_metric([state.value, str(priority)], counts.get((state, priority), 0))
        return family

    def workers(self) -> Metric:
        family = GaugeMetricFamily(
            "boruta_workers", "Registered workers by state and device type (the caps' "
            f"{DEVICE_TYPE}, empty when absent)", labels=["state", DEVICE_TYPE])
        counts = Counter((w.state, device_type(w)) for w in self.books.workers())
        for kind in sorted({kind for _, kind in counts}):
            for state in WorkerState:
                family.add_metric([state.value, kind], counts.get((state, kind), 0))
        return family

    def _endpoints(self) -> list["Endpoint"]:
        return [e for e in (getattr(self.app, "client_endpoint", None),
                            getattr(self.app, "dryad_endpoint", None)) if e is not None]

    def calls(self) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            "boruta_calls", "Calls by endpoint and operation (HTTP calls count as client "
            "calls), answered or refused", labels=["endpoint", "operation"])
        errors = CounterMetricFamily(
            "boruta_call_errors", "Calls answered with an error, by endpoint, operation "
            "(empty: a message naming no known operation) and error code",
            labels=["endpoint", "operation", "code"])
        for endpoint in self._endpoints():
            for name, counts in endpoint.counts.items():
                calls.add_metric([endpoint.name, name], counts.calls)
            for (name, code), count in sorted(endpoint.errors.items()):
                errors.add_metric([endpoint.name, name, code], count)
            if endpoint.rate_limited:
                errors.add_metric([endpoint.name, NO_OPERATION, "rate_limited"],
                                  endpoint.rate_limited)
        yield calls
        yield errors

    def matching(self) -> Metric:
        family = SummaryMetricFamily(
            "boruta_matching_call_seconds", "Time of the calls that run the matcher, on the "
            "server's loop: the operation's handler (for new_request the caller's limits, "
            "then the scheduler's checks, booking and matching); worker_prepared is a worker "
            "turning IDLE after its dryad prepared it", labels=["operation"])
        for endpoint in self._endpoints():
            for name, counts in endpoint.counts.items():
                if counts.timed:
                    family.add_metric([name], counts.timed_calls, counts.seconds)
        prepared = self.app.dryads.prepared
        family.add_metric(["worker_prepared"], prepared.timed_calls, prepared.seconds)
        return family

    def heartbeats(self) -> Iterator[Metric]:
        interval = self.app.cfg.heartbeat_interval
        now = time.monotonic()
        ages = sorted(now - peer.last_seen for peer in self.app.dryads.peers.values())
        histogram = HistogramMetricFamily(
            "boruta_dryad_heartbeat_age_seconds", "Time since each connected dryad last spoke "
            f"(heartbeats every {interval:g}s; silent for heartbeat_liveness intervals, it "
            "is lost): one histogram at scrape time, not a series per worker")
        buckets = [(floatToGoString(interval * m), bisect.bisect_right(ages, interval * m))
                   for m in HEARTBEAT_BUCKETS]
        buckets.append(("+Inf", len(ages)))
        histogram.add_metric([], buckets, sum(ages))
        yield histogram
        yield GaugeMetricFamily("boruta_dryad_heartbeat_age_max_seconds",
                                "The longest silence of a connected dryad (0: none connected)",
                                value=ages[-1] if ages else 0.0)

    def tunnels(self) -> Iterator[Metric]:
        manager = self.app.jobs.tunnels
        carried = CounterMetricFamily(
            "boruta_tunnel_bytes", "Bytes carried by the jobs' tunnels (closed ones too): "
            "to_worker is up (from the user's SSH client), to_client down",
            labels=["direction"], unit="bytes")
        carried.add_metric(["to_worker"], manager.traffic.to_worker)
        carried.add_metric(["to_client"], manager.traffic.to_client)
        yield carried
        yield GaugeMetricFamily("boruta_tunnels_open", "Job tunnels listening now",
                                value=len(manager.tunnels))


# ---------------------------------------------------------------------- the route
class Metrics:
    """The registry (ours, not prometheus-client's global one: every server in a process
    has its own) and the route that renders it."""

    def __init__(self, face: Any) -> None:
        self.face = face
        app: "Server" = face.app
        self.registry = CollectorRegistry(auto_describe=False)
        books = Books(app)
        self.registry.register(FarmCollector(app, books))
        self.jobs = JobTimes(books, self.registry)
        self.commits = Histogram(
            "boruta_store_commit_seconds", "Time of each commit of a turn's changes to the "
            "state directory (none when the server keeps its state in memory)",
            buckets=COMMIT_BUCKETS, registry=self.registry)
        ProcessCollector(registry=self.registry)
        app.outbox.on_commit = self.commits.observe
        self.stop_listening = app.events.listen(self.jobs.on_event, JOB_STATES)

    def render(self, accept: str) -> tuple[bytes, str]:
        """The exposition in the format `accept` asks for (text 0.0.4 unless OpenMetrics)."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    async def get(self, request: web.BaseRequest, params: dict[str, str]) -> web.StreamResponse:
        self.face.user_of(request)            # 401 (by the face) without a user
        accept = request.headers.get("Accept", "")
        if not acceptable(accept):
            raise HttpError(406, f"{PATH} is served as {' or '.join(OFFERED)}; the Accept "
                                 f"header asks for neither ({accept[:100]!r})")
        body, content_type = self.render(accept)
        return web.Response(body=body, headers={"Content-Type": content_type,
                                                "Cache-Control": "no-store"})

    async def refuse(self, request: web.BaseRequest,
                     params: dict[str, str]) -> web.StreamResponse:
        raise HttpError(405, f"{PATH} is read-only: use GET (or HEAD), not {request.method}",
                        headers={"Allow": "GET, HEAD"})


def acceptable(accept: str) -> bool:
    """Whether an Accept header admits one of the formats we render (none: anything)."""
    if not accept.strip():
        return True
    for part in accept.split(","):
        media, *parameters = part.split(";")
        if any(p.replace(" ", "").lower() in NOT_ACCEPTED_Q for p in parameters):
            continue
        if media.strip().lower() in ACCEPTED_RANGES:
            return True
    return False


def register(face: Any) -> Metrics:
    """Serve `GET /metrics` (HEAD too) on the face; other methods get a 405."""
    metrics = Metrics(face)
    face.router.add("GET", PATH, metrics.get)
    for method in METHODS_REFUSED:
        face.router.add(method, PATH, metrics.refuse)
    face.metrics = metrics
    return metrics
