"""The handshake's answer (the ZAP callback) and how refusals are logged."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import zmq

import boruta.server.identities as identities
from boruta.core.users import User
from boruta.server.identities import DRYAD_DOMAIN, CLIENT_DOMAIN, Identities


def book() -> Identities:
    cfg = SimpleNamespace(insecure=False, max_workers_per_dryad_key=1)
    return Identities(SimpleNamespace(cfg=cfg, store=None))


def key() -> str:
    return zmq.curve_keypair()[0].decode()


def test_users_connect_to_the_client_socket_and_dryads_to_theirs() -> None:
    ids = book()
    user, dryad = key(), key()
    ids.users.add(User("alice", (user,)))
    ids.dryads.enrol("w-1", dryad)
    assert ids.callback(CLIENT_DOMAIN, user.encode()) is True
    assert ids.callback(DRYAD_DOMAIN, dryad.encode()) is True
    assert ids.callback(CLIENT_DOMAIN, dryad.encode()) is False     # a dryad is no user
    assert ids.callback(DRYAD_DOMAIN, user.encode()) is False       # nor a user a dryad
    assert ids.refused == 2
    assert ids.user_of(user).name == "alice" and ids.user_of(dryad) is None


def test_refused_handshakes_are_logged_at_most_so_often(caplog, monkeypatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(identities.time, "monotonic", lambda: clock[0])
    ids = book()
    caplog.set_level(logging.WARNING, logger="boruta.server")
    for _ in range(identities.REFUSED_LINES + 30):
        ids.callback(CLIENT_DOMAIN, key().encode())
    lines = [r for r in caplog.records if r.getMessage().startswith("handshake refused")]
    assert len(lines) == identities.REFUSED_LINES and ids.refused == identities.REFUSED_LINES + 30
    clock[0] += 61
    ids.callback(CLIENT_DOMAIN, key().encode())
    summary = [r for r in caplog.records if r.getMessage() == "handshakes refused without a line"]
    assert len(summary) == 1 and summary[0].fields["count"] == 30
    assert caplog.records[-1].getMessage() == "handshake refused: unknown key"   # a new minute
