"""The wire protocol: msgpack frames, the envelope, argument checks, error codes.

Shared by the server, the clients and the dryad link (docs/protocol.md is the
prose version of this module). A message is one msgpack map:

    request  {"v": 1, "id": <int|str>, "op": <str>, "args": {...}}
    success  {"v": 1, "id": <same id>, "ok": <result>}
    failure  {"v": 1, "id": <same id or nil>, "error": {"code": <str>, "message": <str>}}

Times travel as ISO 8601 UTC strings with a `Z`; the server also accepts
float seconds since the epoch.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import msgpack

from boruta.core.errors import (BadArgumentError, BorutaError, WrongListDirectionError,
                                WrongSortOrderError)
from boruta.core.types import (MAX_PAGE_LIMIT, AccessInfo, JobInfo, ListInfo, Paginator,
                               ReqInfo, ReqState, RequestFilter, SortInfo, UserInfo,
                               WorkerFilter, WorkerInfo, WorkerState, iso, parse_req_state,
                               parse_worker_state)

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = frozenset({PROTOCOL_VERSION})
DEFAULT_MAX_FRAME = 1 << 20

# Event stream topics (the first frame of every PUB message).
TOPIC_REQUEST = "request/"
TOPIC_WORKER = "worker/"
TOPIC_HELLO = "hello/"           # answer to a subscription to hello/<nonce>/
TOPIC_TICK = "tick/"             # the server's heartbeat on the event stream


def request_topic(req_id: int | None = None) -> bytes:
    return (TOPIC_REQUEST if req_id is None else f"{TOPIC_REQUEST}{req_id}/").encode()


def worker_topic(uuid: str | None = None) -> bytes:
    return (TOPIC_WORKER if uuid is None else f"{TOPIC_WORKER}{uuid}/").encode()


# --------------------------------------------------------------------------- errors
class ProtocolError(BorutaError):
    """A message that breaks the protocol (base class of the transport's errors)."""

    code = "bad_frame"
    default_message = "malformed message"


class BadFrameError(ProtocolError):
    code = "bad_frame"
    default_message = "malformed message"


class UnsupportedVersionError(ProtocolError):
    code = "unsupported_version"
    default_message = f"unsupported protocol version (this side speaks {PROTOCOL_VERSION})"


class UnknownOperationError(ProtocolError):
    code = "unknown_operation"
    default_message = "unknown operation"


class FrameTooLargeError(ProtocolError):
    code = "frame_too_large"
    default_message = "frame too large"


class RateLimitedError(ProtocolError):
    code = "rate_limited"
    default_message = "too many messages: slow down"


class ServerBusyError(BorutaError):
    code = "busy"
    default_message = "server busy: too many waiting calls"


class ShuttingDownError(BorutaError):
    code = "shutting_down"
    default_message = "server is shutting down"


class WaitTimeout(BorutaError):
    """A parked call (acquire_worker, wait_request) whose timeout passed.

    The client raises its own WaitTimeoutError (a ServerUnreachableError) for
    this code; this class is the server's spelling.
    """

    code = "wait_timeout"
    default_message = "timeout passed while waiting"


class RequestEndedError(BorutaError):
    """wait_request for a state the request can never reach: it has ended."""

    code = "request_ended"
    default_message = "request ended"


class NotRegisteredError(BorutaError):
    """A dryad message from a peer the server does not know (register first)."""

    code = "not_registered"
    default_message = "dryad not registered"


class DeregisteredError(BorutaError):
    """The worker of this dryad was deregistered by an admin: stop heartbeating."""

    code = "deregistered"
    default_message = "worker deregistered"


class DryadError(BorutaError):
    """A command to a dryad failed: no connection, an error reply, or no reply in time."""

    code = "dryad_error"
    default_message = "dryad did not carry out the command"


# --------------------------------------------------------------------------- codec
_packers = threading.local()     # one Packer per thread: packb would make one per call


def pack(obj: Any) -> bytes:
    try:
        packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(obj)


def unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types; all mean the same here
        raise BadFrameError(f"malformed msgpack: {exc}") from None


def request_frame(msg_id: int | str, op: str, args: Mapping[str, Any] | None = None) -> bytes:
    return pack({"v": PROTOCOL_VERSION, "id": msg_id, "op": op, "args": dict(args or {})})


def ok_frame(msg_id: Any, result: Any = None) -> bytes:
    return pack({"v": PROTOCOL_VERSION, "id": msg_id, "ok": result})


def error_frame(msg_id: Any, error: BorutaError | tuple[str, str]) -> bytes:
    if isinstance(error, BorutaError):
        body = {"code": error.code, "message": error.message}
    else:
        body = {"code": error[0], "message": error[1]}
    return pack({"v": PROTOCOL_VERSION, "id": msg_id, "error": body})


@dataclass
class Envelope:
    """A decoded message: a request (`op` set) or a reply (`ok`/`error`)."""

    id: Any
    op: str | None = None
    args: dict[str, Any] | None = None
    ok: Any = None
    error: dict[str, str] | None = None

    @property
    def is_request(self) -> bool:
        return self.op is not None


def decode(data: bytes, max_bytes: int | None = None) -> Envelope:
    """Frame bytes -> Envelope, or a ProtocolError.

    A ProtocolError raised here carries `msg_id` (the envelope's id when it
    could be read, else None) so that the error reply can still be correlated.
    """
    obj, msg_id = _open_envelope(data, max_bytes)
    if "op" in obj:
        op, args = _request_parts(obj, msg_id)
        return Envelope(msg_id, op=op, args=args)
    if "error" in obj:
        err = obj["error"]
        if (not isinstance(err, dict) or not isinstance(err.get("code"), str)
                or not isinstance(err.get("message", ""), str)):
            raise _with_id(BadFrameError("'error' must be {code, message}"), msg_id)
        return Envelope(msg_id, error={"code": err["code"], "message": err.get("message", "")})
    if "ok" in obj:
        return Envelope(msg_id, ok=obj["ok"])
    raise _with_id(BadFrameError("a message needs 'op' (request) or 'ok'/'error' (reply)"),
                   msg_id)


def decode_request(data: bytes, max_bytes: int | None = None) -> tuple[Any, str, dict[str, Any]]:
    """Frame bytes -> (id, op, args) for an endpoint that takes only requests.

    The server's hot path: the same checks as `decode`, without an Envelope.
    """
    obj, msg_id = _open_envelope(data, max_bytes)
    if "op" not in obj:
        if "ok" in obj or "error" in obj:
            raise _with_id(BadFrameError("this endpoint takes requests, not replies"), msg_id)
        raise _with_id(BadFrameError("a message needs 'op' (request) or 'ok'/'error' (reply)"),
                       msg_id)
    op, args = _request_parts(obj, msg_id)
    return msg_id, op, args


def _open_envelope(data: bytes, max_bytes: int | None) -> tuple[dict[Any, Any], Any]:
    """Size, msgpack, a map, its id and version: what every message must pass."""
    if max_bytes is not None and len(data) > max_bytes:
        raise _with_id(FrameTooLargeError(
            f"frame of {len(data)} bytes exceeds the limit of {max_bytes} bytes"), None)
    obj = unpack(data)
    if not isinstance(obj, dict):
        raise _with_id(BadFrameError(
            f"a message must be a msgpack map, not {type(obj).__name__}"), None)
    msg_id = obj.get("id")
    if not _is_id(msg_id):
        raise _with_id(BadFrameError("'id' must be an integer or a string"), None)
    version = obj.get("v")
    if isinstance(version, bool) or not isinstance(version, int):
        raise _with_id(BadFrameError("'v' (protocol version) must be an integer"), msg_id)
    if version not in SUPPORTED_VERSIONS:
        raise _with_id(UnsupportedVersionError(
            f"protocol version {version} is not supported; this side speaks "
            f"{', '.join(map(str, sorted(SUPPORTED_VERSIONS)))}"), msg_id)
    return obj, msg_id


def _request_parts(obj: dict[Any, Any], msg_id: Any) -> tuple[str, dict[str, Any]]:
    op = obj["op"]
    if not isinstance(op, str) or not op:
        raise _with_id(BadFrameError("'op' must be a non-empty string"), msg_id)
    args = obj.get("args")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise _with_id(BadArgumentError(
            f"'args' must be a map, not {type(args).__name__}"), msg_id)
    return op, args


def _is_id(value: Any) -> bool:
    return (isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)))


def _with_id(exc: BorutaError, msg_id: Any) -> BorutaError:
    exc.msg_id = msg_id  # type: ignore[attr-defined]
    return exc


# --------------------------------------------------------------------------- argument checks
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


def as_seconds(name: str, value: Any) -> float:
    """A duration: a non-negative finite number of seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(name, "a number of seconds", value)
    if not math.isfinite(value) or value < 0:
        raise BadArgumentError(f"argument '{name}' must be a finite number >= 0")
    return float(value)


def as_time(name: str, value: Any) -> datetime:
    """ISO 8601 string (a zone-less time is UTC) or float seconds since the epoch."""
    if isinstance(value, bool):
        raise _fail(name, "a time", value)
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise BadArgumentError(f"argument '{name}' must be a finite time")
        try:
            return datetime.fromtimestamp(value, timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise BadArgumentError(f"argument '{name}': time {value!r} out of range") from None
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise BadArgumentError(
                f"argument '{name}': {value!r} is not an ISO 8601 time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.astimezone(timezone.utc)
    raise _fail(name, "a time (ISO 8601 string or epoch seconds)", value)


def time_out(value: datetime | None) -> str | None:
    """A datetime on the wire: ISO 8601 UTC with a Z."""
    return iso(value)


def opt(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    """The same check, nil allowed (and returned as None)."""
    def checker(name: str, value: Any) -> Any:
        return None if value is None else check(name, value)
    return checker


# --------------------------------------------------------------------------- list specs
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
    _only(name, spec, {"ids", "priorities", "states"})
    ids = tuple(as_int(f"{name}.ids", i) for i in as_list(f"{name}.ids", spec.get("ids") or []))
    prios = tuple(as_int(f"{name}.priorities", p)
                  for p in as_list(f"{name}.priorities", spec.get("priorities") or []))
    states = []
    for text in as_str_list(f"{name}.states", spec.get("states") or []):
        try:
            states.append(parse_req_state(text))
        except ValueError as exc:
            raise BadArgumentError(f"argument '{name}.states': {exc}") from None
    return RequestFilter(ids=ids, priorities=prios, states=tuple(states))


def request_filter_out(flt: RequestFilter | None) -> dict[str, Any] | None:
    if flt is None:
        return None
    return {"ids": list(flt.ids), "priorities": list(flt.priorities),
            "states": [str(ReqState(s)) if not isinstance(s, ReqState) else str(s)
                       for s in flt.states]}


def worker_filter_in(name: str, value: Any) -> WorkerFilter | None:
    if value is None:
        return None
    spec = as_map(name, value)
    _only(name, spec, {"groups", "caps", "states"})
    groups = tuple(as_str_list(f"{name}.groups", spec.get("groups") or []))
    caps = as_str_map(f"{name}.caps", spec.get("caps") or {})
    states = []
    for text in as_str_list(f"{name}.states", spec.get("states") or []):
        try:
            states.append(parse_worker_state(text))
        except ValueError as exc:
            raise BadArgumentError(f"argument '{name}.states': {exc}") from None
    return WorkerFilter(groups=groups, caps=caps, states=tuple(states))


def worker_filter_out(flt: WorkerFilter | None) -> dict[str, Any] | None:
    if flt is None:
        return None
    return {"groups": list(flt.groups), "caps": dict(flt.caps),
            "states": [str(s) for s in flt.states]}


def req_states_in(name: str, value: Any) -> frozenset[ReqState] | None:
    if value is None:
        return None
    out = set()
    for text in as_str_list(name, value):
        try:
            out.add(parse_req_state(text))
        except ValueError as exc:
            raise BadArgumentError(f"argument '{name}': {exc}") from None
    return frozenset(out) or None


def worker_state_in(name: str, value: Any) -> str:
    """The target of set_state: a wire string or short name (checked by the core)."""
    text = as_str(name, value)
    try:
        return str(parse_worker_state(text))
    except ValueError:
        return text           # the core answers wrong_state_argument


# --------------------------------------------------------------------------- operation table
_id = lambda n, v: as_int(n, v, 0)  # noqa: E731
_uuid = as_str


@dataclass(frozen=True)
class Op:
    name: str
    required: dict[str, Callable[[str, Any], Any]]
    optional: dict[str, Callable[[str, Any], Any]]
    idempotent: bool            # a read: the client may retry it
    doc: str = ""
    known: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "known", frozenset(self.required) | frozenset(self.optional))

    def check(self, args: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if not self.known.issuperset(args):
            unknown = next(key for key in args if key not in self.known)
            raise BadArgumentError(f"{self.name}: unknown argument '{unknown}'")
        for key, check in self.required.items():
            try:
                value = args[key]
            except KeyError:
                raise BadArgumentError(f"{self.name}: missing argument '{key}'") from None
            out[key] = check(key, value)
        for key, check in self.optional.items():
            out[key] = check(key, args.get(key))
        return out


def _ops(*ops: Op) -> dict[str, Op]:
    return {op.name: op for op in ops}


# Operations of the client endpoint (Requests and Workers sets, plus ping).
CLIENT_OPS = _ops(
    Op("ping", {}, {}, True, "server and protocol versions"),
    Op("new_request", {"caps": as_str_map, "priority": as_int},
       {"valid_after": opt(as_time), "deadline": opt(as_time),
        "queue_unsatisfiable": opt(as_bool)}, False),
    Op("update_request", {"id": _id},
       {"priority": opt(as_int), "valid_after": opt(as_time), "deadline": opt(as_time)}, False),
    Op("close_request", {"id": _id}, {}, False),
    Op("get_request_info", {"id": _id}, {}, True),
    Op("list_requests", {},
       {"filter": request_filter_in, "sorter": sorter_in,
        "paginator": lambda n, v: paginator_in(n, v, int)}, True),
    Op("acquire_worker", {"id": _id}, {"timeout": opt(as_seconds)}, True),
    Op("prolong_access", {"id": _id}, {}, False),
    Op("wait_request", {"id": _id}, {"states": req_states_in, "timeout": opt(as_seconds)}, True),
    Op("list_workers", {},
       {"filter": worker_filter_in, "sorter": sorter_in,
        "paginator": lambda n, v: paginator_in(n, v, str)}, True),
    Op("get_worker_info", {"uuid": _uuid}, {}, True),
    Op("set_state", {"uuid": _uuid, "state": worker_state_in}, {}, False),
    Op("set_groups", {"uuid": _uuid}, {"groups": opt(as_str_list)}, False),
    Op("deregister", {"uuid": _uuid}, {}, False),
    Op("healthcheck", {"uuid": _uuid}, {}, False),
)

# Operations a dryad sends to the dryad endpoint (the Superviser set, plus heartbeat).
DRYAD_OPS = _ops(
    Op("register", {"caps": as_str_map, "dryad_address": as_str, "ssh_address": as_str}, {},
       False),
    Op("set_fail", {"uuid": _uuid}, {"reason": opt(as_str)}, False),
    Op("heartbeat", {}, {"uuid": opt(as_str)}, True),
)

# Commands the server sends to a dryad (the Dryad set).
SERVER_COMMANDS = _ops(
    Op("prepare", {"key": as_str}, {"key_type": opt(as_str)}, False),
    Op("put_in_maintenance", {}, {"message": opt(as_str)}, False),
    Op("healthcheck", {}, {}, False),
)


# --------------------------------------------------------------------------- documents
def access_out(access: AccessInfo, key_text: str, key_type: str) -> dict[str, Any]:
    host, port = access.addr or ("", 0)
    return {"host": host, "port": port, "username": access.username, "key": key_text,
            "key_type": key_type, "worker_uuid": access.worker_uuid}


def access_in(doc: Mapping[str, Any]) -> AccessInfo:
    return AccessInfo(username=doc["username"], key=doc["key"],
                      worker_uuid=doc.get("worker_uuid", ""),
                      addr=(doc["host"], int(doc["port"])), key_type=doc.get("key_type", ""))


def request_out(info: ReqInfo) -> dict[str, Any]:
    return info.to_dict()


def request_in(doc: Mapping[str, Any]) -> ReqInfo:
    job = doc.get("job")
    return ReqInfo(
        id=int(doc["id"]), priority=int(doc["priority"]),
        owner=UserInfo(tuple((doc.get("owner") or {}).get("groups") or ())),
        deadline=as_time("deadline", doc["deadline"]),
        valid_after=as_time("valid_after", doc["valid_after"]),
        state=ReqState(doc["state"]),
        job=None if job is None else JobInfo(job["worker_uuid"],
                                             as_time("timeout", job["timeout"])),
        caps=dict(doc.get("caps") or {}))


def worker_out(info: WorkerInfo) -> dict[str, Any]:
    doc = info.to_dict()
    doc["dryad_address"] = info.dryad_address
    doc["ssh_address"] = info.ssh_address
    return doc


def worker_in(doc: Mapping[str, Any]) -> WorkerInfo:
    return WorkerInfo(worker_uuid=doc["uuid"], state=WorkerState(doc["state"]),
                      groups=tuple(doc.get("groups") or ()), caps=dict(doc.get("caps") or {}),
                      fail_reason=doc.get("fail_reason"),
                      dryad_address=doc.get("dryad_address"),
                      ssh_address=doc.get("ssh_address"))


def list_out(items: list[dict[str, Any]], info: ListInfo) -> dict[str, Any]:
    return {"items": items, "total": info.total_items, "remaining": info.remaining_items}


def list_in(doc: Mapping[str, Any], convert: Callable[[Mapping[str, Any]], Any]) -> tuple[list[Any], ListInfo]:
    return ([convert(item) for item in doc["items"]],
            ListInfo(int(doc["total"]), int(doc["remaining"])))


# --------------------------------------------------------------------------- addresses
def split_host_port(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address {address!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def fill_host(address: Any, peer_ip: str | None) -> Any:
    """An address without a host (`:22`) gets the peer's IP (SPEC B7), else 127.0.0.1."""
    if isinstance(address, str) and address.startswith(":") and address[1:].isdigit():
        return join_host_port(peer_ip or "127.0.0.1", int(address[1:]))
    return address
