"""Argument checks shared by every entry point: the core never trusts a caller."""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from boruta.core.addresses import AddressError, split_host_port
from boruta.core.config import SchedulerConfig
from boruta.core.capexpr import TERM_PREFIX
from boruta.core.errors import (BadArgumentError, InvalidAddressError, MissingIPError,
                                MissingPortError, MissingUUIDError)
from boruta.core.types import (EARLIEST_TIME, EARLIEST_TIMESTAMP, LATEST_TIME,
                               LATEST_TIMESTAMP, UUID_KEY, iso, to_timestamp)

TIME_WINDOW = f"from {iso(EARLIEST_TIME)} to {iso(LATEST_TIME)}"


DEFAULT_LIMITS = SchedulerConfig()      # the documented sizes, for callers without a config


def check_caps(caps: Any, what: str = "caps",
               limits: SchedulerConfig = DEFAULT_LIMITS) -> dict[str, str]:
    """A mapping of non-empty string keys (without '=') to string values; copied.

    Its size is bounded by `limits` (see `check_caps_size`).
    """
    if not isinstance(caps, Mapping):
        raise BadArgumentError(f"{what} must be a map of strings to strings, not {type(caps).__name__}")
    if len(caps) > limits.max_caps_entries:
        _check_entries(caps, what, limits)
    max_key, max_value = limits.max_cap_key_length, limits.max_cap_value_length
    out: dict[str, str] = {}
    for key, value in caps.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise BadArgumentError(f"{what} must map strings to strings: "
                                   f"{_shown(key)}={_shown(value)}")
        if not key or "=" in key or key[0] == TERM_PREFIX:
            raise BadArgumentError(f"{what} key {_shown(key)} must be non-empty, contain no '=' "
                                   "and not start with a NUL")
        if len(key) > max_key or len(value) > max_value:     # inline: every new_request
            _check_lengths(key, value, what, limits)
        out[key] = value
    return out


def check_caps_size(caps: Mapping[Any, Any], what: str,
                    limits: SchedulerConfig = DEFAULT_LIMITS) -> None:
    """At most `max_caps_entries` entries, string keys and values no longer than
    `max_cap_key_length` and `max_cap_value_length` characters.

    Caps are interned and indexed by the matcher and compared with every
    worker's, so what a caller may send is what a farm needs, not what a frame
    can hold. The count is checked before any entry is looked at.
    """
    _check_entries(caps, what, limits)
    for key, value in caps.items():
        _check_lengths(key, value, what, limits)


def _check_entries(caps: Mapping[Any, Any], what: str, limits: SchedulerConfig) -> None:
    if len(caps) > limits.max_caps_entries:
        raise BadArgumentError(f"{what} have {len(caps)} entries; at most "
                               f"{limits.max_caps_entries} are allowed (max_caps_entries)")


def _check_lengths(key: Any, value: Any, what: str, limits: SchedulerConfig) -> None:
    if isinstance(key, str) and len(key) > limits.max_cap_key_length:
        raise BadArgumentError(f"{what} key {_shown(key)} is {len(key)} characters long; at most "
                               f"{limits.max_cap_key_length} are allowed (max_cap_key_length)")
    if isinstance(value, str) and len(value) > limits.max_cap_value_length:
        raise BadArgumentError(f"{what} value of {_shown(key)} is {len(value)} characters long; "
                               f"at most {limits.max_cap_value_length} are allowed "
                               "(max_cap_value_length)")


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


def check_time(value: Any, what: str) -> float | None:
    """A datetime (naive = UTC) inside the window the core keeps, as seconds since the epoch.

    None passes (for "not given"). A time outside the window would be stored
    and then fail every listing that shows it, so it is refused here, where
    the caller learns which argument is wrong.
    """
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise BadArgumentError(f"{what} must be a time, not {type(value).__name__}")
    try:
        seconds = to_timestamp(value)
    except (OverflowError, ValueError, TypeError) as exc:   # a tzinfo with a bad offset
        raise BadArgumentError(f"{what} has a time zone without a usable offset: {exc}") from None
    return _in_window(seconds, value, what)


def check_timestamp(value: Any, what: str) -> float:
    """Seconds since the epoch (an int or a finite float) inside the window the core keeps."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadArgumentError(f"{what} must be a number of seconds, not {type(value).__name__}")
    return _in_window(value, value, what)


def _in_window(seconds: int | float, shown: Any, what: str) -> float:
    # Python compares ints and floats exactly, so a huge int cannot overflow here;
    # NaN fails both comparisons.
    if not EARLIEST_TIMESTAMP <= seconds <= LATEST_TIMESTAMP:
        raise BadArgumentError(f"{what} must be a time {TIME_WINDOW}, not {_shown(shown)}")
    return float(seconds)


def _shown(value: Any) -> str:
    """A value for an error message, cut short (an int may have a thousand digits)."""
    text = value.isoformat() if isinstance(value, datetime) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_worker_caps(caps: Any,
                      limits: SchedulerConfig = DEFAULT_LIMITS) -> tuple[str, dict[str, str]]:
    """A worker's caps (see `check_caps`; its UUID counts as one entry) and its UUID."""
    checked = check_caps(caps, limits=limits)
    uuid = checked.get(UUID_KEY)
    if not uuid:
        raise MissingUUIDError()
    return uuid, checked


def check_address(address: Any, what: str) -> str:
    """`host:port` or `[v6]:port` with an IP or host name and a port 1..65535.

    Upstream's three codes: no host is missing_ip, no port (or port 0) is
    missing_port, anything else unusable is invalid_address.
    """
    if not isinstance(address, str):
        raise BadArgumentError(f"{what} address must be a string")
    if not address or address.startswith(":"):
        raise MissingIPError()
    try:
        host, port = split_host_port(address, allow_zero_port=True)
    except AddressError as exc:
        if exc.part == "port" and (":" not in address or address.endswith(":")):
            raise MissingPortError() from None
        raise InvalidAddressError(f"invalid {what} address {address!r}: {exc}") from None
    if port == 0:
        raise MissingPortError()
    if address.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise InvalidAddressError(f"invalid {what} address {address!r}: {exc}") from None
    return address


def address_port(address: str | None) -> int | None:
    """The port of an address that passed `check_address` (None if it has none)."""
    if address is None:
        return None
    try:
        return split_host_port(address, allow_empty_host=True, allow_zero_port=True)[1]
    except AddressError:
        return None
