"""`deploy-online-endpoint`: put a registered model version in front of traffic, safely.

The new version is deployed beside the live one with no traffic and answers a smoke
request first. Then either all traffic switches at once (blue/green) or it moves in steps
(canary), each step watched through the endpoint's own error rate and p99 latency; a step
that does not hold puts the previous weights back and fails the run with the reason. A
first deployment has nothing to compare with: it takes all traffic in one watched step.
Each step's verdict is kept: judged (passed, with its numbers) or not judged (too few
requests). With `demo_traffic`, the model's own test rows are replayed through the
router while each step is held, so that a demo or a quiet test endpoint is judged too.

    python -m flows.deploy_online_endpoint --model breast-cancer-classifier --strategy canary
"""

from __future__ import annotations

import argparse
import functools
import sys
from dataclasses import dataclass
from datetime import datetime

from prefect import flow, get_run_logger

from blocks.endpoint_key import EndpointKey
from flows.current_run import completed
from flows.inputs import Rollout, Targets
from flows.notifications import notify_failure
from modelferry.endpoints.counters import StepMetrics
from modelferry.endpoints.rollout import (
    RolloutPolicy,
    StepVerdict,
    judge_measured_step,
    next_slot,
    split_for,
    steps_for,
)
from modelferry.endpoints.rollout_chart import RolloutStep, save_rollout_chart
from modelferry.endpoints.spec import DeploymentMetrics, DeploymentSpec, EndpointSpec, ModelRef
from modelferry.endpoints.traffic import requests_per_second, single_row_requests
from modelferry.errors import DeploymentFailedError, EndpointNotFoundError
from modelferry.pictures import picture_name
from modelferry.registry import (
    CHAMPION,
    ModelRegistry,
    RegisteredVersion,
    TrackingSettings,
)
from modelferry.serving.model import example_request
from tasks.endpoints import (
    deploy_model,
    ensure_endpoint,
    hold_step,
    mark_metrics,
    move_traffic,
    read_metrics,
    smoke_test_deployment,
)
from tasks.registry import log_version_picture


@dataclass(frozen=True)
class RolloutOutcome:
    """What the rollout did.

    Attributes:
        steps: one line per traffic step with its verdict, e.g. "10 %: 57 requests,
            0 errors, p99 4.1 ms — passed" or "10 %: not judged (12 < 20 requests)".
        first_deployment: nothing was live before, so nothing was compared.
        chart: the rollout chart in the MLflow run of the model version (an artifact
            path), None when it was left out.
    """

    endpoint: str
    scoring_uri: str
    deployment: str
    model_name: str
    model_version: str
    traffic: dict[str, int]
    steps: tuple[str, ...]
    first_deployment: bool = False
    chart: str | None = None

    def summary(self) -> str:
        """One line for logs and the final state message, with each step's verdict."""
        weights = ", ".join(f"{n} {w}%" for n, w in sorted(self.traffic.items()))
        first = "first deployment; " if self.first_deployment else ""
        steps = f"; steps: {'; '.join(self.steps)}" if self.steps else ""
        return (
            f"{self.model_name} v{self.model_version} serves on endpoint {self.endpoint} "
            f"({first}{self.deployment}); traffic: {weights}; {self.scoring_uri}{steps}"
        )


@flow(
    name="deploy-online-endpoint",
    on_failure=[notify_failure],
    on_crashed=[notify_failure],
)
def deploy_online_endpoint(
    model_name: str,
    model_version: str | None = None,
    model_alias: str = CHAMPION,
    rollout: Rollout = Rollout(),  # noqa: B008 (frozen: one shared default is safe)
    targets: Targets = Targets(),  # noqa: B008 (frozen: one shared default is safe)
    key_block: str | None = None,
) -> RolloutOutcome:
    """Deploy a model version to an online endpoint with blue/green or canary traffic.

    Args:
        model_name: the registered model.
        model_version: the version to deploy; default the one `model_alias` points at.
        model_alias: used when no version is given (default `champion`).
        rollout: the endpoint, strategy (`canary` in steps, or `blue-green`), the steps
            and how each is watched and judged (`Rollout`). A first deployment (nothing
            live) skips the steps: it takes 100 % in one watched step. `demo_traffic`
            replays the model's test rows through the endpoint's router while each step
            is held, for demos and quiet test endpoints; a production endpoint gets no
            synthetic traffic unless asked.
        targets: where MLflow and the endpoints are (`Targets`): an endpoint backend block
            (e.g. Azure ML), else the local backend under `endpoints_home`.
        key_block: save the endpoint's scoring URI and key as an `EndpointKey` block of
            this name (overwritten) once the rollout succeeded, for the endpoint's clients.
    """
    logger = get_run_logger()
    policy = rollout.policy()
    demo_traffic = rollout.demo_traffic
    settings = targets.tracking_settings()
    registry = ModelRegistry(settings)
    version = (
        registry.get(model_name, model_version)
        if model_version
        else registry.get_by_alias(model_name, model_alias)
    )
    if version is None:
        raise EndpointNotFoundError(f"model {model_name}@{model_alias} does not exist")
    backend = targets.endpoint_backend(registry, settings)
    name = rollout.endpoint or model_name
    state = ensure_endpoint(backend, EndpointSpec(name, description=f"modelferry: {model_name}"))

    live_version = {d.name: d.model_version for d in state.deployments}
    slot, live = next_slot(state, version.version)
    if live is not None and live_version.get(live) == version.version:
        logger.info("%s v%s already takes the traffic of %s", model_name, version.version, name)
        outcome = RolloutOutcome(
            name, state.scoring_uri, live, model_name, version.version,
            dict(state.traffic.weights), ("already live",),
        )  # fmt: skip
        return completed(outcome)

    example = example_request(version, settings)
    deploy_model(backend, name, DeploymentSpec(slot, ModelRef(model_name, version.version)))
    smoke_test_deployment(backend, name, slot, example)
    replay = single_row_requests(example) if demo_traffic else None
    before = state.traffic
    log: list[str] = []
    taken: list[RolloutStep] = []
    for step in steps_for(policy, live):
        traffic = split_for(step, slot, live)
        move_traffic(backend, name, traffic)
        # The endpoint's counters now and at the step's end: their difference is exact
        # however many requests the step sees.
        mark = mark_metrics(backend, name)
        if live is None:
            logger.info(
                "%s: first deployment; %s takes 100%% of traffic (nothing to compare it "
                "with); watching %.0f s", name, slot, policy.step_seconds,
            )  # fmt: skip
        else:
            logger.info(
                "%s: %d%% of traffic on %s, %d%% on %s; watching %.0f s",
                name, step, slot, 100 - step, live, policy.step_seconds,
            )  # fmt: skip
        rate = requests_per_second(policy.min_requests, step, policy.step_seconds) if replay else 0
        sent = hold_step(backend, name, policy.step_seconds, replay, rate)
        if sent is not None:
            logger.info("Replayed test rows through %s's router: %s", name, sent.summary())
        measured = read_metrics(backend, name, mark)
        verdict = judge_measured_step(measured, slot, live, policy)
        taken.append(_measured_step(step, mark.at, policy, measured, slot, live, verdict))
        if not verdict.passed:
            # Back to the weights before this rollout; on a first rollout that is no
            # traffic at all, so a failing model never keeps serving.
            move_traffic(backend, name, before)
            reason = verdict.reason if verdict.judged else f"not judged ({verdict.reason})"
            chart = _chart(settings, version, name, slot, taken, policy, f"failed at {step} %")
            seen = f" (chart: {chart} in the MLflow run of v{version.version})" if chart else ""
            raise DeploymentFailedError(
                f"{model_name} v{version.version} on {name}/{slot} failed at {step}% of "
                f"traffic: {reason}; traffic rolled back to {dict(before.weights)}{seen}",
                endpoint=name,
                deployment=slot,
                model_name=model_name,
                model_version=version.version,
            )
        line = verdict.line(step)
        log.append(f"first deployment, {line}" if live is None else line)
        logger.info("%s %s", slot, log[-1])

    final = backend.get_endpoint(name)
    if key_block:
        EndpointKey(endpoint=name, scoring_uri=final.scoring_uri, key=backend.get_keys(name)).save(
            key_block, overwrite=True
        )
        logger.info("Saved %s's scoring URI and key as block %r", name, key_block)
    chart = _chart(settings, version, name, slot, taken, policy, "rolled out")
    outcome = RolloutOutcome(
        name, final.scoring_uri, slot, model_name, version.version,
        dict(final.traffic.weights), tuple(log), first_deployment=live is None, chart=chart,
    )  # fmt: skip
    logger.info(outcome.summary())
    return completed(outcome)


def _measured_step(
    percent: int,
    started: datetime,
    policy: RolloutPolicy,
    measured: StepMetrics,
    new: str,
    old: str | None,
    verdict: StepVerdict,
) -> RolloutStep:
    nothing = DeploymentMetrics(0, 0, None)
    before = measured.deployments.get(old, nothing) if old is not None else None
    return RolloutStep(
        percent,
        started,
        policy.step_seconds,
        measured.deployments.get(new, nothing),
        before,
        verdict,
    )


def _chart(
    settings: TrackingSettings,
    version: RegisteredVersion,
    endpoint: str,
    slot: str,
    steps: list[RolloutStep],
    policy: RolloutPolicy,
    result: str,
) -> str | None:
    """Log the rollout chart to the version's run; its artifact path, or None."""
    if not steps:
        return None
    artifact = picture_name("rollouts", endpoint, steps[0].started)
    title = f"{version.name} v{version.version} on {endpoint} ({slot}): {result}"
    draw = functools.partial(save_rollout_chart, steps, policy, title)
    return log_version_picture(settings, version.name, version.version, artifact, draw)


def main(argv: list[str] | None = None) -> int:
    """Command line: roll a model out to its endpoint."""
    parser = argparse.ArgumentParser(prog="python -m flows.deploy_online_endpoint")
    parser.add_argument("--model", required=True)
    parser.add_argument("--version")
    parser.add_argument("--endpoint")
    parser.add_argument("--strategy", choices=["blue-green", "canary"], default="canary")
    parser.add_argument("--step-seconds", type=float, default=60.0)
    parser.add_argument(
        "--demo-traffic",
        action="store_true",
        help="replay the model's test rows through the endpoint while each step is held",
    )
    parser.add_argument("--tracking-uri")
    args = parser.parse_args(argv)
    outcome = deploy_online_endpoint(
        args.model,
        model_version=args.version,
        rollout=Rollout(
            endpoint=args.endpoint,
            strategy=args.strategy,
            step_seconds=args.step_seconds,
            demo_traffic=args.demo_traffic,
        ),
        targets=Targets(tracking_uri=args.tracking_uri),
    )
    print(outcome.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
