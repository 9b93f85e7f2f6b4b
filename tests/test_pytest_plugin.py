"""The pytest plugin: test runs (pytest in a child process) that get boards from a live farm.

The farm is a real server and simulated boards running the dryad's embedded
SSH server, so `run` is a real command over SSH through the job's tunnel.
However a test run ends (a pass, a failure, Ctrl-C, SIGKILL, no board in
time) its request must end closed and its board go back to IDLE.
"""
from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from boruta.core.types import ReqState, WorkerState
from boruta.testing.processes import Child
from boruta.transport.credentials import new_keypair, write_client_config, write_key_file
from boruta.transport.errors import WaitTimeoutError
from e2e_helpers import ServerProcess, child_env, unique_caps, wait_until

pytest_plugins = ["pytester"]

JOB_TIMEOUT = 4.0               # seconds: a test that holds a board longer needs prolonging
ACQUIRED = re.compile(r"boruta: request (\d+) \(.*\) IN PROGRESS on worker (\S+) after ")
USAGE_ERROR = 4                 # pytest's exit status for a usage error
INTERRUPTED = 2
#: Plugins that cost a nested run time and have nothing to do with this one.
UNRELATED_PLUGINS = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")


@dataclass
class Farm:
    server: ServerProcess
    caps: dict[str, str]            # what the two IDLE boards have
    parked_caps: dict[str, str]     # what only a board kept in MAINTENANCE has
    admin: Any
    events: Any                     # every event of the server, from before any test
    ends: dict[int, tuple[str, str]] = field(default_factory=dict)

    def args(self) -> list[str]:
        return ["--boruta-server", self.server.listen,
                "--boruta-client-config", str(self.server.client_config)]

    def marker(self) -> str:
        caps = ", ".join(f"{k}={v!r}" for k, v in self.caps.items())
        return f"@pytest.mark.boruta({caps})"

    def wish(self, priority: int = 8) -> str:
        """The caps and priority as the plugin's lines say them."""
        caps = " ".join(f"{k}={v}" for k, v in self.caps.items())
        return f"({caps}, priority {priority})"

    def state(self, req_id: int) -> ReqState:
        return self.admin.get_request_info(req_id).state

    def end_of(self, req_id: int, within: float) -> tuple[str, str]:
        """How the request ended, (state, reason), from its event."""
        deadline = time.monotonic() + within
        while req_id not in self.ends:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"request {req_id} did not end within {within:g}s; "
                                   f"it is {self.state(req_id)}")
            try:
                doc = self.events.next(timeout=left)
            except WaitTimeoutError:
                continue
            if doc.get("kind") == "request" and ReqState(doc["state"]).terminal:
                self.ends[doc["id"]] = (doc["state"], doc["reason"])
        return self.ends[req_id]

    def assert_closed(self, req_id: int, state: ReqState = ReqState.DONE,
                      reason: str = "closed by owner", within: float = 10.0) -> None:
        """The request ended in `state` for `reason`, and its board (if it had one) is
        IDLE again."""
        ended, why = self.end_of(req_id, within)
        assert (ended, why.startswith(reason)) == (state, True), (ended, why)
        job = self.admin.get_request_info(req_id).job
        if job is not None:
            wait_until(lambda: self.admin.get_worker_info(job.worker_uuid).state
                       is WorkerState.IDLE, 15, what=f"worker {job.worker_uuid} IDLE again")


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    server = ServerProcess(tmp_path_factory.mktemp("plugin") / "server.log",
                           job_timeout=JOB_TIMEOUT, lease_min=1)
    server.start()
    caps, parked = unique_caps(), unique_caps()
    boards = server.farm(3, caps=lambda i: parked if i == 2 else caps, ssh=True)
    admin = server.client()
    for board in boards.dryads[:2]:
        admin.set_state(board.uuid, "IDLE")
    for board in boards.dryads[:2]:
        wait_until(lambda: admin.get_worker_info(board.uuid).state is WorkerState.IDLE, 15,
                   what=f"board {board.uuid} IDLE")
    yield Farm(server, caps, parked, admin, admin.events())
    server.close()


def write_tests(where: Path, source: str, ini: str = "") -> Path:
    """A test file (and a pytest.ini, so the child's rootdir and ini file are these)."""
    (where / "pytest.ini").write_text("[pytest]\n" + textwrap.dedent(ini))
    path = where / "test_board.py"
    path.write_text("import pytest\n" + textwrap.dedent(source))
    return path


def pytest_command(*args: str) -> list[str]:
    """pytest in verbose mode: the plugin then says which request got which worker."""
    return [sys.executable, "-m", "pytest", *UNRELATED_PLUGINS, "-v", "-rA", *args]


def run_pytest(where: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(pytest_command(*args), cwd=where, capture_output=True, text=True,
                          env=child_env(HOME=str(where), **env), timeout=120)
    assert "INTERNALERROR" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return proc


def acquired(output: str) -> list[int]:
    """The IDs of the requests that got a board, from the plugin's lines."""
    return [int(m.group(1)) for m in ACQUIRED.finditer(output)]


def outcome(output: str) -> str:
    return output.strip().splitlines()[-1]


def blocking_run(where: Path, farm: Farm, *extra: str) -> tuple[Child, int]:
    """A child pytest whose test holds a board and blocks in a command on it."""
    ready = where / "holding"
    write_tests(where, f"""
        {farm.marker()}
        def test_holds_the_board(boruta_device):
            open({str(ready)!r}, "w").write(str(boruta_device.request_id))
            boruta_device.run("sleep 60")
        """)
    child = Child(pytest_command(*farm.args(), *extra), where / "child.log", cwd=where,
                  env=child_env(HOME=str(where)))
    try:
        line = child.expect("boruta: request ", 60)
        while not ACQUIRED.search(line):            # a board still being prepared
            line = child.expect("boruta: request ", 60)
        req_id = int(ACQUIRED.search(line).group(1))
        wait_until(ready.exists, 30, what="the test body holding the board")
        wait_until(lambda: farm.state(req_id) is ReqState.INPROGRESS, 10, what="IN PROGRESS")
    except BaseException:
        child.close()
        raise
    return child, req_id


# ---------------------------------------------------------------------- with a farm
@pytest.mark.slow
def test_a_passing_test_runs_commands_and_copies_files_then_closes(
        farm: Farm, tmp_path: Path) -> None:
    write_tests(tmp_path, f"""
        import os
        from boruta.device import CommandTimeout

        {farm.marker()}
        def test_commands(boruta_device):
            ok = boruta_device.run("echo $((6 * 7)); echo warn >&2")
            assert (ok.exit_status, ok.stdout, ok.stderr) == (0, "42\\n", "warn\\n")
            assert boruta_device.run("exit 3").exit_status == 3
            with pytest.raises(CommandTimeout) as late:
                boruta_device.run("echo started; sleep 30", timeout=1)
            assert late.value.stdout == "started\\n"
            assert boruta_device.access.username == "boruta-user"
            assert boruta_device.ssh.get_transport().is_active()

        {farm.marker()}
        def test_files(boruta_device, tmp_path):
            sent = tmp_path / "sent.bin"
            sent.write_bytes(os.urandom(100_000))
            boruta_device.put(sent, "payload.bin")
            assert boruta_device.run("wc -c < payload.bin").stdout.strip() == "100000"
            boruta_device.run("cp payload.bin back.bin")
            boruta_device.get("back.bin", tmp_path / "back.bin")
            assert (tmp_path / "back.bin").read_bytes() == sent.read_bytes()
        """)
    proc = run_pytest(tmp_path, *farm.args())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in outcome(proc.stdout)
    ids = acquired(proc.stdout)
    assert len(set(ids)) == 2, proc.stdout
    for req_id in ids:
        farm.assert_closed(req_id)


@pytest.mark.slow
def test_a_failing_test_closes_its_request(farm: Farm, tmp_path: Path) -> None:
    caps = ", ".join(f"{k!r}: {v!r}" for k, v in farm.caps.items())
    write_tests(tmp_path, f"""
        @pytest.mark.boruta(caps={{{caps}}}, priority=2)
        def test_fails(boruta_device):
            assert boruta_device.run("echo no").stdout == "yes\\n"
        """)
    proc = run_pytest(tmp_path, *farm.args())
    assert proc.returncode == 1 and "1 failed" in outcome(proc.stdout), proc.stdout
    [req_id] = acquired(proc.stdout)
    assert farm.admin.get_request_info(req_id).priority == 2
    farm.assert_closed(req_id)


@pytest.mark.slow
def test_ctrl_c_in_the_test_body_closes_the_request(farm: Farm, tmp_path: Path) -> None:
    child, req_id = blocking_run(tmp_path, farm)
    try:
        assert child.stop(signal.SIGINT, timeout=30) == INTERRUPTED
    finally:
        child.close()
    farm.assert_closed(req_id)


@pytest.mark.slow
def test_ctrl_c_while_waiting_for_a_board_cancels_the_request(farm: Farm, tmp_path: Path) -> None:
    write_tests(tmp_path, f"""
        @pytest.mark.boruta(**{farm.parked_caps!r})
        def test_waits(boruta_device):
            raise AssertionError("no board should come")
        """)
    child = Child(pytest_command(*farm.args()), tmp_path / "child.log", cwd=tmp_path,
                  env=child_env(HOME=str(tmp_path)))
    try:
        line = child.expect("boruta: request ", 30)         # the first progress line
        req_id = int(line.split()[2])
        assert farm.state(req_id) is ReqState.WAIT
        assert child.stop(signal.SIGINT, timeout=30) == INTERRUPTED
    finally:
        child.close()
    farm.assert_closed(req_id, ReqState.CANCEL)


@pytest.mark.slow
def test_a_refused_key_fails_the_test_saying_so(farm: Farm, tmp_path: Path) -> None:
    key_file = write_key_file(tmp_path / "stranger.key", new_keypair())
    assert farm.server.credentials is not None
    config = write_client_config(tmp_path / "stranger.toml", server=farm.server.listen,
                                 events=farm.server.events, key_file=key_file,
                                 server_key=farm.server.credentials.server_key)
    write_tests(tmp_path, f"""
        {farm.marker()}
        def test_a(boruta_device):
            pass
        """)
    proc = run_pytest(tmp_path, "--boruta-client-config", str(config))
    out = proc.stdout
    assert proc.returncode == 1 and "1 error" in outcome(out), out
    assert f"boruta: cannot file a request {farm.wish()}: the server at " \
        f"{farm.server.listen} refused our key" in out, out
    assert "Traceback" not in out and "def test_a" not in out, out


@pytest.mark.slow
def test_a_killed_test_run_frees_its_board_when_the_lease_runs_out(
        farm: Farm, tmp_path: Path) -> None:
    grace = 2.0
    child, req_id = blocking_run(tmp_path, farm, "--boruta-lease", f"{grace:g}")
    try:
        child.stop(signal.SIGKILL)
    finally:
        child.close()
    farm.assert_closed(req_id, reason=f"lease expired (no renewal for {grace:g} s)",
                       within=grace + 10)


@pytest.mark.slow
def test_a_job_outlives_its_timeout_while_the_test_runs(farm: Farm, tmp_path: Path) -> None:
    # No marker: the caps come from the ini file; the client config from the environment.
    write_tests(tmp_path, """
        import time
        from datetime import datetime, timedelta, timezone
        import boruta

        def test_long(boruta_device):
            client = boruta.Client()
            first_end = client.get_request_info(boruta_device.request_id).job.timeout
            deadline = time.monotonic() + 60
            while datetime.now(timezone.utc) < first_end + timedelta(seconds=1):
                assert time.monotonic() < deadline
                time.sleep(0.1)
            info = client.get_request_info(boruta_device.request_id)
            assert str(info.state) == "IN PROGRESS" and info.job.timeout > first_end
            assert boruta_device.run("echo alive").stdout == "alive\\n"
            client.close()
        """, ini=f"boruta_caps = {' '.join(f'{k}={v}' for k, v in farm.caps.items())}\n")
    proc = run_pytest(tmp_path, "--boruta-server", farm.server.listen,
                      BORUTA_CLIENT_CONFIG=str(farm.server.client_config))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [req_id] = acquired(proc.stdout)
    farm.assert_closed(req_id)


@pytest.mark.slow
@pytest.mark.parametrize("on_timeout", ["skip", "fail"])
def test_no_board_in_time_skips_or_fails_and_cancels_the_request(
        farm: Farm, tmp_path: Path, on_timeout: str) -> None:
    parked = " ".join(f"{k}={v}" for k, v in farm.parked_caps.items())
    write_tests(tmp_path, f"""
        @pytest.mark.boruta(**{farm.parked_caps!r})
        def test_waits(boruta_device):
            raise AssertionError("no board should come")

        @pytest.mark.boruta(device_type="nothing-has-this")
        def test_nowhere(boruta_device):
            raise AssertionError("no board should come")
        """)
    proc = run_pytest(tmp_path, *farm.args(), "--boruta-timeout", "3",
                      "--boruta-on-timeout", on_timeout)
    out = proc.stdout
    wish = re.escape(f"({parked}, priority 8)")
    waiting = re.search(rf"boruta: request (\d+) {wish} still WAITING after [\d.]+s, "
                        r"first in the queue", out)
    assert waiting, out                      # a progress line while it waited
    req_id = int(waiting.group(1))
    assert re.search(rf"no board within 3s: request {req_id} {wish} was still WAITING, "
                     r"first in the queue; it is cancelled", out), out
    assert "no worker of the farm" in out and "device_type=nothing-has-this" in out, out
    if on_timeout == "skip":
        assert proc.returncode == 0 and "2 skipped" in outcome(out), out
    else:
        assert proc.returncode == 1 and "2 errors" in outcome(out), out
        assert "Traceback" not in out and "def test_waits" not in out, out
    farm.assert_closed(req_id, ReqState.CANCEL)


@pytest.mark.slow
def test_the_plugin_is_inert_when_no_test_uses_it(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0)
    port = listener.getsockname()[1]
    write_tests(tmp_path, """
        import sys

        def test_nothing_loaded():
            assert "boruta.device" not in sys.modules and "paramiko" not in sys.modules
            assert "boruta.cli" not in sys.modules
        """, ini="boruta_caps = device_type=rpi4\n")
    proc = run_pytest(tmp_path, "--boruta-server", f"tcp://127.0.0.1:{port}")
    assert proc.returncode == 0 and "1 passed" in outcome(proc.stdout), proc.stdout
    assert "boruta:" not in proc.stdout + proc.stderr       # the plugin's lines start so
    with pytest.raises(BlockingIOError):
        listener.accept()                    # nobody came
    listener.close()


# ---------------------------------------------------------------------- usage errors
def usage_error(pytester: pytest.Pytester, source: str, *args: str) -> str:
    pytester.makepyfile(test_board="import pytest\n" + textwrap.dedent(source))
    result = pytester.runpytest(*UNRELATED_PLUGINS, *args)
    assert result.ret == USAGE_ERROR, result.stdout.str()
    text = result.stderr.str()
    assert "Traceback" not in text + result.stdout.str()
    return text


def test_a_test_without_caps_is_a_usage_error_before_anything_runs(
        pytester: pytest.Pytester) -> None:
    text = usage_error(pytester, """
        def test_a(boruta_device):
            pass

        @pytest.mark.boruta(priority=3)
        def test_b(boruta_device):
            pass

        def test_c():
            pass
        """, "--boruta-server", "tcp://127.0.0.1:9")
    assert "test_board.py::test_a: which board?" in text
    assert "test_board.py::test_b: which board?" in text and "--boruta-caps" in text
    assert "test_c" not in text


@pytest.mark.parametrize("marker, problem", [
    ("boruta('rpi4')", "keyword arguments only"),
    ("boruta(device_type='rpi4', priority=0)", "priority must be a whole number from 1"),
    ("boruta(device_type='rpi4', priority='high')", "priority must be a whole number from 1"),
    ("boruta(ram=4)", "keys and values are strings (write ram='4')"),
    ("boruta(caps=['rpi4'])", "caps= must be a dict"),
    ("boruta(usb='yes', caps={'usb': 'no'})", "capability 'usb' given twice"),
    ("boruta(expr='sdmux?')", "expr= must be a list of expressions"),
    ("boruta(expr=['voltage 3.6..2.9'])", "expr=: capability expression"),
])
def test_a_bad_marker_is_a_usage_error_naming_the_test(
        pytester: pytest.Pytester, marker: str, problem: str) -> None:
    text = usage_error(pytester, f"""
        @pytest.mark.{marker}
        def test_a(boruta_device):
            pass
        """)
    assert "test_board.py::test_a: " in text and problem in text, text


@pytest.mark.parametrize("args, problem", [
    (["--boruta-timeout", "soon"], "--boruta-timeout: invalid duration 'soon'"),
    (["--boruta-on-timeout", "retry"], "--boruta-on-timeout: 'retry' is neither of fail and skip"),
    (["--boruta-priority", "17"], "--boruta-priority: 17 is out of range"),
    (["--boruta-caps", "rpi4"], "--boruta-caps: invalid capability 'rpi4'"),
    (["--boruta-lease", "-1"], "--boruta-lease: invalid duration '-1'"),
    (["--boruta-server", "tcp://farm"], "--boruta-server: "),
    (["--boruta-client-config", "/nonexistent/client.toml"], "no such file"),
])
def test_a_bad_option_is_a_usage_error_naming_it(
        pytester: pytest.Pytester, args: list[str], problem: str) -> None:
    text = usage_error(pytester, """
        @pytest.mark.boruta(device_type="rpi4")
        def test_a(boruta_device):
            pass
        """, *args)
    assert problem in text, text


def test_a_bad_ini_setting_is_a_usage_error_naming_the_file(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nboruta_timeout = forever\n")
    text = usage_error(pytester, """
        def test_a(boruta_device):
            pass
        """)
    assert "boruta_timeout in " in text and "tox.ini" in text and "'forever'" in text, text


def test_a_marker_s_expressions_are_canonical() -> None:
    from boruta.pytest_plugin import marker_expressions
    assert marker_expressions(["serial in 115200,57600", "!sdmux", "!sdmux"]) == \
        ("!sdmux", "serial in 115200,57600")
    assert marker_expressions(None) == ()
