"""Capability expressions over the wire: the CLI, the client and the server agree."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from boruta.core.errors import BadArgumentError
from boruta.core.types import WorkerState
from e2e_helpers import server_factory, unique_caps, wait_until  # noqa: F401

pytestmark = pytest.mark.slow


def cli(server, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "boruta.cli", *args], env=server.cli_env(),
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)


def test_an_expression_from_the_cli_picks_the_board_that_satisfies_it(
        server_factory, tmp_path: Path) -> None:  # noqa: F811
    server = server_factory()
    kind = unique_caps()["device_type"]
    slow = server.farm(1, caps={"device_type": kind, "serial": "9600", "voltage": "5.0"})
    fast = server.farm(1, caps={"device_type": kind, "serial": "57600,115200", "voltage": "3.3"})
    admin = server.client()
    for board in (slow.dryads[0], fast.dryads[0]):
        admin.set_state(board.uuid, "IDLE")
    wait_until(lambda: all(admin.get_worker_info(b.uuid).state is WorkerState.IDLE
                           for b in (slow.dryads[0], fast.dryads[0])), 10, what="boards IDLE")
    done = cli(server, tmp_path, "request", "new", "--caps", f"device_type={kind}",
               "--caps", "serial in 57600,115200", "--caps", "voltage 2.9..3.6", "--caps",
               "!sdmux", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["caps"] == {"device_type": kind}
    assert doc["expr"] == ["!sdmux", "serial in 115200,57600", "voltage 2.9..3.6"]
    wait_until(lambda: admin.get_request_info(doc["id"]).job is not None, 10, what="assigned")
    assert admin.get_request_info(doc["id"]).job.worker_uuid == fast.dryads[0].uuid
    shown = cli(server, tmp_path, "request", "show", str(doc["id"]))
    assert "!sdmux, serial in 115200,57600, voltage 2.9..3.6" in shown.stdout

    # The client speaks the same syntax; the server names what is wrong.
    with pytest.raises(BadArgumentError, match="the range is empty"):
        admin.new_request({"device_type": kind}, 8, expr=["voltage 3.6..2.9"], lease=None)
    bad = cli(server, tmp_path, "request", "new", "--caps", "voltage 3.6..2.9")
    assert bad.returncode == 2 and "the range is empty" in bad.stderr
    assert "Traceback" not in bad.stderr + server.log()
