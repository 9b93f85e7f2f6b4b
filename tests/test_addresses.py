"""The one host:port parser and the endpoint helpers built on it."""
from __future__ import annotations

import re

import pytest

from boruta.core.addresses import (MAX_HOST_LENGTH, AddressError, check_host, join_host_port,
                                   parse_port, split_host_port)
from boruta.transport.addresses import (CLIENT_ENDPOINT, connectable_endpoint,
                                        endpoint_with_port, fill_host, parse_endpoint)


@pytest.mark.parametrize("text, want", [
    ("127.0.0.1:22", ("127.0.0.1", 22)),
    ("board-7.lab:2222", ("board-7.lab", 2222)),
    ("[::1]:22", ("::1", 22)),
    ("[fe80::1%eth0]:65535", ("fe80::1%eth0", 65535)),
])
def test_split_host_port_accepts(text: str, want: tuple[str, int]) -> None:
    assert split_host_port(text) == want
    assert split_host_port(join_host_port(*want)) == want


@pytest.mark.parametrize("text, part, words", [
    ("h:²", "port", "bad port '²'"),                 # a superscript: isdigit() but not int()
    ("h:١٢٣", "port", "bad port"),                   # Arabic-Indic digits
    ("h:0", "port", "out of range 1..65535"),
    ("h:65536", "port", "out of range"),
    ("h:999999999999999999999", "port", "bad port"),
    ("h:", "port", "no port"),
    ("h", "port", "is not HOST:PORT"),
    (":22", "host", "has no host"),
    ("::1:22", "host", "brackets"),
    ("[]:22", "host", "empty IPv6"),
    ("h:-1", "port", "bad port"),
    ("h: 22", "port", "bad port"),
])
def test_split_host_port_names_what_is_wrong(text: str, part: str, words: str) -> None:
    with pytest.raises(AddressError, match=words) as caught:
        split_host_port(text)
    assert caught.value.part == part


@pytest.mark.parametrize("host, words", [
    ("a b", "is not an IP address or a host name"),
    ("h\n", "is not an IP address or a host name"),
    ("$(id)", "is not an IP address or a host name"),
    ("-h", "not starting or ending with '-'"),
    ("a" * 64, "labels of 1..63"),
    ("a." * 128, f"longer than {MAX_HOST_LENGTH}"),
    ("256.1.1.1", "is not an IPv4 address"),
    ("fe80::zz", "is not an IPv6 address"),
    ("fe80::1%`id`", "IPv6 scope '`id`' is not an interface name"),
])
def test_check_host_names_what_is_wrong(host: str, words: str) -> None:
    with pytest.raises(AddressError, match=re.escape(words)) as caught:
        check_host(host)
    assert caught.value.part == "host"
    with pytest.raises(AddressError):                   # the one parser applies it
        split_host_port(join_host_port(host, 22))


@pytest.mark.parametrize("host", ["h", "board-7.lab", "10.0.0.1", "::1", "fe80::1%eth0",
                                  "example.com.", ".".join(["a" * 63] * 3) + ".abcdefghi"])
def test_check_host_accepts(host: str) -> None:
    assert check_host(host) == host
    assert split_host_port(join_host_port(host, 22)) == (host, 22)


def test_the_wildcard_is_a_host_to_bind_on_only() -> None:
    assert check_host("*", allow_wildcard=True) == "*"
    assert split_host_port("*:7175", allow_wildcard=True) == ("*", 7175)
    with pytest.raises(AddressError, match="host") as caught:
        split_host_port("*:22")
    assert caught.value.part == "host"
    assert parse_endpoint("tcp://*:7175", bind=True) == "tcp://*:7175"
    with pytest.raises(AddressError):
        parse_endpoint("tcp://*:7175")


def test_split_host_port_refuses_non_text() -> None:
    with pytest.raises(AddressError, match="must be text, not int"):
        split_host_port(22)  # type: ignore[arg-type]


def test_options_for_listen_addresses() -> None:
    assert split_host_port(":22", allow_empty_host=True) == ("", 22)
    assert split_host_port("0.0.0.0:0", allow_zero_port=True) == ("0.0.0.0", 0)
    assert parse_port("0", allow_zero=True) == 0


def test_parse_endpoint() -> None:
    assert parse_endpoint("boruta.lab:7175") == "tcp://boruta.lab:7175"
    assert parse_endpoint(" tcp://[::1]:7175 ") == "tcp://[::1]:7175"
    assert parse_endpoint("ipc:///run/boruta.sock") == "ipc:///run/boruta.sock"
    assert parse_endpoint("tcp://*:*", bind=True) == "tcp://*:*"
    for bad, words in [("", "empty endpoint"), ("udp://h:1", "invalid endpoint"),
                       ("tcp://h:²", "bad port"), ("tcp://h:0", "out of range"),
                       ("tcp://*:*", "bad port")]:
        with pytest.raises(AddressError, match=words):
            parse_endpoint(bad)


def test_derived_endpoints() -> None:
    assert endpoint_with_port(CLIENT_ENDPOINT, 7177) == "tcp://127.0.0.1:7177"
    with pytest.raises(AddressError):
        endpoint_with_port("ipc:///x", 7177)
    assert connectable_endpoint("tcp://0.0.0.0:7177", "tcp://farm:7175") == "tcp://farm:7177"
    assert connectable_endpoint("tcp://10.0.0.1:7177", "tcp://farm:7175") == "tcp://10.0.0.1:7177"
    assert connectable_endpoint("tcp://0.0.0.0:²", "tcp://farm:7175") is None
    assert connectable_endpoint(None, "tcp://farm:7175") is None


def test_fill_host_uses_the_peer_ip_only_for_a_valid_port() -> None:
    assert fill_host(":22", "10.1.2.3") == "10.1.2.3:22"
    assert fill_host(":22", "fe80::2") == "[fe80::2]:22"
    assert fill_host(":22", None) == "127.0.0.1:22"
    assert fill_host(":²", "10.1.2.3") == ":²"            # left for the core to refuse
    assert fill_host("h:22", "10.1.2.3") == "h:22"
    assert fill_host(22, "10.1.2.3") == 22


def test_access_address_prefers_the_tunnel_then_the_worker_s_sshd() -> None:
    from types import SimpleNamespace

    from boruta.core.addresses import AddressError, access_address
    assert access_address(SimpleNamespace(addr=("10.0.0.1", 20001), ssh_address="h:22")) == \
        ("10.0.0.1", 20001)
    assert access_address(SimpleNamespace(addr=None, ssh_address="board:2222")) == ("board", 2222)
    for bad in (SimpleNamespace(addr=None, ssh_address="board:0x16"), SimpleNamespace()):
        with pytest.raises(AddressError, match="the access names no"):
            access_address(bad)
