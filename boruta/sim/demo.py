"""`make demo`: a working farm on this machine, and a workload that uses it.

It starts a real Boruta server, secure as in production with no setup: it
writes its admin's client config into the demo's state directory, and the
simulated dryads of three board types enrol themselves through it (their
"sshd" is an echo server, so every tunnel carries real bytes). The admin
brings every worker to IDLE and adds two users with different priority
ranges; CI-like clients, as the admin, alice and bob, file requests, wait for
their board, talk to it through the tunnel and close. Every decision the
scheduler makes is printed live from the event stream; a summary follows.

    python -m boruta.sim.demo [--duration 20] [--clients 12] [--state-dir DIR]
"""
from __future__ import annotations

import argparse
import contextlib
import random
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from boruta.core.errors import BorutaError
from boruta.core.types import ReqState, WorkerState
from boruta.core.users import token_hash
from boruta.testing.processes import Child, ServerProcess
from boruta.transport.addresses import CLIENT_ENDPOINT, DRYAD_ENDPOINT, EVENTS_ENDPOINT
from boruta.transport.client import Client
from boruta.transport.credentials import Credentials

BOARDS = [  # (count, caps)
    (4, {"device_type": "rpi4", "arch": "arm64", "usb": "yes"}),
    (3, {"device_type": "odroid-xu4", "arch": "armv7", "hdmi": "yes"}),
    (2, {"device_type": "beaglebone", "arch": "armv7", "serial": "115200"}),
]
WANTS = [
    {"device_type": "rpi4"},
    {"device_type": "rpi4", "usb": "yes"},
    {"device_type": "odroid-xu4"},
    {"arch": "armv7"},
    {"device_type": "beaglebone", "serial": "115200"},
]
DEFAULTS = (CLIENT_ENDPOINT, DRYAD_ENDPOINT, EVENTS_ENDPOINT)
ADMIN = "admin"                 # the bootstrap admin: the server's own, every priority
USERS = {                       # the users the demo adds: name -> priorities they may ask for
    "alice": (2, 8),            # a release team: important work
    "bob": (9, 16),             # nightly CI: whatever is left
}
console = Console(highlight=False)


@dataclass(frozen=True)
class Identity:
    """Whom a workload client runs as: a name, its keys, the priorities it may ask for."""

    name: str
    credentials: Credentials | None
    priorities: tuple[int, int] = (1, 16)


def free(endpoint: str) -> bool:
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    with socket.socket() as sock:
        return sock.connect_ex((host, int(port))) != 0


def start_server(state_dir: str) -> ServerProcess:
    """The server, on the default ports when they are free (so that `boruta` commands
    reach it), else on any free ones; its log, keys and admin's client config go to the
    state directory (never to the user's own ~/.config)."""
    endpoints = dict(zip(("listen", "dryad_listen", "events"), DEFAULTS))
    if not all(free(e) for e in DEFAULTS):
        endpoints = {name: "tcp://127.0.0.1:*" for name in endpoints}
    server = ServerProcess(Path(state_dir) / "server.log", **endpoints, key_type="ed25519",
                           state_dir=state_dir, log_level="warning")
    return server.start()


def start_dryads(server: ServerProcess, log_dir: str) -> list[Child]:
    """One simulated-dryad process per board type (an echo server stands in for sshd),
    each enrolling its dryads through the admin's client config."""
    return [server.sim_dryads(count, caps, Path(log_dir) / f"dryads-{n}.log", echo=True)[0]
            for n, (count, caps) in enumerate(BOARDS)]


def add_users(server: ServerProcess) -> list[Identity]:
    """The admin and the demo's users (alice, bob), each with a keypair of its own."""
    identities = [Identity(ADMIN, server.credentials)]
    for name, (low, high) in USERS.items():
        client = server.user(name, priorities=[low, high])
        identities.append(Identity(name, client.credentials, (low, high)))
    return identities


def show_a_refusal(server: ServerProcess, who: Identity) -> None:
    """A user asking above their priority range is refused, with a reason."""
    client = Client(server.listen, credentials=who.credentials)
    try:
        client.new_request(dict(WANTS[0]), who.priorities[0] - 1)
    except BorutaError as exc:
        console.print(f"{who.name} asks for priority {who.priorities[0] - 1}: "
                      f"[red]{exc.code}[/] [dim]{exc}[/]")
    finally:
        client.close()


def bring_idle(client: Client, expected: int, timeout: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers, _ = client.list_workers(None, None, None)
        for worker in workers:
            if worker.state is WorkerState.MAINTENANCE:
                client.set_state(worker.worker_uuid, WorkerState.IDLE)
        if sum(w.state is WorkerState.IDLE for w in workers) >= expected:
            return [w.worker_uuid for w in workers]
        time.sleep(0.2)
    raise RuntimeError("the workers did not all become IDLE")


def follow_events(endpoint: str, events_endpoint: str, credentials: Credentials | None,
                  stop: threading.Event, names: dict[str, str]) -> None:
    client = Client(endpoint, events_endpoint=events_endpoint, credentials=credentials)
    try:
        for event in client.events():
            if stop.is_set():
                break
            if not event or event.get("kind") not in ("request", "worker"):
                continue
            at = str(event.get("at", ""))[11:23]
            if event["kind"] == "request":
                worker = names.get(event.get("worker_uuid") or "", "")
                colour = {"IN PROGRESS": "green", "DONE": "cyan", "WAITING": "yellow"}.get(
                    event["state"], "red")
                console.print(f"[dim]{at}[/] request {event['id']:>4} [{colour}]{event['state']:<11}[/]"
                              f" {worker} [dim]{event.get('reason', '')}[/]")
            elif event["state"] in ("RUNNING", "FAILED", "MAINTENANCE"):
                console.print(f"[dim]{at}[/] worker  {names.get(event['uuid'], event['uuid'][:8]):>4} "
                              f"{event['state']} [dim]{event.get('reason', '')}[/]")
    except BorutaError:
        pass
    finally:
        client.close()


def workload(endpoint: str, who: Identity, seed: int, stop: threading.Event,
             stats: Counter) -> None:
    """One CI client as `who`: file, acquire, use the tunnel, close; again until stopped.
    `stats` is `who`'s, shared by the clients of one user."""
    rng = random.Random(seed)
    client = Client(endpoint, timeout=10.0, credentials=who.credentials)
    try:
        while not stop.is_set():
            caps = rng.choice(WANTS)
            started = time.monotonic()
            req_id = client.new_request(dict(caps), rng.randint(*who.priorities))
            stats["requests"] += 1
            try:
                access = client.acquire_worker(req_id, timeout=15.0)
            except BorutaError:
                stats["gave up"] += 1
                with contextlib.suppress(BorutaError):
                    client.close_request(req_id)
                continue
            stats["wait_ms"] += int((time.monotonic() - started) * 1000)
            assert access.addr is not None
            with socket.create_connection(access.addr, timeout=5) as conn:
                conn.sendall(b"uname -a\n")
                if conn.recv(64) == b"uname -a\n":      # the echo "board" answers
                    stats["tunnel round trips"] += 1
            time.sleep(rng.uniform(0.2, 1.0))               # the "test" runs
            client.close_request(req_id)
            stats["jobs done"] += 1
    except BorutaError as exc:
        stats[f"error: {exc.code}"] += 1
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m boruta.sim.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of workload")
    parser.add_argument("--clients", type=int, default=12,
                        help="concurrent CI clients (as alice, bob and the admin, in turn)")
    parser.add_argument("--state-dir", help="server state directory (default: a temporary one)")
    args = parser.parse_args(argv)
    state_dir = args.state_dir or tempfile.mkdtemp(prefix="boruta-demo-")
    expected = sum(count for count, _ in BOARDS)
    console.print(f"[bold]Boruta demo[/]: server, {expected} simulated boards, "
                  f"{args.clients} clients for {args.duration:g} s (state in {state_dir})")
    server = start_server(state_dir)
    endpoints = server.endpoints
    dryads: list[Child] = []
    stop = threading.Event()
    try:
        console.print(f"server ready: clients {endpoints['listen']}, dryads {endpoints['dryad']},"
                      f" events {endpoints['events']}")
        console.print(f"secure (CurveZMQ); its admin's client config: {server.client_config}\n"
                      f"  [dim]meanwhile: BORUTA_CLIENT_CONFIG={server.client_config} "
                      "boruta worker list[/]")
        dryads = start_dryads(server, state_dir)
        client = server.client(timeout=10.0)
        token = secrets.token_urlsafe(32)
        client.user_token(name="admin", token_hash=token_hash(token))
        console.print(f"dashboard: {server.http}/ (token {token}); metrics: {server.http}/metrics")
        enrolled = len(client.dryad_list())
        uuids = bring_idle(client, expected)
        names = {uuid: f"w{n}" for n, uuid in enumerate(sorted(uuids), 1)}
        identities = add_users(server)
        console.print(f"{enrolled} dryads enrolled by the admin, {expected} workers IDLE; users "
                      + ", ".join(f"{who.name} (priorities {who.priorities[0]}-"
                                  f"{who.priorities[1]})" for who in identities))
        show_a_refusal(server, identities[-1])
        console.print("workload starts\n")
        watcher = threading.Thread(target=follow_events, daemon=True,
                                   args=(endpoints["listen"], endpoints["events"],
                                         server.credentials, stop, names))
        watcher.start()
        order = identities[1:] + identities[:1]         # the users first, then the admin
        stats = {who.name: Counter() for who in identities}
        threads = []
        for n in range(args.clients):
            who = order[n % len(order)]
            threads.append(threading.Thread(target=workload, args=(
                endpoints["listen"], who, n, stop, stats[who.name])))
        for thread in threads:
            thread.start()
        time.sleep(args.duration)
        stop.set()
        for thread in threads:
            thread.join(30)
        show_summary(client, identities, stats, names)
        return 0
    except KeyboardInterrupt:
        stop.set()
        return 130
    finally:
        stop.set()
        for dryad in dryads:
            dryad.close()
        server.close()
        if not args.state_dir:
            shutil.rmtree(state_dir, ignore_errors=True)


def show_summary(client: Client, identities: list[Identity], stats: dict[str, Counter],
                 names: dict[str, str]) -> None:
    requests, info = client.list_requests(None, None, None)
    by_state = Counter(str(r.state) for r in requests)
    by_owner = Counter(r.owner.name for r in requests)
    per_worker = Counter(names.get(r.job.worker_uuid, "?") for r in requests
                         if r.job is not None and r.state is ReqState.DONE)
    total: Counter = sum(stats.values(), Counter())
    table = Table(title="summary", show_header=False)
    table.add_row("requests filed", str(info.total_items))
    for state, count in sorted(by_state.items()):
        table.add_row(f"  {state}", str(count))
    table.add_row("tunnel round trips", str(total["tunnel round trips"]))
    if total["jobs done"]:
        table.add_row("mean wait for a board", f"{total['wait_ms'] / total['jobs done']:.0f} ms")
    for who in identities:
        mine = stats[who.name]
        wait = f", mean wait {mine['wait_ms'] / mine['jobs done']:.0f} ms" if mine["jobs done"] \
            else ""
        table.add_row(f"as {who.name} (priorities {who.priorities[0]}-{who.priorities[1]})",
                      f"{by_owner[who.name]} requests, {mine['jobs done']} jobs done{wait}")
    table.add_row("jobs per worker", ", ".join(f"{w}:{c}" for w, c in sorted(per_worker.items())))
    for key, value in total.items():
        if key.startswith("error") or key == "gave up":
            table.add_row(key, str(value))
    console.print()
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
