"""Upstream's JSON: our documents in its Go shapes, and its request bodies read the way Go reads them.

Out: ReqInfo, WorkerInfo and AccessInfo2 with upstream's Go field names,
RFC 3339 times (fraction trimmed as Go writes it), empty groups as `null`.
In: one JSON value per body (trailing data ignored), field names matched
without regard to case, unknown fields ignored, Go's zero time meaning
"unset", Go's integer widths (Priority uint8, page Limit uint16) enforced;
a wrong type is a 400 in the words of Go's decoder (`json: cannot
unmarshal ...`). The results are the wire arguments of our operations.
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Mapping

from boruta.core.types import ReqState
from boruta.http.errors import NO_BODY, HttpError, bad_request

ZERO_TIME_PREFIX = "0001-01-01T00:00:00"
REQ_STATES = frozenset(str(s) for s in ReqState)
UINT8, UINT16, UINT64 = (1 << 8) - 1, (1 << 16) - 1, (1 << 64) - 1
_DECODER = json.JSONDecoder()


# --------------------------------------------------------------------------- out
def go_time(text: str | None) -> str | None:
    """Our ISO 8601 UTC text as Go's RFC 3339 (nanoseconds, trailing zeros trimmed)."""
    if not text or "." not in text:
        return text
    head, _, frac = text.partition(".")
    digits = frac.rstrip("Z").rstrip("0")
    return f"{head}.{digits}Z" if digits else f"{head}Z"


def header_time(text: str) -> str:
    """RFC 3339 to the second: the Boruta-Job-Timeout header."""
    return text.partition(".")[0].rstrip("Z") + "Z"


def _nil_if_empty(items: Any) -> Any:
    return list(items) if items else None


def req_info(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A request document -> upstream's ReqInfo."""
    job = doc.get("job")
    return {
        "ID": doc["id"], "Priority": doc["priority"],
        "Owner": {"Groups": _nil_if_empty((doc.get("owner") or {}).get("groups"))},
        "Deadline": go_time(doc["deadline"]), "ValidAfter": go_time(doc["valid_after"]),
        "State": doc["state"],
        "Job": None if job is None else {"WorkerUUID": job["worker_uuid"],
                                         "Timeout": go_time(job["timeout"])},
        "Caps": doc.get("caps"),
        # Ours, only when there are some: upstream's own answers stay byte for byte.
        **({"Expr": list(doc["expr"])} if doc.get("expr") else {}),
    }


def worker_info(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A worker document -> upstream's WorkerInfo."""
    return {"WorkerUUID": doc["uuid"], "State": doc["state"],
            "Groups": _nil_if_empty(doc.get("groups")), "Caps": doc.get("caps")}


def access_info(doc: Mapping[str, Any]) -> dict[str, Any]:
    """An access document -> upstream's AccessInfo2 (Addr as Go's net.TCPAddr)."""
    return {"Addr": {"IP": doc["host"], "Port": doc["port"], "Zone": ""},
            "Key": doc["key"], "Username": doc["username"]}


# --------------------------------------------------------------------------- in: the body
def parse_body(body: bytes) -> Any:
    """One JSON value, as Go's json.Decoder reads it (no body: upstream's 400)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("invalid character in string literal (not UTF-8)") from None
    start = len(text) - len(text.lstrip(" \t\r\n"))
    if start == len(text):
        raise HttpError(400, NO_BODY)
    try:
        value, _ = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip(" \t\r\n")):
            raise bad_request("unexpected EOF") from None
        char = text[exc.pos]
        raise bad_request(f"invalid character {char!r} ({exc.msg.lower()} at offset "
                          f"{exc.pos})") from None
    except RecursionError:
        raise bad_request("exceeded max depth") from None
    return value


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return f"number {value}"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "value")


def _type_error(value: Any, where: str, go_type: str) -> HttpError:
    return bad_request(f"json: cannot unmarshal {_kind(value)} into Go struct field "
                       f"{where} of type {go_type}")


def fields(value: Any, struct: str) -> dict[str, Any]:
    """A JSON object's members by lower-cased name (Go matches names without case); null: {}."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request(f"json: cannot unmarshal {_kind(value)} into Go value of type "
                          f"{struct}")
    return {str(k).lower(): v for k, v in value.items()}


def uint(value: Any, top: int, where: str, go_type: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            isinstance(value, float) and not value.is_integer() or not 0 <= value <= top:
        raise _type_error(value, where, go_type)
    return int(value)


def string(value: Any, where: str, go_type: str = "string") -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _type_error(value, where, go_type)
    return value


def strings(value: Any, where: str, go_type: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise _type_error(value, where, go_type)
    return [string(v, where) for v in value]


def string_map(value: Any, where: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _type_error(value, where, "boruta.Capabilities")
    return {k: string(v, where) for k, v in value.items()}


def time_value(value: Any, where: str) -> str | None:
    """An RFC 3339 time for our arguments; Go's zero time (and null) is None: unset."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _type_error(value, where, "time.Time")
    if value.startswith(ZERO_TIME_PREFIX):
        return None
    head, dot, frac = value.partition(".")
    if dot:            # Go writes up to nine digits of fraction; we keep microseconds
        digits = len(frac) - len(frac.lstrip("0123456789"))
        value = f"{head}.{frac[:min(digits, 6)]}{frac[digits:]}" if digits else value
    return value


# --------------------------------------------------------------------------- in: operations
def new_request(body: Any) -> dict[str, Any]:
    """POST /reqs/: a ReqInfo; only Caps, Priority, ValidAfter and Deadline count, and our
    Expr (capability expressions: a field upstream's clients do not send)."""
    f = fields(body, "boruta.ReqInfo")
    return {"caps": string_map(f.get("caps"), "ReqInfo.Caps") or {},
            "expr": strings(f.get("expr"), "ReqInfo.Expr", "[]string"),
            "priority": uint(f.get("priority"), UINT8, "ReqInfo.Priority", "boruta.Priority"),
            "valid_after": time_value(f.get("validafter"), "ReqInfo.ValidAfter"),
            "deadline": time_value(f.get("deadline"), "ReqInfo.Deadline"),
            # upstream queues a request no worker can take (it may register later)
            "queue_unsatisfiable": True}


def update_request(body: Any, req_id: int) -> dict[str, Any] | None:
    """POST /reqs/:id: Priority, ValidAfter, Deadline (zero: unchanged); None: nothing to do."""
    f = fields(body, "boruta.ReqInfo")
    body_id = uint(f.get("id"), UINT64, "ReqInfo.ID", "boruta.ReqID")
    if body_id and body_id != req_id:
        raise bad_request("request ID set in JSON doesn't match ID from URL")
    args = {"id": req_id,
            "priority": uint(f.get("priority"), UINT8, "ReqInfo.Priority", "boruta.Priority")
            or None,
            "valid_after": time_value(f.get("validafter"), "ReqInfo.ValidAfter"),
            "deadline": time_value(f.get("deadline"), "ReqInfo.Deadline")}
    if args["priority"] is None and args["valid_after"] is None and args["deadline"] is None:
        return None
    return args


def worker_state(body: Any) -> str:
    """POST /workers/:id/setstate: {"WorkerState": "IDLE" | "MAINTENANCE"} (exact case)."""
    return string(fields(body, "http.WorkerStatePack").get("workerstate"),
                  "WorkerStatePack.WorkerState", "boruta.WorkerState")


def groups(body: Any) -> list[str] | None:
    """POST /workers/:id/setgroups: a JSON array of strings, or null."""
    if body is not None and not isinstance(body, list):
        raise bad_request(f"json: cannot unmarshal {_kind(body)} into Go value of type "
                          "boruta.Groups")
    return strings(body, "Groups", "boruta.Groups")


def _text_or_null(value: Any, where: str, go_type: str) -> str | None:
    """A Go type read from text (SortOrder, ListDirection): a string or null, no boolean."""
    if value is not None and not isinstance(value, str):
        raise _type_error(value, where, go_type)
    return value


def _sorter(value: Any, spec: str) -> dict[str, Any] | None:
    if value is None:
        return None
    f = fields(value, "boruta.SortInfo")
    return {"item": string(f.get("item"), f"{spec}.Sorter.Item"),
            "order": _text_or_null(f.get("order"), f"{spec}.Sorter.Order", "boruta.SortOrder")}


def _paginator(value: Any, spec: str, by_uuid: bool) -> dict[str, Any] | None:
    if value is None:
        return None
    f = fields(value, "boruta.Paginator")
    direction = _text_or_null(f.get("direction"), f"{spec}.Paginator.Direction",
                              "boruta.ListDirection")
    border: Any = (string(f.get("id"), f"{spec}.Paginator.ID", "boruta.WorkerUUID")
                   if by_uuid else uint(f.get("id"), UINT64, f"{spec}.Paginator.ID",
                                        "boruta.ReqID"))
    return {"id": border, "direction": direction,
            "limit": uint(f.get("limit"), UINT16, f"{spec}.Paginator.Limit", "uint16")}


def _priorities(value: Any) -> list[int]:
    """Go writes []Priority (bytes) as base64; upstream's server takes that or numbers."""
    where = "Requests.Filter.Priorities"
    if value is None:
        return []
    if isinstance(value, str):
        try:
            return list(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            raise bad_request(f"illegal base64 data in {where}") from None
    if not isinstance(value, list):
        raise _type_error(value, where, "[]boruta.Priority")
    return [uint(v, UINT8, where, "boruta.Priority") for v in value]


def requests_list(body: Any) -> tuple[dict[str, Any], bool]:
    """POST /reqs/list: a RequestsListSpec -> (list_requests arguments, matches nothing).

    States are matched exactly, as upstream's server does: a name that is no
    state (`"waiting"`, `"WAIT"`) matches no request.
    """
    spec = "RequestsListSpec"
    top = fields(body, f"http.{spec}")
    flt = None
    nothing = False
    if top.get("filter") is not None:
        f = fields(top["filter"], "filter.Requests")
        states = strings(f.get("states"), f"{spec}.Filter.States", "[]boruta.ReqState") or []
        known = [s for s in states if s in REQ_STATES]
        nothing = bool(states) and not known
        ids = f.get("ids")
        if ids is not None and not isinstance(ids, list):
            raise _type_error(ids, f"{spec}.Filter.IDs", "[]boruta.ReqID")
        flt = {"ids": [uint(i, UINT64, f"{spec}.Filter.IDs", "boruta.ReqID")
                       for i in ids or []],
               "priorities": _priorities(f.get("priorities")), "states": known}
    return {"filter": flt, "sorter": _sorter(top.get("sorter"), spec),
            "paginator": _paginator(top.get("paginator"), spec, False)}, nothing


def workers_list(body: Any) -> dict[str, Any]:
    """POST /workers/list: a WorkersListSpec -> list_workers arguments."""
    spec = "WorkersListSpec"
    top = fields(body, f"http.{spec}")
    flt = None
    if top.get("filter") is not None:
        f = fields(top["filter"], "filter.Workers")
        flt = {"groups": strings(f.get("groups"), f"{spec}.Filter.Groups", "boruta.Groups")
               or [], "caps": string_map(f.get("capabilities"), f"{spec}.Filter.Capabilities")
               or {}}
    return {"filter": flt, "sorter": _sorter(top.get("sorter"), spec),
            "paginator": _paginator(top.get("paginator"), spec, True)}
