r"""`deliver-package`: deliver a model package to edge devices, on its own.

The package must already be in the package store (the `package-model` flow builds it).
Devices get it over the delivery protocol (docs/protocol.md): a canary ring first, then the
rest, at most `max_parallel` at a time, retried after timeouts and transport errors.
Every attempt is recorded in the delivery records; a progress artifact shows the devices
done as the rollout goes, a table artifact each device's outcome, and the run fails when
any device did not install the package. With a model version, link artifacts lead to its
MLflow run and registry page.

    python -m flows.deliver_package --deploy-env dev --model-type classification \
        --model-name breast-cancer-classifier --target-device-id edge-01,edge-02 \
        --edge-package-name breast-cancer-classifier --edge-package-version 3

With no blocks named, the embedded default: the in-process local channel (devices are
reference agents in this process) and the local package store under
`.modelferry/packages`.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import cast

from prefect import flow, get_run_logger

from flows.current_run import completed, current_flow_run_id
from flows.inputs import Targets
from modelferry.delivery.channels.local import LocalChannel, default_hub
from modelferry.delivery.fleet_chart import save_fleet_chart
from modelferry.delivery.outcomes import FleetResult
from modelferry.delivery.plan import DeliveryPlan, FleetPolicy, parse_device_ids
from modelferry.edge.local_agents import AgentThread, start_local_agents
from modelferry.errors import InvalidConfigError
from modelferry.pictures import picture_name
from modelferry.registry.tracking import DEFAULT_HOME
from tasks.delivery import (
    find_edge_package,
    publish_delivery_report,
    report_key,
    roll_out_package,
)
from tasks.mlflow_links import publish_mlflow_links
from tasks.progress import LiveProgressArtifact, artifact_key
from tasks.registry import log_version_picture


@flow(name="deliver-package")
def deliver_package(
    deploy_env: str,
    model_type: str,
    model_name: str,
    target_device_id: str | list[str],
    edge_package_name: str,
    edge_package_version: str,
    model_version: str | None = None,
    project_id: str | None = None,
    targets: Targets = Targets(),  # noqa: B008 (frozen: one shared default is safe)
    fleet: FleetPolicy = FleetPolicy(),  # noqa: B008 (frozen: one shared default is safe)
    start_local_agents: bool = False,
) -> FleetResult:
    """Deliver the package `edge_package_name` `edge_package_version` to the target devices.

    Args:
        deploy_env: the environment delivered to (dev, test, prod).
        model_type: the kind of model (e.g. classification); shown in the report.
        model_name: the registered model the package holds.
        target_device_id: one device id, a comma-separated string, or a list.
        edge_package_name: the package id in the store.
        edge_package_version: the package version in the store.
        model_version: the model version the package holds, for the records.
        project_id: the protocol's `projectId`; default ``{deploy_env}-{model_name}``: one
            project per model line and environment, stable across versions, so a
            device's deliveries of a model stay together and dev never mixes with prod.
        targets: where the store, channel, records, signing key and MLflow are: saved
            blocks, or the embedded default (`Targets`): the in-process local channel, the
            local store under `.modelferry/packages`, the records at
            `MODELFERRY_RECORDS_URL` or else in SQLite, the development key. A records URL with a
            password comes from a Secret block (`records`), never a parameter. The fleet
            chart goes to the MLflow run of `model_version` (nothing without one).
        fleet: the rollout policy: clocks, parallelism, canary ring, abort threshold and
            retries (`FleetPolicy`, the keys of the config file's `delivery` section).
        start_local_agents: with the local channel only: run a reference edge agent for
            each target device in this process (under `.modelferry/devices/`), trusting
            the public half of `targets.signing_key`, so the whole path runs on one
            machine (the embedded default, `make demo`).

    Returns:
        The rollout's result. The run fails, after publishing the report, when any device
        ended in Error or TimedOut or the rollout was aborted.
    """
    logger = get_run_logger()
    flow_run_id = current_flow_run_id()
    devices = parse_device_ids(target_device_id)
    project = project_id or f"{deploy_env}-{model_name}"
    secret = targets.records_secret()
    store = targets.package_store()
    channel = targets.delivery_channel()
    if start_local_agents and not isinstance(channel, LocalChannel):
        raise InvalidConfigError(
            f"start_local_agents needs the local channel, but {targets.channel!r} is a "
            f"{channel.name} channel: its devices run their own agents; set it to false"
        )

    package = find_edge_package(store, edge_package_name, edge_package_version)
    plan = DeliveryPlan(
        package=package,
        devices=devices,
        project_id=project,
        model_name=model_name,
        model_version=model_version,
    )
    policy = fleet.fleet_policy()
    logger.info(
        "Delivering %s %s (%s model %s) to %d device(s) in %s over the %s channel",
        package.package_id, package.version, model_type, model_name, len(devices),
        deploy_env, channel.name,
    )  # fmt: skip
    progress = LiveProgressArtifact(
        artifact_key(f"delivery-progress-{deploy_env}-{model_name}"),
        f"Fleet delivery of {package.package_id} {package.version} to {deploy_env}",
        "devices done",
    )
    # Submitted, the async task runs on the task runner's own event loop; `.result()` is
    # its value (Prefect's type hints say coroutine).
    with (
        _local_agents(devices, targets) if start_local_agents else nullcontext(),
        progress,
    ):
        rollout = roll_out_package.submit(
            plan, policy, channel, store, secret, flow_run_id, progress
        )
        result = cast(FleetResult, rollout.result())

    key = report_key(deploy_env, model_name)
    title = (
        f"Delivery of {package.package_id} {package.version} ({model_type} model "
        f"{model_name}) in {deploy_env}"
    )
    chart = None
    if model_version is not None:
        began = result.started_at or datetime.now(UTC)
        artifact = picture_name("deliveries", f"{deploy_env}-{package.package_id}", began)
        draw = functools.partial(save_fleet_chart, result, title)
        settings = targets.tracking_settings()
        chart = log_version_picture(settings, model_name, model_version, artifact, draw)
        publish_mlflow_links(settings, model_name, model_version, key)
    publish_delivery_report(result, key, title, chart)
    if not result.ok:
        seen = (
            f"; the fleet chart is {chart} in the MLflow run of v{model_version}" if chart else ""
        )
        message = f"{result.failure_message()}\nSee the '{key}' artifact of this run{seen}."
        raise result.failure_error(message)
    logger.info(result.summary())
    return completed(result)


DEFAULT_DEVICES_HOME = DEFAULT_HOME / "devices"


def _local_agents(devices: Sequence[str], targets: Targets) -> AgentThread:
    """Reference agents for `devices` on the process-wide hub, trusting the signing key."""
    key = targets.package_signing_key().verify_key
    get_run_logger().info(
        "Starting %d local reference agent(s) under %s", len(devices), DEFAULT_DEVICES_HOME
    )
    return start_local_agents(devices, default_hub(), DEFAULT_DEVICES_HOME, [key])


def main(argv: list[str] | None = None) -> int:
    """Command line: deliver once, print the summary."""
    parser = argparse.ArgumentParser(prog="python -m flows.deliver_package")
    parser.add_argument("--deploy-env", required=True)
    parser.add_argument("--model-type", required=True)
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--target-device-id", required=True, help="one id or 'a,b,c'")
    parser.add_argument("--edge-package-name", required=True)
    parser.add_argument("--edge-package-version", required=True)
    parser.add_argument("--model-version")
    parser.add_argument("--project-id")
    parser.add_argument("--channel-block")
    parser.add_argument("--store-block")
    parser.add_argument("--records-secret-block", help="Secret block holding the records URL")
    parser.add_argument("--max-parallel", type=int, default=50)
    parser.add_argument(
        "--local-agents", action="store_true", help="run reference agents in this process"
    )
    args = parser.parse_args(argv)
    # A URL with a password comes from a Secret block or MODELFERRY_RECORDS_URL (read by
    # the delivery task), never the command line.
    state = deliver_package(
        args.deploy_env,
        args.model_type,
        args.model_name,
        args.target_device_id,
        args.edge_package_name,
        args.edge_package_version,
        model_version=args.model_version,
        project_id=args.project_id,
        targets=Targets(
            channel=args.channel_block, store=args.store_block, records=args.records_secret_block
        ),
        fleet=FleetPolicy(max_parallel=args.max_parallel),
        start_local_agents=args.local_agents,
        return_state=True,
    )
    print(state.message)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
