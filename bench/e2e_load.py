"""S5 parts (a) and (b) of bench.e2e_server: the NewRequest load, closed loop and open loop.

Client processes (multiprocessing, spawn) send NewRequest frames over raw
DEALER sockets at a Boruta server with 10 simulated dryads (or at a bare
ROUTER echo, for what the machine and the transport allow without
Boruta). bench.e2e_server describes the measurements; this module also
holds the helpers its other parts share (percentiles, child processes
started together, uvloop).
"""
from __future__ import annotations

import array
import asyncio
import contextlib
import multiprocessing as mp
import os
import random
import select
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from bench.e2e_common import start_server
from boruta.testing.processes import Child, ServerProcess, cpu_seconds, credentials_from

BENCH_SETTINGS = {"peer_rate": 1e6, "peer_burst": 1000000}
DRYAD_CAPS = {"device_type": "bench-s5"}
LOST_AFTER = 2.0              # seconds: a call unanswered this long counts as lost


# =========================================================================== helpers

def pct(values: list[float] | array.array, q: float) -> float:
    """The q-quantile (0..1) of values (nearest rank), nan when empty."""
    if not len(values):
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float) -> str:
    return "inf" if seconds == float("inf") else f"{1000 * seconds:.2f} ms"


def start_dryads(tmp: Path, server: ServerProcess, count: int, caps: dict[str, str],
                 name: str) -> tuple[Child, list[str]]:
    """A `simdryad` process with `count` dryads (`--echo` stands in for sshd), enrolled
    through the server's admin."""
    return server.sim_dryads(count, caps, tmp / f"{name}-dryads.log", echo=True)


def run_children(target: Any, specs: list[dict[str, Any]], timeout: float,
                 on_start: Any = None) -> tuple[list[dict[str, Any]], float]:
    """Start one spawned process per spec, release them at one start time, collect results.

    Each `target(spec, ready, go, start, out)` connects, puts its index on `ready`,
    waits for `go`, works from `start.value` (time.time()) and puts its result on
    `out`. `on_start(start)` runs in this process once the start time is set.
    """
    ctx = mp.get_context("spawn")
    ready, out = ctx.Queue(), ctx.Queue()
    go = ctx.Event()
    start = ctx.Value("d", 0.0)
    procs = [ctx.Process(target=target, args=(dict(spec, index=i), ready, go, start, out),
                         daemon=True) for i, spec in enumerate(specs)]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=60)
        start.value = time.time() + 0.3
        go.set()
        if on_start is not None:
            on_start(start.value)
        results = [out.get(timeout=timeout) for _ in procs]
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
    results.sort(key=lambda r: r["index"])
    return results, start.value


def sleep_until(wall: float) -> None:
    while True:
        left = wall - time.time()
        if left <= 0:
            return
        time.sleep(min(left, 0.05))


def _dealer(spec: dict[str, Any]) -> Any:
    """A raw connection to the spec's `listen`, with the admin's keys when the spec names
    a `client_config` (a secure server; the echo target has none)."""
    import zmq
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    credentials = credentials_from(spec.get("client_config"))
    if credentials is not None:
        credentials.apply(sock)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(spec["listen"])
    return ctx, sock


def _ping(sock: Any) -> None:
    """One ping and its reply: the connection is up."""
    from boruta.transport import codec
    sock.send(codec.request_frame("warm", "ping", {}))
    if not sock.poll(20000):
        raise RuntimeError("the server does not answer a ping")
    sock.recv()


class NewRequestFrames:
    """NewRequest frames exactly as boruta.Client sends them, made cheaply: the load
    generator's own cost per call is CPU the server under test does not get."""

    def __init__(self) -> None:
        from boruta.transport import codec
        from boruta.transport.operations import CLIENT_OPS
        self._frame = codec.request_frame
        self._args = {prio: CLIENT_OPS["new_request"].encode_args({"caps": DRYAD_CAPS, "priority": prio})
                      for prio in range(1, 17)}

    def __call__(self, msg_id: int, priority: int) -> bytes:
        return self._frame(msg_id, "new_request", self._args[priority])


# =========================================================================== (a) throughput

class Tally:
    """A closed-loop client's count of its measured window [m0, m1) (perf_counter time):
    the replies that came in it, the latency of the calls sent in it, the errors."""

    def __init__(self, m0: float, m1: float) -> None:
        self.m0, self.m1 = m0, m1
        self.lat = array.array("d")
        self.done = self.errors = 0
        self.first_error: str | None = None
        self.cpu0 = os.times()

    def reply(self, now: float, sent_at: float, error: str | None) -> bool:
        """Count one reply; True while the window lasts (the next call goes)."""
        if error is not None:
            self.errors += 1
            self.first_error = self.first_error or error
        if self.m0 <= now < self.m1:
            self.done += 1
        if self.m0 <= sent_at < self.m1:
            self.lat.append(now - sent_at)
        return now < self.m1

    def result(self, index: int, **extra: Any) -> dict[str, Any]:
        cpu1 = os.times()
        return {"index": index, "done": self.done, "lat": self.lat.tobytes(),
                "errors": self.errors, "first_error": self.first_error,
                "cpu": (cpu1.user + cpu1.system) - (self.cpu0.user + self.cpu0.system), **extra}


def throughput_child(spec: dict[str, Any], ready: Any, go: Any, start_v: Any, out: Any) -> None:
    """Closed loop: `window` NewRequest calls in flight on one DEALER."""
    import msgpack
    import zmq
    ctx, sock = _dealer(spec)
    _ping(sock)
    rng = random.Random(spec["index"])
    priorities = [rng.randint(1, 16) for _ in range(4096)]
    new_request_frame = NewRequestFrames()
    ready.put(spec["index"])
    go.wait()
    start = start_v.value
    sleep_until(start)
    offset = time.perf_counter() - time.time()
    m0 = start + spec["warmup"] + offset                 # measured window, perf_counter time
    m1 = m0 + spec["duration"]
    tally = Tally(m0, m1)
    sent: dict[int, float] = {}
    lost = 0
    next_id = 0

    def send() -> None:
        nonlocal next_id
        sent[next_id] = time.perf_counter()
        sock.send(new_request_frame(next_id, priorities[next_id & 4095]))
        next_id += 1

    for _ in range(spec["window"]):
        send()
    last_check = time.perf_counter()
    while sent:
        now = time.perf_counter()
        if now - last_check > 0.5:
            # A call unanswered for LOST_AFTER seconds is counted lost and replaced, so
            # that the window stays full (the server must never drop a call, though).
            last_check = now
            for msg_id in [m for m, t in sent.items() if now - t > LOST_AFTER]:
                if m0 <= sent.pop(msg_id) < m1:
                    tally.lat.append(float("inf"))     # counts in the percentiles
                lost += 1
                if now < m1:
                    send()
        if not sock.poll(500):
            if time.perf_counter() > m1 + 2 * LOST_AFTER:
                break
            continue
        while True:
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            now = time.perf_counter()
            env = msgpack.unpackb(frame, raw=False)
            t0 = sent.pop(env["id"], None)
            if t0 is None:
                continue                                 # a reply after LOST_AFTER
            error = (f"{env['error']['code']}: {env['error']['message']}"
                     if "error" in env else None)
            if tally.reply(now, t0, error):
                send()
    result = tally.result(spec["index"], calls=next_id, lost=lost + len(sent))
    sock.close(0)
    ctx.term()
    out.put(result)


def echo_main(ready: Any) -> None:
    """A bare ROUTER answering every call with `{"id": n}`: the server's own I/O
    (LoopSocket on uvloop, turns of up to TURN_MAX messages, a turn's replies sent at
    its end) and nothing else. What the machine and the transport allow, without Boruta."""
    import msgpack
    import zmq

    from boruta.transport.loopsocket import LoopSocket
    from boruta.server.app import TURN_MAX

    async def main() -> None:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.SNDHWM, 10000)
        sock.setsockopt(zmq.RCVHWM, 10000)
        sock.bind("tcp://127.0.0.1:*")
        ready.put(sock.getsockopt_string(zmq.LAST_ENDPOINT))
        outbox: list[list[bytes]] = []
        answered = 0

        def handle(frames: list[bytes]) -> None:
            nonlocal answered
            answered += 1
            env = msgpack.unpackb(frames[-1], raw=False)
            outbox.append([frames[0], msgpack.packb({"v": 1, "id": env["id"],
                                                     "ok": {"id": answered}})])

        def end_turn() -> None:
            for frames in outbox:
                reader.send(frames)
            outbox.clear()

        reader = LoopSocket(sock, handle, turn_max=TURN_MAX, end_turn=end_turn)
        reader.start(asyncio.get_running_loop())
        await asyncio.Event().wait()

    run_async(main())


@contextlib.contextmanager
def call_target(tmp: Path, name: str, echo: bool,
                settings: dict[str, Any] | None = None
                ) -> Iterator[tuple[dict[str, Any], int]]:
    """(where to call: `listen` and `client_config`, pid): a Boruta server with 10
    registered sim dryads (in MAINTENANCE: NewRequest is satisfiable and the requests
    stay WAITING), or echo_main. `settings` go to the server on top of BENCH_SETTINGS
    (e.g. a state_dir)."""
    if echo:
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        proc = ctx.Process(target=echo_main, args=(q,), daemon=True)
        proc.start()
        try:
            yield {"listen": q.get(timeout=60), "client_config": None}, proc.pid
        finally:
            proc.kill()
            proc.join(5)
        return
    server = start_server(tmp / f"{name}-server.log", key_type="ed25519",
                          **{**BENCH_SETTINGS, **(settings or {})})
    dryads = None
    try:
        dryads, _ = start_dryads(tmp, server, 10, DRYAD_CAPS, name)
        yield {"listen": server.listen, "client_config": server.client_config}, server.proc.pid
    finally:
        if dryads is not None:
            dryads.close()
        server.close()


def cpu_sampler(pid: int, t0: float, t1: float, cpu: dict[str, float]) -> Any:
    """An on_start for run_children: the CPU seconds of `pid` at start+t0 and start+t1."""
    def on_start(start: float) -> None:
        def sample() -> None:
            sleep_until(start + t0)
            cpu["s0"] = cpu_seconds(pid)
            sleep_until(start + t1)
            cpu["s1"] = cpu_seconds(pid)
        threading.Thread(target=sample, daemon=True).start()
    return on_start


def bench_throughput(tmp: Path, opts: dict[str, Any], echo: bool = False,
                     settings: dict[str, Any] | None = None,
                     name: str = "a") -> dict[str, Any]:
    """(a) against a Boruta server (with extra `settings`), or (echo) against echo_main."""
    cpu: dict[str, float] = {}
    with call_target(tmp, name, echo, settings) as (target, pid):
        spec = {**target, "window": opts["window"], "warmup": opts["warmup"],
                "duration": opts["duration"]}
        results, _ = run_children(
            throughput_child, [spec] * opts["procs"], opts["warmup"] + opts["duration"] + 60,
            cpu_sampler(pid, opts["warmup"], opts["warmup"] + opts["duration"], cpu))
    lat = array.array("d")
    for r in results:
        lat.frombytes(r["lat"])
    done = sum(r["done"] for r in results)
    per_s = done / opts["duration"]
    server_cpu = cpu.get("s1", 0.0) - cpu.get("s0", 0.0)
    # Client CPU: their whole run (warm-up, window, drain) over all their calls.
    client_cpu_per_call = sum(r["cpu"] for r in results) / max(1, sum(r["calls"] for r in results))
    server_per_call = server_cpu / max(1, done)
    return {"procs": opts["procs"], "window": opts["window"], "per_s": per_s, "calls": done,
            "p50_s": pct(lat, 0.5), "p99_s": pct(lat, 0.99),
            "errors": sum(r["errors"] for r in results),
            "lost": sum(r["lost"] for r in results),
            "first_error": next((r["first_error"] for r in results if r["first_error"]), None),
            "server_cores": server_cpu / opts["duration"],
            "server_us_per_call": 1e6 * server_per_call,
            "server_ceiling_per_s": 1 / server_per_call if server_per_call else float("nan"),
            "client_us_per_call": 1e6 * client_cpu_per_call,
            "per_proc": [r["done"] / opts["duration"] for r in results]}


# =========================================================================== (b) open loop

def open_loop_child(spec: dict[str, Any], ready: Any, go: Any, start_v: Any, out: Any) -> None:
    """Open loop: NewRequest at a fixed rate; latency from each call's scheduled time."""
    import msgpack
    import zmq
    if spec.get("cpus"):
        os.sched_setaffinity(0, spec["cpus"])
    ctx, sock = _dealer(spec)
    _ping(sock)
    fd = sock.getsockopt(zmq.FD)
    rng = random.Random(spec["index"])
    new_request_frame = NewRequestFrames()
    ready.put(spec["index"])
    go.wait()
    start = start_v.value
    offset = time.perf_counter() - time.time()
    period = 1.0 / spec["rate"]                        # this process's own rate
    t_begin = start + offset + spec["phase"]
    total = int(round((spec["warmup"] + spec["duration"]) * spec["rate"]))
    m0 = start + offset + spec["warmup"]
    scheduled: dict[int, float] = {}
    lat = array.array("d")
    late = array.array("d")                            # how late the client itself sent
    errors = 0
    first_error = None
    i = 0
    next_t = t_begin
    cpu0 = os.times()
    last_reply = 0.0
    while True:
        now = time.perf_counter()
        while i < total and next_t <= now:
            scheduled[i] = next_t
            sock.send(new_request_frame(i, rng.randint(1, 16)))
            if next_t >= m0:
                late.append(time.perf_counter() - next_t)
            i += 1
            next_t = t_begin + i * period
        while True:
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            t = last_reply = time.perf_counter()
            env = msgpack.unpackb(frame, raw=False)
            t0 = scheduled.pop(env["id"])
            if "error" in env:
                errors += 1
                first_error = first_error or f"{env['error']['code']}: {env['error']['message']}"
            if t0 >= m0:
                lat.append(t - t0)
        if i >= total and not scheduled:
            break
        now = time.perf_counter()
        if i >= total and now - max(last_reply, next_t) > LOST_AFTER:
            break                                      # the rest never comes: lost
        wait = (next_t - now) if i < total else 0.05
        # zmq.FD is edge-triggered: look at EVENTS first, then sleep on the fd with a
        # microsecond timeout (zmq.poll and epoll only take milliseconds).
        if wait > 0 and not (sock.getsockopt(zmq.EVENTS) & zmq.POLLIN):
            select.select([fd], [], [], wait)
    cpu1 = os.times()
    sock.close(0)
    ctx.term()
    for t0 in scheduled.values():                       # lost: unbounded latency
        if t0 >= m0:
            lat.append(float("inf"))
    out.put({"index": spec["index"], "sent": i, "lat": lat.tobytes(), "late": late.tobytes(),
             "errors": errors, "first_error": first_error, "lost": len(scheduled),
             "cpu": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)})


def bench_open_loop(tmp: Path, opts: dict[str, Any], rate: float,
                    echo: bool = False) -> dict[str, Any]:
    n = opts["open_procs"]
    cpu: dict[str, float] = {}
    with call_target(tmp, f"b-{rate:g}", echo) as (target, pid):
        cpus = client_cpus(opts["pin"])
        specs = [{**target, "rate": rate / n, "phase": k / rate, "cpus": cpus,
                  "warmup": opts["warmup"], "duration": opts["duration"]} for k in range(n)]
        results, _ = run_children(
            open_loop_child, specs, opts["warmup"] + opts["duration"] + 60,
            cpu_sampler(pid, opts["warmup"], opts["warmup"] + opts["duration"], cpu))
    lat, late = array.array("d"), array.array("d")
    for r in results:
        lat.frombytes(r["lat"])
        late.frombytes(r["late"])
    run_s = opts["warmup"] + opts["duration"]
    return {"rate": rate, "procs": n, "calls": len(lat), "echo": echo,
            "client_cpus": sorted(cpus),
            "p50_s": pct(lat, 0.5), "p99_s": pct(lat, 0.99), "p999_s": pct(lat, 0.999),
            "max_s": max(lat, default=float("nan")),
            "late_p99_s": pct(late, 0.99),
            "errors": sum(r["errors"] for r in results),
            "lost": sum(r["lost"] for r in results),
            "first_error": next((r["first_error"] for r in results if r["first_error"]), None),
            "server_cores": (cpu.get("s1", 0.0) - cpu.get("s0", 0.0)) / opts["duration"],
            "client_cores": sum(r["cpu"] for r in results) / run_s}


def client_cpus(pin: str) -> set[int]:
    """The CPUs the open-loop clients are held to: with `--pin clients` (the default)
    the last usable CPU, so that the load generator never takes the server's core (on
    a farm the clients run elsewhere; here two unpinned senders at 5,000/s put the
    server's p99 anywhere from 7 to 114 ms). Empty: anywhere."""
    cpus = sorted(os.sched_getaffinity(0))
    return {cpus[-1]} if pin == "clients" and len(cpus) >= 2 else set()


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round whose p99 is the median of the rounds' (the judged one), with every p99:
    on a shared VM one round's tail moves with the neighbours by a factor of several."""
    ordered = sorted(rounds, key=lambda r: r["p99_s"])
    return dict(ordered[(len(ordered) - 1) // 2], round_p99s=[r["p99_s"] for r in rounds])


def run_async(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)

