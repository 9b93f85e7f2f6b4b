"""Argument checks shared by every entry point: the core never trusts a caller."""
from __future__ import annotations

import ipaddress
from datetime import datetime
from collections.abc import Mapping
from typing import Any

from boruta.core.errors import (BadArgumentError, InvalidAddressError, MissingIPError,
                                MissingPortError, MissingUUIDError)
from boruta.core.types import UUID_KEY


def check_caps(caps: Any, what: str = "caps") -> dict[str, str]:
    """A mapping of non-empty string keys (without '=') to string values; copied."""
    if not isinstance(caps, Mapping):
        raise BadArgumentError(f"{what} must be a map of strings to strings, not {type(caps).__name__}")
    out: dict[str, str] = {}
    for key, value in caps.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise BadArgumentError(f"{what} must map strings to strings: {key!r}={value!r}")
        if not key or "=" in key:
            raise BadArgumentError(f"{what} key {key!r} must be non-empty and contain no '='")
        out[key] = value
    return out


def check_groups(groups: Any, what: str = "groups") -> tuple[str, ...]:
    """A list of strings, returned sorted without duplicates (caller's list untouched)."""
    if groups is None:
        return ()
    if isinstance(groups, (str, bytes)) or not isinstance(groups, (list, tuple, set, frozenset)):
        raise BadArgumentError(f"{what} must be a list of strings")
    for group in groups:
        if not isinstance(group, str) or not group:
            raise BadArgumentError(f"{what} must be non-empty strings: {group!r}")
    return tuple(sorted(set(groups)))


def check_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadArgumentError(f"{what} must be an integer, not {type(value).__name__}")
    return value


def check_time(value: Any, what: str) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    raise BadArgumentError(f"{what} must be a time, not {type(value).__name__}")


def check_worker_caps(caps: Any) -> tuple[str, dict[str, str]]:
    checked = check_caps(caps)
    uuid = checked.get(UUID_KEY)
    if not uuid:
        raise MissingUUIDError()
    return uuid, checked


def check_address(address: Any, what: str) -> str:
    """`host:port` or `[v6]:port` with an IP or host name and a port 1..65535."""
    if not isinstance(address, str):
        raise BadArgumentError(f"{what} address must be a string")
    if not address:
        raise MissingIPError()
    host, sep, port = address.rpartition(":")
    if not sep:
        host, port = address, ""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise InvalidAddressError(f"invalid {what} address: {exc}") from None
    if not host:
        raise MissingIPError()
    if not port:
        raise MissingPortError()
    if not port.isdigit() or not 0 < int(port) < 65536:
        if port.isdigit() and int(port) == 0:
            raise MissingPortError()
        raise InvalidAddressError(f"invalid {what} address: bad port {port!r}")
    return address


def address_port(address: str | None) -> str | None:
    return None if address is None else address.rpartition(":")[2]
