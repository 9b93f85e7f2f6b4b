"""What CurveZMQ costs: S5 NewRequest and SSH job cycles with the server secure and insecure.

    python -m bench.e2e_security                 # default sizes (~4 minutes)
    python -m bench.e2e_security --quick         # small sizes (~2 minutes)
    python -m bench.e2e_security --only s5       # one part: s5, cycles
    python -m bench.e2e_security --markdown      # the table as Markdown (docs/benchmarks.md)

Both figures come from the same run, each on fresh servers, in `--rounds`
rounds; a round measures the secure and the insecure server back to back,
in alternating order (secure first in odd rounds), so that the drift of a
shared machine falls on both. The judged ratio is the median of the rounds'
ratios.

- S5 (a): bench.e2e_load's NewRequest throughput (`--procs` processes, each
  one DEALER with `--window` calls in flight). Secure: every call is
  encrypted, and the server reads its caller's key from the frame and finds
  the user. Target: at most 25% slower than insecure.
- Job cycles: bench.e2e_ssh's cycles with Ed25519 keys (real dryad agents,
  real SSH logins through the tunnel). Secure: the clients, the drivers and
  every dryad speak CURVE, each dryad with its own enrolled key. Target: at
  least 90% of the insecure figure.

A benchmark never fails for being slow; the table says whether each target
was met.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from bench.e2e_common import alternating_rounds, render_table, run_parts, write_json
from bench.e2e_load import BENCH_SETTINGS, bench_throughput
from bench.e2e_ssh import bench_cycles

DEFAULT = {"procs": 3, "window": 128, "duration": 8.0, "warmup": 2.0, "rounds": 3,
           "dryads": 20, "dryad_procs": 2, "drivers": 2, "threads": 6}
QUICK = {"procs": 3, "window": 128, "duration": 4.0, "warmup": 1.0, "rounds": 2,
         "dryads": 10, "dryad_procs": 2, "drivers": 2, "threads": 4}
S5_MAX_SLOWDOWN = 0.25
CYCLES_MIN_RATIO = 0.90
MODES = {"secure": {}, "insecure": {"insecure": True}}


def bench_s5(tmp: Path, opts: dict[str, Any]) -> dict[str, Any]:
    sizes = {k: opts[k] for k in ("procs", "window", "duration", "warmup")}
    return alternating_rounds(lambda mode, name: bench_throughput(
        tmp, sizes, settings={**BENCH_SETTINGS, **MODES[mode]}, name=f"s5-{name}"),
        opts["rounds"], ("secure", "insecure"))


def bench_ssh_cycles(tmp: Path, opts: dict[str, Any]) -> dict[str, Any]:
    sizes = {k: opts[k] for k in ("dryads", "dryad_procs", "drivers", "threads")}
    sizes["duration"] = opts["duration"]
    return alternating_rounds(lambda mode, name: bench_cycles(
        tmp, "ed25519", sizes, settings=MODES[mode], name=f"cycles-{name}"),
        opts["rounds"], ("secure", "insecure"))


def _runs(part: dict[str, Any], mode: str, unit: str, detail: str, key: str,
          digits: int) -> str:
    """One mode's figure of each round, and a detail of each round."""
    runs = part["runs"][mode]
    return (", ".join(f"{r['per_s']:.0f}" for r in runs) + f" {unit}; {detail} "
            + ", ".join(f"{r[key]:.{digits}f}" for r in runs))


def _ratio(part: dict[str, Any]) -> str:
    return (f"{part['ratio']:.0%} (rounds {', '.join(f'{r:.0%}' for r in part['ratios'])})")


def table(res: dict[str, Any], markdown: bool) -> str:
    rows = []
    if "s5" in res:
        s5 = res["s5"]
        for mode, label in (("insecure", "insecure"), ("secure", "CURVE")):
            rows.append((f"S5 (a) NewRequest, {label}", _runs(
                s5, mode, "calls/s", "server µs/call", "server_us_per_call", 0), ""))
        slowdown = 1 - s5["ratio"]
        rows.append(("    CURVE / insecure, median of rounds",
                     f"{_ratio(s5)}: {slowdown:.0%} slower",
                     "yes" if slowdown <= S5_MAX_SLOWDOWN else "no"))
    if "cycles" in res:
        cycles = res["cycles"]
        for mode, label in (("insecure", "insecure"), ("secure", "CURVE")):
            rows.append((f"Ed25519 SSH job cycles, {label}", _runs(
                cycles, mode, "cycles/s", "p50 ms", "latency_p50_ms", 1), ""))
        rows.append(("    CURVE / insecure, median of rounds", _ratio(cycles),
                     "yes" if cycles["ratio"] >= CYCLES_MIN_RATIO else "no"))
    return render_table(("measurement", "result", "target met"), rows, markdown)


def main(argv: list[str] | None = None) -> int:
    args, res = run_parts("python -m bench.e2e_security", __doc__,
                          {"s5": bench_s5, "cycles": bench_ssh_cycles}, DEFAULT, QUICK, argv,
                          "boruta-bench-security-")
    print(table(res, args.markdown))
    for part in ("s5", "cycles"):
        for mode, runs in res.get(part, {}).get("runs", {}).items():
            errors = [r["first_error"] for r in runs if r.get("first_error")]
            if errors:
                print(f"({part}, {mode}) first error: {errors[0]}")
    write_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
