"""The serving benchmark's arithmetic: slices combined, targets judged, CPU read."""

from __future__ import annotations

import os

import pytest

from bench.bench_serving import (
    MLFLOW,
    MLSERVER,
    OFF,
    ON,
    PARTS,
    KindRun,
    Result,
    combine,
    process_cpu,
    verdicts,
)


def result(name: str, rps: float, p99: float, cpu_us: float, requests: int = 1000) -> Result:
    return Result(name, rps, 1.0, p99, requests, 0, "wrk", cpu_us * requests / 1e6, cpu_us)


def test_slices_combine_over_their_time_and_requests() -> None:
    a = Result("x", 100.0, 1.0, 4.0, 1000, 0, "wrk", 0.2, 200.0)   # 10 s
    b = Result("x", 300.0, 3.0, 8.0, 3000, 1, "wrk", 0.3, 100.0)   # 10 s
    c = combine("x", [a, b])
    assert c.rps == pytest.approx(200.0)
    assert (c.requests, c.errors, c.p50_ms, c.p99_ms) == (4000, 1, 2.0, 6.0)
    assert c.cpu_us == pytest.approx(0.5 / 4000 * 1e6)


@pytest.mark.parametrize(("on_rps", "on_p99", "verdict"), [
    (950.0, 14.0, "met"),      # 5% fewer requests/s, p99 1.4x
    (850.0, 14.0, "MISSED"),   # 15% fewer
    (950.0, 16.0, "MISSED"),   # p99 1.6x
])
def test_the_monitoring_overhead_target_needs_both_throughput_and_p99(on_rps, on_p99,
                                                                       verdict) -> None:
    run = KindRun("trees", 1, 2, "trees", [result(ON, on_rps, on_p99, 110.0),
                                           result(OFF, 1000.0, 10.0, 100.0),
                                           result(MLFLOW, 40.0, 200.0, 5000.0)])
    lines = verdicts(run)
    assert lines[0].endswith(f"{verdict}.")
    assert "+10.0%" in lines[0]
    assert f"{on_rps / 40:.1f}x the requests/s (target at least 20x: met)" in lines[1]
    assert lines[2] == f"- trees: {MLSERVER} was not measured in this run."


def test_the_breakdown_says_what_each_part_costs() -> None:
    no_log, no_shadow, no_metrics = PARTS
    run = KindRun("linear", 1, 2, "linear", [result(ON, 800.0, 12.0, 120.0),
                                             result(no_log, 880.0, 11.0, 110.0),
                                             result(no_shadow, 820.0, 12.0, 115.0),
                                             result(OFF, 1000.0, 10.0, 100.0)])
    lines = verdicts(run)
    assert lines[0].startswith("- linear: monitoring overhead") and "20.0% fewer" in lines[0]
    assert lines[1] == (f"- linear: {no_log}: 880 requests/s, +10.0% against all of "
                        "monitoring on; p99 11.00 ms.")
    assert lines[2].startswith(f"- linear: {no_shadow}: 820 requests/s, +2.5%")
    assert not any(no_metrics in line for line in lines)  # not measured: not reported


def test_process_cpu_reads_this_process() -> None:
    sum(i * i for i in range(200_000))  # some CPU of our own
    assert process_cpu(os.getpid()) > 0
    assert process_cpu(2 ** 22 + 12345) == 0.0  # no such process
