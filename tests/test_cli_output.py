"""What the `boruta` command prints for people and machines (boruta/cli/output.py)."""
from __future__ import annotations

import io
import re
import shlex
import subprocess

import pytest

from boruta.cli import output as out
from boruta.core.types import WorkerInfo, WorkerState


def test_worker_document_is_the_protocols():
    info = WorkerInfo("w", WorkerState.IDLE, ("lab",), {"UUID": "w"}, None, "h:7176", "h:22")
    assert out.to_jsonable(info) == {"uuid": "w", "state": "IDLE", "groups": ["lab"],
                                     "caps": {"UUID": "w"}, "fail_reason": None,
                                     "dryad_address": "h:7176", "ssh_address": "h:22"}
    assert out.list_doc([info], None)["items"] == [out.to_jsonable(info)]


# --------------------------------------------------------------------------- the ssh line

HOSTILE = ["$(touch PWNED)", "`touch PWNED`", "a; touch PWNED", "a && touch PWNED", "a b",
           "it's", '"quoted"', "a|touch PWNED", "${IFS}touch${IFS}PWNED", "*", "~root", "a>PWNED"]


@pytest.mark.parametrize("value", HOSTILE)
def test_ssh_line_is_exactly_the_argv_whatever_the_values(value, tmp_path):
    cases = [("/k/" + value, "10.0.0.5", "boruta-user"),          # a hostile key path
             ("/k/job.key", "10.0.0.5", "u" + value),              # a hostile user name
             ("/k/job.key", value, "boruta-user")]                 # a hostile host
    for key_file, host, user in cases:
        line = out.ssh_command(key_file, host, 2222, user)
        assert "\n" not in line
        assert shlex.split(line) == ["ssh", "-i", key_file, "-p", "2222", f"{user}@{host}"]


def test_eval_of_the_last_line_runs_only_ssh(tmp_path):
    """What --help suggests, in a real shell: `ssh` is a function that prints its arguments."""
    user = "u$(touch PWNED);touch PWNED`touch PWNED`'"
    stream = io.StringIO()
    out.print_access(7, "w", "10.0.0.5", 2222, user, "/k/a key", "ssh-ed25519", stream)
    printed = tmp_path / "printed"
    printed.write_text(stream.getvalue())
    script = 'ssh() { printf "%s\\0" "$@"; }; eval "$(tail -n 1 "$1")"'
    done = subprocess.run(["sh", "-c", script, "sh", str(printed)], cwd=tmp_path,
                          capture_output=True, check=True)
    assert done.stdout.split(b"\0")[:-1] == [
        b"-i", b"/k/a key", b"-p", b"2222", f"{user}@10.0.0.5".encode()]
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("key_file, host, user, words", [
    ("/k", "10.0.0.5", "root\n touch PWNED", "user name 'root\\n touch PWNED' holds a control"),
    ("/k", "10.0.0.5", "root\r", "control character"),
    ("/k", "10.0.0.5", "ro\x1b]0;x\x07ot", "control character"),
    ("/k", "h\nx", "u", "the host 'h\\nx' holds a control character"),
    ("/k\n; touch PWNED", "h", "u", "the key file"),
    ("/k", "h", "-oProxyCommand=touch PWNED", "starts with '-'"),
])
def test_ssh_line_refuses_what_no_quoting_makes_one_command(key_file, host, user, words):
    with pytest.raises(out.AccessLineError, match=re.escape(words)):
        out.ssh_command(key_file, host, 22, user)
    stream = io.StringIO()
    with pytest.raises(out.AccessLineError):
        out.print_access(7, None, host, 22, user, key_file, None, stream)
    assert stream.getvalue() == ""                      # nothing half printed
