"""`make demo` works: a secure server with no setup, simulated boards that enrol themselves,
and clients (the admin and two users it adds) whose jobs log in to their boards.

Plain `python -m boruta.sim.demo` is a farm to use until Ctrl-C: the commands it prints
are run here as a person would paste them (ssh, `boruta request new --wait`, the example
tests); `--duration` is the scripted run that exits by itself."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from boruta.cli.output import AccessLineError
from boruta.core.types import ReqState, WorkerState
from boruta.sim.demo import BOARDS, SSH_OPTIONS, HeldBoard, commands_to_try, free, ssh_line
from boruta.testing.processes import Child, ChildError
from boruta.transport.client import Client
from boruta.transport.credentials import load_client_config
from e2e_helpers import ROOT, child_env, ssh_exec, wait_until

BOARD_COUNT = sum(count for count, _ in BOARDS)
SSH = Path("/usr/bin/ssh")
SETSID = [path] if (path := shutil.which("setsid")) else []
RUNNING = "The farm is running."


@pytest.mark.slow
def test_the_scripted_demo_runs_jobs_on_its_boards(tmp_path: Path) -> None:
    home = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_STATE_HOME": str(tmp_path / "state")}
    done = subprocess.run([sys.executable, "-m", "boruta.sim.demo", "--duration", "2",
                           "--clients", "3"], cwd=ROOT, env=child_env(COLUMNS="200", **home),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    filed = re.search(r"requests filed\s*\W\s*(\d+)", done.stdout)
    ran = re.search(r"commands run on boards\s*\W\s*(\d+)", done.stdout)
    assert filed and ran, done.stdout[-3000:]
    assert int(ran.group(1)) >= 2 and int(filed.group(1)) >= int(ran.group(1))
    assert f"{BOARD_COUNT} dryads enrolled by the admin" in done.stdout, done.stdout[:3000]
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/ \(token [\w-]{43}\); "
                     r"metrics: http://127\.0\.0\.1:\d+/metrics", done.stdout), done.stdout[:3000]
    assert "bob asks for priority 8: priority_not_allowed" in done.stdout, done.stdout[:3000]
    for who, low, high in (("admin", 1, 16), ("alice", 2, 8), ("bob", 9, 16)):
        jobs = re.search(rf"as {who} \(priorities {low}-{high}\)\s*\W\s*(\d+) requests, "
                         rf"(\d+) jobs done", done.stdout)
        assert jobs and int(jobs.group(2)) >= 1, (who, done.stdout[-3000:])
    assert "error" not in done.stdout.split("summary")[-1], done.stdout[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    # Its keys and client config were its own: nothing in the user's config or state.
    assert not any(Path(d).exists() for d in home.values()), list(tmp_path.rglob("*"))


@pytest.mark.slow
def test_the_demo_is_a_farm_to_use_until_ctrl_c(tmp_path: Path) -> None:
    home = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_STATE_HOME": str(tmp_path / "state")}
    # In a session of its own, to get Ctrl-C as a terminal sends it: to the whole process
    # group, the demo's server and boards included.
    demo = Child([*SETSID, sys.executable, "-m", "boruta.sim.demo"], tmp_path / "demo.stderr",
                 env=child_env(COLUMNS="100", **home))     # narrow: commands must not wrap
    try:
        printed = lines_until(demo, RUNNING)
        commands = [line.strip() for line in printed if line.startswith("  ")
                    and not line.strip().startswith("#")]
        ssh = one(commands, lambda c: c.startswith("ssh "))
        request_new = one(commands, lambda c: "request new --caps device_type=rpi4 --wait" in c)
        one(commands, lambda c: c.endswith(" top"))
        pytest_line = one(commands, lambda c: " -m pytest " in c)
        config_path = Path(one(shlex.split(request_new), lambda w: w.startswith(
            "BORUTA_CLIENT_CONFIG=")).split("=", 1)[1])
        state_dir = config_path.parent

        # The held board's key is private, and the printed line logs in to it.
        key_file = Path(shlex.split(ssh)[shlex.split(ssh).index("-i") + 1])
        assert key_file.parent == state_dir and key_file.stat().st_mode & 0o777 == 0o600
        assert run_ssh_line(ssh, "echo $((6*7))") == "42"

        config = load_client_config(config_path, env={})
        admin = Client(config.server, credentials=config.credentials, timeout=10.0)
        try:
            # The light workload runs as the users the demo added, and leaves most boards
            # free: busy are the demo's own board and, per client (3), one in use and at
            # most one being cleaned after the last job.
            wait_until(lambda: {r.owner.name for r in admin.list_requests(None, None, None)[0]}
                       & {"alice", "bob"}, 30, 0.2, "a workload job as alice or bob")
            workers, _ = admin.list_workers(None, None, None)
            assert len(workers) == BOARD_COUNT
            assert sum(w.state is WorkerState.IDLE for w in workers) >= BOARD_COUNT - 7

            # `boruta request new ... --wait`, pasted: a board of one's own, until Ctrl-C.
            mine = run_pasted(request_new, tmp_path, tmp_path / "request.stderr")
            try:
                req_id = int(mine.expect("", 30))
                assert run_ssh_line(mine.expect("ssh ", 30), "echo $((6*7))", cwd=tmp_path,
                                    new_host_key=True) == "42"
                assert mine.alive()                     # it holds the board
                mine.stop(signal.SIGINT, timeout=20)
            finally:
                mine.close()
            assert "Traceback" not in mine.log(), mine.log()
            assert admin.get_request_info(req_id).state is ReqState.DONE

            # The example tests, pasted, pass on the demo's boards.
            tests = subprocess.run(shlex.split(pytest_line) + ["-p", "no:cacheprovider"],
                                   cwd=tmp_path, env=child_env(**home), capture_output=True,
                                   text=True, timeout=120)
            assert tests.returncode == 0 and "3 passed" in tests.stdout, \
                tests.stdout[-3000:] + tests.stderr[-3000:]
        finally:
            admin.close()

        # Ctrl-C: a clean stop, the summary (the server outlived the signal), and nothing
        # left behind: no server, no boards, no state directory.
        if SETSID:
            os.killpg(demo.pid, signal.SIGINT)
        else:
            demo.proc.send_signal(signal.SIGINT)
        assert demo.proc.wait(30) == 0, demo.log()[-3000:]
        rest = lines_until(demo, None)
        assert any("summary" in line for line in rest), rest
        assert re.search(r"requests filed\s*\W\s*\d+", "\n".join(rest)), rest
        assert "Traceback" not in demo.log(), demo.log()[-3000:]
        assert not state_dir.exists(), list(state_dir.rglob("*"))
        board_port = shlex.split(ssh)[shlex.split(ssh).index("-p") + 1]
        assert free(config.server) and free(f"127.0.0.1:{board_port}")
        assert not any(Path(d).exists() for d in home.values()), list(tmp_path.rglob("*"))
    finally:
        demo.close()


def test_the_printed_commands_carry_their_client_config_and_quote_paths(tmp_path: Path) -> None:
    config = tmp_path / "a dir" / "client.toml"
    key = tmp_path / "a dir" / "boruta-7.key"
    held = HeldBoard(7, key, ssh_line(key, "127.0.0.1", 2222, "boruta-user"))
    commands = dict(commands_to_try(config, held, ["/opt/bin/boruta"], tmp_path / "t.py"))
    words = [shlex.split(command) for command in commands.values()]
    assert ["BORUTA_CLIENT_CONFIG=" + str(config), "/opt/bin/boruta", "request", "new",
            "--caps", "device_type=rpi4", "--wait"] in words
    assert ["BORUTA_CLIENT_CONFIG=" + str(config), "/opt/bin/boruta", "top"] in words
    assert [sys.executable, "-m", "pytest", str(tmp_path / "t.py"), "--boruta-client-config",
            str(config)] in words
    assert ["ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "IdentitiesOnly=yes", "-i", str(key), "-p", "2222",
            "boruta-user@127.0.0.1"] in words
    assert not any(" -m pytest " in command for _, command in commands_to_try(config, held, ["b"],
                                                                             None))
    with pytest.raises(AccessLineError):
        ssh_line(key, "127.0.0.1", 2222, "-oProxyCommand=x")


# ----------------------------------------------------------------------------- helpers
def lines_until(child: Child, last: str | None, timeout: float = 60.0) -> list[str]:
    """The child's stdout lines up to the one that starts with `last` (None: to its end)."""
    lines: list[str] = []
    while True:
        try:
            line = child.expect("", timeout)
        except ChildError:
            if last is None and not child.alive():
                return lines
            raise
        lines.append(line)
        if last is not None and line.startswith(last):
            return lines


def one(items: list[str], test) -> str:
    found = [item for item in items if test(item)]
    assert len(found) == 1, items
    return found[0]


def run_pasted(line: str, cwd: Path, log: Path) -> Child:
    """A printed `NAME=value ... command` line as a shell would run it (no shell needed)."""
    words = shlex.split(line)
    assignments = {}
    while "=" in words[0] and not words[0].startswith("/"):
        name, value = words.pop(0).split("=", 1)
        assignments[name] = value
    return Child(words, log, env=child_env(**assignments), cwd=cwd)


def run_ssh_line(line: str, command: str, cwd: Path | None = None,
                 new_host_key: bool = False) -> str:
    """The command's output through a printed ssh line: with the ssh client when there
    is one (no agent, no terminal to prompt on), else with paramiko, from the same words.
    `new_host_key`: a line that does not say how to take a board's new host key (the CLI's)
    gets the demo's options, so that nothing is written to ~/.ssh/known_hosts."""
    words = shlex.split(line)
    if new_host_key:
        words[1:1] = list(SSH_OPTIONS)
    if SSH.exists():
        env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
        done = subprocess.run([str(SSH), *words[1:], command], cwd=cwd, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=60, start_new_session=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()
    user, host = words[-1].split("@")
    key = Path(cwd or ".", words[words.index("-i") + 1])
    return ssh_exec(host, int(words[words.index("-p") + 1]), user, key, command).strip()
