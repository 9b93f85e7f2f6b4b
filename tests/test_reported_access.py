"""`boruta request acquire` prints an access only when its ssh line is one safe command."""
from __future__ import annotations

import types

import pytest

pytest_plugins = ["cli_fake"]          # the fixtures `fake` and `run`
pytest.register_assert_rewrite("cli_fake")
from cli_fake import W1, access  # noqa: E402


def hostile_access(username: str = "boruta-user", host: str = "10.0.0.5") -> object:
    good = access()
    return types.SimpleNamespace(**{**vars(good), "username": username, "addr": (host, 2222)})


def test_a_user_name_with_a_newline_is_refused_and_no_line_printed(run, fake, tmp_path):
    fake.answers["acquire_worker"] = hostile_access("root\n touch PWNED; echo '")
    r = run("request", "acquire", "7")
    assert r.code == 1 and r.out == "", r
    assert "unsafe to print" in r.err and "control character" in r.err
    assert not (tmp_path / "boruta-7.key").exists()          # no key left for a refused access
    r = run("request", "acquire", "7", "--json")
    assert r.code == 1 and r.json()["error"]["code"] == "unsafe_access"


def test_a_user_name_read_as_an_ssh_option_is_refused(run, fake):
    fake.answers["acquire_worker"] = hostile_access("-oProxyCommand=touch PWNED")
    r = run("request", "acquire", "7", "--json")
    assert r.code == 1 and r.json()["error"]["code"] == "unsafe_access"
    assert "starts with '-'" in r.json()["error"]["message"]


def test_metacharacters_are_quoted_not_refused(run, fake):
    fake.answers["acquire_worker"] = hostile_access("u$(touch PWNED)", "h;x")
    r = run("request", "acquire", "7")
    assert r.code == 0, r
    assert r.out.splitlines()[-1] == "ssh -i ./boruta-7.key -p 2222 'u$(touch PWNED)@h;x'"
    assert W1 in r.out


def test_a_key_path_with_a_newline_is_refused_before_the_call(run, fake):
    r = run("request", "acquire", "7", "--key-out", "k\n; touch PWNED")
    assert r.code == 2 and "control character" in r.err, r
    assert fake.called("acquire_worker") == []
