"""What every end-to-end bench shares: its server, its command line, its table, a few steps.

The processes themselves (a child with a line reader, the server, polling
with a deadline) are boruta.testing.processes, shared with the tests.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from boruta.testing.processes import LOOPBACK, ServerProcess, wait_until

KEY_THREADS = 2                  # the server's key executor (boruta.server.app)


def render_table(head: tuple[str, ...], rows: list[tuple[str, ...]], markdown: bool) -> str:
    """The e2e benches' result table: aligned text, or Markdown (where a sub-row,
    indented by four spaces, is marked with an arrow: Markdown drops leading spaces)."""
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join((("↳ " + r[0].lstrip()) if r[0].startswith("    ")
                                     else r[0], *r[1:])) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths)),
                      *(fmt.format(*r) for r in rows)])


def write_json(path: str | None, res: dict[str, Any]) -> None:
    """--json FILE: the raw figures (anything not JSON by nature as its str())."""
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(res, fh, indent=1, default=str)


# The benches' server: quiet, no health checks, heartbeats every second.
SERVER_BASE = {
    "dryad_reply_timeout": 30.0, "healthcheck_interval": 0, "heartbeat_interval": 1.0,
    "heartbeat_liveness": 5, "log_level": "warning", "shutdown_grace": 0.5,
}


class BenchServer(ServerProcess):
    """A server with the benches' settings (loopback, quiet, no health checks)."""

    defaults = {**LOOPBACK, **SERVER_BASE}
    client_timeout = 30.0


def start_server(log: Path, **settings: Any) -> BenchServer:
    """A started BenchServer (`close()` it in a finally)."""
    server = BenchServer(log, **settings)
    server.start()
    return server


def count_state(client: Any, caps: dict[str, str], state: str) -> int:
    """How many workers with these caps are in `state`."""
    from boruta.core.types import WorkerFilter, WorkerState
    _, info = client.list_workers(WorkerFilter(caps=caps, states=(WorkerState(state),)))
    return info.total_items


def bring_idle(client: Any, uuids: list[str], caps: dict[str, str], timeout: float) -> None:
    """Set the workers IDLE and wait until they are (prepared: a key each)."""
    for uuid in uuids:
        client.set_state(uuid, "IDLE")
    wait_until(lambda: count_state(client, caps, "IDLE") == len(uuids), timeout, 0.05,
               f"{len(uuids)} workers IDLE")


def measure_keygen(n_rsa: int) -> dict[str, Any]:
    """RSA-2048 and Ed25519 key generation here, and from it the bound on RSA job cycles:
    every cycle needs a fresh key, made on KEY_THREADS threads."""
    from boruta.server.keys import generate_key
    generate_key("rsa")
    times, cpu = [], []
    for _ in range(n_rsa):
        t, c = time.perf_counter(), time.thread_time()
        generate_key("rsa", 2048)
        times.append(time.perf_counter() - t)
        cpu.append(time.thread_time() - c)
    t = time.perf_counter()
    for _ in range(200):
        generate_key("ed25519")
    ed = (time.perf_counter() - t) / 200
    cores = len(os.sched_getaffinity(0))
    rsa = statistics.median(times)
    used = min(KEY_THREADS, cores)
    rsa_cpu = statistics.median(cpu)
    return {"rsa_s": rsa, "rsa_mean_s": statistics.fmean(times), "rsa_cpu_s": rsa_cpu,
            "ed25519_s": ed, "cores": cores, "cores_used": used, "rsa_bound_per_s": used / rsa,
            "rsa_cpu_bound_per_s": used / rsa_cpu}


def parse_bench_args(prog: str, doc: str | None, only_help: str, workdir_help: str,
                     default: dict[str, Any], quick: dict[str, Any],
                     argv: list[str] | None) -> tuple[argparse.Namespace, dict[str, Any]]:
    """The command line every e2e bench shares: --quick, --only, one flag per size
    setting, --markdown, --json, --workdir. Returns the arguments and the sizes."""
    parser = argparse.ArgumentParser(prog=prog, description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--only", help=only_help)
    for name, value in default.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None,
                            help=f"default {value} (quick: {quick[name]})")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--workdir", metavar="DIR", help=workdir_help)
    args = parser.parse_args(argv)
    opts = dict(quick if args.quick else default)
    for name in default:
        value = getattr(args, name)
        if value is not None:
            opts[name] = value
    return args, opts


def parse_parts(prog: str, doc: str | None, parts: tuple[str, ...], default: dict[str, Any],
                quick: dict[str, Any], argv: list[str] | None
                ) -> tuple[argparse.Namespace, dict[str, Any], set[str]]:
    """parse_bench_args with --only naming some of `parts`; an unknown part exits 2."""
    args, opts = parse_bench_args(prog, doc, "comma-separated: " + ",".join(parts),
                                  "keep the logs there (default: a temporary directory)",
                                  default, quick, argv)
    only = set(args.only.split(",")) if args.only else set(parts)
    unknown = only - set(parts)
    if unknown:
        print(f"{prog}: --only: unknown part(s) {', '.join(sorted(unknown))}", file=sys.stderr)
        raise SystemExit(2)
    return args, opts, only


@contextlib.contextmanager
def work_directory(args: argparse.Namespace, prefix: str) -> Iterator[Path]:
    """--workdir (kept), else a temporary directory (removed after)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmpdir:
        tmp = Path(args.workdir or tmpdir)
        tmp.mkdir(parents=True, exist_ok=True)
        yield tmp


def alternating_rounds(measure: Any, count: int, modes: tuple[str, str]) -> dict[str, Any]:
    """`count` rounds of `measure(mode, name)` for the two modes, alternating which goes
    first (a shared machine's drift falls on both); the ratio of the first mode's `per_s`
    to the second's, per round and its median."""
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for index in range(count):
        for mode in (modes if index % 2 == 0 else modes[::-1]):
            runs[mode].append(measure(mode, f"r{index}-{mode}"))
            print(f"  round {index + 1} {mode}: {runs[mode][-1]['per_s']:.0f}/s", file=sys.stderr)
    ratios = [a["per_s"] / b["per_s"] for a, b in zip(runs[modes[0]], runs[modes[1]])
              if b["per_s"]]
    return {"runs": runs, "ratios": ratios,
            "ratio": statistics.median(ratios) if ratios else float("nan")}


def run_parts(prog: str, doc: str | None, parts: dict[str, Any], default: dict[str, Any],
              quick: dict[str, Any], argv: list[str] | None, prefix: str
              ) -> tuple[argparse.Namespace, dict[str, Any]]:
    """An e2e bench's main: the command line, then each part chosen by --only
    (`parts`: name -> measure(workdir, options)) in a work directory; returns the
    arguments and the results by part name (with "options")."""
    args, opts, only = parse_parts(prog, doc, tuple(parts), default, quick, argv)
    res: dict[str, Any] = {"options": opts}
    with work_directory(args, prefix) as tmp:
        for name, measure in parts.items():
            if name in only:
                res[name] = measure(tmp, opts)
    return args, res
