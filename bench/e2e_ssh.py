"""End-to-end benchmark of the dryad path: tunnels, job cycles over real SSH, loss detection.

    python -m bench.e2e_ssh                  # default sizes (~2 minutes)
    python -m bench.e2e_ssh --quick          # small sizes (~1 minute)
    python -m bench.e2e_ssh --markdown       # the table as Markdown (docs/dryad.md)
    python -m bench.e2e_ssh --json out.json  # raw figures too

What it measures, each against a real server process on loopback:

1. RSA-2048 key generation on this machine (one thread), and from it the
   bound on job cycles with RSA keys: every cycle needs a fresh key, and the
   server makes keys on `KEY_THREADS` threads, so
   bound = min(KEY_THREADS, cores) / keygen time (bench.e2e_common).
2. Raw forwarding through a job's tunnel (MB/s): a simulated dryad advertises
   a local sink/source as its SSH address; bytes go client -> tunnel -> sink
   (upload) and source -> tunnel -> client (download).
3. Full job cycles with `--dryads` real dryad agents (DryadAgent: simulated
   board, embedded SSH server; `--dryad-procs` processes host them) and
   `--drivers` x `--threads` concurrent clients, each looping: new_request,
   acquire_worker, SSH login through the tunnel with the job's key, exec
   `true`, close. The rate counts until every worker is IDLE again. Once with
   Ed25519 keys, once with RSA-2048. CPU seconds per cycle of each
   component (server, dryads, clients) are read from /proc.
4. SIGKILL of `--kills` dryad processes (`boruta dryad`) with a job each: the
   time until each request turns FAILED, in heartbeat intervals.

A benchmark never fails for being slow; the table says whether each target
was met.
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

from bench.e2e_common import (bring_idle, count_state, measure_keygen, parse_bench_args,
                               render_table, start_server, write_json)
from boruta.testing.processes import Child, ServerProcess, credentials_from, wait_until

DEFAULT = {"tunnel_mb": 1024, "dryads": 50, "dryad_procs": 5, "drivers": 2, "threads": 8,
           "duration": 15.0, "kills": 10, "kill_interval": 0.5}
QUICK = {"tunnel_mb": 256, "dryads": 20, "dryad_procs": 2, "drivers": 2, "threads": 6,
         "duration": 6.0, "kills": 4, "kill_interval": 0.5}


# =========================================================================== 2. tunnel

class Sink:
    """TCP endpoint: 'U' reads until EOF and answers the byte count; 'D'+N sends N bytes."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.block = bytes(1 << 20)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            mode = recv_exact(conn, 1)
            if mode == b"U":
                buf = bytearray(1 << 20)
                total = 0
                while k := conn.recv_into(buf):
                    total += k
                conn.sendall(struct.pack("!Q", total))
            elif mode == b"D":
                (left,) = struct.unpack("!Q", recv_exact(conn, 8))
                view = memoryview(self.block)
                while left > 0:
                    n = min(left, len(view))
                    conn.sendall(view[:n])
                    left -= n

    def close(self) -> None:
        self.sock.close()


def recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed early")
        data += chunk
    return data


def upload(addr: tuple[str, int], total: int) -> float:
    block = bytes(1 << 20)
    with socket.create_connection(addr) as s:
        s.sendall(b"U")
        t = time.perf_counter()
        left = total
        while left > 0:
            n = min(left, len(block))
            s.sendall(block[:n] if n < len(block) else block)
            left -= n
        s.shutdown(socket.SHUT_WR)
        (got,) = struct.unpack("!Q", recv_exact(s, 8))
        elapsed = time.perf_counter() - t
    if got != total:
        raise RuntimeError(f"upload: sent {total}, the sink got {got}")
    return elapsed


def download(addr: tuple[str, int], total: int) -> float:
    buf = bytearray(1 << 20)
    with socket.create_connection(addr) as s:
        s.sendall(b"D" + struct.pack("!Q", total))
        t = time.perf_counter()
        got = 0
        while got < total:
            k = s.recv_into(buf)
            if not k:
                break
            got += k
        elapsed = time.perf_counter() - t
    if got != total:
        raise RuntimeError(f"download: expected {total}, got {got}")
    return elapsed


def bench_tunnel(tmp: Path, megabytes: int) -> dict[str, Any]:
    from boruta.sim.dryads import SimFarm
    total = megabytes << 20
    sink = Sink()
    server = start_server(tmp / "tunnel-server.log", key_type="ed25519")
    farm = None
    try:
        caps = {"device_type": f"bench-{uuidlib.uuid4().hex[:8]}"}
        farm = SimFarm(server.dryad, 1, caps=caps, ssh_address=f"127.0.0.1:{sink.port}",
                       credentials_for=server.enrol)
        farm.wait_registered(20)
        client = server.client()
        bring_idle(client, [farm.dryads[0].uuid], caps, 20)
        req_id = client.new_request(caps, 4)
        addr = tuple(client.acquire_worker(req_id, timeout=20).addr)
        upload(addr, 16 << 20)                                   # warm up
        cpu0 = server.cpu()
        up = upload(addr, total)
        up_cpu = server.cpu() - cpu0
        down = download(addr, total)
        streams = 4
        per = total // streams
        results: list[float] = []
        threads = [threading.Thread(target=lambda: results.append(upload(addr, per)))
                   for _ in range(streams)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        par = time.perf_counter() - t
        client.close_request(req_id)
        client.close()
        mb = total / 1e6
        return {"bytes": total, "upload_MBps": mb / up, "download_MBps": mb / down,
                "upload4_MBps": (per * streams / 1e6) / par,
                "server_cpu_per_GB_s": up_cpu / (total / 1e9)}
    finally:
        if farm is not None:
            farm.close()
        server.close()
        sink.close()


# =========================================================================== 3. job cycles

def write_configs(tmp: Path, server: ServerProcess, n: int, caps: dict[str, str]) -> list[Path]:
    """`n` dryad configs, each UUID enrolled on `server` with a key file of its own."""
    from boruta.dryad.config import write_default_config
    from boruta.transport.credentials import new_keypair, write_key_file
    paths = []
    for i in range(n):
        uuid = str(uuidlib.uuid4())
        path = tmp / f"dryad-{uuid[:8]}.toml"
        pair = new_keypair()
        identity = {}
        credentials = server.enrol(uuid, pair)           # None: an insecure server
        if credentials is not None:
            identity = {"server_key": credentials.server_key,
                        "key_file": str(write_key_file(path.with_suffix(".key"), pair))}
        write_default_config(path, caps={**caps, "UUID": uuid}, server=server.dryad, **identity)
        # job directories under tmp, so that a SIGKILLed dryad leaves nothing behind
        path.write_text(path.read_text().replace('workdir_base = ""',
                                                 f'workdir_base = "{tmp / "work"}"'))
        paths.append(path)
    return paths


def start_hosts(tmp: Path, configs: list[Path], procs: int) -> list[Child]:
    groups = [configs[i::procs] for i in range(procs)]
    hosts = [Child([sys.executable, "-m", "bench.e2e_ssh", "--_host", *map(str, g)],
                   tmp / f"host{i}.log") for i, g in enumerate(groups) if g]
    for host in hosts:
        host.expect("ready", 120)
    return hosts


def bench_cycles(tmp: Path, key_type: str, opts: dict[str, Any],
                 settings: dict[str, Any] | None = None, name: str = "cycles") -> dict[str, Any]:
    """Job cycles over real SSH; `settings` go to the server (e.g. insecure)."""
    from boruta.dryad.config import load_config
    server = start_server(tmp / f"{name}-{key_type}-server.log", key_type=key_type,
                          key_pool_size=8 if key_type == "ed25519" else 4, **(settings or {}))
    hosts: list[Child] = []
    drivers: list[Child] = []
    try:
        caps = {"device_type": f"bench-{uuidlib.uuid4().hex[:8]}"}
        configs = write_configs(tmp, server, opts["dryads"], caps)
        uuids = [load_config(p).uuid for p in configs]
        hosts = start_hosts(tmp, configs, opts["dryad_procs"])
        client = server.client()
        bring_idle(client, uuids, caps, 120)
        spec = {"listen": server.listen, "client_config": server.client_config, "caps": caps,
                "duration": opts["duration"], "threads": opts["threads"]}
        drivers = [Child([sys.executable, "-m", "bench.e2e_ssh", "--_drive",
                          json.dumps(spec, default=str)],
                         tmp / f"driver-{key_type}-{i}.log", stdin=True)
                   for i in range(opts["drivers"])]
        for d in drivers:
            d.expect("ready", 60)
        cpu0 = {"server": server.cpu(), "dryads": sum(h.cpu() for h in hosts)}
        start = time.time() + 0.2
        for d in drivers:
            d.send(repr(start))
        results = [json.loads(d.expect("{", opts["duration"] + 120)) for d in drivers]
        try:
            wait_until(lambda: count_state(client, caps, "IDLE") == len(uuids), 60, 0.05,
                       "every worker IDLE again")
        except TimeoutError:
            states = {s: count_state(client, caps, s) for s in
                      ("IDLE", "RUNNING", "PREPARE", "FAILED", "MAINTENANCE", "BUSY")}
            raise RuntimeError(f"not every worker IDLE again: {states}; drivers: "
                               f"{[(r['cycles'], r['errors'], r['first_error']) for r in results]}")
        end = time.time()
        elapsed = end - start
        cycles = sum(r["cycles"] for r in results)
        errors = sum(r["errors"] for r in results)
        cpu = {"server": server.cpu() - cpu0["server"],
               "dryads": sum(h.cpu() for h in hosts) - cpu0["dryads"],
               "clients": sum(r["cpu"] for r in results)}
        lat = sorted(x for r in results for x in r["latencies"])
        client.close()
        out = {"key_type": key_type, "cycles": cycles, "errors": errors, "elapsed_s": elapsed,
               "per_s": cycles / elapsed, "concurrency": opts["drivers"] * opts["threads"],
               "dryads": len(uuids),
               "latency_p50_ms": 1000 * lat[len(lat) // 2] if lat else None,
               "latency_p95_ms": 1000 * lat[int(len(lat) * 0.95)] if lat else None,
               "cpu_ms_per_cycle": {k: 1000 * v / max(cycles, 1) for k, v in cpu.items()},
               "cpu_busy": sum(cpu.values()) / elapsed,
               "first_error": next((r["first_error"] for r in results if r["first_error"]), None),
               "phases_ms": _merge_phases(results)}
        return out
    finally:
        for d in drivers:
            d.close()
        for h in hosts:
            h.close()
        server.close()


def _merge_phases(results: list[dict[str, Any]]) -> dict[str, float]:
    merged: dict[str, list[float]] = {}
    for r in results:
        for k, v in r["phases"].items():
            merged.setdefault(k, []).extend(v)
    return {k: 1000 * statistics.median(v) for k, v in merged.items() if v}


def drive(spec: dict[str, Any]) -> None:
    """A driver process: `threads` clients looping job cycles from a common start time."""
    import logging

    import paramiko

    from boruta.transport.client import Client
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    print("ready", flush=True)
    start = float(sys.stdin.readline())
    stop_at = start + spec["duration"]
    caps = spec["caps"]
    lock = threading.Lock()
    totals = {"cycles": 0, "errors": 0, "first_error": None}
    latencies: list[float] = []
    phases: dict[str, list[float]] = {"acquire": [], "ssh": [], "close": []}

    def loop() -> None:
        client = Client(spec["listen"], timeout=60,
                        credentials=credentials_from(spec["client_config"]))
        while time.time() < start:
            time.sleep(0.005)
        while time.time() < stop_at:
            t0 = time.perf_counter()
            req_id = None
            try:
                req_id = client.new_request(caps, 8)
                access = client.acquire_worker(req_id, timeout=60)
                t1 = time.perf_counter()
                key = load_key(access.key, access.key_type)
                sock = socket.create_connection(tuple(access.addr), timeout=30)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                ssh = paramiko.SSHClient()
                ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())
                try:
                    ssh.connect(access.addr[0], access.addr[1], username=access.username,
                                pkey=key, sock=sock, allow_agent=False, look_for_keys=False,
                                timeout=30, auth_timeout=30, banner_timeout=30)
                    _, out, _ = ssh.exec_command("true", timeout=30)
                    status = out.channel.recv_exit_status()
                finally:
                    ssh.close()
                if status != 0:
                    raise RuntimeError(f"exit status {status}")
                t2 = time.perf_counter()
                client.close_request(req_id)
                t3 = time.perf_counter()
            except Exception as exc:  # noqa: BLE001 - counted and reported
                with lock:
                    totals["errors"] += 1
                    totals["first_error"] = totals["first_error"] or f"{type(exc).__name__}: {exc}"
                    print(f"error at {time.time():.3f} request {req_id} "
                          f"worker {getattr(locals().get('access'), 'worker_uuid', None)}: "
                          f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                if req_id is not None:
                    try:
                        client.close_request(req_id)
                    except Exception:  # noqa: BLE001 - already over
                        pass
                continue
            with lock:
                totals["cycles"] += 1
                latencies.append(t3 - t0)
                phases["acquire"].append(t1 - t0)
                phases["ssh"].append(t2 - t1)
                phases["close"].append(t3 - t2)
        client.close()

    threads = [threading.Thread(target=loop) for _ in range(spec["threads"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    usage = os.times()
    print(json.dumps({**totals, "latencies": latencies, "phases": phases,
                      "cpu": usage.user + usage.system}), flush=True)


def load_key(text: str, key_type: str) -> Any:
    """The job's private key for paramiko. RSA keys are loaded without cryptography's
    RSA key check (primality tests of p and q, tens of ms: as much CPU as a third of
    the key's generation); the client trusts the server that made the key."""
    import paramiko
    if key_type == "ssh-rsa":
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
        private = load_pem_private_key(text.encode(), None, unsafe_skip_rsa_key_validation=True)
        return paramiko.RSAKey(key=private)
    return paramiko.Ed25519Key.from_private_key(io.StringIO(text))


def host(config_paths: list[str]) -> None:
    """A dryad host process: several DryadAgents on one loop until SIGTERM."""
    import logging

    import zmq.asyncio

    from boruta.dryad.agent import DryadAgent
    from boruta.dryad.config import load_config
    from boruta.logs import setup_logging
    setup_logging(os.environ.get("BORUTA_BENCH_LOG", "warning"))
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)

    async def main() -> None:
        ctx = zmq.asyncio.Context()
        agents = [DryadAgent(load_config(p), ctx=ctx) for p in config_paths]
        tasks = [asyncio.create_task(a.run()) for a in agents]
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        while not all(a.ready is not None and a.ready.is_set() for a in agents):
            if any(t.done() for t in tasks):
                for t in tasks:
                    if t.done():
                        t.result()
            await asyncio.sleep(0.05)
        print(f"ready {len(agents)}", flush=True)
        await stop.wait()
        for a in agents:
            a.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        ctx.destroy(0)

    try:
        import uvloop
        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


# =========================================================================== 4. SIGKILL

def bench_kill(tmp: Path, n: int, interval: float, liveness: int = 3) -> dict[str, Any]:
    from boruta.core.types import ReqState
    server = start_server(tmp / "kill-server.log", key_type="ed25519",
                          heartbeat_interval=interval, heartbeat_liveness=liveness)
    dryads: list[Child] = []
    try:
        caps = {"device_type": f"bench-{uuidlib.uuid4().hex[:8]}"}
        configs = write_configs(tmp, server, n, caps)
        dryads = [Child([sys.executable, "-m", "boruta.cli", "dryad", "--config", str(p),
                         "--log-level", "warning"], tmp / f"kill-dryad{i}.log")
                  for i, p in enumerate(configs)]
        uuids = [d.expect("boruta dryad ready", 120).split()[3].split("=", 1)[1] for d in dryads]
        client = server.client()
        bring_idle(client, uuids, caps, 60)
        req_ids = [client.new_request(caps, 4) for _ in dryads]
        workers = {client.acquire_worker(r, timeout=30).worker_uuid: r for r in req_ids}
        by_uuid = dict(zip(uuids, dryads))
        failed: dict[int, float] = {}
        ready = threading.Barrier(len(req_ids) + 1)

        def waiter(req_id: int) -> None:
            c = server.client()
            ready.wait()
            c.wait_request(req_id, [ReqState.FAILED], timeout=interval * liveness + 30)
            failed[req_id] = time.monotonic()
            c.close()

        threads = [threading.Thread(target=waiter, args=(r,)) for r in req_ids]
        for t in threads:
            t.start()
        ready.wait()
        time.sleep(0.3)                       # the parked waits have reached the server
        killed: dict[int, float] = {}
        for uuid, req_id in workers.items():
            killed[req_id] = time.monotonic()
            by_uuid[uuid].proc.send_signal(signal.SIGKILL)
        for t in threads:
            t.join()
        delays = sorted(failed[r] - killed[r] for r in req_ids)
        client.close()
        return {"interval_s": interval, "liveness": liveness, "n": len(delays),
                "median_s": statistics.median(delays), "max_s": delays[-1], "min_s": delays[0],
                "median_intervals": statistics.median(delays) / interval,
                "max_intervals": delays[-1] / interval}
    finally:
        for d in dryads:
            d.close()
        server.close()


# =========================================================================== report

def table(res: dict[str, Any], markdown: bool) -> str:
    rows: list[tuple[str, str, str, str]] = []
    k = res["keys"]
    rows.append(("RSA-2048 key generation, 1 thread (median)",
                 f"{1000 * k['rsa_s']:.1f} ms/key wall clock, {1000 * k['rsa_cpu_s']:.1f} ms CPU",
                 "", ""))
    rows.append((f"  bound on RSA cycles ({k['cores_used']} of {k['cores']} cores)",
                 f"{k['rsa_bound_per_s']:.1f} cycles/s (from CPU time: "
                 f"{k['rsa_cpu_bound_per_s']:.1f})", "", ""))
    if "tunnel" in res:
        t = res["tunnel"]
        mb = t["bytes"] >> 20
        for name, key in (("upload (client -> dryad)", "upload_MBps"),
                          ("download (dryad -> client)", "download_MBps")):
            v = t[key]
            rows.append((f"tunnel {name}, 1 stream, {mb} MiB", f"{v:.0f} MB/s", ">= 300 MB/s",
                         "yes" if v >= 300 else "NO"))
        rows.append((f"tunnel upload, 4 streams at once, {mb} MiB in all",
                     f"{t['upload4_MBps']:.0f} MB/s", "", ""))
        per_gb = t["server_cpu_per_GB_s"]
        rows.append(("  server CPU per GB forwarded (upload)",
                     f"{per_gb:.2f} s (= {1000 / per_gb:.0f} MB/s per core)", "", ""))
    for kt, label in (("ed25519", "Ed25519"), ("rsa", "RSA-2048")):
        c = res.get(f"cycles_{kt}")
        if not c:
            continue
        where = f"job cycles, {c['dryads']} dryads, {c['concurrency']} clients, {label}"
        detail = (f"{c['per_s']:.1f} cycles/s ({c['cycles']} in {c['elapsed_s']:.1f} s, "
                  f"p50 {c['latency_p50_ms']:.0f} ms, {c['errors']} errors)")
        if kt == "ed25519":
            rows.append((where, detail, ">= 100/s", "yes" if c["per_s"] >= 100 else "NO"))
        else:
            share = c["per_s"] / k["rsa_bound_per_s"]
            cpu_share = c["per_s"] / k["rsa_cpu_bound_per_s"]
            rows.append((where, detail + f" = {100 * share:.0f}% of the bound "
                         f"({100 * cpu_share:.0f}% of the CPU-time bound)",
                         ">= 80% of bound", "yes" if share >= 0.8 else "NO"))
        cpu = c["cpu_ms_per_cycle"]
        total = cpu["server"] + cpu["dryads"] + cpu["clients"]
        rows.append(("  CPU per cycle: server / dryads / clients",
                     f"{cpu['server']:.1f} / {cpu['dryads']:.1f} / {cpu['clients']:.1f} ms; "
                     f"we got {c['cpu_busy']:.2f} cores: {c['cpu_busy'] * 1000 / total:.0f}/s; "
                     f"2 idle cores: {2000 / total:.0f}/s", "", ""))
    if "kill" in res:
        d = res["kill"]
        rows.append((f"SIGKILL -> request FAILED ({d['n']} dryads, interval {d['interval_s']:g} s, "
                     f"liveness {d['liveness']})",
                     f"median {d['median_s']:.2f} s = {d['median_intervals']:.2f} intervals, "
                     f"max {d['max_intervals']:.2f}", "<= 3 intervals",
                     "yes" if d["median_intervals"] <= 3 else "NO"))
    return render_table(("measurement", "result", "target", "met"), rows, markdown)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--_host"]:
        host(argv[1:])
        return 0
    if argv[:1] == ["--_drive"]:
        drive(json.loads(argv[1]))
        return 0
    args, opts = parse_bench_args("python -m bench.e2e_ssh", __doc__, "comma-separated: keys,tunnel,ed25519,rsa,kill",
                                  "keep configurations and logs there (default: a temporary directory)",
                                  DEFAULT, QUICK, argv)
    only = set(args.only.split(",")) if args.only else {"keys", "tunnel", "ed25519", "rsa", "kill"}
    res: dict[str, Any] = {"machine": {"cores": len(os.sched_getaffinity(0)),
                                       "python": sys.version.split()[0],
                                       "loadavg_before": os.getloadavg()}, "options": opts}
    with tempfile.TemporaryDirectory(prefix="boruta-bench-") as tmpdir:
        tmp = Path(args.workdir or tmpdir)
        tmp.mkdir(parents=True, exist_ok=True)
        res["keys"] = measure_keygen(8 if args.quick else 16)
        print(f"keys: RSA-2048 {1000 * res['keys']['rsa_s']:.1f} ms", file=sys.stderr)
        if "tunnel" in only:
            res["tunnel"] = bench_tunnel(tmp, opts["tunnel_mb"])
            print(f"tunnel: {res['tunnel']['upload_MBps']:.0f} MB/s up", file=sys.stderr)
        for kt in ("ed25519", "rsa"):
            if kt in only:
                res[f"cycles_{kt}"] = bench_cycles(tmp, kt, opts)
                print(f"cycles {kt}: {res[f'cycles_{kt}']['per_s']:.1f}/s", file=sys.stderr)
        if "kill" in only:
            res["kill"] = bench_kill(tmp, opts["kills"], opts["kill_interval"])
    res["machine"]["loadavg_after"] = os.getloadavg()
    print(table(res, args.markdown))
    print(f"(cores: {res['machine']['cores']}, load average before/after: "
          f"{res['machine']['loadavg_before'][0]:.2f} / {res['machine']['loadavg_after'][0]:.2f})")
    write_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
