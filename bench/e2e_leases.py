"""What leases cost the server, and how soon a dead holder's board is free again.

    python -m bench.e2e_leases                 # default sizes (~2 minutes)
    python -m bench.e2e_leases --quick         # small sizes (~1 minute)
    python -m bench.e2e_leases --only renewals # one part: renewals, release
    python -m bench.e2e_leases --markdown      # the table as Markdown (docs/benchmarks.md)

- Renewals: a server holding `--requests` open leased requests (waiting: no
  worker has their caps), renewed at the clients' default period (half of
  the default 240 s grace), measured as the server's CPU (user + system, from
  /proc) over `--window` seconds, against the same server over the same
  window without renewals. Two ways to hold them: one holder per request
  (10,000 CI jobs, each renewing its own: one call per request per period,
  the worst case) and `--batch` requests per holder (one call renews them
  all). Target: the renewals cost under 5% of one core.
- Release: a holder process with a board IN PROGRESS, killed with SIGKILL;
  the time until the request is DONE and until its worker is IDLE again,
  over `--kills` kills, against the bound grace + one renewal period + the
  worker's preparation (measured in the same run: from DONE to IDLE).

A benchmark never fails for being slow; the table says whether each target
was met.
"""
from __future__ import annotations

import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.e2e_common import bring_idle, render_table, run_parts, start_server, write_json
from bench.e2e_load import BENCH_SETTINGS
from boruta.core.types import ReqState, WorkerState
from boruta.testing.holder import start_holder
from boruta.testing.processes import cpu_seconds, wait_until
from boruta.transport.leases import DEFAULT_LEASE, MAX_RENEWALS, renewal_period

DEFAULT = {"requests": 10_000, "batch": 100, "window": 30.0, "kills": 5, "grace": 5.0}
QUICK = {"requests": 10_000, "batch": 100, "window": 10.0, "kills": 2, "grace": 5.0}
CPU_TARGET = 0.05                       # of one core
CAPS = {"device_type": "bench-leases"}  # no worker has them: the requests wait


def _paced_renewals(client: Any, batches: list[list[int]], window: float) -> int:
    """Renew `batches` spread evenly over one renewal period, for `window` seconds;
    returns the number of calls made."""
    period = renewal_period(DEFAULT_LEASE)
    interval = period / len(batches)
    start = time.monotonic()
    calls = 0
    while (now := time.monotonic()) - start < window:
        due = start + calls * interval
        if due > now:
            time.sleep(due - now)
        client.renew_leases(batches[calls % len(batches)])
        calls += 1
    return calls


def _server_cpu(server: Any, work: Any) -> tuple[float, float, Any]:
    """(CPU seconds the server used, wall seconds, what work returned) while `work` ran."""
    cpu, wall = cpu_seconds(server.proc.pid), time.monotonic()
    result = work()
    return cpu_seconds(server.proc.pid) - cpu, time.monotonic() - wall, result


def bench_renewals(tmp: Path, opts: dict[str, Any]) -> dict[str, Any]:
    server = start_server(tmp / "renewals.log", **BENCH_SETTINGS)
    try:
        server.farm(1, caps=CAPS)          # the caps exist: the requests are satisfiable
        client = server.user("leases", max_open=opts["requests"])
        req_ids = [client.new_request(CAPS, 8, lease=DEFAULT_LEASE)
                   for _ in range(opts["requests"])]
        for req_id in req_ids:
            client.leases.release(req_id)
        window = opts["window"]
        idle_cpu, idle_wall, _ = _server_cpu(server, lambda: time.sleep(window))
        batch = min(opts["batch"], MAX_RENEWALS)
        shapes = {"one holder per request": [[r] for r in req_ids],
                  f"{batch} requests per holder": [req_ids[i:i + batch]
                                                   for i in range(0, len(req_ids), batch)]}
        rows = {}
        for name, batches in shapes.items():
            cpu, wall, calls = _server_cpu(server, lambda b=batches: _paced_renewals(
                client, b, window))
            share = cpu / wall - idle_cpu / idle_wall
            rows[name] = {"calls_per_s": calls / wall, "cpu_share": cpu / wall,
                          "renewal_share": share}
        states = {str(client.get_request_info(r).state) for r in req_ids[::997]}
        return {"requests": len(req_ids), "period_s": renewal_period(DEFAULT_LEASE),
                "idle_share": idle_cpu / idle_wall, "shapes": rows, "still_waiting": states}
    finally:
        server.close()


def bench_release(tmp: Path, opts: dict[str, Any]) -> dict[str, Any]:
    grace = opts["grace"]
    server = start_server(tmp / "release.log", **BENCH_SETTINGS)
    try:
        caps = {"device_type": "bench-release"}
        farm = server.farm(1, caps=caps)
        uuid = farm.dryads[0].uuid
        client = server.client()
        bring_idle(client, [uuid], caps, 30)
        to_done, to_idle, prepare = [], [], []
        for kill in range(opts["kills"]):
            child, req_id = start_holder(server, tmp / f"holder{kill}.log", caps["device_type"],
                                         grace)
            wait_until(lambda: client.get_request_info(req_id).state is ReqState.INPROGRESS,
                       30, 0.01, "the holder's job started")
            time.sleep(renewal_period(grace) * 1.5)     # a renewal or two went through
            child.proc.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            child.proc.wait(10)
            wait_until(lambda: client.get_request_info(req_id).state is ReqState.DONE,
                       grace * 3, 0.01, "the request closed")
            done = time.monotonic()
            wait_until(lambda: client.get_worker_info(uuid).state is WorkerState.IDLE,
                       30, 0.01, "the worker IDLE again")
            idle = time.monotonic()
            to_done.append(done - killed)
            to_idle.append(idle - killed)
            prepare.append(idle - done)
            child.close()
            print(f"  kill {kill + 1}: DONE after {done - killed:.2f} s, IDLE after "
                  f"{idle - killed:.2f} s", file=sys.stderr)
        bound = grace + renewal_period(grace) + max(prepare)
        return {"grace": grace, "period": renewal_period(grace), "to_done": to_done,
                "to_idle": to_idle, "prepare": prepare, "bound": bound,
                "met": max(to_idle) <= bound}
    finally:
        server.close()


def rows_of(res: dict[str, Any]) -> list[tuple[str, ...]]:
    rows = []
    if "renewals" in res:
        r = res["renewals"]
        rows.append((f"renewals: {r['requests']:,} leased requests, every "
                     f"{r['period_s']:g} s", "server idle", f"{r['idle_share'] * 100:.2f}% of a core",
                     ""))
        for name, shape in r["shapes"].items():
            rows.append((f"    {name}", f"{shape['calls_per_s']:.0f} calls/s",
                         f"+{shape['renewal_share'] * 100:.2f}% of a core",
                         "met" if shape["renewal_share"] < CPU_TARGET else "NOT met"))
    if "release" in res:
        r = res["release"]
        rows.append((f"release: SIGKILL -> worker IDLE (grace {r['grace']:g} s)",
                     f"median {statistics.median(r['to_idle']):.2f} s, max "
                     f"{max(r['to_idle']):.2f} s",
                     f"bound {r['bound']:.2f} s (grace + {r['period']:.2f} s period + "
                     f"{max(r['prepare']):.2f} s prepare)", "met" if r["met"] else "NOT met"))
        rows.append(("    SIGKILL -> request DONE", f"median {statistics.median(r['to_done']):.2f} s",
                     f"max {max(r['to_done']):.2f} s", ""))
    return rows


def main(argv: list[str] | None = None) -> int:
    args, res = run_parts("python -m bench.e2e_leases", __doc__,
                          {"renewals": bench_renewals, "release": bench_release}, DEFAULT, QUICK,
                          argv, "bench-leases-")
    print(render_table(("what", "figure", "cost or bound", "target"), rows_of(res),
                       args.markdown))
    write_json(args.json, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
