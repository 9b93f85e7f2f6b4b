"""S1-S3 at the scheduler level with 20% of requests using capability expressions.

    python -m bench.expressions              # W=1000/R=10000, 10000/100000; plain at 100/1000
    python -m bench.expressions --markdown   # the table for docs/benchmarks.md

Each scenario runs twice in the same process, alternating which goes first:
exact-only, then with `--share` of the requests asking for their device type as
an expression (`device_type in X`: the same candidates, so the same assignments,
which the bench checks). Target: the expression runs within 1.5x of the
exact-only figures, compiled core. The plain-Python matcher is run at the
small size only (its S1-S3 at 10,000 requests take minutes).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

from bench import scenarios as sc

TARGET = 1.5
SIZES = {"compiled": [(1_000, 10_000, 2_000), (10_000, 100_000, 5_000)],
         "reference": [(100, 1_000, 200)]}


def figure(name: str, res: dict[str, Any]) -> float:
    """Seconds of the timed part (S1, S2) or the median latency in seconds (S3)."""
    if name == "S1s":
        return res["seconds"]
    return res["median_us"] / 1e6


def run(name: str, kind: str, W: int, R: int, n: int, share: float) -> dict[str, Any]:
    if name == "S1s":
        return sc.s1_scheduler(kind, W, R, expr_share=share)
    if name == "S2s":
        return sc.s2_scheduler(kind, W, R, n, expr_share=share)
    return sc.s3_scheduler(kind, W, R, n, expr_share=share)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.expressions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--share", type=float, default=0.20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    worst = 0
    for kind, sizes in SIZES.items():
        for W, R, n in sizes:
            for name in ("S1s", "S2s", "S3s"):
                times: dict[float, list[float]] = {0.0: [], args.share: []}
                made: dict[float, Any] = {}
                for round_ in range(args.rounds):
                    order = (0.0, args.share) if round_ % 2 == 0 else (args.share, 0.0)
                    for share in order:
                        res = run(name, kind, W, R, n, share)
                        if not res.get("finished", True):
                            print(f"{name} {kind} share {share}: did not finish", file=sys.stderr)
                        times[share].append(figure(name, res))
                        made[share] = res["assignments"]
                same = made[0.0] == made[args.share]
                worst = max(worst, 0 if same else 1)
                exact, expr = (statistics.median(times[s]) for s in (0.0, args.share))
                ratio = expr / exact if exact else float("nan")
                unit = "seconds" if name == "S1s" else "median latency"
                rows.append((name, kind, f"W={W} R={R}", unit, f"{exact:.4g}", f"{expr:.4g}",
                             f"{ratio:.2f}x", "same" if same else "DIFFERENT",
                             ("met" if ratio <= TARGET else "NOT met") if kind == "compiled"
                             else ""))
                print(f"  {name} {kind}: {exact:.4g} vs {expr:.4g} ({ratio:.2f}x)",
                      file=sys.stderr)
    head = ("scenario", "matcher", "size", "figure", "exact only", f"{args.share:.0%} expressions",
            "ratio", "assignments", f"target <= {TARGET}x")
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
        for r in [head, *rows]:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    return worst


if __name__ == "__main__":
    raise SystemExit(main())
