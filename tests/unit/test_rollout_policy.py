"""The rollout judge: error rates against the current deployment, latency without noise."""

from __future__ import annotations

import pytest

from modelferry.endpoints.rollout import (
    RolloutPolicy,
    judge_step,
    next_slot,
    split_for,
    steps_for,
)
from modelferry.endpoints.spec import DeploymentMetrics, EndpointState, TrafficSplit

POLICY = RolloutPolicy(min_requests=20, max_error_rate=0.01, max_p99_ms=250)


def m(requests: int, errors: int = 0, p99: float | None = 5.0) -> DeploymentMetrics:
    return DeploymentMetrics(requests, errors, p99)


def test_healthy_step_passes() -> None:
    verdict = judge_step(m(200), m(800), POLICY)
    assert verdict.passed
    assert "200 requests" in verdict.reason


def test_errors_beyond_the_current_deployment_fail() -> None:
    assert not judge_step(m(100, errors=5), m(400), POLICY).passed
    # The same bad-input rate on both is the clients' doing, not the new model's.
    assert judge_step(m(100, errors=5), m(400, errors=20), POLICY).passed


def test_latency_needs_samples_and_slack_before_it_counts() -> None:
    assert not judge_step(m(200, p99=300.0), m(800), POLICY).passed  # absolute bound
    assert not judge_step(m(200, p99=40.0), m(800, p99=10.0), POLICY).passed
    assert judge_step(m(200, p99=25.0), m(800, p99=10.0), POLICY).passed  # within slack
    assert judge_step(m(30, p99=90.0), m(800, p99=10.0), POLICY).passed  # too few samples


def test_too_little_traffic_goes_on_but_is_not_judged() -> None:
    verdict = judge_step(m(12), m(100), POLICY)
    assert verdict.passed  # the rollout may go on ...
    assert not verdict.judged  # ... but nothing was judged, and it never says "passed"
    assert verdict.outcome == "not judged"
    assert verdict.line(10) == "10 %: not judged (12 < 20 requests)"
    assert "passed" not in verdict.line(10)
    strict = RolloutPolicy(min_requests=20, require_traffic=True)
    verdict = judge_step(m(3), m(100), strict)
    assert not verdict.passed
    assert verdict.outcome == "not judged"


def test_a_judged_step_says_passed_with_its_numbers() -> None:
    verdict = judge_step(m(57, p99=4.0), m(500), POLICY)
    assert verdict.judged
    assert verdict.outcome == "passed"
    assert verdict.line(10) == "10 %: 57 requests, 0 errors, p99 4.0 ms — passed"
    failed = judge_step(m(100, errors=5), m(400), POLICY)
    assert failed.outcome == "failed"
    assert failed.line(50).startswith("50 %: error rate 5.0% (5/100)")
    assert failed.line(50).endswith("— failed")


def test_a_first_deployment_takes_all_traffic_in_one_step() -> None:
    assert steps_for(POLICY, None) == (100,)
    assert steps_for(POLICY, "blue") == (10, 50, 100)


def test_steps_must_end_at_100() -> None:
    with pytest.raises(ValueError, match="end at 100"):
        RolloutPolicy(steps=(10, 50))


def test_slots_alternate_and_splits() -> None:
    empty = EndpointState("e", "u", (), TrafficSplit())
    assert next_slot(empty, "1") == ("blue", None)
    live_blue = EndpointState("e", "u", (), TrafficSplit({"blue": 100}))
    assert next_slot(live_blue, "2") == ("green", "blue")
    assert dict(split_for(10, "green", "blue").weights) == {"green": 10, "blue": 90}
    assert dict(split_for(100, "green", "blue").weights) == {"green": 100, "blue": 0}
    assert dict(split_for(10, "blue", None).weights) == {"blue": 100}


def test_step_seconds_must_not_be_negative() -> None:
    assert RolloutPolicy(step_seconds=0).step_seconds == 0  # judged at once
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="step_seconds"):
            RolloutPolicy(step_seconds=bad)
