"""`make demo` works: a server, simulated boards and clients whose jobs use their tunnels."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from e2e_helpers import ROOT, child_env

pytestmark = pytest.mark.slow


def test_the_demo_runs_jobs_through_tunnels() -> None:
    done = subprocess.run([sys.executable, "-m", "boruta.sim.demo", "--duration", "2",
                           "--clients", "2"], cwd=ROOT, env=child_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    filed = re.search(r"requests filed\s*\W\s*(\d+)", done.stdout)
    trips = re.search(r"tunnel round trips\s*\W\s*(\d+)", done.stdout)
    assert filed and trips, done.stdout[-3000:]
    assert int(trips.group(1)) >= 2 and int(filed.group(1)) >= int(trips.group(1))
    assert "error" not in done.stdout.split("summary")[-1], done.stdout[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
