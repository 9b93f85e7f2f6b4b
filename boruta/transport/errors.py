"""Every error the wire adds to the core's: one class per code, and the client's view of a code.

The core's errors (boruta.core.errors) travel as they are; these are the
transport's own (a malformed frame, a parked call that timed out, a server
that did not answer). `error_from_wire` turns an error reply back into the
class that owns its code, so callers catch the same exceptions in process
and over the wire.
"""
from __future__ import annotations

from boruta.core.errors import BorutaError, NotFoundError, all_error_classes

PROTOCOL_VERSION = 1

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



class StorageFailedError(BorutaError):
    """The change could not be made durable (disk full, I/O error): it was not acknowledged."""

    code = "storage_failed"
    default_message = "the server could not save its state"


class ServerUnreachableError(BorutaError):
    """The server did not answer in time (or at all)."""

    code = "unreachable"
    default_message = "the Boruta server did not answer"


class WaitTimeoutError(ServerUnreachableError):
    """A parked call (acquire_worker, wait_request) whose timeout passed first.

    A kind of ServerUnreachableError: for the caller, both mean "no answer in
    the time you gave" (the CLI exits 3 for either).
    """

    code = "wait_timeout"
    default_message = "timeout passed while waiting"


class HandshakeError(BorutaError):
    """The CURVE handshake failed (base class): ZeroMQ would retry in silence, so the
    client says why. Client-side only: the server never sends these codes."""


class KeyRefusedError(HandshakeError):
    """The server does not know our public key (no user or dryad holds it)."""

    code = "key_refused"
    default_message = "the server refused our key: ask an admin to add it (boruta admin user add)"


class ServerKeyMismatchError(HandshakeError):
    """The server is not the one whose key we hold, or one of us does not use CURVE."""

    code = "server_key_mismatch"
    default_message = "the server's key does not match (or the server does not use CURVE)"


_ERROR_TABLE: dict[str, type[BorutaError]] | None = None


def _error_table() -> dict[str, type[BorutaError]]:
    """code -> the most derived class that declares it (rebuilt when classes are added)."""
    global _ERROR_TABLE
    classes = all_error_classes()
    if _ERROR_TABLE is None or len(_ERROR_TABLE) != len(classes):
        table: dict[str, type[BorutaError]] = {}
        depth: dict[str, int] = {}
        for cls in classes:
            code = cls.__dict__.get("code")
            if not isinstance(code, str):
                continue
            if code not in table or len(cls.__mro__) > depth[code]:
                table[code], depth[code] = cls, len(cls.__mro__)
        _ERROR_TABLE = table
    return _ERROR_TABLE


def error_from_wire(code: str, message: str) -> BorutaError:
    """The exception for an error reply: the class that owns `code`, or BorutaError."""
    cls = _error_table().get(code)
    if cls is None:
        exc = BorutaError(message)
        exc.code = code
        return exc
    exc = cls.__new__(cls)
    BorutaError.__init__(exc, message)
    if isinstance(exc, NotFoundError):
        exc.what = message.removesuffix(" not found")
    return exc
