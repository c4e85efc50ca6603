"""`retrain-and-deliver`: the nightly job.

Retrain, register and decide (`train-and-register`); an approved champion is then rolled
out to its online endpoint (`deploy-online-endpoint`), packaged and signed
(`package-model`) and delivered to the edge devices the config names (`deliver-package`).
A rejected model stops the night's run there: nothing downstream ever sees it.

    python -m flows.retrain_and_deliver --config config/model_config.json
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from prefect import flow, get_run_logger

from flows.current_run import completed
from flows.deploy_online_endpoint import RolloutOutcome, deploy_online_endpoint
from flows.inputs import Rollout, Targets
from flows.notifications import notify_failure
from flows.package_and_deliver import package_and_deliver
from flows.package_model import PackagedModel
from flows.train_and_register import DEFAULT_CONFIG, RegistrationOutcome, train_and_register
from modelferry.config import APPROVAL_MODES
from modelferry.console_commands import console_command
from modelferry.delivery.outcomes import FleetResult
from tasks.mlflow_links import publish_mlflow_links


@dataclass(frozen=True)
class NightlyOutcome:
    """What the night's run did: the registration, then what followed an approval."""

    registration: RegistrationOutcome
    rollout: RolloutOutcome | None
    package: PackagedModel | None = None
    delivery: FleetResult | None = None

    def summary(self) -> str:
        """The decision, where the champion now serves, and which devices run it."""
        parts = [self.registration.summary()]
        if self.rollout is not None:
            parts.append(self.rollout.summary())
        if self.delivery is not None:
            parts.append(self.delivery.summary())
        return "; ".join(parts)

    def report(self) -> str:
        """Where to look, for people."""
        lines = [self.registration.report()]
        if self.rollout is not None:
            weights = ", ".join(f"{n} {w}%" for n, w in sorted(self.rollout.traffic.items()))
            first = ", first deployment" if self.rollout.first_deployment else ""
            cli = console_command("modelferry", "modelferry.cli")
            run = f"in the MLflow run of v{self.rollout.model_version}"
            chart = [f"Rollout chart:     {self.rollout.chart} {run}"] if self.rollout.chart else []
            lines += [
                f"Online endpoint:   {self.rollout.scoring_uri} ({weights}{first})",
                *(f"  {step}" for step in self.rollout.steps),
                *chart,
                f"Try it:            {cli} endpoints show {self.rollout.endpoint}",
                f"Scoring key:       {cli} endpoints key {self.rollout.endpoint}",
            ]
        if self.package is not None:
            lines.append(
                f"Edge package:      {self.package.package_id} {self.package.package_version} "
                f"(sha256 {self.package.sha256[:12]}, key {self.package.signing_key_id}, "
                f"{self.package.store} store)"
            )
        if self.delivery is not None:
            lines.append(f"Edge delivery:     {self.delivery.summary()}")
            lines += [
                f"  {row['device']:<16} {row['state']:<10} attempts {row['attempts']}"
                for row in self.delivery.table()
            ]
        return "\n".join(lines)


@flow(
    name="retrain-and-deliver",
    on_failure=[notify_failure],
    on_crashed=[notify_failure],
)
def retrain_and_deliver(
    config_path: str = DEFAULT_CONFIG,
    approval: str | None = None,
    targets: Targets = Targets(),  # noqa: B008 (frozen: one shared default is safe)
    rollout: Rollout = Rollout(),  # noqa: B008 (frozen: one shared default is safe)
    deploy: bool = True,
    deliver: bool = True,
    fail_on_reject: bool = False,
    approval_poll_seconds: int = 10,
) -> NightlyOutcome:
    """Retrain the model, and roll an approved champion out to its online endpoint.

    Args:
        config_path: the model config file (JSON or YAML), read once per run; its
            `delivery` section names the devices and the fleet policy.
        approval: overrides the config's approval mode: auto, manual or gate+manual.
        targets: where the work goes, each a saved block or the embedded default
            (`Targets`): MLflow (`tracking` block or `tracking_uri`; default
            `MLFLOW_TRACKING_URI`, else SQLite under `.modelferry/`), the endpoint
            backend, the package store, the delivery channel (the local one comes with
            in-process reference agents when `delivery.local_agents` is on), the signing
            key and the delivery records (a Secret block for a URL with a password).
        rollout: how an approved champion reaches its online endpoint (`Rollout`): the
            endpoint, `canary` or `blue-green`, each step's watch time and thresholds,
            and `demo_traffic` (replay test rows while each step is watched; off by
            default, so a production endpoint gets no synthetic traffic unless asked).
        deploy: roll an approved champion out to its online endpoint.
        deliver: package an approved champion and deliver it to the config's devices
            (`delivery.devices`; nothing to do when there are none).
        fail_on_reject: end the run Failed when the model is rejected.
        approval_poll_seconds: how often a paused run checks whether it was resumed.
    """
    logger = get_run_logger()
    if deliver:
        targets.records_secret()  # a records URL with a password fails now, not after training
    registration = train_and_register(
        config_path=config_path,
        approval=approval,
        targets=targets,
        approval_poll_seconds=approval_poll_seconds,
        fail_on_reject=fail_on_reject,
    )
    # Whatever was decided, the night's run leads to the run and version it registered.
    publish_mlflow_links(
        targets.tracking_settings(),
        registration.model_name,
        registration.version,
        f"nightly-{registration.model_name}",
    )
    rolled_out = None
    if not registration.approved:
        logger.info("No new champion tonight; nothing to deliver. %s", registration.summary())
    elif deploy:
        rolled_out = deploy_online_endpoint(
            registration.model_name,
            model_version=registration.version,
            rollout=rollout,
            targets=targets,
        )
    package = delivery = None
    if registration.approved and deliver:
        stage = package_and_deliver(
            registration.model_name,
            registration.version,
            config_path=config_path,
            targets=targets,
            # The section train-and-register read: the config is read once per run.
            delivery=registration.delivery,
        )
        package, delivery = stage.package, stage.delivery
    outcome = NightlyOutcome(registration, rolled_out, package, delivery)
    return completed(outcome)


def main(argv: list[str] | None = None) -> int:
    """Command line: run the nightly job once and print where to look."""
    parser = argparse.ArgumentParser(prog="python -m flows.retrain_and_deliver")
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--approval", choices=APPROVAL_MODES)
    parser.add_argument("--tracking-uri")
    parser.add_argument("--no-deploy", action="store_true", help="skip the online rollout")
    parser.add_argument("--no-deliver", action="store_true", help="skip packaging and delivery")
    parser.add_argument("--rollout-step-seconds", type=float, default=60.0)
    parser.add_argument(
        "--demo-traffic",
        action="store_true",
        help="replay the model's test rows through the endpoint during the rollout steps",
    )
    args = parser.parse_args(argv)
    outcome = retrain_and_deliver(
        args.config,
        args.approval,
        targets=Targets(tracking_uri=args.tracking_uri),
        rollout=Rollout(step_seconds=args.rollout_step_seconds, demo_traffic=args.demo_traffic),
        deploy=not args.no_deploy,
        deliver=not args.no_deliver,
    )
    print()
    print(outcome.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
