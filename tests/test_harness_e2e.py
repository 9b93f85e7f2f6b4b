"""The process harness hands out identities: a secure server by default, the admin's keys to
its clients, a fresh key to each user and each simulated dryad, and none of the developer's
files or variables anywhere (boruta.testing.processes, boruta.sim.dryads)."""
from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from boruta.core.errors import PriorityNotAllowedError
from boruta.sim.dryads import SimFarm
from boruta.testing.processes import IDENTITY_ENV, Child, child_env, start_sim_dryads
from boruta.transport.credentials import client_config_path
from boruta.transport.errors import HandshakeError
from e2e_helpers import ROOT, ServerProcess, server_factory, unique_caps, wait_until  # noqa: F401


# --------------------------------------------------------------------------- the session

def test_the_test_session_has_private_config_and_no_identity_variables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    home = Path(os.environ["XDG_CONFIG_HOME"]).parent
    assert home.name.startswith("boruta-tests-home-")
    assert Path(os.environ["XDG_STATE_HOME"]).parent == home
    assert client_config_path().is_relative_to(home)
    assert not set(IDENTITY_ENV) & set(os.environ)
    for name in IDENTITY_ENV:                      # set later (a test, a bench's shell) ...
        monkeypatch.setenv(name, "/somebody/elses")
    env = child_env(EXTRA="1")
    assert not set(IDENTITY_ENV) & set(env)        # ... a child never sees them
    assert env["EXTRA"] == "1" and env["XDG_CONFIG_HOME"] == os.environ["XDG_CONFIG_HOME"]
    assert child_env(BORUTA_CLIENT_CONFIG="mine")["BORUTA_CLIENT_CONFIG"] == "mine"


def test_the_sim_refuses_a_broken_client_config_clearly(tmp_path: Path) -> None:
    broken = tmp_path / "client.toml"
    broken.write_text('server_key = "not a key"\nkey_file = "admin.key"\n')
    done = subprocess.run([sys.executable, "-m", "boruta.sim.dryads", "--client-config",
                           str(broken), "--server", "tcp://127.0.0.1:9"], cwd=ROOT,
                          env=child_env(), capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "cannot enrol the dryads" in done.stderr and str(broken) in done.stderr
    assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------- a secure server

@pytest.mark.slow
def test_a_harness_server_is_secure_and_hands_out_identities(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    xdg = tmp_path / "xdg"                          # where a careless server would write
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(xdg / "state"))
    with ServerProcess(tmp_path / "logs" / "server.log") as server:
        server.start()
        config = server.client_config
        assert config is not None and config.parent.parent == tmp_path / "logs"
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        admin = server.client()
        assert admin.credentials == server.credentials
        assert [u["name"] for u in admin.user_list()] == ["admin"]

        with pytest.raises(HandshakeError):          # plain text: refused, said at once
            server.client(credentials=None, retries=1).ping()

        carol = server.user("carol", priorities=[9, 16])
        assert carol.credentials is not None and carol.credentials != server.credentials
        doc = next(u for u in admin.user_list() if u["name"] == "carol")
        assert doc["keys"] == [carol.credentials.public_key] and doc["role"] == "user"
        with pytest.raises(PriorityNotAllowedError):
            carol.new_request(unique_caps(), 2, queue_unsatisfiable=True)
        mine = carol.new_request(unique_caps(), 9, queue_unsatisfiable=True)
        assert admin.get_request_info(mine).owner.name == "carol"

        caps = unique_caps()
        farm = server.farm(2, caps=caps)               # each enrolled with a key of its own
        enrolled = {d["uuid"]: d["key"] for d in admin.dryad_list()}
        assert set(enrolled) == {d.uuid for d in farm.dryads}
        assert len(set(enrolled.values())) == 2
        assert all(d.link.credentials.public_key == enrolled[d.uuid] for d in farm.dryads)

        stranger = SimFarm(server.dryad, 1, caps=caps)    # no key: cannot even connect
        try:
            wait_until(lambda: stranger.dryads[0].link.handshake_error is not None, 10,
                       what="the handshake refused")
            assert not stranger.dryads[0].link.registered.is_set()
        finally:
            stranger.close()

        sims, uuids = server.sim_dryads(2, caps, tmp_path / "sims.log")
        try:
            assert "enrolled 2 dryad(s)" in sims.log() and str(config) in sims.log()
            assert set(uuids) <= {d["uuid"] for d in admin.dryad_list()}
            assert {w.worker_uuid for w in admin.list_workers()[0]} >= set(uuids)
        finally:
            sims.close()
    assert not xdg.exists(), sorted(xdg.rglob("*"))    # nothing of the developer's touched
    assert "Traceback" not in server.log()


@pytest.mark.slow
def test_an_insecure_harness_server_speaks_plain_text(server_factory,  # noqa: F811
                                                       tmp_path: Path) -> None:
    server = server_factory(insecure=True)
    assert server.credentials is None and server.client_config is None
    client = server.client()
    assert client.credentials is None and client.ping()["protocol"] == 1
    farm = server.farm(1, caps=unique_caps())         # registers with no enrolment
    assert client.get_worker_info(farm.dryads[0].uuid)
    assert client.dryad_list() == []
    with pytest.raises(RuntimeError, match="insecure"):
        server.user("dave")
    sims, uuids = start_sim_dryads(server.dryad, 1, unique_caps(), tmp_path / "sims.log",
                                   insecure=True)
    try:
        assert "plain text" in sims.log()
        assert client.get_worker_info(uuids[0])
    finally:
        sims.close()


@pytest.mark.slow
def test_a_sim_started_with_its_server_waits_for_the_config_the_server_writes(
        tmp_path: Path) -> None:
    """`boruta server & python -m boruta.sim.dryads &`: the sim may start first."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dryad = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    identity = tmp_path / "identity"
    sims = Child([sys.executable, "-m", "boruta.sim.dryads", "--count", "1", "--server", dryad,
                  "--client-config", str(identity / "client.toml")], tmp_path / "sims.log")
    try:
        wait_until(lambda: "waiting up to" in sims.log(), 10, what="the sim waiting")
        with ServerProcess(tmp_path / "server.log", identity_dir=str(identity),
                           dryad_listen=dryad) as server:
            server.start()
            sims.expect("simdryad ready count=1", 30)
            uuid = sims.expect("dryad ", 10).split()[1]
            assert [d["uuid"] for d in server.client().dryad_list()] == [uuid]
    finally:
        sims.close()
