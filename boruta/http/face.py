"""The HTTP face of the server: aiohttp's low-level server on the server's own loop.

One handler and our own router (boruta.http.routing), not aiohttp's
web.Application: upstream's routing rules are not aiohttp's, and a request
should cost a dictionary look-up, not a middleware stack.

Every route that runs an operation goes through `HttpFace.call`, which does
what the ZeroMQ endpoint does for a frame: the operation table's argument
check, the same authorisation (`Access`), the same handler object, the audit
record, the turn's effects, and the reply only once the change is committed.
So a request made over HTTP and one made over ZeroMQ are the same request
under the same rules, and each sees the other's at once.

Limits: a body over `http_max_body` is a 413 before it is read; the request
line and each header are bounded by aiohttp's parser (8190 bytes each, at
most 128 headers: a 400 beyond); a body is read without blocking the loop
and must arrive within BODY_TIMEOUT seconds; idle keep-alive connections
close after KEEPALIVE seconds.
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from boruta.core.addresses import split_host_port
from boruta.core.errors import BorutaError, ConfigError
from boruta.core.users import User
from boruta.http import api_v1, dashboard, metrics
from boruta.http.auth import HttpAuth, HttpUnauthorized
from boruta.http.cors import Cors
from boruta.http.errors import HttpError, error_response, from_boruta, text_not_found
from boruta.http.routing import Found, NotFound, Redirect, Router
from boruta.server.endpoint import Call
from boruta.server.parked import PARKED
from boruta.transport.errors import (DryadError, RateLimitedError, ShuttingDownError,
                                     StorageFailedError)
from boruta.transport.operations import CLIENT_OPS, Access

if TYPE_CHECKING:
    from boruta.server.app import Server

log = logging.getLogger("boruta.http")

KEEPALIVE = 75.0             # seconds an idle keep-alive connection is kept
BODY_TIMEOUT = 30.0          # seconds a client has to send its body
SHUTDOWN_GRACE = 2.0         # seconds requests in flight get at shutdown
HTTP_ROUTE = (b"http", ())   # the route of HTTP calls in audit lines (no ZeroMQ peer)


async def _read_at_most(request: web.BaseRequest, size: int) -> bytes:
    """The body up to its end or `size` bytes, whichever comes first."""
    chunks: list[bytes] = []
    got = 0
    while got < size:
        chunk = await request.content.read(size - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


class _OneLineLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's own error log (a request it cannot parse: a header over its limits, a
    broken request line): one line naming the problem, never a traceback."""

    def exception(self, msg: Any, *args: Any, exc_info: Any = None, **kw: Any) -> None:
        self.logger.warning("%s: %s", msg % args if args else msg,
                            str(exc_info).strip().replace("\n", " ") if exc_info else "")

    def debug(self, msg: Any, *args: Any, exc_info: Any = None, **kw: Any) -> None:
        self.logger.debug("%s: %s", msg % args if args else msg, exc_info or "")


class HttpFace:
    """The HTTP listener: routes, users, CORS, and `call` into the server's operations."""

    def __init__(self, app: "Server") -> None:
        self.app = app
        cfg = app.cfg
        self.router = Router()
        self.cors = Cors(cfg.http_cors_origins)
        self.auth = HttpAuth(app.identities, cfg.http_anonymous)
        self.max_body = cfg.http_max_body
        self.url: str | None = None
        self.requests = 0
        self._server: web.Server | None = None
        self._listener: asyncio.base_events.Server | None = None
        api_v1.register(self)
        metrics.register(self)
        self.dashboard = dashboard.register(self)

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> str:
        """Bind `http_listen` and serve; returns the base URL (ConfigError if it cannot)."""
        self.auth.check_config()
        host, port = split_host_port(self.app.cfg.http_listen, allow_zero_port=True,
                                     allow_wildcard=True)
        loop = asyncio.get_running_loop()
        self._server = web.Server(self._handle, keepalive_timeout=KEEPALIVE,
                                  access_log=None, handler_cancellation=True,
                                  logger=_OneLineLog(log, {}))
        bind = None if host in ("*", "") else host
        try:
            self._listener = await loop.create_server(self._server, bind, port,
                                                      reuse_address=True, backlog=1024)
        except OSError as exc:
            raise ConfigError(f"cannot bind the http endpoint {self.app.cfg.http_listen}: "
                              f"{exc.strerror or exc}") from None
        bound = self._listener.sockets[0].getsockname()
        shown = bound[0] if ":" not in bound[0] else f"[{bound[0]}]"
        self.url = f"http://{shown}:{bound[1]}"
        return self.url

    async def close(self) -> None:
        """Stop accepting, give requests in flight a moment, close every connection."""
        if self._listener is not None:
            self._listener.close()
        self.dashboard.close()               # open live feeds end now, not at the grace's end
        if self._server is not None:
            await self._server.shutdown(SHUTDOWN_GRACE)
        if self._listener is not None:
            await self._listener.wait_closed()
            self._listener = None

    # ------------------------------------------------------------------ one request
    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self.requests += 1
        try:
            if self.cors.is_preflight(request):
                return self.cors.preflight(request)
            response = await self._route(request)
        except HttpError as exc:
            response = error_response(exc)
        except HttpUnauthorized as exc:
            response = error_response(HttpError(exc.status, exc.message, exc.headers))
        except BorutaError as exc:
            response = error_response(from_boruta(exc))
        except asyncio.CancelledError:
            raise
        except ConnectionError as exc:            # the client left mid-request: nobody to tell
            log.debug("%s %s: client gone (%s)", request.method, request.path, exc)
            return web.Response(status=400)
        except Exception as exc:
            log.error("internal error answering %s %s: %s: %s", request.method,
                      request.path, type(exc).__name__, exc, exc_info=True)
            response = error_response(HttpError(500, "internal server error"))
        self.cors.decorate(request, response)
        return response

    async def _route(self, request: web.BaseRequest) -> web.StreamResponse:
        outcome = self.router.resolve(request.method, request.path, request.query_string)
        if isinstance(outcome, Found):
            return await outcome.handler(request, outcome.params)
        if isinstance(outcome, Redirect):
            return web.Response(status=308, headers={"Location": outcome.location})
        assert isinstance(outcome, NotFound)
        if outcome.api:
            raise HttpError(404, f"{request.path} not found")
        return text_not_found()

    async def read_body(self, request: web.BaseRequest) -> bytes:
        """The request's body, at most `http_max_body` bytes (413 beyond, 408 if too slow)."""
        limit = self.max_body
        length = request.content_length
        if length is not None and length > limit:
            raise HttpError(413, f"request body too large: {length} bytes, the limit is "
                                 f"{limit} (http_max_body)")
        try:
            body = await asyncio.wait_for(_read_at_most(request, limit + 1), BODY_TIMEOUT)
        except asyncio.TimeoutError:
            raise HttpError(408, f"request body not received within {BODY_TIMEOUT:g}s") \
                from None
        except HttpProcessingError as exc:       # a broken chunked body, say
            raise HttpError(400, f"invalid request: malformed body ({exc.message})") from None
        if len(body) > limit:
            raise HttpError(413, f"request body too large: the limit is {limit} bytes "
                                 "(http_max_body)")
        return body

    # ------------------------------------------------------------------ users and operations
    def user_of(self, request: web.BaseRequest) -> User:
        """The request's user (HttpUnauthorized, answered 401, when there is none)."""
        return self.auth.user_of(request)

    def _check_rate(self, user: User, request: web.BaseRequest) -> None:
        who = user.name if not self.app.cfg.insecure else f"http:{request.remote}"
        if not self.app.limiter.allow(who):
            raise RateLimitedError(f"more than {self.app.cfg.peer_rate:g} requests/s from "
                                   f"{'user ' + user.name if who == user.name else 'this peer'}"
                                   ": slow down")

    async def call(self, op_name: str, user: User, wire_args: dict[str, Any],
                   request: web.BaseRequest | None = None) -> Any:
        """Run one client operation as `user` exactly as the ZeroMQ endpoint does; the result
        once the change is committed. Parking operations answer at once (timeout 0)."""
        app = self.app
        if app.stopping:
            raise ShuttingDownError()
        if request is not None:
            self._check_rate(user, request)
        endpoint = app.client_endpoint
        op = CLIENT_OPS[op_name]
        if op.parks:
            wire_args = {**wire_args, "timeout": 0}
        call = Call(HTTP_ROUTE, None, None, None if app.cfg.insecure else f"http:{user.name}",
                    user, request.remote if request is not None else None)
        args = None
        counts = endpoint.counts[op_name]
        counts.calls += 1
        try:
            args = op.check(wire_args)
            if endpoint.authorise is not None and op.access is not Access.ANYONE:
                endpoint.authorise(op, call, args, app)
            result = endpoint.call_handler(op, call, args)   # timed as the endpoint times it
        except Exception as exc:
            app.stats.errors += 1
            endpoint.count_error(op, exc.code if isinstance(exc, BorutaError) else "internal")
            endpoint.audit.record(op, call, args, exc)
            app.after_turn()
            raise
        endpoint.audit.record(op, call, args, result)
        app.after_turn()
        if result is PARKED:        # an operation that answers later has no HTTP route
            raise BorutaError(f"{op_name} cannot be called over HTTP")
        try:
            await app.outbox.durable()
        except DryadError:
            raise StorageFailedError("the server could not save its state; the change was "
                                     "not acknowledged: check with a read before retrying") \
                from None
        if app.outbox.unsaved is not None:
            raise StorageFailedError("the server could not save its state; the change was "
                                     "not acknowledged: check with a read before retrying")
        return result
