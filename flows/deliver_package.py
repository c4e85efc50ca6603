"""`deliver-package`: deliver a model package to edge devices, on its own.

The package must already be in the package store (the `package-model` flow builds it).
Devices get it over the delivery protocol (docs/protocol.md): a canary ring first, then the
rest, at most `max_parallel` at a time, retried after timeouts and transport errors.
Every attempt is recorded in the delivery records; a progress artifact shows the devices
done as the rollout goes, a table artifact each device's outcome, and the run fails when
any device did not install the package. With a model version, link artifacts lead to its
MLflow run and registry page.

    python -m flows.deliver_package --deploy-env dev --model-type classification \\
        --model-name breast-cancer-classifier --target-device-id edge-01,edge-02 \\
        --edge-package-name breast-cancer-classifier --edge-package-version 3

With no blocks named, the embedded default: the in-process local channel (devices are
reference agents in this process) and the local package store under
`.modelferry/packages`.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import cast

from prefect import flow, get_run_logger
from prefect.context import get_run_context
from prefect.states import Completed
from pydantic import SecretStr

from blocks.base import DeliveryChannelBlock, PackageStoreBlock, load_block
from blocks.mlflow_tracking import resolve_tracking
from blocks.package_store import LocalPackageStoreBlock
from blocks.signing_key import PackageSigningKey
from modelferry.delivery.fleet_chart import save_fleet_chart
from modelferry.delivery.local import LocalChannel, default_hub
from modelferry.delivery.outcomes import FleetResult
from modelferry.delivery.plan import DeliveryPlan, FleetPolicy, parse_device_ids
from modelferry.edge.fleet import AgentThread, start_local_agents
from modelferry.errors import DeliveryFailedError, DeliveryTimedOutError, InvalidConfigError
from modelferry.packaging import development_signing_key
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
    channel_block: str | None = None,
    store_block: str | None = None,
    records_url: str | None = None,
    records_secret_block: str | None = None,
    fleet: FleetPolicy = FleetPolicy(),  # noqa: B008 (frozen: one shared default is safe)
    start_local_agents: bool = False,
    signing_key_block: str | None = None,
    mlflow_block: str | None = None,
    tracking_uri: str | None = None,
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
        channel_block: a saved block with `get_channel()`, as ``block-type-slug/name``
            (MQTT, IoT Hub); default the in-process local channel.
        store_block: a saved block with `get_store()`, as ``block-type-slug/name`` (Blob
            Storage); default the local store under `.modelferry/packages`.
        records_secret_block: name of a Prefect `Secret` block holding the records URL;
            use it for any URL with a password (PostgreSQL in production).
        records_url: SQLAlchemy URL of the delivery records; default
            `MODELFERRY_RECORDS_URL`, else SQLite at `.modelferry/deliveries.db`. Holds a
            password in production: set the variable on the worker, or pass a
            `SecretStr` or a Secret block reference.
        fleet: the rollout policy: clocks, parallelism, canary ring, abort threshold and
            retries (`FleetPolicy`, the keys of the config file's `delivery` section).
        start_local_agents: with the local channel only: run a reference edge agent for
            each target device in this process (under `.modelferry/devices/`), so the
            whole path runs on one machine (the embedded default, `make demo`).
        signing_key_block: the key whose public half the local agents trust; default the
            embedded development key (the one `package-model` signs with by default).
        mlflow_block: a saved `MlflowTracking` block, instead of `tracking_uri`: where the
            fleet chart goes (the MLflow run of `model_version`).
        tracking_uri: MLflow tracking URI; default `MLFLOW_TRACKING_URI` or the embedded
            store. Nothing is drawn without `model_version`.

    Returns:
        The rollout's result. The run fails, after publishing the report, when any device
        ended in Error or TimedOut or the rollout was aborted.
    """
    logger = get_run_logger()
    flow_run_id = str(get_run_context().flow_run.id)  # type: ignore[union-attr]
    devices = parse_device_ids(target_device_id)
    project = project_id or f"{deploy_env}-{model_name}"
    secret = resolve_records_url(records_url, records_secret_block)
    store = load_block(
        store_block,
        PackageStoreBlock,
        LocalPackageStoreBlock().get_store,
        lambda block: block.get_store(),
    )
    channel = load_block(
        channel_block, DeliveryChannelBlock, LocalChannel, lambda block: block.get_channel()
    )
    if start_local_agents and not isinstance(channel, LocalChannel):
        raise InvalidConfigError(
            f"start_local_agents needs the local channel, but {channel_block!r} is a "
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
        _local_agents(devices, signing_key_block) if start_local_agents else nullcontext(),
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
        settings = resolve_tracking(tracking_uri, mlflow_block)
        chart = log_version_picture(settings, model_name, model_version, artifact, draw)
        publish_mlflow_links(settings, model_name, model_version, key)
    publish_delivery_report(result, key, title, chart)
    if not result.ok:
        seen = (
            f"; the fleet chart is {chart} in the MLflow run of v{model_version}" if chart else ""
        )
        message = f"{result.failure_message()}\nSee the '{key}' artifact of this run{seen}."
        timed_out_only = not result.aborted and all(r.failure == "timeout" for r in result.failed)
        raise (DeliveryTimedOutError if timed_out_only else DeliveryFailedError)(message)
    logger.info(result.summary())
    return Completed(message=result.summary(), data=result)  # type: ignore[return-value]


DEFAULT_DEVICES_HOME = DEFAULT_HOME / "devices"
_PASSWORD_IN_URL = re.compile(r"://[^/@\s]*:[^/@\s]*@")


def resolve_records_url(
    records_url: str | None, records_secret_block: str | None
) -> SecretStr | None:
    """The delivery records URL: from a Prefect `Secret` block, or given directly.

    A flow run's parameters are stored and shown as given, so a URL holding a password
    must come from a Secret block; a parameter with a password is refused without
    repeating it.
    """
    if records_secret_block:
        from prefect.blocks.system import Secret

        return SecretStr(str(Secret.load(records_secret_block).get()))
    if records_url:
        if _PASSWORD_IN_URL.search(records_url):
            raise InvalidConfigError(
                "records_url holds a password, and flow run parameters are stored as given: "
                "save the URL in a Prefect Secret block and pass its name as "
                "records_secret_block"
            )
        return SecretStr(records_url)
    return None


def _local_agents(devices: Sequence[str], signing_key_block: str | None) -> AgentThread:
    """Reference agents for `devices` on the process-wide hub, trusting the signing key."""
    key = load_block(
        signing_key_block,
        PackageSigningKey,
        development_signing_key,
        PackageSigningKey.get_signing_key,
    ).verify_key
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
        channel_block=args.channel_block,
        store_block=args.store_block,
        records_secret_block=args.records_secret_block,
        fleet=FleetPolicy(max_parallel=args.max_parallel),
        start_local_agents=args.local_agents,
        return_state=True,
    )
    print(state.message)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
