"""A canary step is measured from the server's counters at its start and end: exact counts
however long the step, a restart seen, p99 from the latency histogram's difference."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest

from modelferry.endpoints.counters import (
    LATENCY_BOUNDS_S,
    CounterReading,
    metrics_between,
    p99_ms,
)
from modelferry.endpoints.rollout import RolloutPolicy, judge_measured_step
from modelferry.serving.telemetry import Telemetry

NAMES = ("blue", "green")


def test_a_step_longer_than_any_window_is_counted_exactly() -> None:
    telemetry = Telemetry()
    for _ in range(1_000):  # before the step: not the step's
        telemetry.record("green", 500, 0.002, 1)
    start = telemetry.reading(NAMES)
    for i in range(60_000):  # 12.5 s at 4,800 req/s
        telemetry.record("green", 500 if i % 1_000 == 0 else 200, 0.004, 1)
        telemetry.record("blue", 200, 0.004, 1)
    for _ in range(500):  # pinned: never judged
        telemetry.record("green", 500, 0.004, 1, pinned=True)
    measured = metrics_between(start, telemetry.reading(NAMES))
    assert measured.restarted is None
    green = measured.deployments["green"]
    assert (green.requests, green.errors) == (60_000, 60)
    assert measured.deployments["blue"].requests == 60_000
    verdict = judge_measured_step(measured, "green", "blue", RolloutPolicy())
    assert verdict.passed
    assert verdict.reason.startswith("60000 requests, 60 errors, p99 4.")


def test_client_errors_are_counted_as_requests_not_as_errors() -> None:
    telemetry = Telemetry()
    start = telemetry.reading(NAMES)
    for _ in range(30):
        telemetry.record("green", 400, 0.001, 0, client_error=True)
        telemetry.record("green", 400, 0.001, 0)  # a 400 another deployment would not give
    end = telemetry.reading(NAMES)
    green = metrics_between(start, end).deployments["green"]
    assert (green.requests, green.errors) == (60, 30)
    assert end.deployments["green"].client_errors == 30


def test_a_server_restart_during_the_step_is_seen_and_only_what_followed_is_judged() -> None:
    before = Telemetry()
    for _ in range(5_000):
        before.record("green", 200, 0.003, 1)
    start = before.reading(NAMES)
    restarted = Telemetry()  # a new server process: counts from zero again
    for _ in range(40):
        restarted.record("green", 500, 0.003, 1)
    for _ in range(60):
        restarted.record("green", 200, 0.003, 1)
    end = restarted.reading(NAMES)
    measured = metrics_between(start, end)
    assert measured.restarted == restarted.started
    green = measured.deployments["green"]
    # Not 100 - 5,000 requests: the counts after the restart, and nothing before it.
    assert (green.requests, green.errors) == (100, 40)
    verdict = judge_measured_step(measured, "green", "blue", RolloutPolicy())
    assert not verdict.passed
    assert "counted from the server's restart at" in verdict.reason


@pytest.mark.parametrize("scale_ms", [0.4, 3.0, 25.0, 900.0])
def test_p99_from_the_histogram_difference_is_within_one_bucket(scale_ms: float) -> None:
    rng = np.random.default_rng(7)
    telemetry = Telemetry()
    for seconds in rng.lognormal(math.log(scale_ms / 1000), 1.0, 500):  # not the step's
        telemetry.record("green", 200, float(seconds) * 10, 1)
    start = telemetry.reading(NAMES)
    step = rng.lognormal(math.log(scale_ms / 1000), 0.6, 20_000)
    for seconds in step:
        telemetry.record("green", 200, float(seconds), 1)
    measured = metrics_between(start, telemetry.reading(NAMES)).deployments["green"]
    exact = float(np.percentile(step * 1000, 99, method="inverted_cdf"))
    assert measured.p99_latency_ms is not None
    # The bound of the bucket holding it: never below, at most one bucket (5 %) above.
    assert exact <= measured.p99_latency_ms <= exact * 1.05 + 1e-9


def test_p99_of_nothing_and_of_what_is_slower_than_every_bound() -> None:
    bounds = tuple(b * 1000 for b in LATENCY_BOUNDS_S)
    assert p99_ms(bounds, (0,) * (len(bounds) + 1)) is None
    assert p99_ms(bounds, (0,) * len(bounds) + (3,)) == bounds[-1]
    telemetry = Telemetry()
    start = telemetry.reading(NAMES)
    measured = metrics_between(start, telemetry.reading(NAMES)).deployments["green"]
    assert (measured.requests, measured.errors, measured.p99_latency_ms) == (0, 0, None)


def test_a_reading_survives_its_json_form_and_a_wrong_shape_is_named() -> None:
    telemetry = Telemetry()
    telemetry.record("blue", 200, 0.01, 1)
    reading = telemetry.reading(NAMES)
    assert CounterReading.from_json(reading.to_json()) == reading
    assert reading.started <= datetime.now(UTC)
    with pytest.raises(ValueError, match="not a counter reading"):
        CounterReading.from_json({"blue": {"requests": 1, "errors": 0, "p99_ms": 3.0}})


def test_readings_with_different_buckets_are_refused() -> None:
    telemetry = Telemetry()
    start = telemetry.reading(NAMES)
    end = telemetry.reading(NAMES)
    shorter = {name: replace(c, latency=c.latency[:-1]) for name, c in start.deployments.items()}
    with pytest.raises(ValueError, match="different buckets"):
        metrics_between(replace(start, deployments=shorter), end)
