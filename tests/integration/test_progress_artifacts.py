"""Progress and MLflow link artifacts of deliver-package and batch-score, read back from the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow import MlflowClient
from prefect import flow
from sklearn.datasets import load_breast_cancer

from flows.batch_score import batch_score
from modelferry.delivery.channels.local import default_hub
from modelferry.delivery.plan import FleetPolicy
from modelferry.registry import TrackingSettings
from tasks.mlflow_links import publish_mlflow_links
from tests.fake_devices import DevicesInThread, FakeFleet
from tests.integration import deliver_flow as delivery
from tests.integration.flow_helpers import api_filter
from tests.integration.test_failures import free_port, mlflow_server
from tests.model_fixtures import MODEL_NAME, register_versions

pytestmark = pytest.mark.integration

# The deliver-package tests' folder store block and records, shared with these tests.
store_block = delivery.store_block
records_url = delivery.records_url


def artifacts_of(state: Any, key: str) -> list[dict[str, Any]]:
    """The artifacts with `key` of the state's flow run."""
    run_id = str(state.state_details.flow_run_id)
    return api_filter(
        "/artifacts/filter",
        {"artifacts": {"key": {"any_": [key]}, "flow_run_id": {"any_": [run_id]}}},
    )


def test_a_delivery_shows_its_devices_done_and_how_to_open_the_version(
    store_block: str, records_url: str, tmp_path: Path
) -> None:
    settings = register_versions(tmp_path, count=1)
    devices = ["progress-1", "progress-2", "progress-3"]

    with DevicesInThread(FakeFleet(default_hub(), devices)):
        state = delivery.run_flow(
            store_block, records_url, devices, model_name=MODEL_NAME, model_version="1",
            tracking_uri=settings.tracking_uri, fleet=FleetPolicy(canary_share=0.34),
        )  # fmt: skip

    assert state.is_completed(), state.message
    [progress] = artifacts_of(state, f"delivery-progress-test-{MODEL_NAME}")
    assert progress["type"] == "progress"
    assert progress["data"] == 100
    assert progress["description"] == (
        "Fleet delivery of edge-bc 3.0.0 to test: 3 of 3 devices done"
    )
    # A SQLite store has no web address: no link that leads nowhere, but how to open it.
    assert artifacts_of(state, f"delivery-test-{MODEL_NAME}-model-version") == []
    [where] = artifacts_of(state, f"delivery-test-{MODEL_NAME}-mlflow")
    run_id = MlflowClient(settings.tracking_uri).get_model_version(MODEL_NAME, "1").run_id
    assert f"--backend-store-uri {settings.tracking_uri}" in where["data"]
    assert f"(then open #/models/{MODEL_NAME}/versions/1)" in where["data"]
    assert f"/runs/{run_id})" in where["data"]


def test_a_batch_shows_its_rows_done(prefect_harness: str, tmp_path: Path) -> None:
    settings = register_versions(tmp_path, count=1)
    data = load_breast_cancer(as_frame=True).data
    folder = tmp_path / "incoming"
    folder.mkdir()
    data.iloc[:300].to_parquet(folder / "part-1.parquet", index=False)
    data.iloc[300:].to_csv(folder / "part-2.csv", index=False)

    state = batch_score(
        str(folder), MODEL_NAME, model_version="1", output=str(tmp_path / "out.parquet"),
        chunk_rows=50, tracking_uri=settings.tracking_uri, return_state=True,
    )  # fmt: skip

    assert state.is_completed(), state.message
    assert len(pd.read_parquet(tmp_path / "out.parquet")) == 569
    [progress] = artifacts_of(state, f"batch-progress-{MODEL_NAME}")
    assert (progress["type"], progress["data"]) == ("progress", 100)
    assert progress["description"] == (
        f"Batch scoring of {folder} with {MODEL_NAME} v1: 569 of 569 rows done"
    )
    [where] = artifacts_of(state, f"batch-{MODEL_NAME}-mlflow")
    assert f"#/models/{MODEL_NAME}/versions/1" in where["data"]


@flow
def link_version(settings: TrackingSettings, name: str, version: str) -> list[str]:
    return publish_mlflow_links(settings, name, version, f"links-{name}")


def test_a_tracking_server_gets_links_to_the_run_and_the_version(
    prefect_harness: str, tmp_path: Path
) -> None:
    port = free_port()
    with mlflow_server(tmp_path, port) as uri:
        client = MlflowClient(uri, uri)
        experiment = client.create_experiment("links")
        run = client.create_run(experiment).info.run_id
        client.create_registered_model("linked")
        client.create_model_version("linked", f"runs:/{run}/model", run_id=run)
        state = link_version(TrackingSettings(uri), "linked", "1", return_state=True)

    assert state.is_completed(), state.message
    assert state.result() == ["links-linked-mlflow-run", "links-linked-model-version"]
    [run_link] = artifacts_of(state, "links-linked-mlflow-run")
    assert run_link["data"] == (
        f"[MLflow run {run} of linked v1]({uri}/#/experiments/{experiment}/runs/{run})"
    )
    [version_link] = artifacts_of(state, "links-linked-model-version")
    assert version_link["data"] == (
        f"[linked v1 in the MLflow model registry]({uri}/#/models/linked/versions/1)"
    )
