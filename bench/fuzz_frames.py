"""What the fuzzer (bench.fuzz) sends: frames made from the operation table, most of them hostile.

Frames are made from boruta.transport.operations: valid calls (so that
requests, workers, jobs and parked calls exist and deeper paths run), calls
with one argument replaced by a hostile value (wrong types, times past year
9999 and before year 1 with offsets, non-finite numbers, non-ASCII digits,
huge and negative numbers), unknown operations and arguments, broken
envelopes, byte-level mutations of valid frames (bit flips, truncation,
insertion, deletion), duplicated keys, invalid UTF-8, random bytes and
objects, nesting thousands deep, frames over the size limit, and answers
(valid and mutated) to the commands the server sent the fuzzer's dryads.

Integers outside msgpack's 64 bits (2**64, -2**63-1, 10**30) cannot be
sent as integers: they go as floats and as decimal strings.

The state the frames create stays bounded (at most MAX_REQUESTS requests,
worker UUIDs from a fixed pool, strings from fixed lists), so that a long
run's memory can be judged.
"""
from __future__ import annotations

import math
import random
import time
import uuid as uuidlib
from typing import Any

import msgpack
from zmq.utils import z85

from boruta.transport.operations import CLIENT_OPS, DRYAD_OPS, Operation

CLIENT, DRYAD = "client", "dryad"
MAX_FRAME = 4096                 # the fuzz server's max_frame_bytes: oversize frames stay cheap
HARD_LIMIT = 16 * MAX_FRAME + 4096   # ZeroMQ drops bigger messages (and the connection)
MAX_REQUESTS = 2000              # requests the fuzzer creates at most
DEVICE_TYPES = ("fz-a", "fz-b")
UUIDS = tuple(str(uuidlib.UUID(int=n, version=4)) for n in range(1, 17))
GROUPS = ("g1", "g2", "ü", "")
REQ_STATES = ("WAITING", "IN PROGRESS", "CANCELLED", "TIMEOUT", "INVALID", "DONE", "FAILED")
WORKER_STATES = ("MAINTENANCE", "IDLE", "RUNNING", "FAILED", "PREPARE", "BUSY")

# --------------------------------------------------------------------------- hostile values
TIMES = ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59.999999Z",
         "0001-01-01T00:00:00Z", "10000-01-01T00:00:00Z", "2024-02-30T12:00:00Z", "now", "+1h",
         "", " ", "２０２４-01-01T00:00:00Z", "2024-01-01T00:00:00+24:00", "T", "9" * 40,
         1e300, -1e300, math.nan, math.inf, -math.inf, 253402300800, 253402300799.999999,
         -62135596800, -62135596801, 2**63 - 1, -2**63, -1, 0]
NON_ASCII = ["h:²", "١٢٣", "h:١٢٣", "²", ":²", "127.0.0.1:٨٠", "ｈ:１２", "[::1]:²", "h:1²",
             "h:٠"]
HUGE = [2**64 - 1, 2**63, 2**63 - 1, -2**63, -1, 65536, 10**18, float(2**64),
        float(-2**63 - 1), 1e30, -1e30, str(2**64), str(-2**63 - 1), str(10**30)]
WRONG_TYPES = [None, True, False, 0, -7, 1.5, -0.0, "x", "", "\x00", b"", b"\xff\xfe", [], [None],
               ["a", 1], {}, {"k": "v"}, {"": None}, {"a": {"b": [1, {"c": b"d"}]}}, [[[[[]]]]],
               msgpack.ExtType(5, b"xy"), msgpack.Timestamp(0, 0)]
BY_KIND: dict[str, list[Any]] = {
    "time": TIMES, "int": HUGE + NON_ASCII, "id": HUGE + NON_ASCII,
    "seconds": [-1, math.nan, math.inf, 1e300, -0.0, 10**18, "1"],
    "address": NON_ASCII + ["", ":", "h:", ":0", ":65536", "h:-1", "[::1", "::1:22", "h:22:33",
                            " :22", "h :22", "h:+22", "h:0x16", "h:22 ", "x" * 300 + ":1"],
    "uuid": ["", "not-a-uuid", "١٢٣", "\x00", " " + UUIDS[0]],
    "caps": [{}, {"UUID": ""}, {"x": 1}, {"device_type": "١٢٣"}, {"UUID": None}, {"UUID": 7},
             {"UUID": UUIDS[0], "k" * 600: "v"}],
    "states": [[""], ["waiting"], ["IN_PROGRESS"], ["DONE "], ["١"], ["IDLE\x00"], "WAITING"],
    "state": ["", "idle", "RUNNING", "BUSY", "١", "IDLE\x00", "FAILED"],
    "strings": [[1], ["a", None], "g1", ["x" * 500]],
    "string": ["x" * 3000, "\x00", "١٢٣"],
    "filter": [{"ids": ["a"]}, {"states": ["NOPE"]}, {"bogus": 1}, {"ids": [2**64 - 1]},
               {"priorities": [1e30]}, {"caps": {"a": 1}}, {"groups": "g1"}, {"states": "IDLE"}],
    "sorter": [{"item": "bogus"}, {"order": "sideways"}, {"item": 5}, {"extra": 1},
               {"order": 1}, {"item": "ID "}],
    "paginator": [{"limit": 65536}, {"limit": -1}, {"id": -1}, {"direction": "up"}, {"id": "x"},
                  {"limit": 2**64 - 1}, {"id": 1.5}, {"direction": 0}, {"extra": 1}],
    "bool": [0, 1, "true", "yes"],
    "ints": [[0, 16], [5, 2], [1], [1, 2, 3], [1, 17], [-1, 4], ["1", "2"], [1.5, 2]],
    "exprs": [["x in"], ["v 3..1"], ["v a..b"], "sdmux?", [1], ["!"], ["k" * 300 + "?"],
              ["x in " + ",".join(str(i) for i in range(2000))], ["\x00k?"]],
    "ids": [[-1], [2**64 - 1], [-2**63], ["1"], [1.5], 7, [None], list(range(10_001)), [True]],
}
# Valid expressions the fuzz farm's workers satisfy (a valid frame should be able to succeed).
EXPRESSIONS = ["device_type?", "!sdmux", "hdmi != yes", f"device_type in {','.join(DEVICE_TYPES)}"]
FUZZ_USERS = ["fuzz-a", "fuzz-b", "Fuzz", "", "fuzz\nx", "f" * 40]

# How often each kind of frame is made (the command replies only once there are commands).
KINDS = {"valid": 30, "hostile_arg": 30, "unknown": 5, "envelope": 10, "bytes": 15, "random": 5,
         "oversize": 3, "command_reply": 2}



def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def pack_pairs(pairs: list[tuple[Any, Any]]) -> bytes:
    """A msgpack map written pair by pair: the same key may come twice."""
    n = len(pairs)
    head = bytes([0x80 | n]) if n < 16 else b"\xde" + n.to_bytes(2, "big")
    return head + b"".join(pack(k) + pack(v) for k, v in pairs)


class Frames:
    """Makes the frames, from the operation table and what the server has answered so far."""

    def __init__(self, rng: random.Random, now: Any = time.time) -> None:
        self.rng = rng
        self.now = now                   # valid times are near now
        self.next_id = 0
        self.request_ids: list[int] = []
        self.commands: list[dict[str, Any]] = []     # commands received, for later replies

    def msg_id(self) -> Any:
        self.next_id += 1
        return self.next_id if self.rng.random() < 0.8 else f"m{self.next_id}"

    def make(self) -> tuple[str, bytes]:
        """(port, frame)."""
        rng = self.rng
        kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
        if kind == "command_reply" and self.commands:
            return DRYAD, self.command_reply(rng.choice(self.commands), mutate=True)
        port = CLIENT if rng.random() < 0.6 else DRYAD
        table, other = (CLIENT_OPS, DRYAD_OPS) if port == CLIENT else (DRYAD_OPS, CLIENT_OPS)
        names = [n for n in table if n != "new_request" or len(self.request_ids) < MAX_REQUESTS]
        op = table[rng.choice(names)] if rng.random() < 0.92 else rng.choice(list(other.values()))
        doc = {"v": 1, "id": self.msg_id(), "op": op.name, "args": self.valid_args(op)}
        if kind == "hostile_arg" and op.args:
            arg = rng.choice(op.args)
            pool = BY_KIND.get(arg.kind, []) + WRONG_TYPES
            doc["args"][arg.name] = rng.choice(pool)
        elif kind == "unknown":
            doc = self.unknown(doc)
        elif kind == "envelope":
            return port, self.envelope(doc)
        elif kind == "bytes":
            return port, self.mutate(pack(doc))
        elif kind == "random":
            return port, self.random_frame()
        elif kind == "oversize":
            size = rng.randint(MAX_FRAME + 1, HARD_LIMIT + 30000)
            doc["args"]["pad"] = "x" * size
        return port, pack(doc)

    # ------------------------------------------------------------------ valid values
    def valid_args(self, op: Operation) -> dict[str, Any]:
        return {arg.name: self.valid(op.name, arg.name, arg.kind) for arg in op.args
                if arg.required or self.rng.random() < 0.6}

    def key(self) -> str:
        """A CurveZMQ public key (any 32 bytes are one), from the seeded generator."""
        return z85.encode(self.rng.randbytes(32)).decode("ascii")

    def valid(self, op: str, name: str, kind: str) -> Any:
        rng = self.rng
        if kind == "id":
            if self.request_ids and rng.random() < 0.85:
                return rng.choice(self.request_ids)
            return rng.randint(0, len(self.request_ids) + 3)
        if kind == "uuid":
            return rng.choice(UUIDS)
        if kind == "int":
            return rng.randint(0 if op == "update_request" else 1, 16)
        if kind == "string":
            if name == "name":                 # users: never the fuzzer's own (admin)
                return rng.choice(FUZZ_USERS)
            if name == "key":
                return self.key()
            return rng.choice(["", "fuzz", "reason ü"])
        if kind == "bool":
            return rng.random() < 0.5
        if kind == "seconds":
            if name == "lease":
                return rng.choice([None, 30.0, 600.0])
            return rng.choice([0, 0.001, 0.01, 0.05, 0.2])
        if kind == "time":
            moment = self.now() + rng.uniform(-5, 7200 if name == "deadline" else 30)
            return moment if rng.random() < 0.3 else time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))
        if kind == "caps":
            caps = {"device_type": rng.choice(DEVICE_TYPES)}
            if op == "register":
                caps["UUID"] = rng.choice(UUIDS)
            return caps
        if kind == "strings":
            if name == "keys":
                return [self.key()]
            return rng.sample(GROUPS, rng.randint(0, 2))
        if kind == "exprs":
            return rng.sample(EXPRESSIONS, rng.randint(1, 2)) if rng.random() < 0.3 else None
        if kind == "ids":
            return [self.valid(op, name, "id") for _ in range(rng.randint(0, 5))]
        if kind == "ints":
            high = rng.randint(1, 16)
            return [high, rng.randint(high, 16)]
        if kind == "states":
            return rng.sample(REQ_STATES, rng.randint(1, 2))
        if kind == "state":
            return "IDLE" if rng.random() < 0.8 else "MAINTENANCE"
        if kind == "filter":
            if op == "list_workers":
                return {"states": rng.sample(WORKER_STATES, 1), "groups": [],
                        "caps": {"device_type": rng.choice(DEVICE_TYPES)}}
            return {"states": rng.sample(REQ_STATES, 1), "priorities": [], "ids": []}
        if kind == "sorter":
            items = ["uuid", "state", "groups"] if op == "list_workers" else \
                ["id", "priority", "deadline", "validafter", "state"]
            return {"item": rng.choice(items), "order": rng.choice(["asc", "desc"])}
        if kind == "paginator":
            border = rng.choice(UUIDS) if op == "list_workers" else rng.randint(0, 50)
            return {"id": border, "direction": rng.choice(["forward", "backward"]),
                    "limit": rng.randint(0, 50)}
        if kind == "address":
            return rng.choice([":22", "127.0.0.1:2222", ":7175", "[::1]:22", "localhost:22"])
        raise ValueError(f"no values for argument kind {kind!r} (operation {op})")

    # ------------------------------------------------------------------ hostile frames
    def unknown(self, doc: dict[str, Any]) -> dict[str, Any]:
        rng = self.rng
        choice = rng.randrange(3)
        if choice == 0:
            doc["op"] = rng.choice(["", "nope", "PING", "ping ", "__init__", "ｐｉｎｇ",
                                    "x" * 200])
        elif choice == 1:
            doc["args"][rng.choice(["bogus", "", "ID", "ü"])] = rng.choice(WRONG_TYPES)
        else:
            doc["args"] = {k: v for k, v in doc["args"].items() if rng.random() < 0.5}
        return doc

    def envelope(self, doc: dict[str, Any]) -> bytes:
        rng = self.rng
        choice = rng.randrange(8)
        if choice == 0:
            doc.pop(rng.choice(["v", "id", "op", "args"]))
        elif choice == 1:
            doc["v"] = rng.choice([0, 2, True, "1", 1.0, None, -1, 2**64 - 1])
        elif choice == 2:
            doc["id"] = rng.choice(WRONG_TYPES + HUGE)
        elif choice == 3:
            doc["op"] = rng.choice(WRONG_TYPES)
        elif choice == 4:
            doc["args"] = rng.choice(WRONG_TYPES)
        elif choice == 5:
            doc[rng.choice(["extra", "ok", "error", 1])] = rng.choice(WRONG_TYPES)
        elif choice == 6:             # duplicated keys: which one does the server read?
            pairs = list(doc.items())
            key = rng.choice(["v", "id", "op", "args"])
            pairs.insert(rng.randrange(len(pairs) + 1), (key, rng.choice(WRONG_TYPES)))
            return pack_pairs(pairs)
        else:                         # invalid UTF-8 where a string is
            return pack(doc).replace(pack(doc["op"]), b"\xa4\xff\xfe\xfd\xfc", 1)
        return pack(doc)

    def mutate(self, data: bytes) -> bytes:
        rng = self.rng
        buf = bytearray(data)
        choice = rng.randrange(4)
        if choice == 0:
            for _ in range(rng.randint(1, 8)):
                buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif choice == 1:
            del buf[rng.randrange(len(buf)):]
        elif choice == 2:
            buf.insert(rng.randrange(len(buf) + 1), rng.randrange(256))
        else:
            del buf[rng.randrange(len(buf))]
        return bytes(buf)

    def random_frame(self) -> bytes:
        rng = self.rng
        choice = rng.randrange(4)
        if choice == 0:
            return rng.randbytes(rng.randint(0, 64))
        if choice == 1:
            return pack(rng.choice(WRONG_TYPES + TIMES + NON_ASCII))
        if choice == 2:
            return b"\x91" * rng.randint(100, 3000) + b"\xc0"        # nested very deep
        return pack({rng.choice(["v", "id", "op", 1, b"op"]): rng.choice(WRONG_TYPES)
                     for _ in range(rng.randint(0, 4))})

    def command_reply(self, command: dict[str, Any], mutate: bool = False) -> bytes:
        rng = self.rng
        if rng.random() < 0.8:
            result = {"username": "fz-user"} if command.get("op") == "prepare" else None
            doc: dict[str, Any] = {"v": 1, "id": command.get("id"), "ok": result}
        else:
            doc = {"v": 1, "id": command.get("id"),
                   "error": {"code": "dryad_fault", "message": "fuzz"}}
        if mutate:
            choice = rng.randrange(4)
            if choice == 0:
                return self.mutate(pack(doc))
            if choice == 1:
                doc["id"] = rng.choice(WRONG_TYPES + [10**9, "zz"])
            elif choice == 2:
                doc["ok" if "ok" in doc else "error"] = rng.choice(WRONG_TYPES)
        return pack(doc)
