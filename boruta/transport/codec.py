"""The wire's bytes: msgpack frames, the envelope, event topics.

A message is one msgpack map:

    request  {"v": 1, "id": <int|str>, "op": <str>, "args": {...}}
    success  {"v": 1, "id": <same id>, "ok": <result>}
    failure  {"v": 1, "id": <same id or nil>, "error": {"code": <str>, "message": <str>}}

docs/protocol.md is the prose version of this module.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Mapping

import msgpack

from boruta.core.errors import BadArgumentError, BorutaError
from boruta.transport.errors import (PROTOCOL_VERSION, BadFrameError, FrameTooLargeError,
                                     UnsupportedVersionError)

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
    # An error reply's id is nil when the request's id could not be read (an
    # oversize or malformed frame): the reply is still the server's answer.
    if not is_id(msg_id) and not (msg_id is None and "error" in obj and "op" not in obj):
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


def is_id(value: Any) -> bool:
    return (isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)))


def _with_id(exc: BorutaError, msg_id: Any) -> BorutaError:
    exc.msg_id = msg_id  # type: ignore[attr-defined]
    return exc


