"""Our router, with upstream's routing rules (httptreemux as upstream configured it).

- A pattern is `/`-separated; `:name` matches one segment, `*name` the rest of
  the path. A static segment wins over a parameter (`/reqs/list` before
  `/reqs/:id`).
- The trailing slash is part of a route. A path that matches a route only
  with the other trailing slash, for a method that route has, is redirected
  there with 308 (method and body kept).
- `/api/<path>` without a version is redirected (308) to `/api/v1/<path>`.
- Repeated slashes are read as one, so `/api/v1//version` (what upstream's Go
  client asks for) is `/api/v1/version`.
- HEAD is served by a route's GET handler.
- Whatever else is under `/api/v1/` is a JSON 404; outside `/api`, Go's
  plain-text 404.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterator

from aiohttp import web

Handler = Callable[[web.BaseRequest, dict[str, str]], Awaitable[web.StreamResponse]]
API_PREFIX = "/api/"
V1_PREFIX = "/api/v1/"
_SLASHES = re.compile(r"//+")


@dataclass
class Route:
    pattern: str
    segments: tuple[str, ...]
    methods: dict[str, Handler] = field(default_factory=dict)

    @property
    def rank(self) -> tuple[int, int]:
        """Fewer parameters first, a catch-all last: static routes win."""
        return (sum(s.startswith("*") for s in self.segments),
                sum(s.startswith(":") for s in self.segments))

    def match(self, parts: list[str]) -> dict[str, str] | None:
        if len(parts) != len(self.segments) and not self.segments[-1].startswith("*"):
            return None
        params: dict[str, str] = {}
        for i, seg in enumerate(self.segments):
            if seg.startswith("*"):
                params[seg[1:]] = "/".join(parts[i:])
                return params
            if i >= len(parts):
                return None
            part = parts[i]
            if seg.startswith(":"):
                if not part:
                    return None
                params[seg[1:]] = part
            elif seg != part:
                return None
        return params if len(parts) == len(self.segments) else None


@dataclass(frozen=True)
class Found:
    handler: Handler
    params: dict[str, str]


@dataclass(frozen=True)
class Redirect:
    location: str


class NotFound:
    """No route: `api` tells a JSON 404 (under /api/v1/) from Go's text 404."""

    def __init__(self, api: bool) -> None:
        self.api = api


Outcome = Found | Redirect | NotFound


class Router:
    def __init__(self) -> None:
        self._static: dict[str, Route] = {}
        self._dynamic: list[Route] = []

    def add(self, method: str, path: str, handler: Handler) -> None:
        """Serve `method` on `path` (see the module's rules for patterns)."""
        route = self._static.get(path) or next(
            (r for r in self._dynamic if r.pattern == path), None)
        if route is None:
            route = Route(path, tuple(path.split("/")))
            if any(s[:1] in (":", "*") for s in route.segments):
                self._dynamic.append(route)
                self._dynamic.sort(key=lambda r: r.rank)
            else:
                self._static[path] = route
        method = method.upper()
        if method in route.methods:
            raise ValueError(f"{method} {path} is routed twice")
        route.methods[method] = handler

    def _routes(self, path: str) -> Iterator[tuple[Route, dict[str, str]]]:
        """Every route that matches `path`, the most specific first (lazily: the first
        with the method wins)."""
        static = self._static.get(path)
        if static is not None:
            yield static, {}
        parts = path.split("/")
        for route in self._dynamic:
            params = route.match(parts)
            if params is not None:
                yield route, params

    @staticmethod
    def _handler(route: Route, method: str) -> Handler | None:
        handler = route.methods.get(method)
        if handler is None and method == "HEAD":
            handler = route.methods.get("GET")
        return handler

    def resolve(self, method: str, path: str, query: str = "") -> Outcome:
        """What to do with `method path`: a handler, a 308, or a 404."""
        if "//" in path:
            path = _SLASHES.sub("/", path)
        for route, params in self._routes(path):
            handler = self._handler(route, method)
            if handler is not None:
                return Found(handler, params)
        other = path[:-1] if path.endswith("/") and len(path) > 1 else path + "/"
        for route, _ in self._routes(other):
            if self._handler(route, method) is not None:
                return Redirect(_with_query(other, query))
        if path.startswith(API_PREFIX) and not path.startswith(V1_PREFIX) \
                and path != V1_PREFIX.rstrip("/"):
            return Redirect(_with_query(V1_PREFIX + path[len(API_PREFIX):], query))
        return NotFound(api=path.startswith(API_PREFIX))

    def patterns(self) -> list[tuple[str, list[str]]]:
        """(pattern, methods) of every route, for docs and tests."""
        routes: list[Any] = [*self._static.values(), *self._dynamic]
        return [(r.pattern, sorted(r.methods)) for r in routes]


def _with_query(path: str, query: str) -> str:
    return f"{path}?{query}" if query else path
