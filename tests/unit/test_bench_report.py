"""The benchmark's pure parts: the scale table's CPU split and the CPU counters it is made from."""

from __future__ import annotations

import os
import time

from scripts.bench_lab import report
from scripts.bench_lab.peers import cpu_times


def _scale(**ipvsd: float) -> dict[str, dict[str, dict[str, float]]]:
    row = {"install_s": 7.2, "checks_per_s": 581.6, "expected_per_s": 1000, "gap_p50_s": 1.71, "gap_p99_s": 2.1,
           "rss_mib": 45.8}
    return {"ipvsd": {"1000": {**row, **ipvsd}}, "keepalived": {"1000": {**row, "cpu_s_per_1000_checks": 0.7,
                                                                         "sys_s_per_1000_checks": 0.66}}}


def _row(lines: list[str], daemon: str) -> list[str]:
    line = next(x for x in lines if x.startswith(f"| 1000 | {daemon} |"))
    return [c.strip() for c in line.split("|")[1:-1]]


def test_the_scale_table_shows_the_kernel_share_of_each_daemons_cpu() -> None:
    lines = report.scale_table(_scale(cpu_s_per_1000_checks=1.71, sys_s_per_1000_checks=1.06))
    assert _row(lines, "ipvsd")[3] == "1.71 (1.06)"
    assert _row(lines, "keepalived")[3:5] == ["0.70 (0.66)", "2.44"], "the ratio stays total to total"


def test_a_result_from_before_the_split_shows_its_total_alone() -> None:
    assert _row(report.scale_table(_scale(cpu_s_per_1000_checks=1.71)), "ipvsd")[3] == "1.71"


def test_cpu_times_puts_a_pure_python_loop_in_user_time_and_skips_a_gone_process() -> None:
    u0, s0 = cpu_times([os.getpid()])
    end = time.process_time() + 0.1
    while time.process_time() < end:
        sum(range(1000))
    u1, s1 = cpu_times([os.getpid(), 2**22 + 1])  # beyond the largest pid_max: no such process
    assert u1 - u0 >= 0.05
    assert u1 - u0 > s1 - s0
