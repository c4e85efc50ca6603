"""Edge delivery end to end, with real components all the way.

A model registered in MLflow is packaged and signed by the `package-model` flow with a key
from a `PackageSigningKey` block; the package goes into a store (a local folder, or Blob
Storage in Azurite); the `deliver-package` flow delivers it through an
`MqttDeliveryChannel` block on a private Mosquitto to `modelferry agent` processes, which
download, verify, smoke-test and install it; the rollout is recorded in PostgreSQL and
reported as a table artifact on the Prefect test server.

The fleet of the first two tests lives for the module: version 1 goes out first, then
version 2 to the same devices plus one whose agent is down.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prefect.client.schemas.objects import State
from pydantic import SecretStr

from blocks.delivery_channel import MqttDeliveryChannel
from blocks.package_store import AzureBlobPackageStoreBlock, LocalPackageStoreBlock
from blocks.signing_key import PackageSigningKey
from flows.deliver_package import deliver_package
from flows.inputs import Targets
from flows.package_model import PackagedModel, package_model
from modelferry.delivery.plan import FleetPolicy
from modelferry.delivery.protocol.states import SUCCESS, TIMED_OUT
from modelferry.packaging import SigningKey
from modelferry.testing.mosquitto import Mosquitto
from tasks.delivery import report_key
from tests.azurite import Azurite, running_azurite
from tests.conftest import fresh_postgres_database
from tests.delivery_e2e_fixtures import (
    AgentFleet,
    GatedHttpPackageStoreBlock,
    GatedPackageServer,
    RestartWhileDownloading,
    agent_command,
    open_records,
    reported_states,
    verify_installed,
)
from tests.integration.flow_helpers import api_filter
from tests.model_fixtures import register_versions

# The first test also pays for the module's fixtures (a Prefect server, two packages, a
# fleet, the first delivery): more than the default per-test limit on a busy machine.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

MODEL = "bc-edge-e2e"
PACKAGE = MODEL  # package-model names the package after the model by default
ENV = "e2e"
PROJECT = f"{ENV}-{MODEL}"
OFFLINE = "e2e-offline"
#: What our agent reports, in order, for a package it installs.
AGENT_STATES = ["Received", "Downloading", "Verifying", "Installing", SUCCESS]


@dataclass(frozen=True)
class RegisteredModel:
    """The registered model versions and the key their packages are signed with."""

    key: SigningKey
    key_block: str
    tracking_uri: str
    home: Path

    def package(self, version: str, store_block: str) -> PackagedModel:
        """Run `package-model` for a model version, putting the package in `store_block`."""
        # Should anything fall back to the embedded default (`.modelferry/` in the working
        # directory), it lands here and not in the checkout.
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(self.home)
            packaged = package_model(
                MODEL,
                model_version=version,
                targets=Targets(
                    signing_key=self.key_block, tracking_uri=self.tracking_uri, store=store_block
                ),
                output_dir=str(self.home / "builds"),
            )
        assert (packaged.package_id, packaged.package_version) == (PACKAGE, version)
        assert packaged.signing_key_id == self.key.key_id
        assert packaged.store_key == f"{PACKAGE}/{version}/{PACKAGE}-{version}.zip"
        return packaged


@dataclass(frozen=True)
class Packages:
    """Versions 1 and 2, put in the module's local store by `package-model`."""

    model: RegisteredModel
    v1: PackagedModel
    v2: PackagedModel

    @property
    def key(self) -> SigningKey:
        return self.model.key

    def agent_keys(self) -> list[str]:
        """What the agents are given to trust: the public half only."""
        return [self.key.verify_key.public_base64]


def unique(prefix: str) -> str:
    """A block or container name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def save_channel_block(broker: Mosquitto) -> str:
    """An `MqttDeliveryChannel` block for `broker`; its `slug/name`."""
    name = unique("e2e-mqtt")
    MqttDeliveryChannel(host=broker.host, port=broker.port, client_id=f"cloud-{name}").save(name)
    return f"modelferry-mqtt-delivery-channel/{name}"


@pytest.fixture(scope="module")
def local_store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="module")
def local_store_block(prefect_harness: str, local_store_root: Path) -> str:
    """A saved local package store block; its `slug/name`."""
    name = unique("e2e-local-store")
    LocalPackageStoreBlock(root=str(local_store_root)).save(name)
    return f"modelferry-local-package-store/{name}"


@pytest.fixture(scope="module")
def packages(local_store_block: str, tmp_path_factory: pytest.TempPathFactory) -> Packages:
    home = tmp_path_factory.mktemp("registry")
    settings = register_versions(home, count=2, name=MODEL)
    key = SigningKey.generate()
    key_block = unique("e2e-signing")
    PackageSigningKey(private_key=key.private_pem(), public_key=key.verify_key.public_base64).save(
        key_block
    )
    model = RegisteredModel(key, key_block, settings.tracking_uri, home)
    v1, v2 = (model.package(version, local_store_block) for version in ("1", "2"))
    assert (v1.store, v2.store) == ("local", "local")
    return Packages(model, v1, v2)


@pytest.fixture(scope="module", autouse=True)
def mlflow_store(packages: Packages) -> Iterator[str]:
    """Deliveries draw their fleet chart into the versions' runs in the module's store."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", packages.model.tracking_uri)
        yield packages.model.tracking_uri


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path_factory.mktemp("broker")) as broker:
        yield broker


@pytest.fixture(scope="module")
def channel_block(prefect_harness: str, mosquitto: Mosquitto) -> str:
    return save_channel_block(mosquitto)


@pytest.fixture(scope="module")
def records_url() -> Iterator[str]:
    """The module's delivery records, in a fresh PostgreSQL database."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
def fleet(
    mosquitto: Mosquitto, packages: Packages, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentFleet]:
    """Three agent processes over MQTT, the first one serving two devices."""
    groups = [["e2e-a1", "e2e-a2"], ["e2e-b"], ["e2e-c"]]
    root = tmp_path_factory.mktemp("devices")
    with AgentFleet.start(
        mosquitto.host, mosquitto.port, root, groups, packages.agent_keys()
    ) as agents:
        yield agents


def deliver(
    version: str,
    devices: list[str],
    *,
    targets: Targets,
    **options: Any,
) -> State[Any]:
    """Run `deliver-package` for package version `version`; its final state."""
    state: State[Any] = deliver_package(
        deploy_env=ENV,
        model_type="classification",
        model_name=MODEL,
        target_device_id=devices,
        edge_package_name=PACKAGE,
        edge_package_version=version,
        model_version=version,
        targets=targets,
        return_state=True,
        **options,
    )
    return state


@pytest.fixture(scope="module")
def first_delivery(
    fleet: AgentFleet, channel_block: str, local_store_block: str, records_url: str
) -> State[Any]:
    """Version 1 delivered to the module's fleet."""
    return deliver(
        "1",
        fleet.devices,
        targets=Targets(channel=channel_block, store=local_store_block, records_url=records_url),
    )


def flow_run_id(state: State[Any]) -> str:
    return str(state.state_details.flow_run_id)


def artifact_rows(state: State[Any]) -> list[dict[str, Any]]:
    """The rows of the run's delivery report, read back from the REST API."""
    key = report_key(ENV, MODEL)
    artifacts = api_filter(
        "/artifacts/filter",
        {"artifacts": {"key": {"any_": [key]}, "flow_run_id": {"any_": [flow_run_id(state)]}}},
    )
    assert len(artifacts) == 1
    assert artifacts[0]["type"] == "table"
    data = artifacts[0]["data"]
    rows: list[dict[str, Any]] = json.loads(data) if isinstance(data, str) else data
    return rows


def assert_all_reported_success(
    state: State[Any], devices: list[str], records_url: str, version: str
) -> None:
    """The run's rollout recorded one attempt per device, each reported by the device
    itself through every step to `Success`."""
    with open_records(records_url) as records:
        attempts = {r.device_id: r for r in records.rollout(flow_run_id(state))}
        assert sorted(attempts) == sorted(devices)
        for device in devices:
            record = attempts[device]
            assert (record.state, record.package_version, record.attempt) == (SUCCESS, version, 1)
            assert reported_states(records, record.delivery_id) == AGENT_STATES


def assert_current(fleet: AgentFleet, device: str, packages: Packages, version: str) -> None:
    """The device's `current` points at `version`, whose files verify with the public key."""
    root = fleet.device_root(device)
    assert os.readlink(root / "current") == f"versions/{PACKAGE}/{version}"
    manifest = verify_installed(root / "current", packages.key.verify_key)
    assert (manifest.package_id, manifest.version) == (PACKAGE, version)
    assert (manifest.model.name, manifest.model.version) == (MODEL, version)


def test_a_signed_package_reaches_every_device_over_mqtt(
    first_delivery: State[Any], fleet: AgentFleet, packages: Packages, records_url: str
) -> None:
    state = first_delivery

    assert state.is_completed(), state.message
    assert state.message == f"Delivered {PACKAGE} 1 to 4 device(s): 4 Success"
    assert state.result().counts == {SUCCESS: 4}
    assert_all_reported_success(state, fleet.devices, records_url, "1")
    for device in fleet.devices:
        assert_current(fleet, device, packages, "1")
    with open_records(records_url) as records:
        installed = records.installed(project_id=PROJECT)
    assert [
        (i.device_id, i.package_id, i.package_version, i.model_name, i.model_version)
        for i in installed
        if i.device_id in fleet.devices  # the module's other tests deliver elsewhere
    ] == [(device, PACKAGE, "1", MODEL, "1") for device in sorted(fleet.devices)]
    rows = artifact_rows(state)
    assert [(r["device"], r["state"], r["attempts"], r["error"]) for r in rows] == [
        (device, SUCCESS, 1, "") for device in fleet.devices
    ]
    assert {(r["package"], r["model_version"]) for r in rows} == {(f"{PACKAGE} 1", "1")}
    assert fleet.still_running()


def test_version_2_keeps_version_1_for_rollback_and_an_offline_device_times_out(
    first_delivery: State[Any],
    fleet: AgentFleet,
    packages: Packages,
    mosquitto: Mosquitto,
    channel_block: str,
    local_store_block: str,
    records_url: str,
    tmp_path: Path,
) -> None:
    assert first_delivery.is_completed(), first_delivery.message
    online = fleet.devices
    # The offline device ran its agent once (so the broker keeps its session and queues its
    # messages, as IoT Hub does for a registered device) and is down now.
    with AgentFleet.start(
        mosquitto.host, mosquitto.port, tmp_path, [[OFFLINE]], packages.agent_keys()
    ):
        pass

    state = deliver(
        "2",
        [*online, OFFLINE],
        targets=Targets(channel=channel_block, store=local_store_block, records_url=records_url),
        # Short, yet longer than a busy machine needs for a smoke prediction: an agent
        # reports nothing while its smoke prediction runs.
        fleet=FleetPolicy(
            inactivity_timeout_seconds=40.0,
            deadline_seconds=120.0,
            retries=0,
            canary_share=0,
            max_failure_share=1.0,
        ),
    )

    assert state.is_failed()
    message = str(state.message)
    assert "DeliveryTimedOutError" in message
    assert f"Delivered {PACKAGE} 2 to 5 device(s): 4 Success, 1 TimedOut" in message
    assert f"- {OFFLINE}: TimedOut after 1 attempt(s): device '{OFFLINE}' sent nothing" in message
    assert not any(f"- {device}:" in message for device in online)
    # The failure says where to see it drawn: the fleet chart in version 2's run.
    assert f"the fleet chart is deliveries/{ENV}-{PACKAGE}-" in message
    assert ".png in the MLflow run of v2" in message
    rows = {r["device"]: r["state"] for r in artifact_rows(state)}
    assert rows == {**dict.fromkeys(online, SUCCESS), OFFLINE: TIMED_OUT}
    with open_records(records_url) as records:
        installed = {i.device_id: i.package_version for i in records.installed(PROJECT)}
        assert [h.state for h in records.history(OFFLINE)] == [TIMED_OUT]
    assert {device: installed.get(device) for device in [*online, OFFLINE]} == {
        **dict.fromkeys(online, "2"),
        OFFLINE: None,
    }
    for device in online:
        assert_current(fleet, device, packages, "2")
        kept = fleet.device_root(device) / "versions" / PACKAGE / "1"
        assert verify_installed(kept, packages.key.verify_key).version == "1"

    # Rolled back from a shell: a device of the two-device process, and a lone device.
    for device in ("e2e-a1", "e2e-b"):
        agent = fleet.agent_of(device)
        which = ["--device-id", device] if len(agent.device_ids) > 1 else []
        rolled = subprocess.run(
            agent_command("rollback", "--root", str(agent.root), *which),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert rolled.returncode == 0, rolled.stderr
        assert f"{PACKAGE}/2 -> {PACKAGE}/1 is current" in rolled.stdout
        assert_current(fleet, device, packages, "1")
    assert_current(fleet, "e2e-a2", packages, "2")  # its neighbour in the process stays
    assert fleet.still_running()


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    with running_azurite(tmp_path_factory.mktemp("azurite")) as running:
        yield running


def test_agents_download_from_blob_storage_through_sas_links(
    azurite: Azurite,
    mosquitto: Mosquitto,
    channel_block: str,
    packages: Packages,
    records_url: str,
    tmp_path: Path,
) -> None:
    name = unique("e2e-blob-store")
    store_block = f"modelferry-azure-blob-package-store/{name}"
    AzureBlobPackageStoreBlock(
        container=unique("e2e-packages"), connection_string=SecretStr(azurite.connection_string)
    ).save(name)
    packaged = packages.model.package("1", store_block)
    assert (packaged.store, packaged.sha256) == ("azure_blob", packages.v1.sha256)
    groups = [["e2e-blob-1", "e2e-blob-2"], ["e2e-blob-3"]]

    with AgentFleet.start(
        mosquitto.host, mosquitto.port, tmp_path, groups, packages.agent_keys()
    ) as blob_fleet:
        state = deliver(
            "1",
            blob_fleet.devices,
            targets=Targets(channel=channel_block, store=store_block, records_url=records_url),
        )

        assert state.is_completed(), state.message
        assert state.result().counts == {SUCCESS: 3}
        assert_all_reported_success(state, blob_fleet.devices, records_url, "1")
        for device in blob_fleet.devices:
            assert_current(blob_fleet, device, packages, "1")
        assert blob_fleet.still_running()


def test_the_flow_completes_through_a_broker_restart_mid_delivery(
    packages: Packages, local_store_root: Path, records_url: str, tmp_path: Path
) -> None:
    (tmp_path / "broker").mkdir()
    groups = [["e2e-restart-1", "e2e-restart-2"], ["e2e-restart-3"]]
    devices = [device for group in groups for device in group]

    with (
        Mosquitto(tmp_path / "broker") as broker,
        # The local store's folder (version 1 is in it), served over HTTP through a gate.
        GatedPackageServer(local_store_root) as server,
        AgentFleet.start(
            broker.host, broker.port, tmp_path / "devices", groups, packages.agent_keys()
        ) as restart_fleet,
    ):
        name = unique("e2e-gated-store")
        GatedHttpPackageStoreBlock(root=str(server.root), base_url=server.base_url).save(name)
        restart = RestartWhileDownloading(broker, server, records_url, devices)
        restart.start()

        state = deliver(
            "1",
            devices,
            targets=Targets(
                channel=save_channel_block(broker),
                store=f"test-gated-http-package-store/{name}",
                records_url=records_url,
            ),
            fleet=FleetPolicy(canary_share=0),
        )
        restart.join()

        assert restart.problem is None
        assert len(server.requests) >= len(devices)
        assert set(server.requests) == {packages.v1.store_key}
        # Every delivery was under way when the broker went down ...
        assert restart.states_at_restart == dict.fromkeys(devices, "Downloading")
        assert state.is_completed(), state.message
        assert state.result().counts == {SUCCESS: 3}
        # ... and Verifying, Installing and Success came through the restarted broker.
        assert_all_reported_success(state, devices, records_url, "1")
        for device in devices:
            assert_current(restart_fleet, device, packages, "1")
        assert restart_fleet.still_running()
