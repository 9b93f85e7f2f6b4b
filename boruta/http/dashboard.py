"""The live dashboard: the page at `/`, its static files, its JSON snapshots and its feed.

The page is three static files shipped in the package (no build step, no CDN:
farms often run offline). It loads one page of each list as a snapshot, then
follows `GET /dashboard/events`, a server-sent event stream fed by the
server's in-process event listener, and patches only the rows an event names.

The listener runs on the server's loop right after a turn is committed, so it
only appends: one encoded frame shared by every client, into each client's
bounded buffer. A client that falls `FEED_BACKLOG` frames behind is dropped
(its connection closed; the page reconnects and reloads its snapshot) rather
than growing the server's memory or blocking the loop.
"""
from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import json
import mimetypes
import time
from collections import deque
from datetime import datetime, timezone
from importlib import resources
from typing import TYPE_CHECKING, Any, Callable, Iterable

from aiohttp import web

from boruta.core.errors import BorutaError, NotFoundError
from boruta.core.types import (MAX_PAGE_LIMIT, Paginator, ReqInfo, ReqState, RequestFilter,
                               SortInfo, WorkerFilter, WorkerState)
from boruta.http.auth import HttpUnauthorized
from boruta.http.routing import Handler

if TYPE_CHECKING:
    from boruta.server.app import Server


STATIC_FILES = ("index.html", "app.js", "style.css")
FEED_BACKLOG = 2000          # frames a client may fall behind before it is dropped
IDLE_SLEEP = 300.0              # seconds unused before the dashboard stops following events
TRANSITIONS_KEPT = 200       # recent transitions the page shows on load
WAITS_KEPT = 500             # recent queue waits kept per device type
STARTS_PENDING = 10000       # job starts not yet folded into the waits (bounded)
PAGE_DEFAULT = 100
STOP_NOTICED = 0.5           # seconds an open feed may hold up a stopping server
NO_DEVICE_TYPE = "(none)"


class BadQuery(ValueError):
    """A dashboard query parameter that cannot be used (answered 400 naming it)."""


def json_response(doc: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(doc).encode(),
                        content_type="application/json",
                        headers={"Cache-Control": "no-store"})


def _error(status: int, message: str) -> web.Response:
    return json_response({"message": message}, status)


def _int_param(request: web.BaseRequest, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    if not text.isdecimal() or not low <= int(text) <= high:
        raise BadQuery(f"{name} must be an integer from {low} to {high}")
    return int(text)


def _epoch(value: datetime) -> float:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


def _percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


# ---------------------------------------------------------------------- static files
class StaticFiles:
    """The page's files, read from the package once; served by exact name only, so no
    path can name anything else. ETags let a browser revalidate instead of refetching."""

    def __init__(self, names: Iterable[str] = STATIC_FILES) -> None:
        self.files: dict[str, tuple[bytes, str, str]] = {}
        folder = resources.files("boruta.http") / "static"
        for name in names:
            body = (folder / name).read_bytes()
            kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
            if kind.startswith("text/") or kind.endswith("javascript"):
                kind += "; charset=utf-8"
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            self.files[name] = (body, kind, etag)

    def response(self, request: web.BaseRequest, name: str) -> web.Response:
        body, kind, etag = self.files[name]
        headers = {"Content-Type": kind, "ETag": etag, "Cache-Control": "no-cache",
                   "X-Content-Type-Options": "nosniff"}
        if name.endswith(".html"):
            # Everything the page runs comes from this server; it is never framed.
            headers["Content-Security-Policy"] = (
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
            headers["X-Frame-Options"] = "DENY"
        if etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers={k: v for k, v in headers.items()
                                                     if k != "Content-Type"})
        return web.Response(body=body, headers=headers)


# ---------------------------------------------------------------------- the feed
class Feed:
    """One browser's event stream: a bounded backlog of encoded frames."""

    def __init__(self, request: web.BaseRequest) -> None:
        self.request = request
        self.frames: list[bytes] = []
        self.wake = asyncio.Event()
        self.dropped = False

    def push(self, frame: bytes) -> None:
        if self.dropped:
            return
        if len(self.frames) >= FEED_BACKLOG:
            self.drop()
            return
        self.frames.append(frame)
        self.wake.set()

    def drop(self) -> None:
        """Too slow (or shutting down): forget the backlog and close the connection."""
        self.dropped = True
        self.frames.clear()
        self.wake.set()
        transport = self.request.transport
        if transport is not None:
            transport.close()


class WaitTimes:
    """Queue waits of recent jobs by device type: a start is noted by the listener (cheap)
    and folded in when the page asks, when the request's caps are read."""

    def __init__(self) -> None:
        self.starts: deque[tuple[int, float]] = deque(maxlen=STARTS_PENDING)
        self.by_type: dict[str, deque[float]] = {}

    def started(self, req_id: int, at: float) -> None:
        self.starts.append((req_id, at))

    def fold(self, app: "Server") -> None:
        while self.starts:
            req_id, at = self.starts.popleft()
            try:
                info = app.sched.get_request_info(req_id)
            except NotFoundError:
                continue                      # purged before anyone looked
            device_type = info.caps.get("device_type") or NO_DEVICE_TYPE
            waits = self.by_type.setdefault(device_type, deque(maxlen=WAITS_KEPT))
            waits.append(max(0.0, at - _epoch(info.valid_after)))

    def summary(self, waiting: dict[str, list[float]], now: float) -> list[dict[str, Any]]:
        rows = []
        for device_type in sorted(set(self.by_type) | set(waiting)):
            recent = sorted(self.by_type.get(device_type, ()))
            queued = waiting.get(device_type, [])
            rows.append({
                "device_type": device_type, "jobs": len(recent),
                "p50": round(_percentile(recent, 0.5), 3) if recent else None,
                "p90": round(_percentile(recent, 0.9), 3) if recent else None,
                "max": round(recent[-1], 3) if recent else None,
                "waiting": len(queued),
                "oldest": round(max(0.0, now - min(queued)), 3) if queued else None})
        return rows


class WaitingQueue:
    """The WAITING requests in scheduling order, kept in step by the events after one scan,
    so that a read costs the changes since the last one plus a page, not every request
    the server keeps (listing 100,000 stored requests took 0.4 s a read).

    A request's WAITING event (new, back from a failed start, or `updated`: priority
    and times) marks it for one look-up at the next read; any other state removes it.
    """

    def __init__(self) -> None:
        self.scanned = False
        self.order: list[tuple[int, int]] = []            # (priority, id), sorted
        self.known: dict[int, tuple[int, str, float]] = {}  # id -> priority, type, valid after
        self.dirty: set[int] = set()

    def on_request(self, req_id: int, state: str) -> None:
        if not self.scanned:
            return
        if state == ReqState.WAIT:
            self.dirty.add(req_id)
        else:
            self.dirty.discard(req_id)
            self._forget(req_id)

    def _forget(self, req_id: int) -> None:
        known = self.known.pop(req_id, None)
        if known is not None:
            del self.order[bisect.bisect_left(self.order, (known[0], req_id))]

    def _learn(self, info: ReqInfo) -> None:
        self._forget(info.id)
        if info.state is ReqState.WAIT:     # else its event is on the way
            device_type = info.caps.get("device_type") or NO_DEVICE_TYPE
            self.known[info.id] = (info.priority, device_type, _epoch(info.valid_after))
            bisect.insort(self.order, (info.priority, info.id))

    def refresh(self, sched: Any) -> None:
        if not self.scanned:
            self.scanned = True
            border = 0
            while True:                        # a page holds at most MAX_PAGE_LIMIT
                page, info = sched.list_requests(RequestFilter(states=(ReqState.WAIT,)),
                                                 None, Paginator(id=border))
                for req in page:
                    self._learn(req)
                if not page or not info.remaining_items:
                    break
                border = page[-1].id
        dirty, self.dirty = self.dirty, set()
        for req_id in dirty:
            try:
                self._learn(sched.get_request_info(req_id))
            except NotFoundError:
                self._forget(req_id)

    def page(self, sched: Any, after: int, limit: int) -> tuple[list[ReqInfo], int]:
        """Up to `limit` requests after request `after` (0: from the head); and how many
        follow them."""
        start = 0
        if after:
            border = sched.get_request_info(after)     # need not be waiting any more
            start = bisect.bisect_right(self.order, (border.priority, border.id))
        ids = [req_id for _, req_id in self.order[start:start + limit]]
        return ([sched.get_request_info(req_id) for req_id in ids],
                max(0, len(self.order) - start - limit))


class Dashboard:
    """The dashboard's server side: snapshots read from the books, and the live feed."""

    def __init__(self, face: Any) -> None:
        self.face = face
        self.app: "Server" = face.app
        self.static = StaticFiles()
        self.feeds: set[Feed] = set()
        self.transitions: deque[dict[str, Any]] = deque(maxlen=TRANSITIONS_KEPT)
        self.waits = WaitTimes()
        self.waiting = WaitingQueue()
        self.dropped = 0                     # feeds dropped for falling behind
        # The dashboard follows the events only while someone uses it (a read in the
        # last IDLE_SLEEP seconds, or an open feed): an unwatched dashboard costs the
        # farm's busiest calls nothing. Woken, it rebuilds its queue mirror by one scan.
        self.stop_listening: Callable[[], None] | None = None
        self.last_use = 0.0
        self._sleep_check: asyncio.TimerHandle | None = None

    def awake(self) -> None:
        """Someone uses the dashboard: follow the events (from now on) if not already."""
        self.last_use = time.monotonic()
        if self.stop_listening is None:
            self.waiting = WaitingQueue()
            self.stop_listening = self.app.events.listen(self.on_event)
            self._schedule_sleep_check(IDLE_SLEEP)

    def _schedule_sleep_check(self, delay: float) -> None:
        loop = self.app.loop
        if loop is not None:
            self._sleep_check = loop.call_later(delay, self._maybe_sleep)

    def _maybe_sleep(self) -> None:
        idle = time.monotonic() - self.last_use
        if self.feeds or idle < IDLE_SLEEP:
            self._schedule_sleep_check(IDLE_SLEEP - idle if not self.feeds else IDLE_SLEEP)
        elif self.stop_listening is not None:
            self.stop_listening()
            self.stop_listening = None

    # ------------------------------------------------------------ the listener (hot)
    def on_event(self, doc: dict[str, Any]) -> None:
        """Every committed event: remember it, and queue it for every open feed."""
        kind = doc.get("kind")
        if kind in ("request", "worker"):
            self.transitions.append(doc)
            if kind == "request":
                self.waiting.on_request(doc["id"], doc["state"])
                if doc["state"] == ReqState.INPROGRESS:
                    self.waits.started(doc["id"], time.time())
        if self.feeds:
            frame = b"id: %d\ndata: %s\n\n" % (doc.get("seq", 0), json.dumps(doc).encode())
            for feed in tuple(self.feeds):
                feed.push(frame)
                if feed.dropped:
                    self.feeds.discard(feed)
                    self.dropped += 1

    def close(self) -> None:
        if self._sleep_check is not None:
            self._sleep_check.cancel()
        if self.stop_listening is not None:
            self.stop_listening()
            self.stop_listening = None
        for feed in tuple(self.feeds):
            feed.drop()
        self.feeds.clear()

    # ------------------------------------------------------------ routes
    def routes(self) -> dict[str, Handler]:
        routes: dict[str, Handler] = {
            "/": self.index,
            "/dashboard/events": self.events,
            "/dashboard/workers": self.workers,
            "/dashboard/queue": self.queue,
            "/dashboard/summary": self.summary,
        }
        for name in self.static.files:
            routes[f"/static/{name}"] = self._static_route(name)
        return routes

    def _static_route(self, name: str) -> Handler:
        async def serve(request: web.BaseRequest, params: dict[str, str]) -> web.StreamResponse:
            return self.static.response(request, name)
        return serve

    async def index(self, request: web.BaseRequest, params: dict[str, str]) -> web.StreamResponse:
        return self.static.response(request, "index.html")

    def _refusal(self, request: web.BaseRequest) -> web.Response | None:
        """None when the caller may read the farm; else the 401 to answer. The page asks
        for a token itself, so the answer carries no WWW-Authenticate: a browser would
        otherwise open its own Basic dialog over the page."""
        try:
            self.face.user_of(request)
        except HttpUnauthorized as exc:
            return _error(401, exc.message)
        return None

    async def _read(self, request: web.BaseRequest,
                    read: Callable[[web.BaseRequest], dict[str, Any]]) -> web.StreamResponse:
        """Authenticate, read the books (a read may fire due timers: their effects are
        carried out as after any call), answer JSON; bad queries get 400 naming the problem."""
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        self.awake()
        try:
            doc = read(request)
        except BadQuery as exc:
            return _error(400, str(exc))
        except NotFoundError as exc:
            return _error(404, str(exc))
        except BorutaError as exc:
            return _error(400, str(exc))
        finally:
            self.app.after_turn()
        return json_response(doc)

    async def workers(self, request: web.BaseRequest, params: dict[str, str]) -> web.StreamResponse:
        return await self._read(request, self.read_workers)

    async def queue(self, request: web.BaseRequest, params: dict[str, str]) -> web.StreamResponse:
        return await self._read(request, self.read_queue)

    async def summary(self, request: web.BaseRequest, params: dict[str, str]) -> web.StreamResponse:
        return await self._read(request, self.read_summary)

    # ------------------------------------------------------------ snapshots
    def read_workers(self, request: web.BaseRequest) -> dict[str, Any]:
        """One page of workers by UUID: `after` or `before` a UUID, `state` to filter."""
        limit = _int_param(request, "limit", PAGE_DEFAULT, 1, MAX_PAGE_LIMIT)
        state = request.query.get("state", "")
        states: tuple[WorkerState, ...] = ()
        if state:
            try:
                states = (WorkerState(state),)
            except ValueError:
                raise BadQuery(f"state must be one of {', '.join(WorkerState)}") from None
        after, before = request.query.get("after", ""), request.query.get("before", "")
        if after and before:
            raise BadQuery("give after or before, not both")
        paginator = Paginator(id=before or after, backward=bool(before), limit=limit)
        items, info = self.app.sched.list_workers(
            WorkerFilter(states=states) if states else None, SortInfo("uuid"), paginator)
        jobs = {job.worker_uuid: job.req_id for job in self.app.jobs.jobs.values()}
        peers = self.app.dryads.peers
        now = time.monotonic()
        rows = []
        for worker in items:
            peer = peers.get(worker.worker_uuid)
            rows.append({
                "uuid": worker.worker_uuid, "state": str(worker.state),
                "caps": dict(worker.caps), "groups": list(worker.groups),
                "fail_reason": worker.fail_reason, "job": jobs.get(worker.worker_uuid),
                "heartbeat_age": None if peer is None else round(now - peer.last_seen, 3)})
        return {"items": rows, "total": info.total_items, "remaining": info.remaining_items}

    def read_queue(self, request: web.BaseRequest) -> dict[str, Any]:
        """Waiting requests in scheduling order (priority, then arrival), `after` an ID
        (the last one shown: it need not be waiting any more)."""
        limit = _int_param(request, "limit", PAGE_DEFAULT, 1, MAX_PAGE_LIMIT)
        after = _int_param(request, "after", 0, 0, 2**63 - 1)
        self.waiting.refresh(self.app.sched)
        items, remaining = self.waiting.page(self.app.sched, after, limit)
        rows = [{"id": r.id, "priority": r.priority, "owner": r.owner.name,
                 "caps": dict(r.caps), "valid_after": _epoch(r.valid_after),
                 "deadline": _epoch(r.deadline)} for r in items]
        return {"items": rows, "total": len(self.waiting.order), "remaining": remaining}

    def read_summary(self, request: web.BaseRequest) -> dict[str, Any]:
        """Workers by state, the waits per device type, the recent transitions."""
        workers, _ = self.app.sched.list_workers(None, None, None)
        by_state = {str(state): 0 for state in WorkerState}
        for worker in workers:
            by_state[str(worker.state)] += 1
        self.waiting.refresh(self.app.sched)
        queued: dict[str, list[float]] = {}
        for _, device_type, valid_after in self.waiting.known.values():
            queued.setdefault(device_type, []).append(valid_after)
        self.waits.fold(self.app)
        now = time.time()
        return {"workers": by_state, "waiting": len(self.waiting.order),
                "waits": self.waits.summary(queued, now), "now": now,
                "transitions": list(self.transitions),
                "heartbeat_interval": self.app.cfg.heartbeat_interval}

    # ------------------------------------------------------------ the live feed
    async def events(self, request: web.BaseRequest, params: dict[str, str]) -> web.StreamResponse:
        """Server-sent events: a `hello`, then one `data:` line per event, and a comment
        every heartbeat interval so that both ends notice a dead connection."""
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                   "X-Accel-Buffering": "no"}
        if request.method == "HEAD":
            return web.Response(headers=headers)       # a stream never ends: no body to size
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        self.awake()
        feed = Feed(request)
        self.feeds.add(feed)
        interval = self.app.cfg.heartbeat_interval
        hello = {"kind": "hello", "seq": self.app.events.sent_seq,
                 "heartbeat_interval": interval}
        try:
            await response.write(b"retry: 2000\nevent: hello\ndata: %s\n\n"
                                 % json.dumps(hello).encode())
            quiet_since = time.monotonic()
            while not feed.dropped and not self.app.stopping:
                # Short naps: a stopping server is noticed within STOP_NOTICED seconds.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(feed.wake.wait(), min(interval, STOP_NOTICED))
                feed.wake.clear()
                frames, feed.frames = feed.frames, []
                if frames:
                    await response.write(b"".join(frames))
                elif time.monotonic() - quiet_since >= interval:
                    await response.write(b": keep-alive\n\n")
                else:
                    continue
                quiet_since = time.monotonic()
        except (ConnectionError, RuntimeError):
            pass                                   # the browser went away (or was dropped)
        finally:
            self.feeds.discard(feed)
        return response


def register(face: Any) -> Dashboard:
    """Add the page, its files, its snapshots and its feed to the face's router."""
    dashboard = face.dashboard = Dashboard(face)
    for path, handler in dashboard.routes().items():
        face.router.add("GET", path, handler)
    return dashboard
