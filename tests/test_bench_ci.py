"""`make bench-ci` fails only when the compiled matcher's lead falls below its floor.

The verdict is read from pytest-benchmark's JSON report: synthetic reports
for each outcome, then real pytest-benchmark runs of a tiny bench through
the same runner (saving, comparing, judging) as `make bench-ci`.
"""
from __future__ import annotations

import importlib
import json
import textwrap
from pathlib import Path

import pytest

from bench.ci import BENCH_FILES, FLOORS, judge_file, run

BENCH = "test_s3_arrival_call"
FLOORS_UNDER_TEST = {BENCH: 1_000}


def bench_entry(name: str, median: float, W: int = 1000, R: int = 10000) -> dict:
    """One benchmark as pytest-benchmark writes it (the fields the verdict reads, and more)."""
    return {"group": None, "name": name, "fullname": f"bench/test_bench_matcher.py::{name}",
            "params": {"kind": name.split("[")[1][:-1]}, "param": name.split("[")[1][:-1],
            "extra_info": {"W": W, "R": R, "scenario": "S3"},
            "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": 5},
            "stats": {"min": median / 2, "max": median * 3, "mean": median, "stddev": 0.0,
                      "rounds": 5, "median": median, "iqr": 0.0, "q1": median, "q3": median,
                      "iqr_outliers": 0, "stddev_outliers": 0, "outliers": "0;0",
                      "ld15iqr": median, "hd15iqr": median, "ops": 1 / median,
                      "total": 5 * median, "iterations": 1}}


def write_report(path: Path, *benches: dict) -> Path:
    path.write_text(json.dumps({"machine_info": {"node": "ci"}, "commit_info": {},
                                "benchmarks": list(benches),
                                "datetime": "2026-01-01T00:00:00", "version": "5.1.0"}))
    return path


def test_a_ratio_above_the_floor_passes(tmp_path: Path) -> None:
    report = write_report(tmp_path / "r.json", bench_entry(f"{BENCH}[compiled]", 2e-6),
                          bench_entry(f"{BENCH}[reference]", 0.5))
    verdict = judge_file(report, FLOORS_UNDER_TEST)
    assert verdict.passed
    assert verdict.lines == [f"ok   {BENCH} (W=1000 R=10000): compiled is 250,000x faster "
                             "than plain Python (median); floor 1,000x"]


def test_a_ratio_below_the_floor_fails(tmp_path: Path) -> None:
    report = write_report(tmp_path / "r.json", bench_entry(f"{BENCH}[compiled]", 1e-3),
                          bench_entry(f"{BENCH}[reference]", 0.5))
    verdict = judge_file(report, FLOORS_UNDER_TEST)
    assert not verdict.passed
    assert verdict.lines[0].startswith(f"FAIL {BENCH} (W=1000 R=10000): compiled is 500x")


def test_one_guard_below_its_floor_fails_the_run(tmp_path: Path) -> None:
    other = "test_sched_new_request"
    report = write_report(tmp_path / "r.json",
                          bench_entry(f"{BENCH}[compiled]", 2e-6), bench_entry(f"{BENCH}[reference]", 0.5),
                          bench_entry(f"{other}[compiled]", 0.4), bench_entry(f"{other}[reference]", 0.5))
    verdict = judge_file(report, {BENCH: 1_000, other: 1_000})
    assert not verdict.passed
    assert [line[:4] for line in verdict.lines] == ["ok  ", "FAIL"]


def test_a_missing_compiled_result_fails_and_says_so(tmp_path: Path) -> None:
    report = write_report(tmp_path / "r.json", bench_entry(f"{BENCH}[reference]", 0.5))
    verdict = judge_file(report, FLOORS_UNDER_TEST)
    assert not verdict.passed
    assert "the compiled matcher is not built" in verdict.lines[0]


def test_a_missing_reference_result_fails(tmp_path: Path) -> None:
    report = write_report(tmp_path / "r.json", bench_entry(f"{BENCH}[compiled]", 2e-6))
    verdict = judge_file(report, FLOORS_UNDER_TEST)
    assert not verdict.passed
    assert "no plain-Python result" in verdict.lines[0]


def test_kinds_measured_at_different_sizes_fail(tmp_path: Path) -> None:
    report = write_report(tmp_path / "r.json", bench_entry(f"{BENCH}[compiled]", 2e-6, W=10_000),
                          bench_entry(f"{BENCH}[reference]", 0.5))
    verdict = judge_file(report, FLOORS_UNDER_TEST)
    assert not verdict.passed
    assert "different sizes (W=10000 R=10000 vs W=1000 R=10000)" in verdict.lines[0]


@pytest.mark.parametrize("content, problem", [
    (None, "cannot read the benchmark report"),
    ("{not json", "is not JSON"),
    ("[1, 2]", "is not a pytest-benchmark report"),
], ids=["missing", "not-json", "not-a-report"])
def test_an_unusable_report_fails_with_a_reason(tmp_path: Path, content, problem) -> None:
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    verdict = judge_file(path, FLOORS_UNDER_TEST)
    assert not verdict.passed
    assert problem in verdict.lines[0]


def test_every_guarded_bench_is_in_the_files_bench_ci_runs() -> None:
    """A renamed bench would otherwise read as a missing compiled matcher."""
    modules = [importlib.import_module(f.removesuffix(".py").replace("/", ".")) for f in BENCH_FILES]
    for name in FLOORS:
        assert any(callable(getattr(m, name, None)) for m in modules), name


TINY_BENCH = """
import pytest

@pytest.mark.parametrize("kind", [
    pytest.param("compiled", marks=pytest.mark.skipif({skip_compiled}, reason="not built")),
    "reference",
])
def test_s3_arrival_call(benchmark, kind):
    benchmark.extra_info.update(W=3, R=7)
    n = 10 if kind == "compiled" else 10_000
    benchmark.pedantic(sum, args=(range(n),), rounds=3, iterations=1)
"""


def tiny_bench(tmp_path: Path, skip_compiled: bool = False) -> tuple[str, ...]:
    path = tmp_path / "test_tiny_bench.py"
    path.write_text(textwrap.dedent(TINY_BENCH.format(skip_compiled=skip_compiled)))
    return (str(path),)


@pytest.mark.slow
def test_runs_save_compare_and_judge_real_reports(tmp_path: Path, capfd) -> None:
    """Floors 0 and infinity: the outcome depends on the report being read, not on speed."""
    files, storage = tiny_bench(tmp_path), tmp_path / "storage"
    assert run(files, storage, {BENCH: 0}) == 0
    first = capfd.readouterr().out
    assert f"bench-ci: ok   {BENCH} (W=3 R=7)" in first
    assert run(files, storage, {BENCH: float("inf")}) == 1
    second = capfd.readouterr().out
    assert f"{BENCH}[compiled] (NOW)" in second and f"{BENCH}[compiled] (0001_" in second
    assert f"bench-ci: FAIL {BENCH} (W=3 R=7)" in second
    assert len(list(storage.glob("*/0*.json"))) == 2


@pytest.mark.slow
def test_a_run_without_the_compiled_matcher_fails(tmp_path: Path, capfd) -> None:
    assert run(tiny_bench(tmp_path, skip_compiled=True), tmp_path / "storage", {BENCH: 0}) == 1
    out = capfd.readouterr().out
    assert "the compiled matcher is not built" in out and "bench-ci: FAILED" in out
