"""A rollout as a picture: each traffic step's split, error rates and p99, and its verdict."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from modelferry.endpoints.rollout import RolloutPolicy, StepVerdict
from modelferry.endpoints.spec import DeploymentMetrics
from modelferry.pictures import (
    BAR_LINE,
    BASELINE,
    FAILED,
    NOT_JUDGED,
    PASSED,
    new_figure,
    save_png,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes


@dataclass(frozen=True)
class RolloutStep:
    """One traffic step as measured and judged.

    Attributes:
        percent: the share of traffic the new deployment had.
        started: when the step's measurement began (UTC).
        seconds: how long the step was held.
        new: what the endpoint measured for the new deployment over the step.
        old: the same for the deployment it replaces; None on a first deployment.
        verdict: the judge's verdict on the step.
    """

    percent: int
    started: datetime
    seconds: float
    new: DeploymentMetrics
    old: DeploymentMetrics | None
    verdict: StepVerdict


_COLOURS = {"passed": PASSED, "failed": FAILED, "not judged": NOT_JUDGED}


def save_rollout_chart(
    steps: Sequence[RolloutStep], policy: RolloutPolicy, title: str, path: Path
) -> Path:
    """Draw a rollout's steps to a PNG at `path`, one column per step, in order.

    Three panels share the steps: the traffic split (the new deployment's share coloured
    by the step's verdict: green passed, red failed, amber not judged), the error rate
    of each deployment with the policy's bar above the old one's, and each deployment's
    p99 latency with the policy's highest p99. A step with no requests or no p99 leaves
    its bar out rather than drawing a zero.
    """
    figure = new_figure(max(6.0, 1.4 * len(steps) + 2.5), 7.5)
    figure.suptitle(title, fontsize=11)
    traffic, errors, latency = figure.subplots(3, 1, sharex=True)
    labels = [_label(step, steps[0].started) for step in steps]
    positions = list(range(len(steps)))
    width = 0.38
    _traffic(traffic, steps, positions)
    first = all(step.old is None for step in steps)
    new_x = positions if first else [x + width / 2 for x in positions]
    old_x = [x - width / 2 for x in positions]

    bars = errors.bar(new_x, [_error_rate(s.new) for s in steps], width, color=_outcomes(steps))
    # Counts over the new deployment's bars: a step with no errors has no bar to see.
    errors.bar_label(bars, [f"{s.new.errors}/{s.new.requests}" for s in steps], fontsize=8)
    if not first:
        errors.bar(old_x, [_error_rate(s.old) for s in steps], width, color=BASELINE)
    # The judge allows the old deployment's error rate plus the policy's margin.
    allowed = [policy.max_error_rate * 100 + _measured(_error_rate(s.old)) for s in steps]
    for x, bar in zip(positions, allowed, strict=True):
        errors.hlines(bar, x - 0.45, x + 0.45, color=BAR_LINE, linestyle="--", linewidth=1.2)
    errors.set_ylabel("errors %", fontsize=9)
    highest = max([*allowed, *(_measured(_error_rate(s.new)) for s in steps), 1.0])
    errors.set_ylim(bottom=0, top=highest * 1.3)

    latency.bar(new_x, [_p99(s.new) for s in steps], width, color=_outcomes(steps))
    if not first:
        latency.bar(old_x, [_p99(s.old) for s in steps], width, color=BASELINE)
    latency.axhline(policy.max_p99_ms, color=BAR_LINE, linestyle="--", linewidth=1.2)
    latency.annotate(
        f"highest p99 {policy.max_p99_ms:g} ms",
        xy=(1.0, policy.max_p99_ms),
        xycoords=("axes fraction", "data"),
        xytext=(-4, 3),
        textcoords="offset points",
        ha="right",
        fontsize=8,
    )
    latency.set_yscale("log")
    latency.set_ylabel("p99 ms (log)", fontsize=9)
    latency.set_xticks(positions, labels, fontsize=8)
    for ax in (traffic, errors, latency):
        ax.tick_params(axis="y", labelsize=8)
    figure.legend(handles=_legend(steps, first), loc="outside lower center", ncols=3, fontsize=8)
    return save_png(figure, path)


def _traffic(ax: Axes, steps: Sequence[RolloutStep], positions: list[int]) -> None:
    shares = [step.percent for step in steps]
    ax.bar(positions, shares, 0.76, color=_outcomes(steps))
    ax.bar(positions, [100 - s for s in shares], 0.76, bottom=shares, color=BASELINE)
    for x, step in zip(positions, steps, strict=True):
        ax.annotate(
            step.verdict.outcome,
            xy=(x, min(step.percent, 100) / 2),
            ha="center",
            va="center",
            fontsize=8,
            color="white",
            fontweight="bold",
        )
    ax.set_ylim(0, 100)
    ax.set_ylabel("traffic %", fontsize=9)


def _label(step: RolloutStep, start: datetime) -> str:
    offset = (step.started - start).total_seconds()
    return f"{step.percent} %\n+{offset:.0f} s, {step.new.requests} req"


def _outcomes(steps: Sequence[RolloutStep]) -> list[str]:
    return [_COLOURS[step.verdict.outcome] for step in steps]


def _error_rate(metrics: DeploymentMetrics | None) -> float:
    """Errors as a percentage; NaN (no bar) when nothing was measured."""
    if metrics is None or not metrics.requests:
        return float("nan")
    return 100 * metrics.error_rate


def _measured(value: float) -> float:
    return 0.0 if value != value else value  # NaN: nothing measured


def _p99(metrics: DeploymentMetrics | None) -> float:
    if metrics is None or metrics.p99_latency_ms is None:
        return float("nan")
    return metrics.p99_latency_ms


def _legend(steps: Sequence[RolloutStep], first: bool) -> list[object]:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    outcomes = {step.verdict.outcome for step in steps}
    handles: list[object] = [
        Patch(color=_COLOURS[o], label=f"new deployment: {o}") for o in _COLOURS if o in outcomes
    ]
    if not first:
        handles.append(Patch(color=BASELINE, label="current deployment"))
    handles.append(Line2D([], [], color=BAR_LINE, linestyle="--", label="policy bar"))
    return handles
