"""`make demo`: a farm on this machine to use, with a light workload on it.

It starts a real Boruta server, secure as in production with no setup: it
writes its admin's client config into the demo's state directory (never the
user's own), and 20 simulated boards of three types enrol themselves through
it, each running the dryad's embedded SSH server, so that a job's key logs in
for real. The admin brings every worker to IDLE and adds two users with
different priority ranges. Every workload job logs in to its board through
the job's tunnel and runs a command there.

By default the farm then stays up until Ctrl-C (or SIGTERM): a few clients,
as alice, bob and the admin, file short jobs now and then (so that `boruta
top` has something to show while most boards stay free); the demo holds one
board itself and prints commands to paste into another terminal: a board of
your own, an ssh login to the held board, `boruta top`, the example tests, the
dashboard. At the end it prints a summary and stops everything it started.

`--duration S` is the scripted run instead: a dozen CI-like clients keep the
farm busy for S seconds, every scheduling decision is printed live from the
event stream, then the summary.

    python -m boruta.sim.demo [--duration S] [--clients N] [--state-dir DIR]
"""
from __future__ import annotations

import argparse
import contextlib
import random
import secrets
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

from paramiko import SSHException
from rich.console import Console
from rich.table import Table

from boruta.cli.access import access_address, key_text, write_key_file
from boruta.cli.output import check_access_line, ssh_argv
from boruta.core.errors import BorutaError
from boruta.core.types import AccessInfo, ReqState, WorkerState
from boruta.core.users import token_hash
from boruta.device import Device
from boruta.server.store import DB_NAME
from boruta.testing.processes import ROOT, Child, ServerProcess
from boruta.transport.addresses import CLIENT_ENDPOINT, DRYAD_ENDPOINT, EVENTS_ENDPOINT, HTTP_PORT
from boruta.transport.client import Client
from boruta.transport.credentials import CLIENT_CONFIG_ENV, Credentials
from boruta.transport.errors import WaitTimeoutError

BOARDS = [  # (count, caps)
    (8, {"device_type": "rpi4", "arch": "arm64", "usb": "yes"}),
    (6, {"device_type": "odroid-xu4", "arch": "armv7", "hdmi": "yes"}),
    (6, {"device_type": "artik530", "arch": "armv7", "wifi": "yes"}),
]
WANTS = [
    {"device_type": "rpi4"},
    {"device_type": "rpi4", "usb": "yes"},
    {"device_type": "odroid-xu4"},
    {"arch": "armv7"},
    {"device_type": "artik530", "wifi": "yes"},
]
HELD = {"device_type": "odroid-xu4"}   # the board the demo holds for its `ssh` line
HTTP_DEFAULT = f"127.0.0.1:{HTTP_PORT}"
DEFAULTS = {"listen": CLIENT_ENDPOINT, "dryad_listen": DRYAD_ENDPOINT, "events": EVENTS_ENDPOINT,
            "http_listen": HTTP_DEFAULT}
ADMIN = "admin"                 # the bootstrap admin: the server's own, every priority
USERS = {                       # the users the demo adds: name -> priorities they may ask for
    "alice": (2, 8),            # a release team: important work
    "bob": (9, 16),             # nightly CI: whatever is left
}
EXAMPLE = ROOT / "examples" / "test_on_a_board.py"   # there in a checkout, not in a wheel
PROLONG_EVERY = 1200.0          # s: the held board's job, prolonged well within the default hour
STOP_WITHIN = 15.0              # s a workload client gets to finish its job at the end
SSH_OPTIONS = (                 # a simulated board's host key is new at every start
    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
    "-o", "IdentitiesOnly=yes",  # the job's key only, whatever an ssh agent holds
)
console = Console(highlight=False)


@dataclass(frozen=True)
class Identity:
    """Whom a workload client runs as: a name, its keys, the priorities it may ask for."""

    name: str
    credentials: Credentials | None
    priorities: tuple[int, int] = (1, 16)


@dataclass(frozen=True)
class Pace:
    """How a workload client uses the farm: how far ahead it files each job (the
    request's valid-after: it waits in the queue meanwhile), and how long a job keeps
    its board; seconds, from .. to."""

    ahead: tuple[float, float]
    hold: tuple[float, float]


SCRIPTED = Pace(ahead=(0.0, 0.0), hold=(0.2, 1.0))     # back to back: queues form
LIGHT = Pace(ahead=(1.0, 8.0), hold=(3.0, 10.0))       # now and then: most boards stay free


@dataclass(frozen=True)
class HeldBoard:
    """The demo's own job: the request, and the ssh line that logs into its board."""

    req_id: int
    key_file: Path
    ssh_line: str


def free(endpoint: str) -> bool:
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    with socket.socket() as sock:
        return sock.connect_ex((host, int(port))) != 0


def start_server(state_dir: str) -> ServerProcess:
    """The server, on the default ports when they are all free (so that `boruta` commands
    and the dashboard are where the README says), else on any free ones (the harness's
    loopback defaults); its log, keys
    and admin's client config go to the state directory (never to the user's ~/.config)."""
    endpoints = DEFAULTS if all(free(e) for e in DEFAULTS.values()) else {}
    server = ServerProcess(Path(state_dir) / "server.log", **endpoints, key_type="ed25519",
                           state_dir=state_dir, log_level="warning")
    return server.start()


def start_dryads(server: ServerProcess, log_dir: str, started: list[Child]) -> None:
    """One simulated-dryad process per board type, each board with its own embedded SSH
    server; each process enrols its dryads through the admin's client config. Each joins
    `started` once it is up (so that the caller stops those up if a later one fails)."""
    for n, (count, caps) in enumerate(BOARDS):
        started.append(server.sim_dryads(count, caps, Path(log_dir) / f"dryads-{n}.log",
                                          ssh=True)[0])


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
             stats: Counter, pace: Pace) -> None:
    """One CI client as `who`: file a job, wait for its board, log in through the tunnel
    and run a command, keep the board a while, close; again until stopped. `stats` is
    `who`'s, shared by the clients of one user."""
    rng = random.Random(seed)
    client = Client(endpoint, timeout=10.0, credentials=who.credentials)
    try:
        while not stop.is_set():
            caps = rng.choice(WANTS)
            ahead = rng.uniform(*pace.ahead)
            valid_after = datetime.now(timezone.utc) + timedelta(seconds=ahead) if ahead else None
            req_id = client.new_request(dict(caps), rng.randint(*who.priorities),
                                        valid_after=valid_after)
            stats["requests"] += 1
            due = time.monotonic() + ahead
            try:
                access = acquire_unless_stopped(client, req_id, stop, ahead + 15.0)
            except BorutaError:
                access = None
            if access is None:
                if not stop.is_set():
                    stats["gave up"] += 1
                with contextlib.suppress(BorutaError):
                    client.close_request(req_id)
                continue
            stats["wait_ms"] += int(max(0.0, time.monotonic() - due) * 1000)
            try:
                with Device.connect(access, request_id=req_id) as board:   # via the tunnel
                    if board.run("uname -a", timeout=30.0).ok:
                        stats["commands run on boards"] += 1
            except (OSError, EOFError, ValueError, SSHException) as exc:   # the board's fault
                stats[f"error: {type(exc).__name__}"] += 1
            stop.wait(rng.uniform(*pace.hold))               # the "test" runs
            client.close_request(req_id)
            stats["jobs done"] += 1
    except BorutaError as exc:                              # the server's: this client stops
        stats[f"error: {exc.code}"] += 1
    finally:
        client.close()


def acquire_unless_stopped(client: Client, req_id: int, stop: threading.Event,
                           within: float) -> AccessInfo | None:
    """The job's access once the request is IN PROGRESS; None past `within` seconds or
    once stopped (asked a second at a time, so that a stop is not kept waiting)."""
    deadline = time.monotonic() + within
    while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
        try:
            return client.acquire_worker(req_id, timeout=min(1.0, left))
        except WaitTimeoutError:
            continue
    return None


def start_workload(endpoint: str, identities: list[Identity], clients: int, pace: Pace,
                   stop: threading.Event) -> tuple[list[threading.Thread], dict[str, Counter]]:
    """`clients` workload threads as the users in turn, then the admin; their stats by user."""
    order = identities[1:] + identities[:1]
    stats = {who.name: Counter() for who in identities}
    threads = []
    for n in range(clients):
        who = order[n % len(order)]
        threads.append(threading.Thread(target=workload, daemon=True, name=f"client-{n}",
                                        args=(endpoint, who, n, stop, stats[who.name], pace)))
    for thread in threads:
        thread.start()
    return threads, stats


def join_all(threads: list[threading.Thread], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


def ssh_line(key_file: Path, host: str, port: int, username: str) -> str:
    """The ssh command that logs into a board, for a shell: every part quoted (an unsafe
    access is refused by check_access_line)."""
    check_access_line(str(key_file), host, username)
    program, *rest = ssh_argv(str(key_file), host, port, username)
    return shlex.join([program, *SSH_OPTIONS, *rest])


def hold_a_board(client: Client, key_dir: Path, timeout: float = 30.0) -> HeldBoard:
    """The demo's own job, kept while it runs: its key written (mode 0600) for the
    printed ssh line."""
    req_id = client.new_request(dict(HELD), 8)
    access = client.acquire_worker(req_id, timeout=timeout)
    key_file = key_dir / f"boruta-{req_id}.key"
    write_key_file(str(key_file), key_text(access.key))
    host, port = access_address(access)
    return HeldBoard(req_id, key_file, ssh_line(key_file, host, port, str(access.username)))


def boruta_command() -> list[str]:
    """`boruta` as another terminal runs this one: the script beside this Python (the
    virtual environment's), else the module."""
    script = Path(sys.executable).with_name("boruta")
    return [str(script)] if script.exists() else [sys.executable, "-m", "boruta.cli"]


def commands_to_try(client_config: Path, held: HeldBoard, boruta: list[str],
                    example: Path | None) -> list[tuple[str, str]]:
    """(what it does, the command) to paste into another terminal on this machine: each
    carries what it needs (the demo's client config: it is not the user's own)."""
    as_admin = f"{CLIENT_CONFIG_ENV}={shlex.quote(str(client_config))} {shlex.join(boruta)}"
    commands = [
        ("a board of your own: prints its ssh line, keeps the board until Ctrl-C",
         f"{as_admin} request new --caps device_type=rpi4 --wait"),
        (f"log in to the board the demo holds (request {held.req_id})", held.ssh_line),
        ("the farm, live", f"{as_admin} top"),
    ]
    if example is not None:
        commands.append(("tests that run on boards (the pytest plugin)", shlex.join(
            [sys.executable, "-m", "pytest", str(example), "--boruta-client-config",
             str(client_config)])))
    return commands


def print_commands(commands: list[tuple[str, str]]) -> None:
    """One comment line and one command line each, never wrapped, so that each pastes
    whole (a pasted comment line does nothing)."""
    console.print("\n[bold]Try, in another terminal:[/]")
    for what, command in commands:
        console.print(f"  # {what}", style="dim", markup=False)
        console.print(f"  {command}", markup=False, soft_wrap=True)


def interrupt(*_: Any) -> None:
    """SIGTERM while the farm is being set up: unwind as Ctrl-C does, so that what was
    started is stopped, not orphaned."""
    raise KeyboardInterrupt


@contextlib.contextmanager
def starting_children() -> Iterator[None]:
    """Child processes started inside do not hear the terminal's Ctrl-C (they inherit a
    blocked SIGINT; SIGTERM still stops them): the demo stops them itself, after its
    summary. A Ctrl-C or SIGTERM to the demo meanwhile waits until they are started and
    known to it, then interrupts as usual."""
    deferred: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda sig, _: deferred.append(sig))
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})   # a Ctrl-C lands here
        signal.signal(signal.SIGTERM, previous)
        if deferred:
            raise KeyboardInterrupt


def stop_on_signals(stop_requested: threading.Event) -> None:
    """From now on SIGINT and SIGTERM only ask the demo to stop: nothing it is doing (a call
    to the server, the shutdown itself) is interrupted half way."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop_requested.set())


def keep_until_stopped(client: Client, held: HeldBoard, stop_requested: threading.Event) -> None:
    """Wait for a signal, prolonging the held board's job before its timeout."""
    while not stop_requested.wait(PROLONG_EVERY):
        try:
            client.prolong_access(held.req_id)
        except BorutaError as exc:
            console.print(f"the demo's board (request {held.req_id}) was not prolonged: "
                          f"{exc.code} {exc}", markup=False)


def run_farm(server: ServerProcess, client: Client, identities: list[Identity], clients: int,
             state_dir: Path, stop: threading.Event) -> dict[str, Counter]:
    """The farm to use: hold a board, a light workload, the commands; until a signal."""
    held = hold_a_board(client, state_dir)
    stop_requested = threading.Event()
    stop_on_signals(stop_requested)
    threads, stats = start_workload(server.listen, identities, clients, LIGHT, stop)
    assert server.client_config is not None
    print_commands(commands_to_try(server.client_config, held, boruta_command(),
                                   EXAMPLE if EXAMPLE.exists() else None))
    console.print(f"\n[bold]The farm is running.[/] Ctrl-C (or SIGTERM) stops it "
                  f"(state in {state_dir}).")
    keep_until_stopped(client, held, stop_requested)
    console.print("\nstopping: the workload's jobs end, the demo's board is given back")
    stop.set()
    join_all(threads, STOP_WITHIN)
    with contextlib.suppress(BorutaError):      # it may have ended already (job timeout)
        client.close_request(held.req_id)
    return stats


def run_scripted(server: ServerProcess, identities: list[Identity], clients: int,
                 duration: float, names: dict[str, str], stop: threading.Event
                 ) -> dict[str, Counter]:
    """The busy scripted run: every decision printed live, for `duration` seconds."""
    console.print("workload starts\n")
    watcher = threading.Thread(target=follow_events, daemon=True,
                               args=(server.listen, server.events, server.credentials, stop,
                                     names))
    watcher.start()
    threads, stats = start_workload(server.listen, identities, clients, SCRIPTED, stop)
    time.sleep(duration)
    stop.set()
    join_all(threads, 30.0)
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m boruta.sim.demo",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, metavar="S",
                        help="a scripted run of S seconds of busy workload, then exit "
                        "(default: a farm to use, until Ctrl-C)")
    parser.add_argument("--clients", type=int, metavar="N",
                        help="concurrent workload clients, as alice, bob and the admin in turn "
                        "(default: 12 with --duration, else 3)")
    parser.add_argument("--state-dir", metavar="DIR",
                        help="a new directory for the server's state, keys and logs, kept "
                        "afterwards (default: a temporary one, removed at the end)")
    args = parser.parse_args(argv)
    if args.duration is not None and args.duration <= 0:
        parser.error("--duration must be a positive number of seconds")
    clients = args.clients if args.clients is not None else (3 if args.duration is None else 12)
    if clients < 0:
        parser.error("--clients must not be negative")
    if args.state_dir:
        if (Path(args.state_dir) / DB_NAME).exists():
            parser.error(f"--state-dir {args.state_dir} holds an earlier farm's state (its "
                         "users and boards); give a new or empty directory")
        try:
            Path(args.state_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            parser.error(f"--state-dir {args.state_dir}: {exc.strerror or exc}")
    signal.signal(signal.SIGTERM, interrupt)
    state_dir = args.state_dir or tempfile.mkdtemp(prefix="boruta-demo-")
    keep_state = bool(args.state_dir)
    server: ServerProcess | None = None
    dryads: list[Child] = []
    stop = threading.Event()
    try:
        expected = sum(count for count, _ in BOARDS)
        what = (f"{clients} clients for {args.duration:g} s" if args.duration is not None
                else f"a light workload ({clients} clients) until Ctrl-C")
        console.print(f"[bold]Boruta demo[/]: server, {expected} simulated boards, {what} "
                      f"(state in {state_dir})")
        with starting_children():
            server = start_server(state_dir)
        endpoints = server.endpoints
        console.print(f"server ready: clients {endpoints['listen']}, dryads {endpoints['dryad']},"
                      f" events {endpoints['events']}")
        console.print(f"secure (CurveZMQ); its admin's client config: {server.client_config}")
        with starting_children():
            start_dryads(server, state_dir, dryads)
        client = server.client(timeout=10.0)
        token = secrets.token_urlsafe(32)
        client.user_token(name="admin", token_hash=token_hash(token))
        console.print(f"dashboard: {server.http}/ (token {token}); metrics: {server.http}/metrics")
        enrolled = len(client.dryad_list())
        uuids = bring_idle(client, expected)
        names = {uuid: f"w{n}" for n, uuid in enumerate(sorted(uuids), 1)}
        identities = add_users(server)
        kinds = ", ".join(f"{caps['device_type']} x{count}" for count, caps in BOARDS)
        users = ", ".join(f"{who.name} (priorities {who.priorities[0]}-{who.priorities[1]})"
                          for who in identities)
        console.print(f"{enrolled} dryads enrolled by the admin, {expected} workers IDLE "
                      f"({kinds}); users {users}")
        show_a_refusal(server, identities[-1])
        if args.duration is not None:
            stats = run_scripted(server, identities, clients, args.duration, names, stop)
        else:
            stats = run_farm(server, client, identities, clients, Path(state_dir), stop)
        show_summary(client, identities, stats, names)
        return 0
    except KeyboardInterrupt:
        return 130
    except (RuntimeError, BorutaError, OSError) as exc:    # ChildError is a RuntimeError
        keep_state = True
        console.print(f"[red]the demo stopped:[/] {exc}\n(its logs are in {state_dir})",
                      highlight=False)
        return 1
    finally:
        stop.set()
        for dryad in dryads:
            dryad.close()
        if server is not None:
            server.close()
        if not keep_state:
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
    table.add_row("commands run on boards", str(total["commands run on boards"]))
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
