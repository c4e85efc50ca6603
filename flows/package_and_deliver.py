"""`package-and-deliver`: package an approved model version and deliver it to its devices.

The edge stage of the nightly job, also a flow of its own so that a deployment trigger on
`modelferry.model.approved` can start it (prefect.yaml `package-and-deliver/on-approval`).
The devices, environment and fleet policy come from the model config's `delivery` section.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow, get_run_logger

from flows.current_run import completed
from flows.deliver_package import deliver_package
from flows.inputs import Targets
from flows.notifications import notify_failure
from flows.package_model import PackagedModel, package_model
from flows.train_and_register import DEFAULT_CONFIG
from modelferry.config import DeliveryConfig, load_config
from modelferry.delivery.outcomes import FleetResult


@dataclass(frozen=True)
class EdgeStage:
    """The package built and the fleet rollout; None when the config names no devices."""

    package: PackagedModel | None
    delivery: FleetResult | None

    def summary(self) -> str:
        """One line: what went where."""
        if self.delivery is None:
            return "no edge devices in the config's delivery section; nothing delivered"
        return self.delivery.summary()


@flow(name="package-and-deliver", on_failure=[notify_failure], on_crashed=[notify_failure])
def package_and_deliver(
    model_name: str,
    model_version: str,
    config_path: str = DEFAULT_CONFIG,
    targets: Targets = Targets(),  # noqa: B008 (frozen: one shared default is safe)
    delivery: DeliveryConfig | None = None,
) -> EdgeStage:
    """Package `model_name` `model_version` and deliver it to the config's devices.

    Args:
        model_name: the registered model.
        model_version: the approved version to package and deliver.
        config_path: the model config; its `delivery` section names devices and policy.
        targets: where MLflow, the signing key, the package store, the delivery channel
            and the records are (`Targets`); the local channel of the embedded default
            comes with in-process reference agents when `delivery.local_agents` is on.
        delivery: the config's delivery section as already read (the nightly job passes
            the one its run read); default read from `config_path`.
    """
    if delivery is None:
        delivery = load_config(config_path).delivery
    if not delivery.devices:
        stage = EdgeStage(None, None)
        get_run_logger().info(stage.summary())
        return completed(stage)
    package = package_model(
        model_name,
        model_version=model_version,
        package_id=delivery.package_name,
        targets=targets,
    )
    result = deliver_package(
        deploy_env=delivery.deploy_env,
        model_type=delivery.model_type,
        model_name=model_name,
        target_device_id=list(delivery.devices),
        edge_package_name=package.package_id,
        edge_package_version=package.package_version,
        model_version=model_version,
        targets=targets,
        fleet=delivery.fleet_policy(),
        start_local_agents=delivery.local_agents and targets.local_channel,
    )
    stage = EdgeStage(package, result)
    return completed(stage)
