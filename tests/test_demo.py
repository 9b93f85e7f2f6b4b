"""`make demo` works: a secure server with no setup, simulated boards that enrol themselves,
and clients (the admin and two users it adds) whose jobs use their tunnels."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from e2e_helpers import ROOT, child_env

pytestmark = pytest.mark.slow


def test_the_demo_runs_jobs_through_tunnels(tmp_path: Path) -> None:
    home = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_STATE_HOME": str(tmp_path / "state")}
    done = subprocess.run([sys.executable, "-m", "boruta.sim.demo", "--duration", "2",
                           "--clients", "3"], cwd=ROOT, env=child_env(COLUMNS="200", **home),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    filed = re.search(r"requests filed\s*\W\s*(\d+)", done.stdout)
    trips = re.search(r"tunnel round trips\s*\W\s*(\d+)", done.stdout)
    assert filed and trips, done.stdout[-3000:]
    assert int(trips.group(1)) >= 2 and int(filed.group(1)) >= int(trips.group(1))
    assert "9 dryads enrolled by the admin" in done.stdout, done.stdout[:3000]
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
