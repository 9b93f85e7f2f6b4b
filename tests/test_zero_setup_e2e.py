"""The embedded default needs no setup, and nothing listens unauthenticated.

A first `boruta server` makes its keys and a bootstrap admin, writes the
local client config, and `boruta` on the same machine works with no flag.
A client config a person wrote is never overwritten. `--insecure` is plain
text with every peer an admin, and says so at every start.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from boruta.testing.processes import LOOPBACK, Child, child_env, parse_fields
from boruta.transport.client import Client
from boruta.transport.credentials import WRITTEN_BY_SERVER, load_client_config
from boruta.transport.errors import ServerKeyMismatchError
from tests.e2e_helpers import ROOT

pytestmark = pytest.mark.slow

LOOPBACK_FLAGS = [item for key, value in LOOPBACK.items() for item in ("--set", f"{key}={value}")]


def homes(tmp_path: Path) -> dict[str, str]:
    """A machine of its own: fresh XDG config and state directories."""
    return {"XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_STATE_HOME": str(tmp_path / "state")}


def start(tmp_path: Path, name: str, *flags: str) -> tuple[Child, dict[str, str]]:
    env = child_env(**homes(tmp_path))
    child = Child([sys.executable, "-m", "boruta.cli", "server", *flags, *LOOPBACK_FLAGS],
                  tmp_path / f"{name}.log", env=env)
    return child, parse_fields(child.expect("boruta server ready"))


def boruta(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "boruta.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=30)


def test_a_first_server_sets_up_keys_and_the_local_client(tmp_path: Path) -> None:
    env = child_env(**homes(tmp_path))
    server, endpoints = start(tmp_path, "first")
    with server:
        config = tmp_path / "config" / "boruta" / "client.toml"
        identity = tmp_path / "state" / "boruta"
        assert config.read_text().splitlines()[0] == WRITTEN_BY_SERVER
        assert config.stat().st_mode & 0o777 == 0o600
        assert identity.stat().st_mode & 0o777 == 0o700
        for name in ("server.key", "admin.key", "client.toml"):
            assert (identity / name).stat().st_mode & 0o777 == 0o600, name
        loaded = load_client_config(config, env={})
        assert loaded.server == endpoints["listen"]
        assert loaded.credentials is not None
        first_key = loaded.credentials.server_key
        # `boruta` with no flag and no variable: the admin, encrypted.
        done = boruta({**env, "BORUTA_SERVER": ""}, "ping", "--json")
        assert done.returncode == 0, done.stderr
        assert '"name": "admin"' in done.stdout and '"secure": true' in done.stdout
        assert boruta(env, "request", "new", "--caps", "x=y", "--queue-unsatisfiable"
                      ).returncode == 0
        # Plain text is refused, and said so.
        with Client(endpoints["listen"], timeout=3, retries=1) as plain:
            with pytest.raises(ServerKeyMismatchError, match="requires CURVE"):
                plain.ping()
    again, _ = start(tmp_path, "second")
    with again:
        assert load_client_config(config, env={}).credentials.server_key == first_key


def test_a_client_config_a_person_wrote_is_left_alone(tmp_path: Path) -> None:
    config = tmp_path / "config" / "boruta" / "client.toml"
    config.parent.mkdir(parents=True)
    mine = 'server = "tcp://farm.example.com:7175"\n'
    config.write_text(mine)
    server, _ = start(tmp_path, "server")
    with server:
        assert config.read_text() == mine
        assert "written by a person" in server.log()


def test_insecure_is_plain_text_every_peer_an_admin_and_warned(tmp_path: Path) -> None:
    for run in range(2):                                 # the warning at every start
        server, endpoints = start(tmp_path, f"insecure-{run}", "--insecure", "--state-dir",
                                  ":memory:")
        with server:
            assert "INSECURE: no encryption and no authentication" in server.log()
            with Client(endpoints["listen"], timeout=3) as plain:
                answer = plain.ping()
                assert answer["secure"] is False and answer["user"]["role"] == "admin"
                assert plain.user_list() == []           # an admin call, answered
        assert not (tmp_path / "state" / "boruta" / "server.key").exists()
