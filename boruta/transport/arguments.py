"""Wire values -> the core's types, once, at the edge.

Each converter takes the argument's name (for the error message) and the
value as msgpack decoded it, and returns the core's type or raises
BadArgumentError naming the argument. The operation table
(boruta.transport.operations) says which converter reads which argument.
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from boruta.core.errors import (
    BadArgumentError,
    WrongListDirectionError,
    WrongSortOrderError,
)
from boruta.core.types import (
    MAX_PAGE_LIMIT,
    Paginator,
    ReqState,
    RequestFilter,
    SortInfo,
    WorkerFilter,
    parse_req_state,
    parse_worker_state,
)
from boruta.core.validation import check_time, check_timestamp


def _fail(name: str, wanted: str, value: Any) -> BadArgumentError:
    return BadArgumentError(f"argument '{name}' must be {wanted}, not {_kind(value)}")


def _kind(value: Any) -> str:
    return "nil" if value is None else type(value).__name__


def as_int(name: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(name, "an integer", value)
    if minimum is not None and value < minimum:
        raise BadArgumentError(f"argument '{name}' must be at least {minimum}")
    return value


def as_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(name, "a string", value)
    return value


def as_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(name, "a boolean", value)
    return value


def as_map(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(name, "a map", value)
    return value


def as_str_map(name: str, value: Any) -> dict[str, str]:
    value = as_map(name, value)
    for key, val in value.items():
        if not isinstance(key, str) or not isinstance(val, str):
            raise BadArgumentError(f"argument '{name}' must map strings to strings")
    return dict(value)


def as_list(name: str, value: Any) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise _fail(name, "a list", value)
    return list(value)


def as_str_list(name: str, value: Any) -> list[str]:
    items = as_list(name, value)
    if not all(isinstance(i, str) for i in items):
        raise BadArgumentError(f"argument '{name}' must be a list of strings")
    return items


def as_int_list(name: str, value: Any) -> list[int]:
    items = as_list(name, value)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise _fail(name, "a list of integers", value)
    return items


def request_ids(limit: int) -> Callable[[str, Any], list[int]]:
    """A list of request IDs, at most `limit` of them."""
    def check(name: str, value: Any) -> list[int]:
        items = as_int_list(name, value)
        if len(items) > limit:
            raise BadArgumentError(f"argument '{name}' holds {len(items):,} IDs; "
                                   f"at most {limit:,} per call")
        if any(v < 0 for v in items):
            raise BadArgumentError(f"argument '{name}' must hold request IDs (integers >= 0)")
        return items
    return check


def as_seconds(name: str, value: Any) -> float:
    """A duration: a non-negative finite number of seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(name, "a number of seconds", value)
    if not math.isfinite(value) or value < 0:
        raise BadArgumentError(f"argument '{name}' must be a finite number >= 0")
    return float(value)


def as_time(name: str, value: Any) -> datetime:
    """ISO 8601 string (a zone-less time is UTC) or seconds since the epoch, inside the
    window of times the core keeps (boruta.core.types.EARLIEST_TIME .. LATEST_TIME).

    Only BadArgumentError comes out: a huge number, an offset that pushes the
    time past year 9999 or before year 1, or text that is no time is named.
    """
    what = f"argument '{name}'"
    if isinstance(value, bool):
        raise _fail(name, "a time", value)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(check_timestamp(value, what), timezone.utc)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except (ValueError, OverflowError):
            raise BadArgumentError(
                f"argument '{name}': {value[:60]!r} is not an ISO 8601 time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        check_time(moment, what)              # inside the window: astimezone() cannot overflow
        return moment.astimezone(timezone.utc)
    raise _fail(name, "a time (ISO 8601 string or epoch seconds)", value)


def opt(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    """The same check, nil allowed (and returned as None)."""
    def checker(name: str, value: Any) -> Any:
        return None if value is None else check(name, value)
    return checker


def _order(value: Any) -> bool:
    if value is None:
        return False
    if not isinstance(value, str):
        raise WrongSortOrderError()
    text = value.strip().lower()
    if text in ("", "asc", "ascending"):
        return False
    if text in ("desc", "descending"):
        return True
    raise WrongSortOrderError()


def _direction(value: Any) -> bool:
    if value is None:
        return False
    if not isinstance(value, str):
        raise WrongListDirectionError()
    text = value.strip().lower()
    if text in ("", "forward"):
        return False
    if text == "backward":
        return True
    raise WrongListDirectionError()


def _only(name: str, value: Mapping[str, Any], allowed: set[str]) -> None:
    extra = set(value) - allowed
    if extra:
        raise BadArgumentError(f"argument '{name}': unknown field(s) {', '.join(sorted(map(str, extra)))}")


def sorter_in(name: str, value: Any) -> SortInfo | None:
    if value is None:
        return None
    spec = as_map(name, value)
    _only(name, spec, {"item", "order"})
    item = spec.get("item") or ""
    if not isinstance(item, str):
        raise _fail(f"{name}.item", "a string", item)
    return SortInfo(item=item, descending=_order(spec.get("order")))


def sorter_out(sorter: SortInfo | None) -> dict[str, Any] | None:
    if sorter is None:
        return None
    return {"item": sorter.item, "order": "descending" if sorter.descending else "ascending"}


def paginator_in(name: str, value: Any, id_kind: type) -> Paginator | None:
    if value is None:
        return None
    spec = as_map(name, value)
    _only(name, spec, {"id", "direction", "limit"})
    border = spec.get("id")
    if id_kind is int:
        border = 0 if border is None else as_int(f"{name}.id", border, 0)
    else:
        border = "" if border is None else as_str(f"{name}.id", border)
    limit = spec.get("limit")
    limit = 0 if limit is None else as_int(f"{name}.limit", limit, 0)
    if limit > MAX_PAGE_LIMIT:
        raise BadArgumentError(f"argument '{name}.limit' must be at most {MAX_PAGE_LIMIT}")
    return Paginator(id=border, backward=_direction(spec.get("direction")), limit=limit)


def paginator_out(paginator: Paginator | None) -> dict[str, Any] | None:
    if paginator is None:
        return None
    return {"id": paginator.id, "direction": "backward" if paginator.backward else "forward",
            "limit": paginator.limit}


def request_filter_in(name: str, value: Any) -> RequestFilter | None:
    if value is None:
        return None
    spec = as_map(name, value)
    _only(name, spec, {"ids", "priorities", "states", "owners"})
    ids = tuple(as_int(f"{name}.ids", i) for i in as_list(f"{name}.ids", spec.get("ids") or []))
    prios = tuple(as_int(f"{name}.priorities", p)
                  for p in as_list(f"{name}.priorities", spec.get("priorities") or []))
    states = _states(f"{name}.states", spec.get("states"), parse_req_state)
    owners = tuple(as_str_list(f"{name}.owners", spec.get("owners") or []))
    return RequestFilter(ids=ids, priorities=prios, states=states, owners=owners)


def request_filter_out(flt: RequestFilter | None) -> dict[str, Any] | None:
    if flt is None:
        return None
    doc: dict[str, Any] = {
        "ids": list(flt.ids), "priorities": list(flt.priorities),
        "states": [str(ReqState(s)) if not isinstance(s, ReqState) else str(s)
                   for s in flt.states]}
    if flt.owners:          # only when given: a server from before owners refuses the field
        doc["owners"] = list(flt.owners)
    return doc


def worker_filter_in(name: str, value: Any) -> WorkerFilter | None:
    if value is None:
        return None
    spec = as_map(name, value)
    _only(name, spec, {"groups", "caps", "states"})
    groups = tuple(as_str_list(f"{name}.groups", spec.get("groups") or []))
    caps = as_str_map(f"{name}.caps", spec.get("caps") or {})
    states = _states(f"{name}.states", spec.get("states"), parse_worker_state)
    return WorkerFilter(groups=groups, caps=caps, states=states)


def _states(name: str, value: Any, parse: Callable[[str], Any]) -> tuple[Any, ...]:
    """A list of state names (wire strings or short names), each parsed by `parse`."""
    states = []
    for text in as_str_list(name, value or []):
        try:
            states.append(parse(text))
        except ValueError as exc:
            raise BadArgumentError(f"argument '{name}': {exc}") from None
    return tuple(states)


def worker_filter_out(flt: WorkerFilter | None) -> dict[str, Any] | None:
    if flt is None:
        return None
    return {"groups": list(flt.groups), "caps": dict(flt.caps),
            "states": [str(s) for s in flt.states]}


def req_states_in(name: str, value: Any) -> frozenset[ReqState] | None:
    if value is None:
        return None
    return frozenset(_states(name, value, parse_req_state)) or None


def worker_state_in(name: str, value: Any) -> str:
    """The target of set_state: a wire string or short name (checked by the core)."""
    text = as_str(name, value)
    try:
        return str(parse_worker_state(text))
    except ValueError:
        return text           # the core answers wrong_state_argument



def identifier(name: str, value: Any) -> int:
    """A request ID: a non-negative integer."""
    return as_int(name, value, 0)
