"""The rollout chart: one column per traffic step, coloured by the step's verdict."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from PIL import Image

from modelferry.endpoints.rollout import RolloutPolicy, judge_step
from modelferry.endpoints.rollout_chart import RolloutStep, save_rollout_chart
from modelferry.endpoints.spec import DeploymentMetrics
from modelferry.pictures import FAILED, NOT_JUDGED, PASSED
from tests.pictures import pixels_of

POLICY = RolloutPolicy(step_seconds=5, min_requests=20)
START = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)


def step(
    index: int, percent: int, new: DeploymentMetrics, old: DeploymentMetrics | None
) -> RolloutStep:
    started = START + timedelta(seconds=5 * index)
    return RolloutStep(percent, started, 5.0, new, old, judge_step(new, old, POLICY))


def healthy(requests: int = 40) -> DeploymentMetrics:
    return DeploymentMetrics(requests, 0, 3.0)


def test_a_failed_step_is_red_after_green_ones(tmp_path: Path) -> None:
    steps = [
        step(0, 10, healthy(), healthy(300)),
        step(1, 50, DeploymentMetrics(200, 40, 4.0), healthy(200)),  # 20 % errors
    ]
    assert [s.verdict.outcome for s in steps] == ["passed", "failed"]

    path = save_rollout_chart(
        steps, POLICY, "m v2 on ep (green): failed at 50 %", tmp_path / "r.png"
    )

    assert pixels_of(path, FAILED) > 200
    assert pixels_of(path, PASSED) > 200
    assert pixels_of(path, NOT_JUDGED) == 0


def test_a_rollout_that_passed_has_no_red(tmp_path: Path) -> None:
    steps = [step(i, p, healthy(), healthy()) for i, p in enumerate((10, 50, 100))]

    path = save_rollout_chart(steps, POLICY, "m v2 on ep (green): rolled out", tmp_path / "r.png")

    assert pixels_of(path, FAILED) == 0
    assert pixels_of(path, PASSED) > 200


def test_a_step_without_enough_requests_is_drawn_not_judged(tmp_path: Path) -> None:
    steps = [step(0, 10, healthy(3), healthy()), step(1, 100, healthy(), healthy(0))]
    assert steps[0].verdict.outcome == "not judged"

    path = save_rollout_chart(steps, POLICY, "t", tmp_path / "r.png")

    assert pixels_of(path, NOT_JUDGED) > 200


def test_a_first_deployment_without_requests_or_latency_still_draws(tmp_path: Path) -> None:
    # Nothing to compare with, no request answered, no p99: empty bars, not a failure.
    steps = [step(0, 100, DeploymentMetrics(0, 0, None), None)]

    path = save_rollout_chart(steps, POLICY, "t", tmp_path / "r.png")

    with Image.open(path) as image:
        assert image.format == "PNG"


def test_more_steps_make_a_wider_chart(tmp_path: Path) -> None:
    two = [step(i, p, healthy(), healthy()) for i, p in enumerate((50, 100))]
    ten = [step(i, 10 * (i + 1), healthy(), healthy()) for i in range(10)]

    narrow = save_rollout_chart(two, POLICY, "t", tmp_path / "two.png")
    wide = save_rollout_chart(ten, POLICY, "t", tmp_path / "ten.png")

    with Image.open(narrow) as a, Image.open(wide) as b:
        assert b.size[0] > 2 * a.size[0]
