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
from prefect.states import Completed

from blocks.mlflow_tracking import resolve_tracking
from flows.deploy_online_endpoint import (
    DEFAULT_ENDPOINTS_HOME,
    RolloutOutcome,
    deploy_online_endpoint,
)
from flows.notifications import notify_failure
from flows.package_and_deliver import package_and_deliver
from flows.package_model import PackagedModel
from flows.train_and_register import DEFAULT_CONFIG, RegistrationOutcome, train_and_register
from modelferry.config import APPROVAL_MODES
from modelferry.console_commands import console_command
from modelferry.delivery.outcomes import FleetResult
from modelferry.endpoints.rollout import Strategy
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
    tracking_uri: str | None = None,
    approval_poll_seconds: int = 10,
    fail_on_reject: bool = False,
    mlflow_block: str | None = None,
    deploy: bool = True,
    endpoint: str | None = None,
    rollout_strategy: Strategy = "canary",
    rollout_step_seconds: float = 60.0,
    rollout_demo_traffic: bool = False,
    endpoints_home: str = DEFAULT_ENDPOINTS_HOME,
    endpoint_block: str | None = None,
    deliver: bool = True,
    signing_key_block: str | None = None,
    store_block: str | None = None,
    channel_block: str | None = None,
    records_url: str | None = None,
    records_secret_block: str | None = None,
) -> NightlyOutcome:
    """Retrain the model, and roll an approved champion out to its online endpoint.

    Args:
        config_path: the model config file (JSON or YAML).
        approval: overrides the config's approval mode: auto, manual or gate+manual.
        tracking_uri: MLflow tracking URI; default `MLFLOW_TRACKING_URI`, else the
            embedded SQLite store under `.modelferry/`.
        approval_poll_seconds: how often a paused run checks whether it was resumed.
        fail_on_reject: end the run Failed when the model is rejected.
        mlflow_block: name of a saved `MlflowTracking` block, instead of `tracking_uri`.
        deploy: roll an approved champion out to its online endpoint.
        endpoint: endpoint name; default the registered model's name.
        rollout_strategy: `canary` (traffic in steps) or `blue-green`.
        rollout_step_seconds: how long each traffic step is watched.
        rollout_demo_traffic: replay the model's test rows through the endpoint while
            each step is watched, so that a demo without clients is judged. Off by
            default: a production endpoint gets no synthetic traffic unless asked.
        endpoints_home: state folder of the local endpoint backend.
        endpoint_block: a saved block giving another endpoint backend (e.g. Azure ML).
        deliver: package an approved champion and deliver it to the config's devices
            (`delivery.devices`; nothing to do when there are none).
        signing_key_block: a saved `PackageSigningKey` block; default the development key.
        store_block: a saved package store block (``slug/name``); default the local store.
        channel_block: a saved delivery channel block (``slug/name``); default the local
            channel, with in-process reference agents when `delivery.local_agents` is on.
        records_url: SQLAlchemy URL of the delivery records; default SQLite.
        records_secret_block: a Prefect `Secret` block holding the records URL (for a URL
            with a password).
    """
    logger = get_run_logger()
    registration = train_and_register(
        config_path=config_path,
        approval=approval,
        tracking_uri=tracking_uri,
        approval_poll_seconds=approval_poll_seconds,
        fail_on_reject=fail_on_reject,
        mlflow_block=mlflow_block,
    )
    # Whatever was decided, the night's run leads to the run and version it registered.
    publish_mlflow_links(
        resolve_tracking(tracking_uri, mlflow_block),
        registration.model_name,
        registration.version,
        f"nightly-{registration.model_name}",
    )
    rollout = None
    if not registration.approved:
        logger.info("No new champion tonight; nothing to deliver. %s", registration.summary())
    elif deploy:
        rollout = deploy_online_endpoint(
            registration.model_name,
            model_version=registration.version,
            endpoint=endpoint,
            strategy=rollout_strategy,
            step_seconds=rollout_step_seconds,
            demo_traffic=rollout_demo_traffic,
            tracking_uri=tracking_uri,
            endpoints_home=endpoints_home,
            endpoint_block=endpoint_block,
            mlflow_block=mlflow_block,
        )
    package = delivery = None
    if registration.approved and deliver:
        stage = package_and_deliver(
            registration.model_name,
            registration.version,
            config_path=config_path,
            signing_key_block=signing_key_block,
            store_block=store_block,
            channel_block=channel_block,
            records_url=records_url,
            records_secret_block=records_secret_block,
            mlflow_block=mlflow_block,
            tracking_uri=tracking_uri,
        )
        package, delivery = stage.package, stage.delivery
    outcome = NightlyOutcome(registration, rollout, package, delivery)
    return Completed(message=outcome.summary(), data=outcome)  # type: ignore[return-value]


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
        args.tracking_uri,
        deploy=not args.no_deploy,
        rollout_step_seconds=args.rollout_step_seconds,
        rollout_demo_traffic=args.demo_traffic,
        deliver=not args.no_deliver,
    )
    print()
    print(outcome.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
