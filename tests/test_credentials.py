"""Key files and the client config: written private, read back, every bad one named.

Real files in a temporary directory; the modes are checked with stat.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import zmq.auth

from boruta.core.errors import ConfigError
from boruta.dryad.config import load_config, parse_config, write_default_config
from boruta.transport.credentials import (
    WRITTEN_BY_SERVER,
    ClientConfig,
    check_public_key,
    client_config_path,
    load_client_config,
    new_keypair,
    read_key_file,
    write_client_config,
    write_key_file,
    written_by_server,
)

UUID = "4f1a2b3c-0000-4000-8000-0000000000bb"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- keys

def test_keypair_repr_hides_the_secret():
    pair = new_keypair()
    assert len(pair.public) == len(pair.secret) == 40 and pair.public != pair.secret
    for text in (repr(pair), str(pair)):
        assert pair.public in text and pair.secret not in text


def test_key_file_round_trip_is_private(tmp_path):
    pair = new_keypair()
    path = write_key_file(tmp_path / "a" / "b" / "alice.key", pair, comment="alice\nof lab")
    assert read_key_file(path) == pair
    assert zmq.auth.load_certificate(path) == (pair.public.encode(), pair.secret.encode())
    assert mode(path) == 0o600
    assert mode(tmp_path / "a") == mode(tmp_path / "a" / "b") == 0o700
    assert "#   alice of lab\n" in path.read_text()          # one comment line
    assert sorted(p.name for p in path.parent.iterdir()) == ["alice.key"]   # no temp file


def test_key_file_is_not_overwritten_unless_asked(tmp_path):
    first, second = new_keypair(), new_keypair()
    path = write_key_file(tmp_path / "k.key", first)
    with pytest.raises(ConfigError) as caught:
        write_key_file(path, second)
    assert str(caught.value) == f"key file {path}: already exists; not overwriting it"
    assert read_key_file(path) == first
    write_key_file(path, second, overwrite=True)
    assert read_key_file(path) == second and mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.key"]


def _public_only(path: Path) -> None:
    public_file, _ = zmq.auth.create_certificates(path.parent, "pub")
    os.replace(public_file, path)
    path.chmod(0o600)


def _swap_public(path: Path) -> None:
    text = path.read_text().replace(read_key_file(path).public, new_keypair().public)
    path.write_text(text)


@pytest.mark.parametrize("spoil, problem", [
    (lambda p: p.unlink(), "no such file"),
    (lambda p: (p.unlink(), p.mkdir()), "not a regular file"),
    (lambda p: p.chmod(0o644), "others may read it (mode 0644); make it private: chmod 600"),
    (lambda p: p.write_bytes(b"\xff\xfe junk\n"), "no public-key in it"),
    (lambda p: p.write_text("curve\n    public-key\n"), "no public-key in it"),
    (_public_only, "no secret-key in it"),
    (lambda p: p.write_text('curve\n public-key = "short"\n secret-key = "short"\n'),
     "its public-key is not 40 Z85 characters"),
    (_swap_public, "its public-key does not belong to its secret-key"),
])
def test_every_bad_key_file_is_named(tmp_path, spoil, problem):
    path = write_key_file(tmp_path / "me.key", new_keypair())
    spoil(path)
    with pytest.raises(ConfigError) as caught:
        read_key_file(path)
    assert str(caught.value).startswith(f"key file {path}: {problem}")


@pytest.mark.parametrize("text", ["", "short", "x" * 41, "~" * 40, " " * 40, None, 40])
def test_check_public_key_names_what(text):
    with pytest.raises(ConfigError) as caught:
        check_public_key(text, "--server-key")
    assert caught.value.field == "--server-key"
    assert "is not a CURVE public key (40 Z85 characters" in str(caught.value)


def test_check_public_key_accepts_and_strips():
    key = new_keypair().public
    assert check_public_key(f" {key}\n", "server_key") == key


# --------------------------------------------------------------------------- client config

def test_client_config_path_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert client_config_path({}) == tmp_path / "home" / ".config" / "boruta" / "client.toml"
    xdg = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    assert client_config_path(xdg) == tmp_path / "xdg" / "boruta" / "client.toml"
    assert client_config_path({**xdg, "BORUTA_CLIENT_CONFIG": "/etc/c.toml"}) == Path("/etc/c.toml")
    assert client_config_path({"XDG_CONFIG_HOME": "relative"}) == \
        tmp_path / "home" / ".config" / "boruta" / "client.toml"     # XDG wants absolute paths


def test_missing_file_gives_defaults(tmp_path):
    missing = tmp_path / "none.toml"
    assert load_client_config(missing, {}) == ClientConfig(None, None, None, missing)


@pytest.fixture
def keys(tmp_path):
    """Three key files (file, env, arg) and three server keys."""
    made = {}
    for layer in ("file", "env", "arg"):
        pair = new_keypair()
        made[layer] = (str(write_key_file(tmp_path / f"{layer}.key", pair)), pair,
                       new_keypair().public)
    return made


def test_file_then_environment_then_arguments(tmp_path, keys):
    cfg = tmp_path / "client.toml"
    cfg.write_text(f'server = "tcp://from-file:1"\nevents = "tcp://from-file:3"\n'
                   f'server_key = "{keys["file"][2]}"\nkey_file = "file.key"\n'
                   '[other]\nx = 1\n')
    got = load_client_config(cfg, {})
    assert (got.server, got.events, got.path) == ("tcp://from-file:1", "tcp://from-file:3", cfg)
    assert got.credentials.server_key == keys["file"][2]
    assert got.credentials.client == keys["file"][1]

    env = {"BORUTA_SERVER": "tcp://from-env:2", "BORUTA_SERVER_KEY": keys["env"][2],
           "BORUTA_KEY_FILE": keys["env"][0]}
    got = load_client_config(cfg, env)
    assert got.server == "tcp://from-env:2" and got.events == "tcp://from-file:3"
    assert got.credentials.server_key == keys["env"][2]
    assert got.credentials.client == keys["env"][1]

    got = load_client_config(cfg, env, server="opt:4", server_key=keys["arg"][2],
                             key_file=keys["arg"][0])
    assert got.server == "tcp://opt:4"
    assert got.credentials.server_key == keys["arg"][2]
    assert got.credentials.client == keys["arg"][1]

    # each setting on its own: an argument's key file with the file's server key
    got = load_client_config(cfg, {"BORUTA_SERVER": "  "}, key_file=keys["arg"][0])
    assert got.server == "tcp://from-file:1"
    assert got.credentials.server_key == keys["file"][2]
    assert got.credentials.client == keys["arg"][1]


def test_relative_key_file_is_relative_to_the_config(tmp_path, monkeypatch):
    pair = new_keypair()
    write_key_file(tmp_path / "conf" / "admin.key", pair)
    cfg = write_client_config(tmp_path / "conf" / "client.toml", server="tcp://h:1", events=None,
                              server_key=new_keypair().public, key_file="admin.key")
    monkeypatch.chdir(tmp_path)                              # not where the key file is
    assert load_client_config(cfg, {}).credentials.client == pair


@pytest.mark.parametrize("layer", ["file", "env", "arg"])
def test_server_key_and_key_file_go_together(tmp_path, layer):
    key = new_keypair().public
    key_file = str(write_key_file(tmp_path / "me.key", new_keypair()))
    cfg = tmp_path / "client.toml"
    for missing in ("key_file", "server_key"):
        given = {"server_key": key} if missing == "key_file" else {"key_file": key_file}
        cfg.write_text("".join(f'{k} = "{v}"\n' for k, v in given.items())
                       if layer == "file" else "")
        env = {f"BORUTA_{k.upper()}": v for k, v in given.items()} if layer == "env" else {}
        kwargs = given if layer == "arg" else {}
        with pytest.raises(ConfigError) as caught:
            load_client_config(cfg, env, **kwargs)
        text = str(caught.value)
        needs = "your key file" if missing == "key_file" else "the server's public key"
        assert needs in text
        origin = {"file": f"client config {cfg}", "env": f"BORUTA_{next(iter(given)).upper()}",
                  "arg": next(iter(given))}[layer]
        assert text.startswith(origin)


@pytest.mark.parametrize("content, problem", [
    ("server = ", "not valid TOML: "),
    ("server = 7175\n", "server: must be a string"),
    ('server = "http://h:1"\n', "server: invalid endpoint 'http://h:1'"),
    ('events = "tcp://h"\n', "events: invalid endpoint 'tcp://h'"),
    ('server_key = "nope"\nkey_file = "k.key"\n', "server_key: 'nope' is not a CURVE public key"),
    (b"\xff\xfe", "not valid TOML: "),
])
def test_bad_client_config_names_the_file(tmp_path, content, problem):
    cfg = tmp_path / "client.toml"
    cfg.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ConfigError) as caught:
        load_client_config(cfg, {})
    assert str(caught.value).startswith(f"client config {cfg}: {problem}")


def test_bad_key_file_from_the_config_names_the_key_file(tmp_path):
    cfg = tmp_path / "client.toml"
    cfg.write_text(f'server_key = "{new_keypair().public}"\nkey_file = "gone.key"\n')
    with pytest.raises(ConfigError) as caught:
        load_client_config(cfg, {})
    assert str(caught.value) == f"key file {tmp_path / 'gone.key'}: no such file"


@pytest.mark.parametrize("env, message", [
    ({"BORUTA_SERVER": "http://x"},
     "BORUTA_SERVER: invalid endpoint 'http://x'; use tcp://HOST:PORT or ipc://PATH"),
    ({"BORUTA_SERVER_KEY": "nope", "BORUTA_KEY_FILE": "k.key"},
     "BORUTA_SERVER_KEY: 'nope' is not a CURVE public key"),
])
def test_bad_variable_is_named(tmp_path, env, message):
    with pytest.raises(ConfigError) as caught:
        load_client_config(tmp_path / "none.toml", env)
    assert str(caught.value).startswith(message)


def test_overridden_bad_variable_is_not_an_error(tmp_path):
    got = load_client_config(tmp_path / "none.toml", {"BORUTA_SERVER": "http://x"},
                             server="tcp://ok:1")
    assert got.server == "tcp://ok:1"


def test_write_client_config_round_trip_and_marker(tmp_path):
    pair = new_keypair()
    key_file = write_key_file(tmp_path / "state" / "admin.key", pair)
    server_key = new_keypair().public
    path = write_client_config(tmp_path / "cfg" / "client.toml", server="tcp://127.0.0.1:7175",
                               events="tcp://127.0.0.1:7177", server_key=server_key,
                               key_file=key_file, by_server=True)
    assert mode(path) == 0o600 and mode(tmp_path / "cfg") == 0o700
    assert path.read_text().splitlines()[0] == WRITTEN_BY_SERVER
    assert written_by_server(path)
    got = load_client_config(path, {})
    assert (got.server, got.events) == ("tcp://127.0.0.1:7175", "tcp://127.0.0.1:7177")
    assert got.credentials.server_key == server_key and got.credentials.client == pair

    path = write_client_config(path, server="tcp://h:1", events=None, server_key=None,
                               key_file=None)
    assert not written_by_server(path)                    # a person's file now
    assert load_client_config(path, {}) == ClientConfig("tcp://h:1", None, None, path)
    assert not written_by_server(tmp_path / "missing.toml")


def test_write_client_config_refuses_half_an_identity(tmp_path):
    with pytest.raises(ConfigError, match="go together"):
        write_client_config(tmp_path / "c.toml", server="tcp://h:1", events=None,
                            server_key=new_keypair().public, key_file=None)
    assert not (tmp_path / "c.toml").exists()


# --------------------------------------------------------------------------- the dryad's identity

def test_dryad_config_identity(tmp_path):
    pair = new_keypair()
    write_key_file(tmp_path / "etc" / "dryad.key", pair)
    server_key = new_keypair().public
    path = tmp_path / "etc" / "dryad.toml"
    written = write_default_config(path, caps={"UUID": UUID}, server_key=server_key,
                                   key_file="dryad.key")
    loaded = load_config(path)
    assert loaded == written
    assert loaded.server_key == server_key
    assert loaded.key_file == str(tmp_path / "etc" / "dryad.key")
    creds = loaded.credentials()
    assert creds is not None and creds.server_key == server_key and creds.client == pair
    assert write_default_config(tmp_path / "plain.toml").credentials() is None


@pytest.mark.parametrize("lines, field, problem", [
    (['server_key = "{key}"'], "key_file", "missing: a server_key needs this dryad's key file"),
    (['key_file = "d.key"'], "server_key", "missing: a key_file needs the server's public key"),
    (['server_key = "bad"', 'key_file = "d.key"'], "server_key", "'bad' is not a CURVE"),
])
def test_dryad_config_identity_errors_name_the_field(lines, field, problem):
    text = "\n".join(line.format(key=new_keypair().public) for line in lines)
    with pytest.raises(ConfigError) as caught:
        parse_config(f'{text}\n[caps]\nUUID = "{UUID}"\n', "dryad.toml")
    assert caught.value.field == field and problem in caught.value.problem


def test_dryad_missing_key_file_is_named_at_start(tmp_path):
    path = tmp_path / "dryad.toml"
    write_default_config(path, caps={"UUID": UUID}, server_key=new_keypair().public,
                         key_file="later.key")               # enrolled later: fine to write
    with pytest.raises(ConfigError) as caught:
        load_config(path).credentials()
    assert str(caught.value) == f"key file {tmp_path / 'later.key'}: no such file"

