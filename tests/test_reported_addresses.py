"""The addresses a dryad reports: an IP or an RFC 1123 host name, nothing a shell would read.

A worker's ssh address reaches clients, which print it in an `ssh USER@HOST`
line, so registration refuses a host with spaces, control characters or
shell metacharacters with upstream's invalid_address (never internal).
"""
from __future__ import annotations

import pytest

from boruta.core.errors import InvalidAddressError, MissingIPError, MissingPortError
from boruta.testing import wuuid

W1 = wuuid(1)
GOOD_SSH = "10.0.0.1:22"

HOSTILE_HOSTS = [
    "h\n", "a\nb", "a b", "a\tb", "a;b", "$(touch x)", "`id`", "a|b", "a&b", "a>b", "~root",
    "h'", 'h"', "h\\", "-oProxyCommand=x", "a..b", ".a", "a-.b", "-a.b", "a_b.lab", "é.lab",
    "x" * 64 + ".lab", ".".join(["a" * 63] * 4) + "b",     # a label over 63; a name over 253
    "1.2.3.999", "1.2.3", "999",                           # digits only: must be IPv4
    "\x00", "h\x1b[31m",
]


@pytest.mark.parametrize("host", HOSTILE_HOSTS)
def test_hostile_ssh_hosts_are_invalid_addresses(farm, host):
    with pytest.raises(InvalidAddressError) as err:
        farm.scheduler.register({"UUID": W1}, "10.0.0.1:7175", f"{host}:22")
    assert err.value.code == "invalid_address"
    assert "invalid sshd address" in str(err.value)
    assert farm.scheduler.worker_ids() == [] and farm.drain() == []


@pytest.mark.parametrize("host", ["a;b", "$(id)", "h\n"])
def test_hostile_dryad_hosts_are_invalid_addresses(farm, host):
    with pytest.raises(InvalidAddressError):
        farm.scheduler.register({"UUID": W1}, f"{host}:7175", GOOD_SSH)
    assert farm.scheduler.worker_ids() == []


@pytest.mark.parametrize("ssh", [
    "[fe80::1%$(id)]:22", "[fe80::1%a b]:22", "[fe80::1%]:22", "[::1\n]:22"])
def test_hostile_ipv6_scopes_are_invalid_addresses(farm, ssh):
    with pytest.raises(InvalidAddressError):
        farm.scheduler.register({"UUID": W1}, "10.0.0.1:7175", ssh)


@pytest.mark.parametrize("dryad, ssh, error", [
    (":7175", GOOD_SSH, MissingIPError), ("10.0.0.1", GOOD_SSH, MissingPortError),
    ("10.0.0.1:7175", "$(id):", MissingPortError)])
def test_upstreams_codes_are_kept(farm, dryad, ssh, error):
    with pytest.raises(error):
        farm.scheduler.register({"UUID": W1}, dryad, ssh)


@pytest.mark.parametrize("ssh", [
    "10.0.0.1:22", "board-7.lab.example.com:2222", "localhost:22", "BOARD7:22", "7board.lab:22",
    "board.lab.:22", "[fe80::1%eth0]:22", "[::1]:22", ".".join(["a" * 63] * 3) + ".abc:22"])
def test_real_hosts_still_register(farm, ssh):
    farm.scheduler.register({"UUID": W1}, "10.0.0.1:7175", ssh)
    assert farm.scheduler.get_worker_info(W1).ssh_address == ssh
