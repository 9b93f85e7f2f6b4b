"""Errors over HTTP: one table from our error codes to upstream's statuses and messages.

Upstream's API v1 answers every error as JSON `{"message": "<text>"}`: a
NotFoundError is 404 `"<x> not found"`, everything else 400
`"invalid request: <upstream's message>"`. Tools that speak it (Weles, the
farmer, upstream's Go client) print or match those texts, so an error the
core shares with upstream is told in upstream's words, while our own
additions (users, limits, storage) keep our message, which says what to do.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from aiohttp import web

from boruta.core.errors import BorutaError

JSON = "application/json"
BAD_REQUEST_PREFIX = "invalid request: "
NO_BODY = "no body provided in HTTP request"


class HttpError(Exception):
    """An answer that is an error: a status and the text of `{"message": ...}`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def bad_request(text: str) -> HttpError:
    """Upstream's 400: `invalid request: <text>`."""
    return HttpError(400, BAD_REQUEST_PREFIX + text)


@dataclass(frozen=True)
class Rule:
    status: int
    upstream: bool           # True: upstream's own message (the class's default), prefixed


# Codes upstream shares with us answer upstream's text; the others answer ours.
# Anything not listed is a 400 with our message.
RULES: dict[str, Rule] = {
    # upstream's errors: 400 "invalid request: <upstream's message>"
    "bad_priority": Rule(400, True),
    "invalid_time_range": Rule(400, True),
    "deadline_in_the_past": Rule(400, True),
    "worker_not_assigned": Rule(400, True),
    "modification_forbidden": Rule(400, True),
    "not_in_fail_or_maintenance": Rule(400, True),
    "wrong_state_argument": Rule(400, True),
    "forbidden_state_change": Rule(400, True),
    "wrong_sort_item": Rule(400, True),
    "wrong_sort_order": Rule(400, True),
    "wrong_list_direction": Rule(400, True),
    "in_maintenance": Rule(400, True),
    "no_matching_worker": Rule(400, True),
    # acquire_worker over HTTP never waits: WAITING is upstream's "worker not assigned"
    "wait_timeout": Rule(400, True),
    # our additions: their own status, our message
    "forbidden": Rule(403, False),
    "unknown_user": Rule(401, False),
    "unauthenticated": Rule(401, False),
    "too_many_requests": Rule(400, False),
    "priority_not_allowed": Rule(400, False),
    "prolong_limit": Rule(400, False),
    "rate_limited": Rule(429, False),
    "storage_failed": Rule(503, False),
    "busy": Rule(503, False),
    "shutting_down": Rule(503, False),
    "internal": Rule(500, False),
}
UPSTREAM_TEXT = {"wait_timeout": "worker not assigned"}


def from_boruta(exc: BorutaError) -> HttpError:
    """The HTTP answer to one of our errors (RULES; NotFoundError is 404 with its text)."""
    code = exc.code
    if code == "not_found":
        return HttpError(404, exc.message)
    rule = RULES.get(code, Rule(400, False))
    if rule.upstream:
        text = UPSTREAM_TEXT.get(code) or type(exc).default_message
    else:
        text = exc.message
    if rule.status == 400:
        return bad_request(text)
    return HttpError(rule.status, text)


def json_response(body: object, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer the way upstream writes it (compact, UTF-8, application/json)."""
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return web.Response(body=text.encode("utf-8"), status=status, headers=headers,
                        content_type=JSON)


def error_response(error: HttpError) -> web.Response:
    return json_response({"message": error.message}, error.status, error.headers or None)


def text_not_found() -> web.Response:
    """Go's default 404 for paths outside /api."""
    return web.Response(status=404, text="404 page not found\n",
                        content_type="text/plain", charset="utf-8")
