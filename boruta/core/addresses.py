"""`host:port` as text: the one parser every part of Boruta uses.

A dryad reports its addresses as `host:port` (`[v6]:port` for IPv6), a
config names listen addresses the same way, and endpoints wrap them
(`tcp://host:port`). Ports are ASCII digits only: `str.isdigit()` also
accepts superscripts and other scripts' digits, which `int()` then refuses.
A host is an IP address or an RFC 1123 host name and nothing else: a host
a dryad reports ends up in the `ssh USER@HOST` line that people paste into
a shell, so spaces, control characters and shell metacharacters never pass.
"""
from __future__ import annotations

from typing import Any

import ipaddress
import re

MAX_PORT = 65535
MAX_HOST_LENGTH = 253          # a DNS name's limit, without the trailing dot
WILDCARD_HOST = "*"            # ZeroMQ's "every interface", for endpoints to bind
HOST_RULE = ("an IP address or a host name of letters, digits, '-' and '.' "
             f"(labels of 1..63, not starting or ending with '-'), at most {MAX_HOST_LENGTH} "
             "characters")

_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_ZONE = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")     # an IPv6 scope: an interface name or index


class AddressError(ValueError):
    """A `host:port` text that cannot be used; `part` is "host" or "port" (or "address")."""

    def __init__(self, message: str, part: str = "address") -> None:
        super().__init__(message)
        self.part = part


def parse_port(text: str, *, allow_zero: bool = False) -> int:
    """A port number from ASCII digits, 1..65535 (0 too with `allow_zero`)."""
    low = 0 if allow_zero else 1
    if not text:
        raise AddressError("no port", "port")
    if not (text.isascii() and text.isdigit()) or len(text) > 5:
        raise AddressError(f"bad port {text!r}: use {low}..{MAX_PORT}", "port")
    port = int(text)
    if port > MAX_PORT or port < low:
        raise AddressError(f"port {port} out of range {low}..{MAX_PORT}", "port")
    return port


def check_host(host: str, *, allow_wildcard: bool = False) -> str:
    """`host` if it is an IP address or a valid host name; AddressError (part "host") if not.

    IPv6 comes without brackets; its scope (`fe80::1%eth0`) must be an
    interface name. Labels that are all digits must make an IPv4 address.
    `*` (every interface) is a host to bind on, never one to reach: it
    passes only with `allow_wildcard`.
    """
    if host == WILDCARD_HOST and allow_wildcard:
        return host
    shown = f"{host!r:.70}"
    if len(host) > MAX_HOST_LENGTH + 1:
        raise AddressError(f"host {shown} is longer than {MAX_HOST_LENGTH} characters", "host")
    if ":" in host:
        address, _, zone = host.partition("%")
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            raise AddressError(f"host {shown} is not an IPv6 address", "host") from None
        if "%" in host and not _ZONE.match(zone):
            raise AddressError(f"IPv6 scope {zone!r:.40} is not an interface name", "host")
        return host
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if not name or len(name) > MAX_HOST_LENGTH or not all(_LABEL.match(lb) for lb in labels):
        raise AddressError(f"host {shown} is not {HOST_RULE}", "host")
    if all(label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(name)
        except ValueError:
            raise AddressError(f"host {shown} is not an IPv4 address", "host") from None
    return host


def split_host_port(address: str, *, allow_empty_host: bool = False,
                    allow_zero_port: bool = False,
                    allow_wildcard: bool = False) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port); AddressError says what is wrong.

    The host comes back without brackets and passes `check_host`. A bare
    IPv6 address must be bracketed, since its colons would be read as the
    port separator.
    """
    if not isinstance(address, str):
        raise AddressError(f"an address must be text, not {type(address).__name__}")
    host, sep, port = address.rpartition(":")
    if not sep:
        raise AddressError(f"{address!r} is not HOST:PORT", "port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host:
            raise AddressError("empty IPv6 address in brackets", "host")
    elif ":" in host:
        raise AddressError(f"write an IPv6 address in brackets: [{host}]:{port}", "host")
    if not host and not allow_empty_host:
        raise AddressError(f"{address!r} has no host", "host")
    number = parse_port(port, allow_zero=allow_zero_port)    # first, as upstream's codes say
    if host:
        check_host(host, allow_wildcard=allow_wildcard)
    return host, number


def join_host_port(host: str, port: int) -> str:
    """(host, port) -> `host:port`, bracketing an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def access_address(access: Any) -> tuple[str, int]:
    """Where to SSH to for a job: its tunnel (`addr`), else the worker's own
    `ssh_address`; AddressError when the access names neither usably."""
    addr = getattr(access, "addr", None)
    if addr:
        return str(addr[0]), int(addr[1])
    text = getattr(access, "ssh_address", None)
    if text:
        try:
            return split_host_port(str(text))
        except AddressError as exc:
            raise AddressError(f"the access names no usable address: {exc}") from None
    raise AddressError("the access names no address to connect to")
