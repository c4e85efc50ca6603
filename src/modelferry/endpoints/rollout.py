"""Rollout policy: which deployment slot to use, and whether a traffic step held up.

Pure decisions, no I/O: the `deploy-online-endpoint` flow asks these questions and acts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from modelferry.endpoints.counters import StepMetrics
from modelferry.endpoints.spec import DeploymentMetrics, EndpointState, TrafficSplit

Strategy = Literal["blue-green", "canary"]
SLOTS = ("blue", "green")


@dataclass(frozen=True)
class RolloutPolicy:
    """What a new deployment must show at each traffic step.

    Attributes:
        steps: percentages of traffic for the new deployment, ending at 100.
        step_seconds: how long each step is watched before judging it.
        max_error_rate: highest share of errors the new deployment may give, over the
            requests the router sent it (pinned requests are not judged): 5xx, and 400s
            the old deployment would not have given (bad requests both refuse are the
            client's).
        max_p99_ms: highest p99 latency it may show.
        max_p99_ratio: highest p99 relative to the old deployment in the same window;
            judged only once both deployments answered `min_latency_samples` requests
            and the difference exceeds `p99_slack_ms` (a p99 of a few requests is noise).
        min_latency_samples: requests each deployment needs before p99s are compared.
        p99_slack_ms: p99 increase over the old deployment that is never a regression.
        min_requests: fewest requests it must have answered for a step to be judged;
            below that the step is "not judged".
        require_traffic: fail a step that was not judged instead of going on.
    """

    steps: tuple[int, ...] = (10, 50, 100)
    step_seconds: float = 60.0
    max_error_rate: float = 0.01
    max_p99_ms: float = 250.0
    max_p99_ratio: float = 2.0
    min_latency_samples: int = 100
    p99_slack_ms: float = 20.0
    min_requests: int = 20
    require_traffic: bool = False

    def __post_init__(self) -> None:
        if not self.steps or self.steps[-1] != 100 or list(self.steps) != sorted(self.steps):
            raise ValueError(f"steps {self.steps} must rise and end at 100")
        if any(not 0 < s <= 100 for s in self.steps):
            raise ValueError(f"steps {self.steps} must be percentages above 0")
        if not self.step_seconds >= 0:  # also refuses NaN
            raise ValueError(
                f"step_seconds {self.step_seconds} must be 0 or more: how long each step is watched"
            )


@dataclass(frozen=True)
class StepVerdict:
    """Whether a step held, whether it was judged at all, and why.

    Attributes:
        passed: the rollout may go on. A step that was not judged passes unless the
            policy requires traffic; it is still reported as "not judged", never "passed".
        reason: the numbers that decided it, or what went wrong.
        judged: False when the new deployment answered too few requests to judge it.
    """

    passed: bool
    reason: str
    judged: bool = True

    @property
    def outcome(self) -> str:
        """The step's verdict: "passed", "failed" or "not judged"."""
        if not self.judged:
            return "not judged"
        return "passed" if self.passed else "failed"

    def line(self, step: int) -> str:
        """The step as a line of a report.

        E.g. "10 %: 57 requests, 0 errors, p99 4.1 ms — passed" or "10 %: not judged
        (12 < 20 requests)".
        """
        if not self.judged:
            return f"{step} %: not judged ({self.reason})"
        return f"{step} %: {self.reason} — {self.outcome}"


def next_slot(state: EndpointState, version: str) -> tuple[str, str | None]:
    """The slot to deploy `version` into, and the slot currently live (if any).

    The new deployment goes into the slot without traffic ("blue" first, then
    alternating); the live slot is the one with the most traffic.
    """
    weights = state.traffic.weights
    live = max(weights, key=lambda n: weights[n]) if any(weights.values()) else None
    free = next((s for s in SLOTS if s != live), SLOTS[0])
    return free, live


def steps_for(policy: RolloutPolicy, live: str | None) -> tuple[int, ...]:
    """The traffic steps to take: the policy's, or one step of 100 % for a first deployment.

    With nothing live there is nothing to compare with and no traffic to share: the new
    deployment takes all of it at once and that one step is watched.
    """
    return policy.steps if live is not None else (100,)


def split_for(step: int, new: str, old: str | None) -> TrafficSplit:
    """Traffic with `step`% on the new deployment and the rest on the old."""
    if old is None or step == 100:
        return TrafficSplit({new: 100, **({old: 0} if old else {})})
    return TrafficSplit({new: step, old: 100 - step})


def judge_step(
    new: DeploymentMetrics, old: DeploymentMetrics | None, policy: RolloutPolicy
) -> StepVerdict:
    """Judge one step from the endpoint's own measurements of both deployments."""
    if new.requests < policy.min_requests:
        reason = f"{new.requests} < {policy.min_requests} requests"
        return StepVerdict(not policy.require_traffic, reason, judged=False)
    # Errors the current deployment shows too (clients sending bad input) are not the
    # new deployment's fault; only what it adds on top counts.
    baseline_errors = old.error_rate if old is not None and old.requests else 0.0
    if new.error_rate > baseline_errors + policy.max_error_rate:
        return StepVerdict(
            False,
            f"error rate {new.error_rate:.1%} ({new.errors}/{new.requests}) exceeds the "
            f"current deployment's {baseline_errors:.1%} by more than {policy.max_error_rate:.1%}",
        )
    if new.p99_latency_ms is not None:
        if new.p99_latency_ms > policy.max_p99_ms:
            return StepVerdict(
                False, f"p99 latency {new.p99_latency_ms:.1f} ms exceeds {policy.max_p99_ms:g} ms"
            )
        enough = (
            old is not None
            and old.requests >= policy.min_latency_samples
            and new.requests >= policy.min_latency_samples
        )
        baseline = old.p99_latency_ms if enough and old is not None else None
        if (
            baseline
            and new.p99_latency_ms > baseline * policy.max_p99_ratio
            and new.p99_latency_ms - baseline > policy.p99_slack_ms
        ):
            return StepVerdict(
                False,
                f"p99 latency {new.p99_latency_ms:.1f} ms is over {policy.max_p99_ratio:g} times "
                f"the current deployment's {baseline:.1f} ms",
            )
    p99 = f"p99 {new.p99_latency_ms:.1f} ms" if new.p99_latency_ms is not None else "no p99"
    return StepVerdict(True, f"{new.requests} requests, {new.errors} errors, {p99}")


def judge_measured_step(
    measured: StepMetrics, new: str, old: str | None, policy: RolloutPolicy
) -> StepVerdict:
    """Judge a step from what the endpoint measured over it, `new` against `old`.

    A deployment the router sent nothing is measured as no requests (not judged). When
    the endpoint's server restarted during the step, the step is judged from what it
    counted after the restart, and the reason says so.
    """
    nothing = DeploymentMetrics(0, 0, None)
    before = measured.deployments.get(old) if old is not None else None
    verdict = judge_step(measured.deployments.get(new, nothing), before, policy)
    if measured.restarted is None:
        return verdict
    since = measured.restarted.strftime("%H:%M:%S UTC")
    return replace(
        verdict, reason=f"{verdict.reason}; counted from the server's restart at {since}"
    )
