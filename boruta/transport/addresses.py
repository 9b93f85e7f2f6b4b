"""Where things are: the default ports and endpoints, and endpoint parsing, in one place.

`host:port` itself is parsed by boruta.core.addresses (the core checks the
addresses dryads report); this module adds what only the network needs:
ZeroMQ endpoints (`tcp://host:port`, `ipc://path`), the defaults, and the
host a dryad's `:port` address gets from the connection it came on.
"""
from __future__ import annotations

from typing import Any

from boruta.core.addresses import AddressError, join_host_port, parse_port, split_host_port

CLIENT_PORT = 7175           # client endpoint (upstream's port)
DRYAD_PORT = 7176            # dryad endpoint
EVENTS_PORT = 7177           # event stream
HTTP_PORT = 8487             # upstream's HTTP API port
UPSTREAM_DRYAD_PORT = 7175   # where upstream's dryads listened (ours connect out instead)

LISTEN_CLIENTS = f"tcp://*:{CLIENT_PORT}"       # what the server binds by default
LISTEN_DRYADS = f"tcp://*:{DRYAD_PORT}"
LISTEN_EVENTS = f"tcp://*:{EVENTS_PORT}"

CLIENT_ENDPOINT = f"tcp://127.0.0.1:{CLIENT_PORT}"   # where a client looks by default
DRYAD_ENDPOINT = f"tcp://127.0.0.1:{DRYAD_PORT}"     # where a dryad looks by default
EVENTS_ENDPOINT = f"tcp://127.0.0.1:{EVENTS_PORT}"

WILDCARD_HOSTS = frozenset({"*", "0.0.0.0", "::", "[::]", "", "[::0]"})
TRANSPORTS = ("tcp", "ipc", "inproc")

__all__ = [
    "AddressError", "CLIENT_ENDPOINT", "CLIENT_PORT", "DRYAD_ENDPOINT", "DRYAD_PORT",
    "EVENTS_ENDPOINT", "EVENTS_PORT", "HTTP_PORT", "LISTEN_CLIENTS", "LISTEN_DRYADS",
    "LISTEN_EVENTS", "UPSTREAM_DRYAD_PORT", "connectable_endpoint", "endpoint_with_port", "fill_host",
    "join_host_port", "parse_endpoint", "parse_port", "split_host_port",
]


def parse_endpoint(text: str, *, bind: bool = False) -> str:
    """A ZeroMQ endpoint, checked; `host:port` alone means `tcp://host:port`.

    `bind`: an endpoint to listen on, where `*` and port `*` or 0 (any free
    port) are allowed. Raises AddressError naming what is wrong.
    """
    if not isinstance(text, str):
        raise AddressError(f"an endpoint must be text, not {type(text).__name__}")
    raw = text.strip()
    if not raw:
        raise AddressError(f"empty endpoint; use e.g. tcp://boruta.example.com:{CLIENT_PORT}")
    if "://" not in raw:
        raw = "tcp://" + raw
    scheme, _, rest = raw.partition("://")
    if scheme not in TRANSPORTS or not rest:
        raise AddressError(f"invalid endpoint {text!r}; use tcp://HOST:PORT or ipc://PATH")
    if scheme == "tcp":
        if bind and rest.endswith(":*"):
            rest = rest[:-1] + "0"
        try:
            split_host_port(rest, allow_zero_port=bind, allow_wildcard=bind)
        except AddressError as exc:
            raise AddressError(f"invalid endpoint {text!r}: {exc}", exc.part) from None
    return raw


def endpoint_with_port(endpoint: str, port: int) -> str:
    """tcp://HOST:7175 -> tcp://HOST:<port> (another endpoint of the same server)."""
    scheme, sep, rest = endpoint.partition("://")
    host = rest.rpartition(":")[0] if ":" in rest else ""
    if scheme != "tcp" or not sep or not host:
        raise AddressError(f"cannot derive another endpoint from {endpoint!r}")
    return f"tcp://{host}:{port}"


def connectable_endpoint(reported: Any, client_endpoint: str) -> str | None:
    """An endpoint as the server reports it (what it bound), with a wildcard host
    replaced by the host the client reached the server at; None if unusable."""
    if not isinstance(reported, str) or not reported:
        return None
    if not reported.startswith("tcp://"):
        return reported
    host, sep, port = reported[len("tcp://"):].rpartition(":")
    try:
        if not sep or parse_port(port) == 0:
            return None
    except AddressError:
        return None
    if host in WILDCARD_HOSTS:
        if not client_endpoint.startswith("tcp://"):
            return None
        host = client_endpoint[len("tcp://"):].rpartition(":")[0]
    return f"tcp://{host}:{port}"


def fill_host(address: Any, peer_ip: str | None) -> Any:
    """An address without a host (`:22`) gets the IP the dryad connected from, else 127.0.0.1.

    Anything else is returned as it is, for the core to check.
    """
    if isinstance(address, str) and address.startswith(":"):
        try:
            port = parse_port(address[1:])
        except AddressError:
            return address
        return join_host_port(peer_ip or "127.0.0.1", port)
    return address
