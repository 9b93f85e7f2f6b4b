"""The standard farm of docs/benchmarks.md: `farm(W, R, seed)`.

Deterministic from `seed` (stdlib `random.Random`, whose sequences are
stable across CPython versions for the calls used here) and plain data, so
that tests can import it too:

- a worker is a dict ``{"uuid": str, "caps": {str: str}, "groups": (str, ...)}``;
  ``caps`` holds ``UUID``, ``device_type``, ``arch`` and 5 to 8 interface caps.
- a request is a dict ``{"id": int, "caps": {str: str}, "groups": (str, ...),
  "priority": int, "valid_after": float | None, "deadline": float}``;
  times are offsets in seconds from the start of the run (add your clock's
  ``now()``). ``id`` counts from 1 and doubles as the FIFO ``seq``.

Choices the farm's definition leaves open, fixed here:

- 50 device types with Zipf weights 1/k (k = 1..50): the most common board
  is ~22% of the farm, the rarest ~0.4%. Each type has one `arch` of 4,
  fixed by the constant table TYPE_ARCH.
- The 30 interface caps are ``key=value`` pairs over 24 keys: a few keys
  take several values (``serial=115200`` / ``serial=9600``, ``display=dsi``
  / ``display=hdmi`` / ``display=lvds``, ...). A worker draws 5 to 8 of
  them with distinct keys.
- A request copies its caps from a *template* worker drawn uniformly from
  the farm (so its device type has the workers' skew): its device_type,
  0 to 2 of the template's interface caps, and for ~2% the template's
  UUID. Its owner groups are none (30%) or 1 to 2 of the 20, the first one
  taken from the template's groups (so each group is still uniform over
  the 20). Every request is therefore satisfiable by some registered
  worker, as the server demands of NewRequest.
- ~10% of requests carry a ValidAfter 60 s to 1 h ahead; all carry a
  Deadline 14 days ahead.
"""
from __future__ import annotations

import itertools
import random
import uuid as _uuid
from typing import Iterator, NamedTuple

N_TYPES = 50
N_GROUPS = 20
ARCHES = ("armv7l", "aarch64", "x86_64", "riscv64")
DEVICE_TYPES = tuple(
    ["rpi4", "rpi3", "odroid-xu4", "rpi5", "artik530", "odroid-u3", "tm2", "tw1",
     "beaglebone", "imx8mq", "jetson-nano", "rock5b", "visionfive2", "nuc7", "tw2", "tm1"]
    + [f"board-{k:02d}" for k in range(16, N_TYPES)]
)
assert len(DEVICE_TYPES) == N_TYPES
# Arch is a property of the board: a constant table, not drawn per worker.
TYPE_ARCH = {t: ARCHES[(k * 7 + k // 4) % 4] for k, t in enumerate(DEVICE_TYPES)}
# Zipf-like skew: weight of the k-th type (k from 1) is 1/k.
TYPE_WEIGHTS = tuple(1.0 / (k + 1) for k in range(N_TYPES))
_TYPE_CUM = tuple(itertools.accumulate(TYPE_WEIGHTS))

INTERFACE_CAPS = (
    ("usb", "yes"), ("serial", "115200"), ("serial", "9600"), ("hdmi", "yes"),
    ("eth", "yes"), ("can", "yes"), ("sdmux", "yes"), ("display", "dsi"),
    ("display", "hdmi"), ("display", "lvds"), ("wifi", "yes"), ("bt", "yes"),
    ("audio", "yes"), ("camera", "csi"), ("camera", "usb"), ("gpio", "yes"),
    ("i2c", "yes"), ("spi", "yes"), ("pcie", "yes"), ("sata", "yes"),
    ("emmc", "yes"), ("sdcard", "yes"), ("uart", "3v3"), ("uart", "1v8"),
    ("jtag", "yes"), ("power", "usb-pd"), ("power", "12v"), ("lte", "yes"),
    ("tpm", "yes"), ("nfc", "yes"),
)
assert len(INTERFACE_CAPS) == 30
GROUPS = tuple(f"group{g:02d}" for g in range(N_GROUPS))

VALID_AFTER_SHARE = 0.10
VALID_AFTER_RANGE = (60.0, 3600.0)
DEADLINE_AHEAD = 14 * 86400.0
PIN_SHARE = 0.02
NO_GROUPS_SHARE = 0.30


class Farm(NamedTuple):
    workers: list[dict]
    requests: list[dict]


def make_workers(W: int, rng: random.Random) -> list[dict]:
    workers = []
    for _ in range(W):
        uuid = str(_uuid.UUID(int=rng.getrandbits(128), version=4))
        dtype = rng.choices(DEVICE_TYPES, cum_weights=_TYPE_CUM)[0]
        caps = {"UUID": uuid, "device_type": dtype, "arch": TYPE_ARCH[dtype]}
        want = rng.randint(5, 8)
        for key, value in rng.sample(INTERFACE_CAPS, len(INTERFACE_CAPS)):
            if len(caps) - 3 == want:
                break
            if key not in caps:
                caps[key] = value
        groups = tuple(sorted(rng.sample(GROUPS, rng.randint(1, 3))))
        workers.append({"uuid": uuid, "caps": caps, "groups": groups})
    return workers


def iter_requests(workers: list[dict], n: int, rng: random.Random,
                  first_id: int = 1) -> Iterator[dict]:
    """`n` requests drawn against `workers`, ids from `first_id` on."""
    interface_of = [[(k, v) for k, v in w["caps"].items()
                     if k not in ("UUID", "device_type", "arch")] for w in workers]
    W = len(workers)
    for req_id in range(first_id, first_id + n):
        t = rng.randrange(W)
        template = workers[t]
        caps = {"device_type": template["caps"]["device_type"]}
        for key, value in rng.sample(interface_of[t], rng.randint(0, 2)):
            caps[key] = value
        if rng.random() < PIN_SHARE:
            caps["UUID"] = template["uuid"]
        if rng.random() < NO_GROUPS_SHARE:
            groups: tuple[str, ...] = ()
        else:
            first = rng.choice(template["groups"])
            if rng.random() < 0.5:
                groups = (first,)
            else:
                second = rng.choice([g for g in GROUPS if g != first])
                groups = tuple(sorted((first, second)))
        priority = rng.randint(1, 16)
        valid_after = (rng.uniform(*VALID_AFTER_RANGE)
                       if rng.random() < VALID_AFTER_SHARE else None)
        yield {"id": req_id, "caps": caps, "groups": groups, "priority": priority,
               "valid_after": valid_after, "deadline": DEADLINE_AHEAD}


def farm(W: int, R: int, seed: int = 0) -> Farm:
    """The standard farm: W workers and R requests, all plain data."""
    rng = random.Random(seed)
    workers = make_workers(W, rng)
    requests = list(iter_requests(workers, R, rng))
    return Farm(workers, requests)


def more_requests(workers: list[dict], n: int, seed: int, first_id: int) -> list[dict]:
    """A further stream of requests of the same distribution (arrivals, refills)."""
    rng = random.Random(f"more:{seed}:{first_id}")
    return list(iter_requests(workers, n, rng, first_id))


if __name__ == "__main__":  # a quick look at the distribution
    import collections
    f = farm(1000, 10000, 0)
    types = collections.Counter(w["caps"]["device_type"] for w in f.workers)
    print("workers per type (top 8):", types.most_common(8))
    print("types present:", len(types))
    print("ValidAfter share:", sum(r["valid_after"] is not None for r in f.requests) / 10000)
    print("pinned share:", sum("UUID" in r["caps"] for r in f.requests) / 10000)
    print("no-groups share:", sum(not r["groups"] for r in f.requests) / 10000)
    print(f.workers[0])
    print(f.requests[0])
