"""Blocks against a real Prefect server: every type registers, and planted secrets never leak.

A secret planted in each credential-bearing block (MLflow password, MQTT password, Blob
Storage account key, package signing key, webhook URL token, delivery records database
password) must not show up in the flow runs that use them: not in their parameters, logs,
artifacts, final state messages or raised exceptions, even when every service behind them
is unreachable and the runs fail.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from typing import Any

import httpx
import pytest
from prefect.blocks.system import Secret
from prefect.settings import PREFECT_API_URL

from blocks import BLOCK_MODULES
from blocks.delivery_channel import MqttDeliveryChannel
from blocks.mlflow_tracking import MlflowTracking
from blocks.notifications import WebhookNotification
from blocks.package_store import AzureBlobPackageStoreBlock
from blocks.signing_key import PackageSigningKey
from flows.deliver_package import deliver_package
from flows.inputs import Targets
from flows.package_model import package_model
from modelferry.packaging import SigningKey
from tests.integration.flow_helpers import api_filter

pytestmark = pytest.mark.integration

PLANTED = f"PLANTED-{uuid.uuid4().hex}"
PLANTED_B64 = base64.b64encode(PLANTED.encode()).decode()
SIGNING_KEY = SigningKey.generate()
CLOSED = "127.0.0.1:9"  # the discard port: nothing listens there


def test_every_block_type_registers(prefect_harness: str) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_harness}
    done = subprocess.run(
        [sys.executable, "-m", "blocks"], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    slugs = {t["slug"] for t in api_filter("/block_types/filter", {})}
    assert {
        "modelferry-mlflow-tracking",
        "modelferry-azure-service-principal",
        "modelferry-azureml-workspace",
        "modelferry-local-package-store",
        "modelferry-azure-blob-package-store",
        "modelferry-mqtt-delivery-channel",
        "modelferry-iothub-delivery-channel",
        "modelferry-package-signing-key",
        "modelferry-endpoint-key",
        "modelferry-webhook-notification",
    } <= slugs, sorted(slugs)
    assert len(BLOCK_MODULES) == 8


@pytest.fixture
def planted_blocks(prefect_harness: str, monkeypatch: pytest.MonkeyPatch) -> None:
    MlflowTracking(tracking_uri=f"http://{CLOSED}", username="ci", password=PLANTED).save(
        "leak-mlflow", overwrite=True
    )
    MqttDeliveryChannel(host="127.0.0.1", port=9, username="ci", password=PLANTED).save(
        "leak-mqtt", overwrite=True
    )
    AzureBlobPackageStoreBlock(
        container="packages",
        connection_string=(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={PLANTED_B64};BlobEndpoint=http://{CLOSED}/devstoreaccount1;"
        ),
    ).save("leak-blob", overwrite=True)
    PackageSigningKey(private_key=SIGNING_KEY.private_pem()).save("leak-key", overwrite=True)
    WebhookNotification(url=f"http://{CLOSED}/hooks/{PLANTED}", attempts=1).save(
        "leak-webhook", overwrite=True
    )
    Secret(value=f"postgresql+psycopg://ci:{PLANTED}@{CLOSED}/deliveries").save(
        "leak-records", overwrite=True
    )
    monkeypatch.setenv("MODELFERRY_WEBHOOK_BLOCK", "leak-webhook")
    monkeypatch.delenv("MODELFERRY_WEBHOOK_URL", raising=False)
    return


def _secrets() -> list[str]:
    pem = SIGNING_KEY.private_pem().get_secret_value()
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    return [PLANTED, PLANTED_B64, body[:40]]


def _everything_recorded(flow_run_id: str) -> str:
    api = str(PREFECT_API_URL.value())
    run = httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=10).json()
    logs = api_filter("/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}}})
    artifacts = api_filter(
        "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}}
    )
    tasks = api_filter("/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})
    return repr([run, logs, artifacts, tasks])


def _assert_clean(text: str, where: str) -> None:
    for secret in _secrets():
        assert secret not in text, f"a planted secret shows up in {where}"


def test_planted_secrets_stay_out_of_failed_runs(
    planted_blocks: None, capfd: pytest.CaptureFixture[str]
) -> None:
    delivery: Any = deliver_package(
        deploy_env="test",
        model_type="classification",
        model_name="bcc",
        target_device_id="edge-1",
        edge_package_name="bcc",
        edge_package_version="1",
        targets=Targets(
            channel="modelferry-mqtt-delivery-channel/leak-mqtt",
            store="modelferry-azure-blob-package-store/leak-blob",
            records="leak-records",
            signing_key="leak-key",
        ),
        return_state=True,
    )
    packaging: Any = package_model(
        "bcc",
        model_version="1",
        targets=Targets(signing_key="leak-key", tracking="leak-mlflow"),
        return_state=True,
    )
    for state in (delivery, packaging):
        assert state.is_failed()
        _assert_clean(str(state.message), "the final state message")
        with pytest.raises(Exception) as raised:  # noqa: PT011 - whatever the run raised
            state.result()
        _assert_clean(f"{raised.value!r} {raised.value}", "the raised exception")
        run_id = str(state.state_details.flow_run_id)
        _assert_clean(_everything_recorded(run_id), "the run's parameters, logs or artifacts")
    captured = capfd.readouterr()
    _assert_clean(captured.out + captured.err, "the console output")


def test_a_password_in_a_records_url_parameter_is_refused(prefect_harness: str) -> None:
    state: Any = deliver_package(
        deploy_env="test",
        model_type="classification",
        model_name="bcc",
        target_device_id="edge-1",
        edge_package_name="bcc",
        edge_package_version="1",
        # As a deployment run gets it: a mapping, validated into `Targets` by the flow.
        targets={"records_url": f"postgresql+psycopg://ci:{PLANTED}@{CLOSED}/deliveries"},
        return_state=True,
    )
    assert state.is_failed()
    assert "save the URL in a Prefect Secret block" in str(state.message)
    _assert_clean(str(state.message), "the refusal")
