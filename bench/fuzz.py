"""Fuzzing a live server: random and mutated frames at both of its ROUTER ports.

    python -m bench.fuzz                               # 5,000 frames, seed 1 (seconds)
    python -m bench.fuzz --frames 1000000 --memory     # `make fuzz` (minutes)
    python -m bench.fuzz --seed 7 --workdir /tmp/fz    # keep the server's log there

It starts `boruta server` on loopback and sends it the frames of
bench.fuzz_frames over ZeroMQ DEALER sockets, to the client port and the
dryad port; the commands the server sends the fuzzer's "dryads" are
answered.

What must hold; any breach is a failure (listed, exit status 1):

* every reply is a protocol envelope: a msgpack map {v: 1, id, ok} or
  {v: 1, id, error: {code, message}}, its id the frame's id (nil when the
  frame's id cannot be read);
* no reply has the code `internal`;
* every frame is answered within REPLY_WITHIN seconds, except a frame
  ZeroMQ drops (over 16 x max_frame_bytes: the connection is cut), a reply
  sent to the dryad port (the answer to a command gets none), and a call
  that parks (acquire_worker, wait_request), which must be answered once
  the fuzzer has closed its requests at the end;
* the server stays alive, then stops cleanly (exit status 0) on SIGTERM;
* afterwards, list_requests and list_workers answer ok, page by page, and
  get_request_info of every request ID seen answers ok;
* the server's log has no "Traceback";
* with --memory: the server's resident memory is flat after the warm-up:
  from the first sample (one every 5% of the frames) taken after both the
  first WARMUP_SHARE of the frames and the request cap (the frames stop
  making requests at MAX_REQUESTS, and keep everything else they create
  bounded) to the end, it grows by at most FLAT_BYTES. For a million
  frames that is at least 800,000 frames and at most 5 bytes a frame;
  measured: about 0.1 MiB over 225,000 frames once the cap is reached.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import zmq

from bench.fuzz_frames import (CLIENT, DRYAD, HARD_LIMIT, MAX_FRAME, MAX_REQUESTS, UUIDS, Frames,
                               pack)
from boruta.core.errors import AlreadyExistsError
from boruta.testing.processes import LOOPBACK, ChildError, ServerProcess
from boruta.transport.credentials import Credentials, new_keypair
from boruta.transport.operations import CLIENT_OPS, SERVER_COMMANDS

REPLY_WITHIN = 5.0               # seconds for any reply (and for parked calls after the closing)
WARMUP_SHARE = 0.2               # of the frames, before memory must be flat
FLAT_BYTES = 4 << 20             # growth allowed after the warm-up
SERVER_SETTINGS = {
    **LOOPBACK, "key_type": "ed25519", "key_pool_size": 2, "max_frame_bytes": MAX_FRAME,
    "peer_rate": 1e9, "peer_burst": 1_000_000_000, "heartbeat_interval": 0.5,
    "heartbeat_liveness": 2, "dryad_reply_timeout": 0.5, "healthcheck_interval": 1.0,
    "shutdown_grace": 0.5, "log_level": "warning", "max_workers_per_dryad_key": len(UUIDS),
}
PARKS = frozenset(name for name, op in CLIENT_OPS.items() if op.parks)
USER_SHARE = 0.15                # client frames sent as a user who is not an admin (forbidden...)
STRANGER_SHARE = 0.01            # frames sent by a peer without a known key (no answer: refused)
STRANGER = "stranger"
STRANGERS_KEPT = 8               # stranger connections left open at once (their handshakes run)


@dataclass
class Report:
    frames: int = 0
    seconds: float = 0.0
    by_port: Counter[str] = field(default_factory=Counter)
    replies: Counter[str] = field(default_factory=Counter)     # "ok" or the error code
    failures: list[str] = field(default_factory=list)
    failure_count: int = 0
    requests: int = 0
    capped_at: int | None = None          # frames sent when the requests reached MAX_REQUESTS
    rss: list[tuple[int, int]] = field(default_factory=list)   # (frames sent, bytes)

    def fail(self, text: str) -> None:
        self.failure_count += 1
        if len(self.failures) < 50:
            self.failures.append(text)

    def summary(self) -> str:
        codes = ", ".join(f"{code} {n}" for code, n in self.replies.most_common())
        lines = [f"{self.frames} frames ({self.by_port[CLIENT]} client, "
                 f"{self.by_port[DRYAD]} dryad, {self.by_port[STRANGER]} from strangers) in {self.seconds:.1f} s ({self.frames / max(self.seconds, 1e-9):.0f}/s); "
                 f"{self.requests} requests made", f"replies: {codes}"]
        if self.rss:
            mib = [f"{rss / 2**20:.1f}" for _, rss in self.rss]
            lines.append(f"server RSS (MiB) every 5% from the end of the warm-up: {' '.join(mib)}"
                         f" (requests capped after {self.capped_at} frames)")
        lines.append(f"{self.failure_count} failures" + "".join(f"\n  {f}" for f in self.failures))
        return "\n".join(lines)


def is_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def envelope_problem(obj: Any) -> str | None:
    """What makes a reply not a protocol envelope, or None."""
    if not isinstance(obj, dict):
        return f"not a map but {type(obj).__name__}"
    if set(obj) - {"v", "id", "ok", "error"}:
        return f"unknown keys {sorted(map(str, set(obj) - {'v', 'id', 'ok', 'error'}))}"
    if obj.get("v") != 1 or isinstance(obj.get("v"), bool):
        return f"v is {obj.get('v')!r}"
    if ("ok" in obj) == ("error" in obj):
        return "not exactly one of ok and error"
    if "error" in obj:
        err = obj["error"]
        if not (isinstance(err, dict) and isinstance(err.get("code"), str)
                and isinstance(err.get("message"), str)):
            return f"error is not {{code, message}}: {err!r}"
    elif not is_id(obj.get("id")):
        return f"a success reply with id {obj.get('id')!r}"
    if obj.get("id") is not None and not is_id(obj.get("id")):
        return f"id is {obj.get('id')!r}"
    return None


def is_reply_envelope(obj: Any) -> bool:
    """A frame the dryad port takes as the answer to a command (it gets no reply)."""
    if not isinstance(obj, dict) or "op" in obj or ("ok" not in obj and "error" not in obj):
        return False
    if not (is_id(obj.get("id")) or (obj.get("id") is None and "error" in obj)):
        return False
    if obj.get("v") != 1 or isinstance(obj.get("v"), bool):
        return False
    if "error" in obj:
        err = obj["error"]
        return (isinstance(err, dict) and isinstance(err.get("code"), str)
                and isinstance(err.get("message", ""), str))
    return True



class Fuzzer:
    """Sends the frames over DEALER sockets and checks every answer.

    One frame at a time per socket, each waited for (REPLY_WITHIN), except
    the calls that may park: they go on their own socket, and their replies
    are counted off by ID whenever they come.
    """

    def __init__(self, server: ServerProcess, seed: int, report: Report) -> None:
        self.server = server
        self.report = report
        self.rng = random.Random(seed)
        self.frames = Frames(random.Random(seed + 1))
        self.ctx = zmq.Context()
        self.dryad_pair = new_keypair()              # the fuzzer's dryads share one key
        self.client = self.dealer(CLIENT)
        # A user who is not an admin: what they may not do is answered forbidden, not done.
        self.user_credentials = (server.user("fuzzer").credentials
                                 if server.credentials is not None else None)
        self.user = self.dealer(CLIENT, self.user_credentials)
        self.dryads = [self.dealer(DRYAD) for _ in range(3)]
        self.park = self.dealer(CLIENT)
        self.parked: Counter[Any] = Counter()        # reply IDs the park socket still awaits
        self.waiting: dict[zmq.Socket, tuple[Any, str | None]] = {}   # (reply ID, op)
        self.answers: dict[zmq.Socket, dict[str, Any]] = {}
        self.sentinels = 0
        self.strangers: list[zmq.Socket] = []

    def dealer(self, port: str, credentials: Credentials | None = None) -> zmq.Socket:
        """A connection as the admin, or as `credentials` (client port), or as the fuzzer's
        dryads (dryad port)."""
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if credentials is not None:
            credentials.apply(sock)
        elif port == CLIENT:
            self.server.secure(sock)
        else:
            credentials = self.enrol_dryads()
            if credentials is not None:
                credentials.apply(sock)
        sock.connect(self.server.endpoints["listen" if port == CLIENT else "dryad"])
        return sock

    def enrol_dryads(self) -> Credentials | None:
        """Enrol the dryads' key for every UUID the frames use, again: the frames enrol
        and revoke UUIDs too, and a key enrolled for none cannot connect."""
        admin = self.server.credentials
        if admin is None:                        # an insecure server: anyone registers
            return None
        for uuid in UUIDS:
            try:
                self.server.enrol(uuid, self.dryad_pair)
            except AlreadyExistsError:           # still enrolled with this key
                pass
        return Credentials(admin.server_key, self.dryad_pair)

    def replace(self, sock: zmq.Socket) -> zmq.Socket:
        """A new connection instead of `sock` (ZeroMQ cut it, or a reply never came)."""
        if sock is self.user:
            fresh = self.user = self.dealer(CLIENT, self.user_credentials)
        elif sock is self.client:
            fresh = self.client = self.dealer(CLIENT)
        else:
            fresh = self.dealer(DRYAD)
            self.dryads[self.dryads.index(sock)] = fresh
        self.waiting.pop(sock, None)
        sock.close(0)
        return fresh

    def close(self) -> None:
        for sock in self.strangers:
            self.forget_stranger(sock)
        self.ctx.destroy(0)

    # ------------------------------------------------------------------ sending
    def send(self, port: str, data: bytes) -> None:
        self.report.frames += 1
        if self.server.credentials is not None and self.rng.random() < STRANGER_SHARE:
            self.stranger(port, data)
            return
        self.report.by_port[port] += 1
        obj = unpack(data) if len(data) <= MAX_FRAME else None
        op = obj.get("op") if isinstance(obj, dict) and isinstance(obj.get("op"), str) else None
        reply_id = obj.get("id") if isinstance(obj, dict) and is_id(obj.get("id")) else None
        if port == CLIENT and op in PARKS and len(data) <= MAX_FRAME:
            self.parked[reply_id] += 1
            self.park.send(data)
            return
        if port == CLIENT:
            sock = self.user if self.rng.random() < USER_SHARE else self.client
        else:
            sock = self.rng.choice(self.dryads)
        if len(data) > HARD_LIMIT:            # ZeroMQ drops it and cuts the connection
            sock.send(data)
            self.replace(sock)
            return
        if port == DRYAD and is_reply_envelope(obj):
            sock.send(data)
            self.expect_nothing(sock)
            return
        self.call(sock, data, reply_id, op, describe=True)

    def stranger(self, port: str, data: bytes) -> None:
        """The frame from a peer the server does not know: in plain text, or with a key no
        user or dryad holds. CURVE refuses it at the handshake; it must change nothing,
        and the farm goes on (the frames after it are answered as ever). The last few
        strangers stay connected a while, so that their handshakes happen."""
        self.report.by_port[STRANGER] += 1
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if self.rng.random() < 0.5:
            assert self.server.credentials is not None
            Credentials(self.server.credentials.server_key, new_keypair()).apply(sock)
        sock.connect(self.server.endpoints["listen" if port == CLIENT else "dryad"])
        try:
            sock.send(data, zmq.NOBLOCK)
        except zmq.Again:
            pass                                 # refused already: dropped, as it should be
        self.strangers.append(sock)
        if len(self.strangers) > STRANGERS_KEPT:
            self.forget_stranger(self.strangers.pop(0))

    def forget_stranger(self, sock: zmq.Socket) -> None:
        if sock.poll(0, zmq.POLLIN):
            self.report.fail(f"a peer without a known key got an answer: {sock.recv()[:120]!r}")
        sock.close(0)

    def call(self, sock: zmq.Socket, data: bytes, reply_id: Any, op: str | None,
             describe: bool = False) -> dict[str, Any] | None:
        """Send one frame and wait for its reply (None, a failure, when none comes)."""
        self.waiting[sock] = (reply_id, op)
        sock.send(data)
        deadline = time.monotonic() + REPLY_WITHIN
        while sock in self.waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                what = f"{data[:120]!r} ({len(data)} bytes)" if describe else op
                alive = "" if self.server.alive() else "; the server is dead"
                self.report.fail(f"no reply within {REPLY_WITHIN:g}s to {what}{alive}")
                self.replace(sock)
                return None
            self.pump(min(left, 0.5))
        return self.answers.pop(sock, None)

    def expect_nothing(self, sock: zmq.Socket) -> None:
        """A frame that must get no reply: a sentinel right after it must be answered first."""
        self.sentinels += 1
        sentinel = f"sentinel-{self.sentinels}"
        op = "ping" if sock is self.client else "heartbeat"
        self.call(sock, pack({"v": 1, "id": sentinel, "op": op, "args": {}}), sentinel, op)

    def call_op(self, op: str, args: dict[str, Any]) -> dict[str, Any] | None:
        self.frames.next_id += 1
        msg_id = f"check-{self.frames.next_id}"
        return self.call(self.client, pack({"v": 1, "id": msg_id, "op": op, "args": args}),
                         msg_id, op)

    # ------------------------------------------------------------------ receiving
    def pump(self, timeout: float) -> None:
        sockets = [self.client, self.user, self.park, *self.dryads]
        poller = zmq.Poller()
        for sock in sockets:
            poller.register(sock, zmq.POLLIN)
        for sock, _ in poller.poll(int(timeout * 1000)):
            while True:
                try:
                    data = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self.received(sock, data)

    def received(self, sock: zmq.Socket, data: bytes) -> None:
        report = self.report
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception as exc:  # noqa: BLE001 - any msgpack error is the same failure
            report.fail(f"a reply that is not msgpack ({exc}): {data[:120]!r}")
            return
        if isinstance(obj, dict) and "op" in obj:
            if sock in self.dryads:
                self.command(sock, obj)
            else:
                report.fail(f"the server sent a request to a client: {obj!r:.200}")
            return
        problem = envelope_problem(obj)
        if problem is not None:
            report.fail(f"a reply that is not an envelope ({problem}): {obj!r:.200}")
            return
        code = "ok" if "ok" in obj else obj["error"]["code"]
        report.replies[code] += 1
        if code == "internal":
            report.fail(f"internal: {obj['error']['message']!r:.300}")
        reply_id = obj.get("id")
        if sock is self.park:
            if self.parked[reply_id] > 0:
                self.parked[reply_id] -= 1
                self.parked += Counter()             # drops the zeros
            else:
                report.fail(f"a reply to a parked call nobody made: {obj!r:.200}")
            return
        waited = self.waiting.get(sock)
        if waited is None or waited[0] != reply_id or type(waited[0]) is not type(reply_id):
            report.fail(f"a reply no frame waits for (waiting for {waited}): {obj!r:.200}")
            return
        del self.waiting[sock]
        self.answers[sock] = obj
        if waited[1] == "new_request" and isinstance(obj.get("ok"), dict):
            new_id = obj["ok"].get("id")
            if is_id(new_id) and not isinstance(new_id, str):
                self.frames.request_ids.append(new_id)

    def command(self, sock: zmq.Socket, obj: dict[str, Any]) -> None:
        """A command from the server: checked, remembered, and answered at once."""
        if (obj.get("v") != 1 or not is_id(obj.get("id")) or obj.get("op") not in SERVER_COMMANDS
                or not isinstance(obj.get("args"), dict)):
            self.report.fail(f"a malformed command from the server: {obj!r:.200}")
            return
        self.frames.commands = [*self.frames.commands[-99:], obj]
        sock.send(self.frames.command_reply(obj))

    # ------------------------------------------------------------------ afterwards
    def check_state(self) -> None:
        """Both lists page by page, every request seen, all closed, the parked calls answered."""
        listed = self.list_all("list_requests", "id")
        self.list_all("list_workers", "uuid")
        seen = sorted(set(self.frames.request_ids) | {item.get("id") for item in listed})
        for req_id in seen:
            reply = self.call_op("get_request_info", {"id": req_id})
            if reply is not None and "ok" not in reply:
                self.report.fail(f"get_request_info {req_id} answered {reply!r:.300}")
        for req_id in seen:                  # parked calls are answered once their request ends
            self.call_op("close_request", {"id": req_id})
        deadline = time.monotonic() + REPLY_WITHIN
        while +self.parked and time.monotonic() < deadline:
            self.pump(0.1)
        if +self.parked:
            self.report.fail(f"{sum(self.parked.values())} parked calls never answered, "
                             f"e.g. IDs {list(self.parked)[:5]}")

    def list_all(self, op: str, key: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        paginator: dict[str, Any] = {"limit": 100}
        total = None
        while True:
            reply = self.call_op(op, {"paginator": paginator})
            if reply is None:
                return items
            if "ok" not in reply:
                self.report.fail(f"{op} with paginator {paginator} answered {reply!r:.300}")
                return items
            page = reply["ok"]
            total = page["total"] if total is None else total
            items += page["items"]
            if not page["remaining"] or not page["items"]:
                break
            paginator = {"id": page["items"][-1][key], "limit": 100}
        if len(items) != total:
            self.report.fail(f"{op}: {len(items)} items on the pages, total said {total}")
        return items


def unpack(data: bytes) -> Any:
    """The frame as the server reads it (None if it cannot)."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception:  # noqa: BLE001 - the server answers bad_frame
        return None


def run(frames: int, seed: int, workdir: Path, memory: bool = False,
        progress: Any = None) -> Report:
    """Start a server, fuzz it with `frames` frames, check what must hold; the report."""
    report = Report()
    server = ServerProcess(workdir / "fuzz-server.log", **SERVER_SETTINGS)
    server.start()
    fuzzer = Fuzzer(server, seed, report)
    warmup = int(frames * WARMUP_SHARE)
    sample_every = max(1, frames // 20)
    started = time.perf_counter()
    try:
        for n in range(frames):
            fuzzer.send(*fuzzer.frames.make())
            if report.capped_at is None and len(fuzzer.frames.request_ids) >= MAX_REQUESTS:
                report.capped_at = n + 1
            if memory and n >= warmup and (n - warmup) % sample_every == 0:
                report.rss.append((n, server.rss()))
            if progress is not None and n and n % 100_000 == 0:
                progress(f"{n} frames, {report.failure_count} failures")
            if n % 1000 == 0 and not server.alive():
                report.fail(f"the server died after {n} frames")
                break
        report.seconds = time.perf_counter() - started
        report.requests = len(fuzzer.frames.request_ids)
        if memory:
            report.rss.append((frames, server.rss()))
            judge_memory(report)
        if server.alive():
            fuzzer.check_state()
            try:
                status = server.stop(timeout=10)
            except ChildError as exc:
                report.fail(str(exc))
            else:
                if status != 0:
                    report.fail(f"the server exited with status {status} on SIGTERM")
        else:
            report.fail(f"the server died (exit status {server.proc.poll()})")
    finally:
        fuzzer.close()
        server.close()
    log = server.log()
    if "Traceback" in log:
        at = log.index("Traceback")
        report.fail(f"a Traceback in the server's log: {log[max(0, at - 300):at + 900]}")
    return report


def judge_memory(report: Report) -> None:
    """Flat: at most FLAT_BYTES more from the first sample after the warm-up and the cap."""
    after = [rss for n, rss in report.rss if report.capped_at is not None and n >= report.capped_at]
    if len(after) < 2:
        report.fail(f"memory not judged: the requests reached the cap ({MAX_REQUESTS}) only after "
                    f"{report.capped_at} frames, too late in this run; send more frames")
        return
    grown = after[-1] - after[0]
    if grown > FLAT_BYTES:
        report.fail(f"server RSS grew {grown / 2**20:.1f} MiB after the warm-up "
                    f"(allowed {FLAT_BYTES / 2**20:.0f} MiB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--memory", action="store_true",
                        help="also check that the server's memory is flat after the warm-up")
    parser.add_argument("--workdir", metavar="DIR",
                        help="keep the server's log there (default: a temporary directory)")
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error("--frames must be at least 1")
    with tempfile.TemporaryDirectory(prefix="boruta-fuzz-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        report = run(args.frames, args.seed, workdir, args.memory,
                     progress=lambda text: print(text, file=sys.stderr, flush=True))
    print(report.summary())
    return 1 if report.failure_count else 0


if __name__ == "__main__":
    sys.exit(main())

