"""Upstream's HTTP API v1 on our operations: its routes, statuses, headers and JSON.

Each handler reads upstream's request (boruta.http.upstream), runs one of
our operations through `HttpFace.call` (the same rules as over ZeroMQ) and
answers in upstream's shape. Where upstream's Go client and server disagree,
the client wins, since it is what tools run:

- HEAD on a request, a worker or /version answers 204 with the headers (the
  client's GetRequestState, GetWorkerState, GetJobTimeout and Version demand
  204; upstream's server answered 200, so they always failed);
- setstate answers 204 (upstream's 202 with a `null` body fails the client);
- a list error carries zero Boruta-List-* headers, so the client, which reads
  them before the status, reports the server's error instead of a missing
  header;
- acquire_worker never waits: a WAITING request is 400 "worker not assigned",
  as upstream answered, and tools retry.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from aiohttp import web

import boruta
from boruta.core.errors import BorutaError, WrongStateArgumentError
from boruta.core.types import ReqState
from boruta.http import upstream
from boruta.http.auth import HttpUnauthorized
from boruta.http.errors import HttpError, bad_request, from_boruta, json_response

if TYPE_CHECKING:
    from boruta.http.face import HttpFace

API = "/api/v1"
API_VERSION, API_STATE = "v1", "devel"
UUID = re.compile(r"[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}")
SETTABLE_STATES = ("IDLE", "MAINTENANCE")
LIST_HEADERS = ("Boruta-List-Batch-Size", "Boruta-List-Total", "Boruta-List-Remaining")


def _req_id(params: dict[str, str]) -> int:
    text = params["id"]
    if not text.isascii() or not text.isdigit() or int(text) > upstream.UINT64:
        raise bad_request("ID provided in URL isn't valid")
    return int(text)


def _uuid(params: dict[str, str]) -> str:
    if not UUID.fullmatch(params["id"]):
        raise bad_request("ID provided in URL isn't valid UUID")
    return params["id"]


def _no_content() -> web.Response:
    return web.Response(status=204)


def _described(request: web.BaseRequest, doc: Any, headers: dict[str, str]) -> web.Response:
    """One item: JSON with its Boruta headers, or for HEAD the headers alone (204)."""
    if request.method == "HEAD":
        return web.Response(status=204, headers=headers)
    return json_response(doc, headers=headers)


def _listed(items: list[dict[str, Any]], total: int, remaining: int) -> web.Response:
    return json_response(items, headers={
        "Boruta-List-Batch-Size": str(len(items)), "Boruta-List-Total": str(total),
        "Boruta-List-Remaining": str(remaining)})


class ApiV1:
    def __init__(self, face: "HttpFace") -> None:
        self.face = face

    async def _body(self, request: web.BaseRequest, required: bool = True) -> Any:
        """The body's JSON value; an empty body is upstream's 400 unless not `required`."""
        body = await self.face.read_body(request)
        if not required and not body.strip():
            return None
        return upstream.parse_body(body)

    def _no_body(self, request: web.BaseRequest) -> None:
        """A route that reads no body still refuses one over the limit."""
        length = request.content_length
        if length is not None and length > self.face.max_body:
            raise HttpError(413, f"request body too large: {length} bytes, the limit is "
                                 f"{self.face.max_body} (http_max_body)")

    async def _call(self, request: web.BaseRequest, op: str, args: dict[str, Any]) -> Any:
        return await self.face.call(op, self.face.user_of(request), args, request)

    # ------------------------------------------------------------------ requests
    async def new_request(self, request: web.BaseRequest, params: dict[str, str]) -> web.Response:
        self.face.user_of(request)
        args = upstream.new_request(await self._body(request))
        result = await self._call(request, "new_request", args)
        return json_response({"ReqID": result["id"]}, 201)

    async def get_request(self, request: web.BaseRequest,
                          params: dict[str, str]) -> web.Response:
        self.face.user_of(request)
        doc = await self._call(request, "get_request_info", {"id": _req_id(params)})
        headers = {"Boruta-Request-State": doc["state"]}
        if doc["state"] == str(ReqState.INPROGRESS) and doc.get("job"):
            headers["Boruta-Job-Timeout"] = upstream.header_time(doc["job"]["timeout"])
        return _described(request, upstream.req_info(doc), headers)

    async def update_request(self, request: web.BaseRequest,
                             params: dict[str, str]) -> web.Response:
        self.face.user_of(request)
        req_id = _req_id(params)
        args = upstream.update_request(await self._body(request), req_id)
        if args is not None:            # nothing to change: upstream answers 204 at once
            await self._call(request, "update_request", args)
        return _no_content()

    async def _by_id(self, request: web.BaseRequest, params: dict[str, str], op: str) -> Any:
        self.face.user_of(request)
        req_id = _req_id(params)
        self._no_body(request)
        return await self._call(request, op, {"id": req_id})

    async def close_request(self, request: web.BaseRequest,
                            params: dict[str, str]) -> web.Response:
        await self._by_id(request, params, "close_request")
        return _no_content()

    async def acquire_worker(self, request: web.BaseRequest,
                             params: dict[str, str]) -> web.Response:
        doc = await self._by_id(request, params, "acquire_worker")
        return json_response(upstream.access_info(doc))

    async def prolong_access(self, request: web.BaseRequest,
                             params: dict[str, str]) -> web.Response:
        await self._by_id(request, params, "prolong_access")
        return _no_content()

    async def list_requests(self, request: web.BaseRequest,
                            params: dict[str, str]) -> web.Response:
        try:
            self.face.user_of(request)
            args, nothing = upstream.requests_list(await self._body(request, required=False))
            if nothing:
                return _listed([], 0, 0)
            doc = await self._call(request, "list_requests", args)
        except Exception as exc:
            raise _with_list_headers(exc) from None
        return _listed([upstream.req_info(d) for d in doc["items"]], doc["total"],
                       doc["remaining"])

    # ------------------------------------------------------------------ workers
    async def _list_workers(self, request: web.BaseRequest, args: dict[str, Any]
                            ) -> web.Response:
        doc = await self._call(request, "list_workers", args)
        return _listed([upstream.worker_info(d) for d in doc["items"]], doc["total"],
                       doc["remaining"])

    async def all_workers(self, request: web.BaseRequest,
                          params: dict[str, str]) -> web.Response:
        try:
            self.face.user_of(request)
            response = await self._list_workers(request, {})
        except Exception as exc:
            raise _with_list_headers(exc) from None
        if request.method == "HEAD":
            return web.Response(status=204, headers={
                h: response.headers[h] for h in LIST_HEADERS})
        return response

    async def list_workers(self, request: web.BaseRequest,
                           params: dict[str, str]) -> web.Response:
        try:
            self.face.user_of(request)
            args = upstream.workers_list(await self._body(request, required=False))
            return await self._list_workers(request, args)
        except Exception as exc:
            raise _with_list_headers(exc) from None

    async def get_worker(self, request: web.BaseRequest, params: dict[str, str]) -> web.Response:
        self.face.user_of(request)
        doc = await self._call(request, "get_worker_info", {"uuid": _uuid(params)})
        return _described(request, upstream.worker_info(doc),
                          {"Boruta-Worker-State": doc["state"]})

    async def set_state(self, request: web.BaseRequest, params: dict[str, str]) -> web.Response:
        self.face.user_of(request)
        uuid = _uuid(params)
        state = upstream.worker_state(await self._body(request))
        if state not in SETTABLE_STATES:          # upstream compares exactly
            raise WrongStateArgumentError()
        await self._call(request, "set_state", {"uuid": uuid, "state": state})
        return _no_content()

    async def set_groups(self, request: web.BaseRequest,
                         params: dict[str, str]) -> web.Response:
        self.face.user_of(request)
        uuid = _uuid(params)
        groups = upstream.groups(await self._body(request))
        await self._call(request, "set_groups", {"uuid": uuid, "groups": groups})
        return _no_content()

    async def deregister(self, request: web.BaseRequest,
                         params: dict[str, str]) -> web.Response:
        self.face.user_of(request)
        uuid = _uuid(params)
        self._no_body(request)
        await self._call(request, "deregister", {"uuid": uuid})
        return _no_content()

    # ------------------------------------------------------------------ version
    async def version(self, request: web.BaseRequest, params: dict[str, str]) -> web.Response:
        """Open to all, as upstream's: tools check it before they log in."""
        headers = {"Boruta-Server-Version": boruta.__version__,
                   "Boruta-Api-Version": API_VERSION, "Boruta-Api-State": API_STATE}
        return _described(request, {"Server": boruta.__version__, "API_Version": API_VERSION,
                                    "API_State": API_STATE}, headers)


def _with_list_headers(exc: Exception) -> Exception:
    """A list's error, carrying zero list headers (upstream's client reads them first)."""
    if isinstance(exc, HttpUnauthorized):
        error = HttpError(exc.status, exc.message, exc.headers)
    elif isinstance(exc, BorutaError):
        error = from_boruta(exc)
    elif isinstance(exc, HttpError):
        error = exc
    else:
        return exc
    error.headers = {**error.headers, **{h: "0" for h in LIST_HEADERS}}
    return error


def register(face: "HttpFace") -> ApiV1:
    """Add upstream's API v1 routes to `face`'s router."""
    api = ApiV1(face)
    add = face.router.add
    add("POST", f"{API}/reqs/", api.new_request)
    add("POST", f"{API}/reqs/list", api.list_requests)
    add("GET", f"{API}/reqs/:id", api.get_request)
    add("POST", f"{API}/reqs/:id", api.update_request)
    add("POST", f"{API}/reqs/:id/close", api.close_request)
    add("POST", f"{API}/reqs/:id/acquire_worker", api.acquire_worker)
    add("POST", f"{API}/reqs/:id/prolong", api.prolong_access)
    add("GET", f"{API}/workers/", api.all_workers)
    add("POST", f"{API}/workers/list", api.list_workers)
    add("GET", f"{API}/workers/:id", api.get_worker)
    add("POST", f"{API}/workers/:id/setstate", api.set_state)
    add("POST", f"{API}/workers/:id/setgroups", api.set_groups)
    add("POST", f"{API}/workers/:id/deregister", api.deregister)
    add("GET", f"{API}/version", api.version)
    return api
