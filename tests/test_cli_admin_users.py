"""`boruta admin user ...`, `boruta admin dryad ...` and `request list --mine` against the
fake client: the calls they make, the files they write (real files, real modes), and a
clear exit status and sentence for every bad input. The end-to-end runs against a real
server are elsewhere."""
from __future__ import annotations

import stat
from pathlib import Path

import pytest

pytest_plugins = ["cli_fake"]          # the fixtures `fake` and `run`
pytest.register_assert_rewrite("cli_fake")

from boruta.cli.identity import http_host, safe_file_name  # noqa: E402
from boruta.core.errors import AlreadyExistsError, NotFoundError  # noqa: E402
from boruta.core.users import token_hash  # noqa: E402
from boruta.transport.credentials import (load_client_config, new_keypair,  # noqa: E402
                                          read_key_file, write_client_config, write_key_file)
from boruta.transport.errors import KeyRefusedError, ServerUnreachableError  # noqa: E402
from cli_fake import PUB1, PUB2, W1, user_doc  # noqa: E402

SERVER = "tcp://farm.example.com:7175"
EVENTS = "tcp://farm.example.com:7177"


@pytest.fixture
def admin_config(tmp_path: Path) -> str:
    """This admin's own client config (~/.config/boruta/client.toml): server, server key,
    key file. Returns the server's public key."""
    config_dir = tmp_path / "home" / ".config" / "boruta"
    server_key = new_keypair().public
    write_key_file(config_dir / "admin.key", new_keypair())
    write_client_config(config_dir / "client.toml", server=SERVER, events=EVENTS,
                        server_key=server_key, key_file="admin.key")
    return server_key


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def written(directory: Path) -> list[str]:
    """The files a command wrote in the working directory (home is the test's own)."""
    return sorted(p.name for p in directory.iterdir() if p.name != "home")


def sent(fake, op: str) -> dict:
    ((_, kwargs),) = fake.called(op)
    return kwargs


# --------------------------------------------------------------------------- user add
def test_user_add_writes_the_key_file_and_client_config_before_the_call(
        run, fake, tmp_path: Path, admin_config: str) -> None:
    seen_at_call = []

    def user_add(**kw):
        seen_at_call.append((tmp_path / "bob.key").exists()
                            and (tmp_path / "bob.client.toml").exists())
        return user_doc(**kw)
    fake.answers["user_add"] = user_add
    r = run("admin", "user", "add", "bob", "--group", "lab", "--group", "ci",
            "--priorities", "4-16", "--max-open", "5")
    assert r.code == 0, r
    assert seen_at_call == [True]
    key = read_key_file(tmp_path / "bob.key")           # a real, private key file
    assert mode(tmp_path / "bob.key") == mode(tmp_path / "bob.client.toml") == 0o600
    assert sent(fake, "user_add") == {"name": "bob", "keys": [key.public],
                                      "groups": ["lab", "ci"], "role": None,
                                      "priorities": [4, 16], "max_open": 5}
    # The new user's config reaches the same server with the same server key, as bob.
    config = load_client_config(tmp_path / "bob.client.toml", env={})
    assert (config.server, config.events) == (SERVER, EVENTS)
    assert config.credentials.server_key == admin_config
    assert config.credentials.client == key
    assert "User bob added (role user, groups lab,ci, priorities 4-16, max open 5)." in r.out
    assert "install -D -m 600 bob.key ~/.config/boruta/bob.key" in r.out
    assert "install -D -m 600 bob.client.toml ~/.config/boruta/client.toml" in r.out


def test_user_add_json_and_out_in_a_new_directory(run, fake, tmp_path: Path,
                                                  admin_config: str) -> None:
    r = run("admin", "user", "add", "ci", "--role", "admin", "--out", "keys/robots/ci-1.key",
            "--json")
    assert r.code == 0, r
    doc = r.json()
    key_file, config_file = Path(doc["key_file"]), Path(doc["client_config"])
    assert key_file == tmp_path / "keys" / "robots" / "ci-1.key"
    assert config_file == tmp_path / "keys" / "robots" / "ci.client.toml"
    assert mode(tmp_path / "keys") == mode(tmp_path / "keys" / "robots") == 0o700
    assert doc["user"]["role"] == "admin" and doc["user"]["keys"] == [
        read_key_file(key_file).public]
    assert load_client_config(config_file, env={}).credentials.client.public == \
        doc["user"]["keys"][0]


def test_user_add_with_the_users_own_public_key_writes_nothing(run, fake,
                                                               tmp_path: Path) -> None:
    r = run("admin", "user", "add", "bob", "--public-key", PUB2)
    assert r.code == 0, r
    assert sent(fake, "user_add")["keys"] == [PUB2]
    assert r.out == "User bob added (role user, groups -, priorities 1-16, max open 1000).\n"
    assert written(tmp_path) == []


@pytest.mark.parametrize("answer, code, message", [
    (AlreadyExistsError("user 'bob' already exists"), 1, "user 'bob' already exists"),
    (KeyRefusedError("the server refused our key"), 4, "the server refused our key"),
])
def test_user_add_refused_removes_the_files_it_wrote(run, fake, tmp_path: Path,
                                                     admin_config: str, answer, code,
                                                     message) -> None:
    fake.answers["user_add"] = answer
    r = run("admin", "user", "add", "bob")
    assert (r.code, r.err) == (code, f"boruta: {message}.\n")
    assert not (tmp_path / "bob.key").exists() and not (tmp_path / "bob.client.toml").exists()


def test_user_add_unanswered_keeps_the_files_and_says_so(run, fake, tmp_path: Path,
                                                         admin_config: str) -> None:
    fake.answers["user_add"] = ServerUnreachableError("the server did not answer in 5s")
    r = run("admin", "user", "add", "bob")
    assert r.code == 3
    assert "the server did not answer in 5s; the server may have carried it out" in r.err
    assert "bob.key and bob.client.toml stay" in r.err
    assert (tmp_path / "bob.key").exists() and (tmp_path / "bob.client.toml").exists()


def test_user_add_without_a_server_key_says_the_key_is_not_used_yet(run, fake,
                                                                    tmp_path: Path) -> None:
    r = run("admin", "user", "add", "bob")               # no client config: plain text
    assert r.code == 0, r
    config = load_client_config(tmp_path / "bob.client.toml", env={})
    assert config.credentials is None and config.server == "tcp://127.0.0.1:7175"
    assert "without encryption" in r.out and "put the server's address in it" in r.out


@pytest.mark.parametrize("args, message", [
    (["Bob!"], "'Bob!' is not a user name"),
    (["bob\nx"], "is not a user name"),
    (["bob", "--priorities", "5-2"], "'5-2': the highest priority (the smaller number) "
                                     "comes first, as in 2-5"),
    (["bob", "--priorities", "0-16"], "0 is out of range: priorities run from 1"),
    (["bob", "--priorities", "4"], "'4' is not a range HIGH-LOW"),
    (["bob", "--max-open", "-1"], "-1 is out of range: max open requests run from 0"),
    (["bob", "--role", "root"], "'root' is not one of 'user', 'admin'"),
    (["bob", "--public-key", "not-a-key"], "'not-a-key' is not a CURVE public key"),
    (["bob", "--public-key", PUB1, "--out", "x.key"], "give one of them"),
])
def test_user_add_bad_input_is_a_usage_error_and_nothing_happens(run, fake, tmp_path: Path,
                                                                 args, message) -> None:
    r = run("admin", "user", "add", *args)
    assert r.code == 2, r
    assert message in r.err and r.err.startswith("boruta: ")
    assert fake.calls == []
    assert written(tmp_path) == []


@pytest.mark.parametrize("existing", ["bob.key", "bob.client.toml"])
def test_user_add_never_overwrites_a_file(run, fake, tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).write_text("someone's identity")
    r = run("admin", "user", "add", "bob", "--json")
    assert r.code == 2
    assert r.json()["error"] == {"code": "usage", "message": (
        f"{existing} already exists; not overwriting it (give --out another file, or move "
        "it away)")}
    assert (tmp_path / existing).read_text() == "someone's identity"
    assert written(tmp_path) == [existing]
    assert fake.calls == []


# --------------------------------------------------------------------------- user set, remove, list
def test_user_set_sends_only_what_changes(run, fake) -> None:
    r = run("admin", "user", "set", "alice", "--max-open", "20", "--role", "admin")
    assert r.code == 0, r
    assert sent(fake, "user_set") == {"name": "alice", "keys": None, "groups": None,
                                      "role": "admin", "priorities": None, "max_open": 20}
    assert r.out.startswith("User alice changed (role admin, groups lab, priorities 1-16, "
                            "max open 20, 1 key(s)).")
    fake.calls.clear()
    assert run("admin", "user", "set", "alice", "--no-groups").code == 0
    assert sent(fake, "user_set")["groups"] == []


def test_user_set_adds_and_removes_keys_from_the_users_list(run, fake) -> None:
    r = run("admin", "user", "set", "alice", "--add-key", PUB2, "--remove-key", PUB1, "--json")
    assert r.code == 0, r
    assert [name for name, _, _ in fake.calls] == ["user_list", "user_set"]
    assert sent(fake, "user_set")["keys"] == [PUB2]
    assert r.json()["user"]["keys"] == [PUB2]


@pytest.mark.parametrize("args, code, message", [
    (["alice"], 2, "nothing to change"),
    (["alice", "--group", "a", "--no-groups"], 2, "contradict"),
    (["alice", "--remove-key", PUB2], 2, f"user alice holds no key {PUB2}"),
    (["alice", "--remove-key", PUB1], 2, "would hold no key"),
    (["nobody", "--add-key", PUB2], 1, "there is no user 'nobody'"),
    (["alice", "--add-key", "short"], 2, "'short' is not a CURVE public key"),
    (["Alice", "--max-open", "1"], 2, "'Alice' is not a user name"),
])
def test_user_set_bad_input(run, fake, args, code, message) -> None:
    r = run("admin", "user", "set", *args)
    assert r.code == code, r
    assert message in r.err
    assert fake.called("user_set") == []


def test_user_remove_and_the_server_refusing_it(run, fake) -> None:
    r = run("admin", "user", "remove", "alice")
    assert (r.code, r.out) == (0, "User alice removed.\n")
    assert sent(fake, "user_remove") == {"name": "alice"}
    fake.answers["user_remove"] = NotFoundError("User 'ghost'")
    r = run("admin", "user", "remove", "ghost")
    assert (r.code, r.err) == (1, "boruta: User 'ghost' not found.\n")


def test_user_list_as_a_table_and_as_json(run, fake) -> None:
    r = run("admin", "user", "list")
    assert r.code == 0, r
    header, alice, ci = r.out.splitlines()
    assert header.split() == ["NAME", "ROLE", "GROUPS", "PRIORITIES", "MAX", "OPEN", "KEYS"]
    assert alice.split() == ["alice", "user", "lab", "1-16", "1000", "1"]
    assert ci.split() == ["ci", "admin", "-", "8-16", "1000", "2"]
    assert [d["name"] for d in run("admin", "user", "list", "--json").json()] == ["alice", "ci"]
    fake.answers["user_list"] = []
    assert run("admin", "user", "list").out == "No users.\n"


# --------------------------------------------------------------------------- dryads
def test_dryad_enroll_writes_its_key_file_and_prints_the_dryad_settings(
        run, fake, tmp_path: Path, admin_config: str) -> None:
    r = run("admin", "dryad", "enroll", W1)
    assert r.code == 0, r
    key = read_key_file(tmp_path / f"{W1}.key")
    assert mode(tmp_path / f"{W1}.key") == 0o600
    assert sent(fake, "dryad_enroll") == {"uuid": W1, "key": key.public}
    assert f'  server_key = "{admin_config}"' in r.out.splitlines()
    assert f'  key_file = "{W1}.key"' in r.out.splitlines()


def test_dryad_enroll_makes_a_safe_file_name_of_any_uuid(run, fake, tmp_path: Path) -> None:
    r = run("admin", "dryad", "enroll", "../rack 1/board", "--json")
    assert r.code == 0, r
    key_file = Path(r.json()["key_file"])
    assert key_file.parent == tmp_path and key_file.name.startswith("_rack_1_board-")
    assert r.json()["enrolment"] == {"uuid": "../rack 1/board",
                                     "key": read_key_file(key_file).public}
    assert safe_file_name("a/b") != safe_file_name("a_b") == "a_b"
    assert safe_file_name("...").startswith("dryad-")


def test_dryad_enroll_with_its_own_key_and_the_failures(run, fake, tmp_path: Path) -> None:
    r = run("admin", "dryad", "enroll", W1, "--public-key", PUB2)
    assert r.code == 0 and sent(fake, "dryad_enroll") == {"uuid": W1, "key": PUB2}
    assert not (tmp_path / f"{W1}.key").exists()

    fake.answers["dryad_enroll"] = AlreadyExistsError("worker is already enrolled")
    r = run("admin", "dryad", "enroll", "w2")
    assert (r.code, r.err) == (1, "boruta: worker is already enrolled.\n")
    assert not (tmp_path / "w2.key").exists()

    (tmp_path / "w3.key").write_text("kept")
    r = run("admin", "dryad", "enroll", "w3")
    assert r.code == 2 and "w3.key already exists; not overwriting it" in r.err
    assert (tmp_path / "w3.key").read_text() == "kept"
    r = run("admin", "dryad", "enroll", "w4", "--public-key", "nope")
    assert r.code == 2 and "'nope' is not a CURVE public key" in r.err
    assert run("admin", "dryad", "enroll", " ").code == 2


def test_dryad_revoke_and_list(run, fake) -> None:
    r = run("admin", "dryad", "revoke", W1)
    assert (r.code, r.out) == (0, f"Enrolment of worker {W1} revoked.\n")
    assert sent(fake, "dryad_revoke") == {"uuid": W1}
    r = run("admin", "dryad", "list")
    assert r.out.splitlines()[1].split() == [W1, PUB2]
    assert run("admin", "dryad", "list", "--json").json() == [{"uuid": W1, "key": PUB2}]
    fake.answers["dryad_list"] = []
    assert run("admin", "dryad", "list").out == "No dryads enrolled.\n"


# --------------------------------------------------------------------------- user token
def test_user_token_sends_only_the_hash_and_prints_the_token_once(run, fake,
                                                                  admin_config: str) -> None:
    r = run("admin", "user", "token", "alice")
    assert r.code == 0, r
    args = sent(fake, "user_token")
    assert set(args) == {"name", "token_hash"} and args["name"] == "alice"
    lines = r.out.splitlines()
    token = lines[1].strip()
    assert len(token) == 43 and set(token) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")   # 32 bytes
    assert args["token_hash"] == token_hash(token) and token not in str(fake.calls)
    assert f'client.NewBorutaClient("http://alice:{token}@farm.example.com:8487")' in r.out
    assert (f'curl -H "Authorization: Bearer {token}" '
            "http://farm.example.com:8487/api/v1/workers/") in r.out
    assert "without encryption" not in r.out
    again = run("admin", "user", "token", "alice", "--json").json()
    assert set(again) == {"user", "token", "url"} and again["token"] != token
    assert again["url"] == f"http://alice:{again['token']}@farm.example.com:8487"
    assert again["user"]["tokens"] == [token_hash(again["token"])]


def test_user_token_on_a_plain_text_server_says_the_token_is_not_checked(run, fake) -> None:
    r = run("admin", "user", "token", "bob", "--json")       # no client config: plain text
    assert r.json()["url"].endswith("@127.0.0.1:8487")
    r = run("admin", "user", "token", "bob")
    assert "without encryption" in r.out and "the token is not checked yet" in r.out


def test_user_token_revoke_takes_the_token_or_its_hash(run, fake) -> None:
    token = "q5wJ3xv0m1YV0b4k2m5dVq3R1p6N1w7uVQmJbX8fLhA"
    r = run("admin", "user", "token", "alice", "--revoke", token)
    assert r.code == 0, r
    assert sent(fake, "user_token") == {"name": "alice", "token_hash": token_hash(token),
                                        "revoke": True}
    assert r.out == f"Token {token_hash(token)[:8]}... of alice revoked.\n"
    fake.calls.clear()
    r = run("admin", "user", "token", "alice", "--revoke", token_hash(token), "--json")
    assert sent(fake, "user_token")["token_hash"] == token_hash(token)
    assert r.json() == {"user": user_doc("alice"), "revoked": token_hash(token)}


def test_user_token_refused_or_unanswered_shows_no_token(run, fake) -> None:
    fake.answers["user_token"] = NotFoundError("User 'carol'")
    r = run("admin", "user", "token", "carol")
    assert (r.code, r.out, r.err) == (1, "", "boruta: User 'carol' not found.\n")
    fake.answers["user_token"] = ServerUnreachableError("the server did not answer in 5s")
    r = run("admin", "user", "token", "carol")
    hashed = fake.calls[-1][2]["token_hash"]
    assert (r.code, r.out) == (3, "")
    assert r.err == ("boruta: the server did not answer in 5s; the server may have taken the "
                     "token, which is not shown: revoke it with `boruta admin user token carol "
                     f"--revoke {hashed}` and make another.\n")
    assert run("admin", "user", "token", "Carol").code == 2
    assert len(fake.calls) == 2                                 # the bad name sent nothing


@pytest.mark.parametrize("server, host", [
    ("tcp://farm.example.com:7175", "farm.example.com:8487"),
    ("tcp://10.0.0.7:9000", "10.0.0.7:8487"),
    ("tcp://[fd00::7]:7175", "[fd00::7]:8487"),
    ("tcp://*:7175", "127.0.0.1:8487"),
    ("tcp://0.0.0.0:7175", "127.0.0.1:8487"),
    ("ipc:///run/boruta/client.sock", "127.0.0.1:8487"),
])
def test_the_http_host_is_the_client_endpoints_host_at_the_http_port(server, host) -> None:
    assert http_host(server) == host


# --------------------------------------------------------------------------- request list --mine
def test_request_list_mine_filters_by_the_callers_name(run, fake) -> None:
    r = run("request", "list", "--mine", "--state", "wait")
    assert r.code == 0, r
    ((flt, _, _), _) = fake.called("list_requests")[0]
    assert flt.owners == ("alice",) and [str(s) for s in flt.states] == ["WAITING"]
    fake.calls.clear()
    assert run("request", "list").code == 0
    assert fake.called("list_requests")[0][0][0] is None        # no filter without --mine


def test_request_list_mine_against_a_server_that_names_no_user(run, fake) -> None:
    fake.answers["ping"] = {"server": "0.3.0", "protocol": 1}
    r = run("request", "list", "--mine")
    assert r.code == 1
    assert "the server does not say which user you are" in r.err
    assert fake.called("list_requests") == []


def test_the_owners_filter_on_the_wire() -> None:
    from boruta.core.errors import BadArgumentError
    from boruta.core.types import RequestFilter
    from boruta.transport.arguments import request_filter_in, request_filter_out
    flt = RequestFilter(ids=(7,), owners=("alice", "ci"))
    assert request_filter_in("filter", request_filter_out(flt)) == flt
    # Without owners the field is left out: a server from before owners refuses it.
    assert "owners" not in request_filter_out(RequestFilter(ids=(7,)))
    with pytest.raises(BadArgumentError, match="filter.owners"):
        request_filter_in("filter", {"owners": ["alice", 7]})
