"""`make bench-ci`: the short benchmark set, saved and compared, with a guard.

    python -m bench.ci

Runs a few pytest-benchmark benches (bench/test_bench_matcher.py and
bench/test_bench_ci.py: the matcher's S2 churn and S3 arrivals, and the
Scheduler's NewRequest, compiled and plain-Python matcher side by side),
saves the run under .benchmarks/ and prints it next to the previous saved
run. Slowness never fails it: shared machines drift too much for timed
limits. It fails only when the compiled matcher's advantage over the plain
one, measured on the same operation at the same size in this very run, falls
below a floor far under today's (see FLOORS), or when the compiled matcher
is not built at all: the guard is against silently losing the compiled core.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, NamedTuple

BENCH_FILES = ("bench/test_bench_matcher.py", "bench/test_bench_ci.py")
STORAGE = Path(".benchmarks")
# This run's report, read by the verdict; the saved runs sit in a subfolder per machine.
REPORT_NAME = "bench-ci.json"

# Floors for reference median / compiled median, per bench; both kinds run
# at W=1000 workers and R=10000 waiting requests. Fifteen runs on the 2-core
# CI machine (Python 3.11, other jobs running) gave 132 000x to 344 000x for
# the matcher (add_request + match()) and 32 000x to 57 000x for the
# Scheduler (new_request + drain_effects). Each floor is a fifth of the
# lowest seen, rounded down: one run's ratio swings by 2x (the plain matcher
# runs only 5 rounds) and a faster interpreter may shrink it some more, so
# neither may trip the guard; a lost compiled core gives a ratio near 1.
FLOORS: Mapping[str, float] = {
    "test_s3_arrival_call": 25_000,
    "test_sched_new_request": 6_000,
}


class Verdict(NamedTuple):
    passed: bool
    lines: list[str]


def judge(report: Mapping[str, Any], floors: Mapping[str, float] = FLOORS) -> Verdict:
    """Pass iff every guarded bench has both kinds, at one size, and a ratio over its floor."""
    by_name = {b.get("name"): b for b in report.get("benchmarks", ()) if isinstance(b, dict)}
    lines, passed = [], True
    for bench, floor in floors.items():
        compiled, reference = by_name.get(f"{bench}[compiled]"), by_name.get(f"{bench}[reference]")
        if compiled is None:
            passed = False
            lines.append(f"FAIL {bench}: no compiled result: the compiled matcher is not built "
                         "(make build) or its bench did not run")
            continue
        if reference is None:
            passed = False
            lines.append(f"FAIL {bench}: no plain-Python result to compare the compiled one with")
            continue
        size_c, size_r = _size(compiled), _size(reference)
        if size_c != size_r:
            passed = False
            lines.append(f"FAIL {bench}: the two kinds ran at different sizes ({size_c} vs {size_r})")
            continue
        try:
            ratio = reference["stats"]["median"] / compiled["stats"]["median"]
        except (KeyError, TypeError, ZeroDivisionError):
            passed = False
            lines.append(f"FAIL {bench}: no usable median in the report")
            continue
        ok = ratio >= floor
        passed = passed and ok
        lines.append(f"{'ok  ' if ok else 'FAIL'} {bench} ({size_c}): compiled is {ratio:,.0f}x "
                     f"faster than plain Python (median); floor {floor:,.0f}x")
    return Verdict(passed, lines)


def _size(bench: Mapping[str, Any]) -> str:
    info = bench.get("extra_info") or {}
    return f"W={info.get('W', '?')} R={info.get('R', '?')}"


def judge_file(path: Path, floors: Mapping[str, float] = FLOORS) -> Verdict:
    """judge() on a pytest-benchmark JSON report; an unreadable one fails, saying why."""
    try:
        report = json.loads(Path(path).read_text())
    except OSError as exc:
        return Verdict(False, [f"FAIL: cannot read the benchmark report {path}: {exc.strerror}"])
    except ValueError as exc:
        return Verdict(False, [f"FAIL: the benchmark report {path} is not JSON ({exc})"])
    if not isinstance(report, dict):
        return Verdict(False, [f"FAIL: the benchmark report {path} is not a pytest-benchmark report"])
    return judge(report, floors)


def pytest_command(files: tuple[str, ...], storage: Path, report: Path) -> list[str]:
    """Run `files`, save the run under `storage`, show it next to the previous one there."""
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files,
            "--benchmark-only", f"--benchmark-storage=file://{storage}",
            "--benchmark-autosave", "--benchmark-compare", f"--benchmark-json={report}",
            "--benchmark-group-by=fullname", "--benchmark-sort=name",
            "--benchmark-columns=median,min,max,rounds"]


def run(files: tuple[str, ...] = BENCH_FILES, storage: Path = STORAGE,
        floors: Mapping[str, float] = FLOORS) -> int:
    """The benches, then the verdict; the exit status of `make bench-ci`."""
    storage.mkdir(parents=True, exist_ok=True)
    report = storage / REPORT_NAME
    report.unlink(missing_ok=True)          # never judge a previous run's report
    status = subprocess.call(pytest_command(files, storage, report))
    if status != 0:
        print(f"bench-ci: FAIL: the benchmark run failed (pytest exit status {status})")
        return 1
    verdict = judge_file(report, floors)
    for line in verdict.lines:
        print(f"bench-ci: {line}")
    print(f"bench-ci: {'passed' if verdict.passed else 'FAILED'}")
    return 0 if verdict.passed else 1


if __name__ == "__main__":
    sys.exit(run())
