"""The deliver-package flow on a Prefect test server, with fake devices on the local hub."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from flows.deliver_package import deliver_package
from flows.inputs import Targets
from modelferry.delivery.channels.local import default_hub
from modelferry.delivery.plan import FleetPolicy
from modelferry.delivery.protocol.states import ERROR, SKIPPED, SUCCESS, TIMED_OUT
from modelferry.delivery.records.store import DeliveryRecords
from modelferry.stores.local import LocalPackageStore
from tests.fake_devices import (
    DeviceScript,
    DevicesInThread,
    FakeFleet,
)
from tests.integration import deliver_flow
from tests.integration.deliver_flow import run_flow
from tests.integration.flow_helpers import api_filter
from tests.model_fixtures import MODEL_NAME, register_versions

pytestmark = pytest.mark.integration

# The folder store block and the records of each test (fixtures).
store_block = deliver_flow.store_block
records_url = deliver_flow.records_url


@pytest.fixture(autouse=True)
def mlflow_store(mlflow_uri: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test's own MLflow store, where the flow looks for the version to draw into."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    return mlflow_uri


def artifact_rows(flow_run_id: str) -> list[dict[str, Any]]:
    artifacts = api_filter(
        "/artifacts/filter",
        {
            "artifacts": {
                "key": {"any_": ["delivery-test-bc"]},
                "flow_run_id": {"any_": [flow_run_id]},
            },
        },
    )
    assert len(artifacts) == 1
    assert artifacts[0]["type"] == "table"
    data = artifacts[0]["data"]
    rows: list[dict[str, Any]] = json.loads(data) if isinstance(data, str) else data
    return rows


def test_the_flow_delivers_to_every_device_and_reports_it(
    store_block: str, records_url: str
) -> None:
    devices = ["flow-ok-1", "flow-ok-2", "flow-ok-3"]
    fleet = FakeFleet(default_hub(), devices)

    with DevicesInThread(fleet):
        state = run_flow(store_block, records_url, devices)

    assert state.is_completed(), state.message
    assert state.message == "Delivered edge-bc 3.0.0 to 3 device(s): 3 Success"
    result = state.result()
    assert result.counts == {SUCCESS: 3}
    assert all(len(fleet[d].deliveries) == 1 for d in devices)
    assert {fleet[d].deliveries[0].project_id for d in devices} == {"test-bc"}
    flow_run_id = str(state.state_details.flow_run_id)
    rows = artifact_rows(flow_run_id)
    assert [(r["device"], r["state"], r["attempts"], r["error"]) for r in rows] == [
        (device, SUCCESS, 1, "") for device in devices
    ]
    assert {(r["package"], r["model_version"]) for r in rows} == {("edge-bc 3.0.0", "3")}
    records = DeliveryRecords(records_url)
    try:
        installed = {i.device_id: i for i in records.installed(project_id="test-bc")}
        assert sorted(installed) == devices
        assert {(i.package_id, i.package_version, i.model_version) for i in installed.values()} == {
            ("edge-bc", "3.0.0", "3")
        }
        attempts = records.rollout(flow_run_id)
        assert sorted(r.device_id for r in attempts) == devices
        assert {r.model_name for r in attempts} == {"bc"}
    finally:
        records.close()


def test_the_fleet_chart_is_drawn_into_the_model_versions_run(
    store_block: str, records_url: str, tmp_path: Path
) -> None:
    settings = register_versions(tmp_path, count=1)
    devices = ["flow-chart-1", "flow-chart-2"]

    with DevicesInThread(FakeFleet(default_hub(), devices)):
        state = run_flow(
            store_block, records_url, devices, model_name=MODEL_NAME, model_version="1",
            tracking_uri=settings.tracking_uri,
        )  # fmt: skip

    assert state.is_completed(), state.message
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    run_id = client.get_model_version(MODEL_NAME, "1").run_id
    [chart] = [a.path for a in client.list_artifacts(run_id, "deliveries")]
    assert re.fullmatch(r"deliveries/test-edge-bc-\d{8}T\d{6}Z\.png", chart), chart
    local = Path(client.download_artifacts(run_id, chart))
    assert local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The run's delivery report names the chart.
    [report] = api_filter(
        "/artifacts/filter",
        {
            "artifacts": {
                "key": {"any_": [f"delivery-test-{MODEL_NAME}"]},
                "flow_run_id": {"any_": [str(state.state_details.flow_run_id)]},
            }
        },
    )
    assert f"Fleet chart: `{chart}` in the model version's MLflow run" in report["description"]


def test_a_version_without_a_run_delivers_without_a_chart(
    store_block: str, records_url: str, mlflow_store: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Model "bc" v3 is not in the test's MLflow store: the delivery stands, the picture is
    # left out with a warning.
    devices = ["flow-nochart-1"]

    with DevicesInThread(FakeFleet(default_hub(), devices)):
        state = run_flow(store_block, records_url, devices)

    assert state.is_completed(), state.message
    assert "Left out deliveries/test-edge-bc-" in caplog.text
    # Looking for the version created no MLflow store where there was none.
    assert not Path(mlflow_store.removeprefix("sqlite:///")).exists()


def test_a_failing_device_fails_the_run_and_the_report_says_why(
    store_block: str, records_url: str
) -> None:
    scripts = {
        "flow-good": DeviceScript(),
        "flow-broken": DeviceScript(result="Error", error_reason="signature does not verify"),
        "flow-offline": DeviceScript(result="silent"),
    }
    devices = list(scripts)

    with DevicesInThread(FakeFleet(default_hub(), scripts=scripts)):
        state = run_flow(
            store_block, records_url, devices,
            fleet=FleetPolicy(
                canary_share=0, max_failure_share=1, inactivity_timeout_seconds=2.0,
                retries=1, retry_backoff_seconds=0.1,
            ),
        )  # fmt: skip

    assert state.is_failed()
    message = str(state.message)
    assert "DeliveryFailedError" in message
    assert "1 Error, 1 Success, 1 TimedOut" in message
    assert "flow-broken: Error after 1 attempt(s): signature does not verify" in message
    assert (
        "flow-offline: TimedOut after 2 attempt(s): device 'flow-offline' sent nothing" in message
    )
    assert "See the 'delivery-test-bc' artifact" in message
    rows = {r["device"]: r for r in artifact_rows(str(state.state_details.flow_run_id))}
    assert {d: (r["state"], r["attempts"]) for d, r in rows.items()} == {
        "flow-good": (SUCCESS, 1),
        "flow-broken": (ERROR, 1),
        "flow-offline": (TIMED_OUT, 2),
    }
    assert "agent is running" in rows["flow-offline"]["error"]
    records = DeliveryRecords(records_url)
    try:
        assert [h.state for h in records.history("flow-offline")] == [TIMED_OUT, TIMED_OUT]
        assert [(h.state, h.error) for h in records.history("flow-broken")] == [
            (ERROR, "signature does not verify")
        ]
    finally:
        records.close()


def test_an_aborted_rollout_fails_the_run_and_skips_the_rest(
    store_block: str, records_url: str
) -> None:
    scripts = {"flow-canary": DeviceScript(result="Error", error_reason="disk full")}
    devices = ["flow-canary", "flow-later-1", "flow-later-2"]

    with DevicesInThread(FakeFleet(default_hub(), devices[1:], scripts=scripts)):
        state = run_flow(store_block, records_url, devices, fleet=FleetPolicy(canary_share=0.1))

    assert state.is_failed()
    assert "rollout aborted: 1 of 3 device(s) failed (33%, more than the 20% allowed)" in str(
        state.message
    )
    rows = artifact_rows(str(state.state_details.flow_run_id))
    assert [r["state"] for r in rows] == [ERROR, SKIPPED, SKIPPED]


def test_a_missing_package_fails_with_how_to_build_it(store_block: str, records_url: str) -> None:
    state = deliver_package(
        deploy_env="test",
        model_type="classification",
        model_name="bc",
        target_device_id=["flow-none"],
        edge_package_name="edge-bc",
        edge_package_version="9.9.9",
        targets=Targets(store=store_block, records_url=records_url),
        return_state=True,
    )

    assert state.is_failed()
    message = str(state.message)
    assert "package 'edge-bc' version '9.9.9' is not in the folder package store" in message
    assert "package-model flow" in message


def test_with_no_blocks_the_embedded_default_delivers_from_the_local_store(
    prefect_harness: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    package_file = tmp_path / "edge-bc-4.0.0.zip"
    package_file.write_bytes(b"package edge-bc 4.0.0")
    LocalPackageStore(Path(".modelferry/packages")).put(
        package_file, package_id="edge-bc", version="4.0.0"
    )
    fleet = FakeFleet(default_hub(), ["flow-default-1"])

    with DevicesInThread(fleet):
        state = deliver_package(
            deploy_env="dev",
            model_type="classification",
            model_name="bc",
            target_device_id="flow-default-1",
            edge_package_name="edge-bc",
            edge_package_version="4.0.0",
            return_state=True,
        )

    assert state.is_completed(), state.message
    assert fleet["flow-default-1"].downloads == [b"package edge-bc 4.0.0"]
    records = DeliveryRecords(f"sqlite:///{tmp_path / '.modelferry' / 'deliveries.db'}")
    try:
        [installed] = records.installed()
    finally:
        records.close()
    assert (installed.device_id, installed.project_id, installed.model_version) == (
        "flow-default-1",
        "dev-bc",
        None,
    )


def test_without_a_records_url_the_records_go_where_modelferry_records_url_says(
    store_block: str, records_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same variable `modelferry db upgrade` migrates, so both mean one database."""
    monkeypatch.setenv("MODELFERRY_RECORDS_URL", records_url)
    devices = ["flow-env-1"]
    with DevicesInThread(FakeFleet(default_hub(), devices)):
        state = run_flow(store_block, None, devices)

    assert state.is_completed(), state.message
    records = DeliveryRecords(records_url)
    try:
        installed = [i.device_id for i in records.installed(project_id="test-bc")]
        assert installed == devices
    finally:
        records.close()
