"""Tests that run on boards of a Boruta farm, through the pytest plugin.

Each test that takes the `boruta_device` fixture gets a board with the caps of
its `boruta` marker: the plugin files a request, waits for a worker, logs in
over SSH and hands the test a Device; when the test ends (passed, failed or
interrupted) the request is closed and the board goes back to the farm.

Against `make demo` (it prints this command with its own client config):

    pytest examples/test_on_a_board.py --boruta-client-config /tmp/boruta-demo-.../client.toml

Against your own farm, the client config `boruta` uses is the default.
"""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.boruta(device_type="rpi4")
def test_the_board_runs_a_command(boruta_device) -> None:
    result = boruta_device.run("uname -s && echo $((6 * 7))")
    assert result.exit_status == 0, result.stderr
    assert result.stdout.split() == ["Linux", "42"]


@pytest.mark.boruta(device_type="rpi4")
def test_a_file_goes_to_the_board_and_back(boruta_device, tmp_path: Path) -> None:
    sent = tmp_path / "sent.txt"
    sent.write_text("hello, board\n")
    boruta_device.put(sent, "hello.txt")
    assert boruta_device.run("tr a-z A-Z < hello.txt > shout.txt").exit_status == 0
    back = tmp_path / "back.txt"
    boruta_device.get("shout.txt", back)
    assert back.read_text() == "HELLO, BOARD\n"


@pytest.mark.boruta(device_type="odroid-xu4", priority=4)
def test_another_device_type_reports_a_failure(boruta_device) -> None:
    result = boruta_device.run("echo oops >&2; exit 3")
    assert (result.exit_status, result.stderr) == (3, "oops\n")
