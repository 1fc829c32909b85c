"""Scenario 5, faults around ipvsd: runs tests/unit/test_faults.py (fake kernel, virtual time) and summarises it.

The faults cannot all be made on a real host (a full disk, EPERM from the kernel, a clock step), so the scenario
is the unit test module, which drives the daemon's real wiring through each fault; this runner only turns its
outcome into the results file's shape: per fault, tests passed and failed, and the names of those that failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[2] / "tests" / "unit" / "test_faults.py"
# Each fault of the issue's list, by a word every one of its tests' names carries.
FAULTS = {
    "state_dir_read_only_or_full": "test_state_dir_read_only_or_full",
    "corrupt_state_file": "test_a_corrupt_state_file",
    "control_socket_removed": "control_socket",
    "netlink_errors": "test_netlink_errors",
    "clock_step": "clock",
    "name_stops_resolving": "name_stops_resolving",
}


class _Outcomes:
    """A pytest plugin that keeps each test's outcome (a failed setup or teardown counts as failed)."""

    def __init__(self) -> None:
        self.by_test: dict[str, str] = {}

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when == "call" or report.failed:
            name = report.nodeid.rpartition("::")[2]
            if self.by_test.get(name) != "failed":
                self.by_test[name] = report.outcome


def run() -> dict[str, Any]:
    """Run the fault tests; return {fault: {"ok", "passed", "failed", "failures"}} and "exit_status"."""
    import pytest

    outcomes = _Outcomes()
    status = pytest.main(["-q", "-p", "no:cacheprovider", str(TESTS)], plugins=[outcomes])
    results: dict[str, Any] = {"exit_status": int(status)}
    for fault, word in FAULTS.items():
        mine = {t: o for t, o in outcomes.by_test.items() if word in t}
        failures = sorted(t for t, o in mine.items() if o != "passed")
        results[fault] = {"ok": bool(mine) and not failures, "passed": len(mine) - len(failures),
                          "failed": len(failures), "failures": failures}
    return results


if __name__ == "__main__":
    import json
    import sys

    # pytest prints to stdout: the figures go to the file named by the only argument, or after its output
    text = json.dumps(run(), indent=1) + "\n"
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(text)
    else:
        print(text, end="")
