"""End-to-end benchmark of durable state: what group commit costs, how fast a restart is.

    python -m bench.e2e_durability                 # both parts (~2 minutes)
    python -m bench.e2e_durability --quick         # small sizes (~40 s)
    python -m bench.e2e_durability --only s5       # or: restart
    python -m bench.e2e_durability --markdown      # the table as Markdown (docs/operations.md)
    python -m bench.e2e_durability --json out.json # raw figures too

1. S5 NewRequest with durability off (state in memory) and on (`state_sync`
   full, then normal), in the same run, under two loads:
   - pipelined (judged): S5 part (a)'s load (bench/e2e_load.py),
     `--procs` client processes each keeping `--window` NewRequest calls in
     flight on one DEALER, for `--duration` seconds after `--warmup`. This is
     the load a busy CI system puts on the server, and the one group commit
     is for: a turn's calls share one commit.
   - blocking: `--drivers` client processes with `--threads` blocking
     Clients each, calling NewRequest in a loop for `--duration` seconds.
     Here a turn holds a handful of calls and each waits for its turn's
     fsync, so the figure shows what one commit costs a lone caller's
     latency; not judged.
   Simulated dryads are registered, so the requests are satisfiable; they
   stay WAITING. Each of `--rounds` rounds runs every load and mode back to
   back (in alternating order), so that the machine's drift hits every mode
   alike. Figures are medians over the rounds; the figure of merit is the
   median of the per-round ratios on/off.
2. Restart: a state directory with `--stored` requests (`--waiting` of them
   WAITING, the rest finished recently, so not purged) and `--workers`
   workers, built directly with the Store (executemany); then the time from
   starting the server process to its first successful answer (ping). For
   comparison: the same with an empty state directory (the process's own
   start-up), and, in this process, Store.load() and Scheduler.restore()
   on their own.

A benchmark never fails for being slow; the table says whether each target
was met.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.e2e_common import BenchServer, parse_bench_args, render_table, write_json
from boruta.testing.processes import Child, credentials_from

DEFAULT = {"procs": 3, "window": 128, "warmup": 1.5, "drivers": 4, "threads": 2,
           "duration": 5.0, "rounds": 3, "stored": 1_000_000, "waiting": 100_000,
           "workers": 1000, "dryads": 20}
QUICK = {"procs": 3, "window": 128, "warmup": 1.0, "drivers": 3, "threads": 2,
         "duration": 3.0, "rounds": 1, "stored": 200_000, "waiting": 20_000, "workers": 200,
         "dryads": 10}
S5_CAPS = {"device_type": "bench-s5"}
ANSWER_WITHIN = 60.0          # seconds a restarted server gets for each first answer
MODES = {"off (memory)": None, "on, state_sync=full": "full", "on, state_sync=normal": "normal"}
LOADS = ("pipelined", "blocking")
JUDGED = ("pipelined", "on, state_sync=full")          # the (load, mode) held to the target

# On top of the benches' server settings (bench.e2e_common.BenchServer): no rate limit to speak of.
SETTINGS = {"key_type": "ed25519", "peer_rate": 1e6, "peer_burst": 1000000}


# =========================================================================== S5 NewRequest

def drive(spec: dict[str, Any]) -> None:
    """A driver process: `threads` clients calling NewRequest from a common start time."""
    from boruta.transport.client import Client
    print("ready", flush=True)
    start = float(sys.stdin.readline())
    stop_at = start + spec["duration"]
    lock = threading.Lock()
    latencies: list[float] = []
    errors = {"n": 0, "first": None}

    def loop(index: int) -> None:
        rng = random.Random(f"{spec['seed']}:{index}")
        client = Client(spec["listen"], timeout=30,
                        credentials=credentials_from(spec["client_config"]))
        mine: list[float] = []
        while time.time() < start:
            time.sleep(0.002)
        while time.time() < stop_at:
            t0 = time.perf_counter()
            try:
                client.new_request(S5_CAPS, rng.randint(1, 16))
            except Exception as exc:  # noqa: BLE001 - counted and reported
                with lock:
                    errors["n"] += 1
                    errors["first"] = errors["first"] or f"{type(exc).__name__}: {exc}"
                continue
            mine.append(time.perf_counter() - t0)
        client.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(spec["threads"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"latencies": latencies, "errors": errors["n"],
                      "first_error": errors["first"]}), flush=True)


def pipelined_round(tmp: Path, mode: str, sync: str | None, opts: dict[str, Any],
                    round_no: int) -> dict[str, Any]:
    """S5 part (a)'s load (bench/e2e_load.py) against a server in `mode`."""
    from bench.e2e_load import bench_throughput
    settings: dict[str, Any] = {}
    if sync is not None:
        state = tmp / f"s5p-{round_no}-{sync}"
        shutil.rmtree(state, ignore_errors=True)
        settings = {"state_dir": state, "state_sync": sync}
    r = bench_throughput(tmp, opts, settings=settings, name=f"s5p-{round_no}-{sync or 'memory'}")
    return {"mode": mode, "calls": r["calls"], "per_s": r["per_s"], "errors": r["errors"],
            "first_error": r["first_error"], "lost": r["lost"],
            "p50_ms": 1000 * r["p50_s"], "p99_ms": 1000 * r["p99_s"],
            "server_us_per_call": r["server_us_per_call"]}


def blocking_round(tmp: Path, mode: str, sync: str | None, opts: dict[str, Any],
                   round_no: int) -> dict[str, Any]:
    """`drivers` processes of `threads` blocking Clients against a server in `mode`."""
    state = tmp / f"s5-{round_no}-{sync or 'memory'}"
    settings: dict[str, Any] = {}
    if sync is not None:
        shutil.rmtree(state, ignore_errors=True)
        settings = {"state_dir": state, "state_sync": sync}
    server = BenchServer(tmp / f"s5-server-{round_no}-{sync}.log", **SETTINGS, **settings)
    dryads: Child | None = None
    drivers: list[Child] = []
    try:
        server.start()
        dryads, _ = server.sim_dryads(opts["dryads"], S5_CAPS, tmp / "s5-dryads.log")
        for d in range(opts["drivers"]):
            spec = {"listen": server.listen, "client_config": server.client_config,
                    "threads": opts["threads"],
                    "duration": opts["duration"], "seed": f"{round_no}:{d}"}
            drivers.append(Child([sys.executable, "-m", "bench.e2e_durability", "--_drive",
                                  json.dumps(spec, default=str)], tmp / f"s5-driver-{d}.log",
                                 stdin=True))
        for drv in drivers:
            drv.expect("ready", 60)
        start = time.time() + 0.5
        for drv in drivers:
            drv.send(repr(start))
        latencies: list[float] = []
        errors = 0
        first_error = None
        for drv in drivers:
            doc = json.loads(drv.expect("{", opts["duration"] + 120))
            latencies += doc["latencies"]
            errors += doc["errors"]
            first_error = first_error or doc["first_error"]
    finally:
        for drv in drivers:
            drv.close()
        if dryads is not None:
            dryads.close()
        server.close()
    latencies.sort()
    n = len(latencies)
    return {"mode": mode, "calls": n, "per_s": n / opts["duration"], "errors": errors,
            "first_error": first_error,
            "p50_ms": 1000 * latencies[n // 2] if n else float("nan"),
            "p99_ms": 1000 * latencies[min(n - 1, int(n * 0.99))] if n else float("nan")}


ROUNDS = {"pipelined": pipelined_round, "blocking": blocking_round}


def bench_s5(tmp: Path, opts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{load: {mode: summary}}: every load and mode once per round, in alternating order."""
    runs = {load: {mode: [] for mode in MODES} for load in LOADS}   # type: ignore[var-annotated]
    for round_no in range(opts["rounds"]):
        order = [(load, mode, sync) for load in LOADS for mode, sync in MODES.items()]
        if round_no % 2:
            order.reverse()
        for load, mode, sync in order:
            result = ROUNDS[load](tmp, mode, sync, opts, round_no)
            runs[load][mode].append(result)
            print(f"S5 {load} {mode}: {result['per_s']:.0f}/s p50 {result['p50_ms']:.2f} ms "
                  f"p99 {result['p99_ms']:.2f} ms errors {result['errors']}", file=sys.stderr)
    return {load: summarize(by_mode) for load, by_mode in runs.items()}


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians over the rounds; the ratio to "off" is the median of the per-round ratios
    (each round runs every mode back to back, so a round shares the machine's mood)."""
    summary = {}
    off = runs["off (memory)"]
    for mode, results in runs.items():
        summary[mode] = {
            "per_s": statistics.median(r["per_s"] for r in results),
            "ratio": statistics.median(r["per_s"] / o["per_s"] for r, o in zip(results, off)),
            "ratios": [round(r["per_s"] / o["per_s"], 3) for r, o in zip(results, off)],
            "p50_ms": statistics.median(r["p50_ms"] for r in results),
            "p99_ms": statistics.median(r["p99_ms"] for r in results),
            "errors": sum(r["errors"] for r in results),
            "first_error": next((r["first_error"] for r in results if r["first_error"]), None),
            "rounds": results}
        if "server_us_per_call" in results[0]:
            summary[mode]["server_us_per_call"] = statistics.median(
                r["server_us_per_call"] for r in results)
    return summary


# =========================================================================== restart

def build_state(state_dir: Path, stored: int, waiting: int, workers: int) -> dict[str, Any]:
    """A state directory as a busy server would leave it, written straight with the Store."""
    from bench.farm import iter_requests, make_workers
    from boruta.core.records import Changes
    from boruta.server.store import Store

    t0 = time.perf_counter()
    rng = random.Random(5)
    farm_workers = make_workers(workers, rng)
    now = time.time()
    store = Store(state_dir, "OFF")
    worker_records = [{"uuid": w["uuid"], "caps": w["caps"], "groups": list(w["groups"]),
                       "state": "MAINTENANCE", "dryad_address": "10.0.0.1:7175",
                       "ssh_address": "10.0.0.1:22", "key": None, "username": None,
                       "fail_reason": None, "job": None} for w in farm_workers]
    store.commit(Changes(workers=worker_records))
    ended_states = ("DONE", "CANCELLED", "TIMEOUT", "FAILED")
    chunk: list[dict[str, Any]] = []
    finished = stored - waiting
    # The waiting requests are the newest: IDs after the finished ones.
    for req in iter_requests(farm_workers, stored, rng):
        req_id = req["id"]
        is_waiting = req_id > finished
        valid_after = now - 86400.0 + (req["valid_after"] or 0.0)
        if is_waiting and req["valid_after"] is not None:
            valid_after = now + req["valid_after"]              # 10% not ready yet
        chunk.append({
            "id": req_id, "priority": req["priority"], "groups": list(req["groups"]),
            "caps": req["caps"], "valid_after": valid_after,
            "deadline": now + req["deadline"], "state": "WAITING" if is_waiting
            else ended_states[req_id % 4], "job_worker": None, "job_timeout": None,
            "seq": req_id, "prolongs": 0,
            "ended_at": None if is_waiting else now - 3600.0 * (1 + req_id % 48)})
        if len(chunk) >= 50_000:
            store.commit(Changes(requests=chunk, last_id=req_id, last_seq=req_id))
            chunk = []
    if chunk:
        store.commit(Changes(requests=chunk, last_id=stored, last_seq=stored))
    store.close()
    size = sum(f.stat().st_size for f in state_dir.iterdir() if f.is_file())
    return {"build_s": time.perf_counter() - t0, "db_bytes": size}


def time_to_first_ping(tmp: Path, state_dir: Path | None, label: str,
                       stored: int = 0) -> dict[str, Any]:
    """Seconds from starting the server process to its first successful answer (ping);
    with a state, also to the first answers that need it: an old request's info (from
    the history, fetched on demand while it loads), a NewRequest, and a list of every
    request (waits until the whole history is loaded)."""
    from boruta.core.types import ReqState, RequestFilter
    from boruta.transport.client import ServerUnreachableError
    settings = {"state_dir": state_dir} if state_dir is not None else {}
    server = BenchServer(tmp / f"restart-{label}.log", **SETTINGS, log_level="info", **settings)
    out: dict[str, Any] = {}
    try:
        server.start(timeout=120)        # its ready line: state restored, sockets bound
        server.client(timeout=30, retries=1).ping()
        out["first_ping_s"] = time.perf_counter() - server.started
        if stored:
            # Each answer within ANSWER_WITHIN seconds, or None: a server that cannot
            # answer in time (the plain-Python matcher rescanning 100,000 waiting
            # requests) is reported as such, and the calls after it are not made.
            slow = server.client(timeout=ANSWER_WITHIN, retries=1)
            steps = [
                ("old_request_s", lambda: slow.get_request_info(1)),
                ("new_request_s", lambda: slow.new_request({"device_type": "bench-restart"}, 8,
                                                           queue_unsatisfiable=True)),
                ("full_list_s", lambda: len(slow.list_requests(
                    RequestFilter(states=(ReqState.DONE,)))[0])),
            ]
            out.update(dict.fromkeys(name for name, _ in steps))
            for name, call in steps:
                try:
                    answer = call()
                except ServerUnreachableError:
                    break
                out[name] = time.perf_counter() - server.started
                if name == "full_list_s":
                    out["done_listed"] = answer
        for line in server.log().splitlines():
            if "state restored" in line:
                out["restore_s_logged"] = float(line.split("seconds=")[1].split()[0])
            if "history loaded" in line:
                out["history_s_logged"] = float(line.split("seconds=")[1].split()[0])
        out["rss_mb"] = server.rss() / 2**20
        return out
    finally:
        server.close(30)


def profile_restore(state_dir: Path) -> dict[str, float]:
    """The parts of a restart, in this process: reading the live requests and
    rebuilding the books (before the server answers), then the history."""
    import gc

    from boruta.core.scheduler import Scheduler
    from boruta.server.store import Store
    gc.disable()
    try:
        t0 = time.perf_counter()
        store = Store(state_dir, "OFF")
        snapshot = store.load(history=False)
        t1 = time.perf_counter()
        sched = Scheduler.restore(snapshot)
        t2 = time.perf_counter()
        after, chunks = 0, []
        while records := store.history(after):
            after = records[-1]["id"]
            chunks.append(records)
        t3 = time.perf_counter()
        for records in chunks:
            sched.add_history(records)
        t4 = time.perf_counter()
        counts = sched.counts()
        store.close()
    finally:
        gc.enable()
    return {"live_load_s": t1 - t0, "restore_s": t2 - t1, "history_load_s": t3 - t2,
            "history_add_s": t4 - t3, "requests": counts["requests"], "ready": counts["ready"]}


def bench_restart(tmp: Path, opts: dict[str, Any]) -> dict[str, Any]:
    state_dir = tmp / "restart-state"
    shutil.rmtree(state_dir, ignore_errors=True)
    built = build_state(state_dir, opts["stored"], opts["waiting"], opts["workers"])
    print(f"restart: built {opts['stored']} requests in {built['build_s']:.1f} s, "
          f"{built['db_bytes'] / 2**20:.0f} MiB", file=sys.stderr)
    empty = time_to_first_ping(tmp, None, "empty")
    print(f"restart: empty server answers after {empty['first_ping_s']:.2f} s", file=sys.stderr)
    full = [time_to_first_ping(tmp, state_dir, f"full{i}", opts["stored"]) for i in range(2)]
    best = min(full, key=lambda r: r["first_ping_s"])
    print(f"restart: {opts['stored']} requests: first answer after "
          f"{[round(r['first_ping_s'], 2) for r in full]} s", file=sys.stderr)
    profile = profile_restore(state_dir)
    return {**built, "stored": opts["stored"], "waiting": opts["waiting"],
            "workers": opts["workers"], "empty": empty, "runs": full, "best": best,
            "profile": profile}


# =========================================================================== report

def table(res: dict[str, Any], opts: dict[str, Any], markdown: bool) -> str:
    rows: list[tuple[str, str, str, str]] = []
    if "s5" in res:
        loads = {"pipelined": f"{opts['procs']} processes x {opts['window']} calls in flight",
                 "blocking": f"{opts['drivers'] * opts['threads']} blocking clients "
                             f"({opts['drivers']} processes)"}
        for load, by_mode in res["s5"].items():
            for mode, r in by_mode.items():
                ratio = r["ratio"]
                target, met = "", ""
                if (load, mode) == JUDGED:
                    target = "<= 30% slower than off"
                    met = "yes" if ratio >= 0.7 else "NO"
                per_round = ", ".join(f"{100 * x:.0f}%" for x in r["ratios"])
                cpu = (f", server {r['server_us_per_call']:.0f} µs/call"
                       if "server_us_per_call" in r else "")
                rows.append((f"S5 NewRequest, {loads[load]}, durability {mode}",
                             f"{r['per_s']:.0f}/s ({100 * ratio:.0f}% of off; rounds: "
                             f"{per_round}), p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms"
                             f"{cpu}, {r['errors']} errors"
                             + (f" (first: {r['first_error']})" if r["first_error"] else ""),
                             target, met))
    if "restart" in res:
        rs = res["restart"]
        b = rs["best"]
        rows.append((f"restart, {rs['stored']:,} stored requests ({rs['waiting']:,} waiting), "
                     f"{rs['workers']} workers, DB {rs['db_bytes'] / 2**20:.0f} MiB",
                     f"first answer (ping) {b['first_ping_s']:.2f} s after start (runs: "
                     + ", ".join(f"{r['first_ping_s']:.2f}" for r in rs["runs"])
                     + f"); live state restored in {b.get('restore_s_logged')} s",
                     "<= 10 s", "yes" if b["first_ping_s"] <= 10 else "NO"))

        def after(seconds: float | None) -> str:
            return (f"no answer within {ANSWER_WITHIN:g} s" if seconds is None
                    else f"{seconds:.2f} s")
        new_s = b["new_request_s"]
        rows.append(("  first answers needing the state: an old request's info / NewRequest",
                     f"{after(b['old_request_s'])} / {after(new_s)} after start",
                     "<= 10 s", "yes" if new_s is not None and new_s <= 10 else "NO"))
        listed = (f" (first page: {b['done_listed']:,}; loading took "
                  f"{b.get('history_s_logged')} s in the background)"
                  if b["full_list_s"] is not None else "")
        rows.append(("  whole history loaded (a list of the DONE requests answered)",
                     f"{after(b['full_list_s'])} after start{listed}; "
                     f"RSS then {b.get('rss_mb', 0):.0f} MiB", "", ""))
        p = rs["profile"]
        rows.append(("  in process: live load / restore / history load / history add",
                     f"{p['live_load_s']:.2f} / {p['restore_s']:.2f} / {p['history_load_s']:.2f}"
                     f" / {p['history_add_s']:.2f} s", "", ""))
        rows.append(("  server process with an empty state directory",
                     f"first answer {rs['empty']['first_ping_s']:.2f} s after start", "", ""))
    return render_table(("measurement", "result", "target", "met"), rows, markdown)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--_drive"]:
        drive(json.loads(argv[1]))
        return 0
    args, opts = parse_bench_args("python -m bench.e2e_durability", __doc__, "s5 or restart",
                                  "keep state directories and logs there (default: a temporary one)",
                                  DEFAULT, QUICK, argv)
    only = {args.only} if args.only else {"s5", "restart"}
    res: dict[str, Any] = {"machine": {"cores": len(os.sched_getaffinity(0)),
                                       "python": sys.version.split()[0],
                                       "loadavg_before": os.getloadavg()}, "options": opts}
    with tempfile.TemporaryDirectory(prefix="boruta-bench-dur-") as tmpdir:
        tmp = Path(args.workdir or tmpdir)
        tmp.mkdir(parents=True, exist_ok=True)
        if "s5" in only:
            res["s5"] = bench_s5(tmp, opts)
        if "restart" in only:
            res["restart"] = bench_restart(tmp, opts)
    res["machine"]["loadavg_after"] = os.getloadavg()
    m = res["machine"]
    print(f"machine: {m['cores']} usable cores, Python {m['python']}, load average "
          f"{m['loadavg_before'][0]:.1f} before, {m['loadavg_after'][0]:.1f} after")
    print(table(res, opts, args.markdown))
    write_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
