"""The README's quickstart, run as written: server, simulated boards, a request, a real SSH login.

The commands are read from README.md's Quickstart block and run one by one
(so the two cannot drift). The only change is where things listen: the
server binds loopback ports the system picks and tunnels on loopback, so a
test run never collides with a farm on the default ports; the CLI finds it
through BORUTA_SERVER and the boards through --server.

With no setup: the server writes its admin's client config where `boruta`
looks for it ($XDG_CONFIG_HOME/boruta/client.toml, the test session's own
directory, see conftest.py), the CLI calls as that admin and the simulated
boards enrol themselves through it.
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import paramiko
import pytest

from e2e_helpers import ROOT, Child, child_env, ssh_exec, wait_until

from boruta.testing.processes import LOOPBACK, parse_fields
from boruta.transport.client import Client

pytestmark = pytest.mark.slow

#: What the Quickstart says (comments dropped). A change to the README's commands
#: must change this list too, and then the run below checks the new commands work.
QUICKSTART = [
    "make build",
    ".venv/bin/boruta server --state-dir :memory: &",
    ".venv/bin/python -m boruta.sim.dryads --count 5 --caps device_type=rpi4 --ssh &",
    ".venv/bin/boruta worker list",
    ".venv/bin/boruta worker set-state <UUID> IDLE",
    ".venv/bin/boruta request new --caps device_type=rpi4 --priority 4 --wait &",
    "ssh -i ./boruta-1.key -p <PORT> boruta-user@127.0.0.1",
    ".venv/bin/boruta request close 1",
]
UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
COMMAND = "echo quickstart $((6 * 7)) in $(pwd)"


def readme_quickstart() -> list[str]:
    """The commands of README.md's Quickstart code block, without comments."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "the Quickstart has no ```sh block"
    lines = (line.split("  #", 1)[0].strip() for line in block.group(1).splitlines())
    return [line for line in lines if line]


def argv(line: str) -> list[str]:
    """A README line as this interpreter runs it (`.venv/bin/...` is this venv)."""
    words = shlex.split(line.removesuffix("&"))
    if words[0] == ".venv/bin/boruta":
        return [sys.executable, "-m", "boruta.cli", *words[1:]]
    if words[0] == ".venv/bin/python":
        return [sys.executable, *words[1:]]
    return words


def test_readme_quickstart_says_these_commands() -> None:
    assert readme_quickstart() == QUICKSTART


def test_quickstart_ends_in_a_working_ssh_session(tmp_path: Path) -> None:
    lines = iter(readme_quickstart())
    assert next(lines) == "make build"                   # this interpreter is the built venv
    settings = [item for key, value in LOOPBACK.items() for item in ("--set", f"{key}={value}")]
    server = Child(argv(next(lines)) + settings, tmp_path / "server.log", cwd=tmp_path)
    boards: Child | None = None
    holder: Child | None = None
    try:
        endpoints = parse_fields(server.expect("boruta server ready"))
        env = child_env(BORUTA_SERVER=endpoints["listen"])

        def run(line: str) -> str:
            done = subprocess.run(argv(line), cwd=tmp_path, env=env, capture_output=True,
                                  text=True, timeout=60)
            assert done.returncode == 0, (line, done.stdout, done.stderr)
            return done.stdout

        boards = Child(argv(next(lines)) + ["--server", endpoints["dryad"]],
                       tmp_path / "boards.log", cwd=tmp_path)
        boards.expect("simdryad ready count=5")
        assert "enrolled 5 dryad(s)" in boards.log()
        ssh_of = {}                                       # the boards' own sshd addresses
        for _ in range(5):
            _, uuid, ssh = boards.expect("dryad ").split()
            ssh_of[uuid] = ssh.removeprefix("ssh=")

        listing = run(next(lines))                        # worker list
        uuids = UUID.findall(listing)
        assert sorted(uuids) == sorted(ssh_of)
        assert listing.count("MAINTENANCE") == 5
        worker = uuids[0]
        run(next(lines).replace("<UUID>", worker))        # worker set-state <UUID> IDLE

        holder = Child(argv(next(lines)), tmp_path / "holder.log", cwd=tmp_path, env=env)
        printed = [holder.expect("1")]                    # request new --wait &: the ID,
        printed += [holder.expect("Request 1 is IN PROGRESS"), holder.expect("ssh ")]
        assert printed[0] == "1"
        assert f"Request 1 is IN PROGRESS on worker {worker}." in printed
        key_file = tmp_path / "boruta-1.key"
        assert key_file.stat().st_mode & 0o777 == 0o600

        ssh_line = next(lines)
        port = re.fullmatch(r"ssh -i \./boruta-1\.key -p (\d+) boruta-user@127\.0\.0\.1",
                            printed[-1])
        assert port is not None, printed
        assert printed[-1] == ssh_line.replace("<PORT>", port.group(1))
        words = shlex.split(printed[-1])
        user, host = words[-1].split("@")
        output = ssh_exec(host, int(port.group(1)), user, key_file, COMMAND)
        assert output.startswith("quickstart 42 in /")
        if shutil.which("ssh"):           # OpenSSH too, where installed: it once hung here
            openssh = subprocess.run(
                [*words[:-1], "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                 "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes",
                 words[-1], COMMAND], cwd=tmp_path, capture_output=True, text=True, timeout=30)
            assert (openssh.returncode, openssh.stdout) == (0, output), openssh.stderr

        run(next(lines))                                  # request close 1
        assert holder.proc.wait(15) == 0                  # the holder saw its request end
        assert "Request 1 ended: DONE." in holder.log()
        holder.close()
        assert next(lines, None) is None
        client = Client.from_config(timeout=10)          # the admin, as the CLI was
        try:
            assert str(client.get_request_info(1).state) == "DONE"
            wait_until(lambda: str(client.get_worker_info(worker).state) == "IDLE", 20,
                       what="the worker IDLE again, prepared with a fresh key")
        finally:
            client.close()
        board_host, board_port = ssh_of[worker].rsplit(":", 1)
        with pytest.raises(paramiko.AuthenticationException):     # the job's key is gone
            ssh_exec(board_host, int(board_port), user, key_file, "true")
        assert boards.stop() == 0
        assert server.stop() == 0
    finally:
        for child in (holder, boards):
            if child is not None:
                child.close()
        server.close()
    assert "Traceback" not in server.log() + boards.log()

