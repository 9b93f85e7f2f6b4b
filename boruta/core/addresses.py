"""`host:port` as text: the one parser every part of Boruta uses.

A dryad reports its addresses as `host:port` (`[v6]:port` for IPv6), a
config names listen addresses the same way, and endpoints wrap them
(`tcp://host:port`). Ports are ASCII digits only: `str.isdigit()` also
accepts superscripts and other scripts' digits, which `int()` then refuses.
"""
from __future__ import annotations

MAX_PORT = 65535


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


def split_host_port(address: str, *, allow_empty_host: bool = False,
                    allow_zero_port: bool = False) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port); AddressError says what is wrong.

    The host comes back without brackets. A bare IPv6 address must be
    bracketed, since its colons would be read as the port separator.
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
    return host, parse_port(port, allow_zero=allow_zero_port)


def join_host_port(host: str, port: int) -> str:
    """(host, port) -> `host:port`, bracketing an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
