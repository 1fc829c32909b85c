"""The reliability suite's pure parts: the soak's invariant and the report's verdicts."""

from __future__ import annotations

from scripts.reliability_lab import report
from scripts.reliability_lab.rig import Layout, Real, Service, expected
from scripts.reliability_lab.soak import conforms

WEB = "TCP 10.2.0.240:80"
A, B = "10.2.1.242:80", "10.2.1.243:80"


def test_the_expected_table_removes_down_reals_and_zeroes_drained_ones() -> None:
    lay = Layout((Service("web", 80, (Real("10.2.1.242", weight=3), Real("10.2.1.243"))),))
    assert expected(lay, set(), set()) == {WEB: {A: 3, B: 1}}
    assert expected(lay, {A}, {B}) == {WEB: {B: 0}}


def test_a_drained_real_conforms_at_weight_zero_or_gone_and_nothing_else_does() -> None:
    want = {WEB: {A: 1, B: 0}}
    assert conforms({WEB: {A: 1, B: 0}}, want, {B})
    assert conforms({WEB: {A: 1}}, want, {B}), "drained and idle: deleted"
    assert not conforms({WEB: {A: 1, B: 1}}, want, {B}), "a drained real still taking new flows"
    assert not conforms({WEB: {B: 0}}, want, {B}), "a healthy real missing"
    assert not conforms({WEB: {A: 1}}, want, set()), "gone without a drain"
    assert not conforms({}, want, {B})


def test_the_report_fails_a_scenario_that_lost_anything_and_passes_one_that_did_not() -> None:
    good = {"signal": "KILL", "exit": -9, "ready_s": 12.0, "requests": 100, "failed": 0, "long_lived_breaks": 0,
            "table_changes": 0, "ops": [], "table_ok": True}
    assert report.passed({"restarts": {"rounds": [good, {**good, "signal": "TERM"}]}})
    for lost in ({"failed": 1}, {"table_changes": 1}, {"ops": ["-a -t ..."]}, {"long_lived_breaks": 1},
                 {"ready_s": None}):
        assert not report.passed({"restarts": {"rounds": [good, {**good, **lost}]}}), lost
    assert not report.passed({"restarts": {"error": "RuntimeError: boom"}})
    assert not report.passed({"restarts": {"rounds": []}}), "nothing done is not a pass"
    soak = {"minutes": 1, "events": {"fail": 2}, "samples": 200, "violations": 0, "requests": 10, "failed": 1}
    assert report.passed({"soak": soak}) and not report.passed({"soak": {**soak, "violations": 1}})
    assert "| 6 soak |" in report.markdown({"soak": soak})
    run = {"meta": {"scenarios": ["restarts", "soak"]}, "restarts": {"rounds": [good]}}
    assert not report.passed(run), "a scenario asked for and without a result fails the run"
    assert "no result" in report.markdown(run)
    assert report.passed({**run, "soak": soak})
