"""The health state machine, driven by a fake clock: rise/fall, start modes, retry delay, sentinel urgency."""

from __future__ import annotations

import pytest

from ipvsd.checks.base import Kind, ProbeResult
from ipvsd.core.health import HealthState, Policy, Start, first_delay, fold, initial, sentinel_event

OK = ProbeResult.up("200 OK", 0.01)
BAD = ProbeResult.down(Kind.REFUSED, "connection refused", 0.001)


def run(policy: Policy, state: HealthState, results: str, *, t0: float = 0.0) -> list[tuple[bool, bool, float]]:
    """Fold a string of results ('+' ok, '-' fail) on a fake clock; return (up, transitioned, delay) per step."""
    now, out = t0, []
    for ch in results:
        step = fold(state, OK if ch == "+" else BAD, now=now, policy=policy)
        out.append((step.state.up, step.transition is not None, step.delay))
        state, now = step.state, now + step.delay
    return out


@pytest.mark.parametrize(
    ("rise", "fall", "results", "ups"),
    [
        (1, 1, "+-+", [True, False, True]),
        (1, 3, "--+---", [True, True, True, True, True, False]),
        (2, 1, "-+-++", [False, False, False, False, True]),
        (3, 2, "--+++", [True, False, False, False, True]),
        (2, 2, "-+-+-", [True, True, True, True, True]),  # alternating never reaches either threshold
    ],
)
def test_rise_and_fall_count_consecutive_results(rise: int, fall: int, results: str, ups: list[bool]) -> None:
    policy = Policy(rise=rise, fall=fall, start=Start.UP)
    state = fold(initial(policy, now=0), OK, now=0, policy=policy).state  # settled UP
    assert [u for u, _, _ in run(policy, state, results)] == ups


def test_only_changes_are_transitions_and_carry_their_cause() -> None:
    policy = Policy(fall=2)
    state = initial(policy, now=0)
    step1 = fold(state, BAD, now=1, policy=policy)
    step2 = fold(step1.state, BAD, now=2, policy=policy)
    assert step1.transition is None
    assert step2.transition is not None and step2.transition.up is False
    assert step2.transition.result is BAD and step2.transition.at == 2
    assert step2.state.since == 2 and step2.state.transitions == 1
    assert str(step2.transition) == "DOWN: connection refused"


@pytest.mark.parametrize(
    ("start", "kernel_up", "up"),
    [(Start.UP, None, True), (Start.DOWN, None, False), (Start.ADOPT, True, True), (Start.ADOPT, False, False),
     (Start.ADOPT, None, False)],
)
def test_start_state(start: Start, kernel_up: bool | None, up: bool) -> None:
    state = initial(Policy(start=start), now=5, kernel_up=kernel_up)
    assert (state.up, state.settled, state.since) == (up, False, 5)


def test_alpha_goes_up_at_first_success_even_with_rise() -> None:
    policy = Policy(rise=3, start=Start.DOWN)
    step = fold(initial(policy, now=0), OK, now=1, policy=policy)
    assert step.state.up and step.transition is not None
    # once settled, rise applies again
    assert [u for u, _, _ in run(policy, step.state, "-++")] == [False, False, False]


def test_provisional_up_still_needs_fall_failures() -> None:
    policy = Policy(fall=2, start=Start.UP)
    assert [u for u, _, _ in run(policy, initial(policy, now=0), "--")] == [True, False]


def test_retry_delay_while_a_streak_runs_interval_otherwise() -> None:
    policy = Policy(interval=10, retry_delay=2, fall=3, rise=2, down_interval=30)
    state = fold(initial(policy, now=0), OK, now=0, policy=policy).state
    delays = [d for _, _, d in run(policy, state, "+--" "-" "-" "+" "+")]
    #             up-agree, streak 1, 2, down!, down-agree, rising 1, up!
    assert delays == [10, 2, 2, 30, 30, 2, 10]


def test_retry_delay_defaults_to_interval() -> None:
    policy = Policy(interval=7, fall=2)
    assert [d for _, _, d in run(policy, initial(policy, now=0), "-")] == [7]


@pytest.mark.parametrize("start", [Start.UP, Start.DOWN])
def test_a_local_failure_changes_nothing_and_retries(start: Start) -> None:
    # ipvsd out of descriptors says nothing about the real (rule 7): no streak, no transition, no settling.
    local = ProbeResult.down(Kind.LOCAL, "ipvsd is out of file descriptors (too many open files)")
    policy = Policy(interval=5, retry_delay=1, fall=1, start=start)
    for state in (initial(policy, now=0), fold(initial(policy, now=0), OK, now=0, policy=policy).state):
        step = fold(state, local, now=3, policy=policy)
        assert (step.state, step.transition, step.delay) == (state, None, 1)


def test_emfile_is_classified_local() -> None:
    from ipvsd.checks.base import classify

    assert classify(OSError(24, "Too many open files"))[0] is Kind.LOCAL


def test_sentinel_event_confirms_with_immediate_retries() -> None:
    policy = Policy(interval=1, retry_delay=1, fall=3)
    state = sentinel_event(fold(initial(policy, now=0), OK, now=0, policy=policy).state)
    assert state.urgent
    out = run(policy, state, "---")
    assert out == [(True, False, 0.0), (True, False, 0.0), (False, True, 1)]


def test_sentinel_event_answered_by_success_clears_urgency() -> None:
    policy = Policy(interval=1, fall=3)
    state = sentinel_event(fold(initial(policy, now=0), OK, now=0, policy=policy).state)
    step = fold(state, OK, now=0.1, policy=policy)
    assert not step.state.urgent and step.delay == 1 and step.transition is None


def test_sentinel_event_while_down_changes_nothing() -> None:
    policy = Policy(start=Start.DOWN)
    state = initial(policy, now=0)
    assert sentinel_event(state) == state


def test_warmup_spreads_first_probe() -> None:
    assert first_delay(Policy(warmup=10), u=0.25) == 2.5
    assert first_delay(Policy(), u=0.9) == 0


@pytest.mark.parametrize("kw", [{"rise": 0}, {"fall": 0}, {"interval": 0}, {"timeout": -1}])
def test_policy_rejects_nonsense(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Policy(**kw)  # type: ignore[arg-type]
