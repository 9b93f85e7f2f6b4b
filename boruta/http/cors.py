"""CORS as upstream's server does it (rs/cors around the router), so browser tools keep working.

Allowed origins come from `http_cors_origins` (comma-separated; `*`, or an
empty list, allows every origin). Methods GET, HEAD and POST; request headers
Content-Type and Origin, plus Authorization (our addition: a browser tool
sends its token in it); every Boruta header is exposed; preflights are
cached for a day.
"""
from __future__ import annotations

from aiohttp import web

ALLOWED_METHODS = ("GET", "HEAD", "POST")
ALLOWED_HEADERS = ("origin", "content-type", "authorization")
EXPOSED_HEADERS = ("Boruta-List-Total", "Boruta-List-Remaining", "Boruta-Request-State",
                   "Boruta-List-Batch-Size", "Boruta-Job-Timeout", "Boruta-Worker-State",
                   "Boruta-Server-Version", "Boruta-Api-Version", "Boruta-Api-State")
MAX_AGE = 86400


class Cors:
    def __init__(self, origins: str) -> None:
        listed = [o.strip().lower() for o in origins.split(",")]
        listed = [o for o in listed if o] if origins.strip() else []
        self.all = not listed or "*" in listed
        self.origins = frozenset(listed)
        self._exposed = ", ".join(EXPOSED_HEADERS)

    def allows(self, origin: str) -> bool:
        return self.all or origin.lower() in self.origins

    @staticmethod
    def is_preflight(request: web.BaseRequest) -> bool:
        return request.method == "OPTIONS" and \
            "Access-Control-Request-Method" in request.headers

    def preflight(self, request: web.BaseRequest) -> web.Response:
        """Answer a preflight itself: 204, the allow headers only when all is allowed."""
        response = web.Response(status=204)
        headers = response.headers
        headers["Vary"] = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
        origin = request.headers.get("Origin", "")
        method = request.headers.get("Access-Control-Request-Method", "").upper()
        wanted = [h.strip() for h in
                  request.headers.get("Access-Control-Request-Headers", "").split(",")
                  if h.strip()]
        if not origin or not self.allows(origin):
            return response
        if method not in ALLOWED_METHODS and method != "OPTIONS":
            return response
        if any(h.lower() not in ALLOWED_HEADERS for h in wanted):
            return response
        headers["Access-Control-Allow-Origin"] = "*" if self.all else origin
        headers["Access-Control-Allow-Methods"] = method
        if wanted:
            headers["Access-Control-Allow-Headers"] = ", ".join(
                "-".join(p.capitalize() for p in h.split("-")) for h in wanted)
        headers["Access-Control-Max-Age"] = str(MAX_AGE)
        return response

    def decorate(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        """An actual request's answer: `Vary: Origin` always; the rest for an allowed origin."""
        headers = response.headers
        headers.add("Vary", "Origin")
        origin = request.headers.get("Origin")
        if not origin or not self.allows(origin) or request.method not in ALLOWED_METHODS:
            return
        headers["Access-Control-Allow-Origin"] = "*" if self.all else origin
        headers["Access-Control-Expose-Headers"] = self._exposed
