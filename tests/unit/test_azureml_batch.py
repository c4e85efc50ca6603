"""Azure ML batch endpoints against `FakeMLClient`'s batch operations."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from azure.ai.ml import load_batch_endpoint
from azure.ai.ml.entities import BatchEndpoint, Model, ModelBatchDeployment
from azure.ai.ml.entities._load_functions import load_model_batch_deployment
from azure.ai.ml.operations import (
    BatchDeploymentOperations,
    BatchEndpointOperations,
    JobOperations,
)

from modelferry.endpoints.azureml.batch import (
    AzureMLBatchEndpoints,
    BatchDeploymentSettings,
    _default_deployment,
    _set_default_deployment,
)
from modelferry.endpoints.azureml.entities import azure_model_name
from modelferry.endpoints.naming import azure_name
from modelferry.endpoints.spec import ModelRef
from modelferry.errors import EndpointNotFoundError, InvalidEndpointSpecError
from modelferry.registry import ModelRegistry, TrackingSettings
from modelferry.testing.azureml.batch import (
    FakeBatchDeploymentOperations,
    FakeBatchEndpointOperations,
    FakeJobOperations,
)
from modelferry.testing.azureml.ml_client import FakeMLClient
from tests import model_fixtures

V1 = ModelRef(model_fixtures.MODEL_NAME, version="1")
V2 = ModelRef(model_fixtures.MODEL_NAME, version="2")
METRIC_TAGS = {"metric.roc_auc": "0.991000", "metric.f1": "0.965000"}
SETTINGS = BatchDeploymentSettings(
    compute="cpu-cluster",
    instance_count=2,
    mini_batch_size=5,
    max_concurrency_per_instance=3,
    output_file_name="scores.csv",
    max_retries=4,
    retry_timeout_s=120,
    error_threshold=10,
    logging_level="warning",
)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> TrackingSettings:
    settings = model_fixtures.register_versions(tmp_path_factory.mktemp("azureml-batch-mlflow"))
    ModelRegistry(settings).set_tags(model_fixtures.MODEL_NAME, "1", METRIC_TAGS)
    return settings


@pytest.fixture
def client(tmp_path: Path) -> FakeMLClient:
    return FakeMLClient(tmp_path / "workspace")


@pytest.fixture
def batch(client: FakeMLClient, settings: TrackingSettings) -> AzureMLBatchEndpoints:
    return AzureMLBatchEndpoints(client, ModelRegistry(settings), poll_interval_s=0.01)


@pytest.fixture
def deployed(batch: AzureMLBatchEndpoints) -> str:
    """Batch endpoint "Churn_Batch" (not a valid Azure name) with default deployment "blue"."""
    batch.create_or_update_endpoint("Churn_Batch", description="nightly scoring")
    batch.deploy("Churn_Batch", "blue", V1, SETTINGS)
    return "Churn_Batch"


@pytest.mark.parametrize(
    ("fake", "real", "methods"),
    [
        (
            FakeBatchEndpointOperations,
            BatchEndpointOperations,
            ["begin_create_or_update", "get", "list", "begin_delete", "invoke", "list_jobs"],
        ),
        (
            FakeBatchDeploymentOperations,
            BatchDeploymentOperations,
            ["begin_create_or_update", "get", "list", "begin_delete"],
        ),
        (FakeJobOperations, JobOperations, ["get"]),
    ],
)
def test_fake_methods_have_the_sdk_signatures(fake: type, real: type, methods: list[str]) -> None:
    def shape(function: Any) -> list[tuple[str, Any, Any]]:
        parameters = inspect.signature(function).parameters.values()
        return [(p.name, p.kind, p.default) for p in parameters]

    for method in methods:
        assert shape(getattr(fake, method)) == shape(getattr(real, method)), method


def test_create_endpoint_is_idempotent_and_names_are_made_valid(
    batch: AzureMLBatchEndpoints, client: FakeMLClient
) -> None:
    first = batch.create_or_update_endpoint("Churn_Batch", description="one")
    second = batch.create_or_update_endpoint("Churn_Batch", description="two")
    azure = azure_name("Churn_Batch")
    assert azure != "Churn_Batch"
    assert set(client.batch.endpoints) == {azure}
    assert (first.name, first.azure_name) == ("Churn_Batch", azure)
    assert second.name == "Churn_Batch"
    assert client.batch.endpoints[azure].description == "two"
    assert second.default_deployment is None
    assert batch.get_endpoint(azure) == batch.get_endpoint("Churn_Batch")


def test_deploy_records_the_settings_and_the_default(
    batch: AzureMLBatchEndpoints, client: FakeMLClient, deployed: str
) -> None:
    entity = client.batch.deployments[(azure_name(deployed), "blue")]
    assert isinstance(entity, ModelBatchDeployment)
    assert entity.compute == "cpu-cluster"
    assert entity.environment is None  # no-code MLflow scoring
    s = entity.settings
    assert (s.instance_count, s.mini_batch_size, s.max_concurrency_per_instance) == (2, 5, 3)
    assert (s.output_file_name, s.output_action) == ("scores.csv", "append_row")
    assert (s.retry_settings.max_retries, s.retry_settings.timeout) == (4, 120)
    assert (s.error_threshold, s.logging_level) == (10, "warning")
    state = batch.get_endpoint(deployed)
    assert state.default_deployment == "blue"
    [blue] = state.deployments
    assert (blue.name, blue.model_version, blue.compute) == ("blue", "1", "cpu-cluster")
    assert blue.provisioning_state == "Succeeded"

    batch.deploy(deployed, "Green_2", V2, SETTINGS, make_default=False)
    assert batch.get_endpoint(deployed).default_deployment == "blue"
    batch.deploy(deployed, "Green_2", V2, SETTINGS)
    assert batch.get_endpoint(deployed).default_deployment == "Green_2"
    assert client.batch.endpoints[azure_name(deployed)].defaults == {
        "deployment_name": azure_name("Green_2")
    }


def test_model_is_registered_once_as_mlflow_model_with_metric_tags(
    batch: AzureMLBatchEndpoints, client: FakeMLClient, deployed: str
) -> None:
    batch.deploy(deployed, "again", V1, SETTINGS)
    assert len([e for e in client.submitted if isinstance(e, Model)]) == 1
    model = client.registered_models[(azure_model_name(V1.name), "1")]
    assert model.type == "mlflow_model"
    assert METRIC_TAGS.items() <= (model.tags or {}).items()
    assert (model.tags or {})["modelferry.model_uri"] == V1.uri
    entity = client.batch.deployments[(azure_name(deployed), "blue")]
    assert entity.model == client.model_arm_id(azure_model_name(V1.name), "1")


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(InvalidEndpointSpecError, match="mini_batch_size"):
        BatchDeploymentSettings(compute="cpu-cluster", mini_batch_size=0)
    with pytest.raises(InvalidEndpointSpecError, match="compute"):
        BatchDeploymentSettings(compute="")


def test_recorded_entities_round_trip_through_sdk_yaml(
    client: FakeMLClient, deployed: str, tmp_path: Path
) -> None:
    endpoint = client.batch.endpoints[azure_name(deployed)]
    assert isinstance(endpoint, BatchEndpoint)
    # An endpoint's dump() returns the YAML document instead of writing it.
    (tmp_path / "endpoint.yml").write_text(yaml.safe_dump(json.loads(json.dumps(endpoint.dump()))))
    loaded = load_batch_endpoint(tmp_path / "endpoint.yml")
    fields = ("name", "description", "tags", "auth_mode")
    assert {f: getattr(loaded, f) for f in fields} == {f: getattr(endpoint, f) for f in fields}
    # Loaded (as read from Azure ML) `defaults` is a REST model object, not a dict.
    assert _default_deployment(loaded) == _default_deployment(endpoint) == "blue"
    _set_default_deployment(loaded, "green")
    assert _default_deployment(loaded) == "green"

    deployment = client.batch.deployments[(azure_name(deployed), "blue")]
    deployment.dump(tmp_path / "blue.yml")
    again = load_model_batch_deployment(tmp_path / "blue.yml")
    for field in ("name", "endpoint_name", "model", "compute", "tags"):
        assert getattr(again, field) == getattr(deployment, field), field
    assert vars(again.settings.retry_settings) == vars(deployment.settings.retry_settings)
    settings = {k: v for k, v in vars(again.settings).items() if k != "retry_settings"}
    assert settings == {k: v for k, v in vars(deployment.settings).items() if k != "retry_settings"}


def test_invoke_scores_a_local_folder_and_records_the_job(
    batch: AzureMLBatchEndpoints, client: FakeMLClient, deployed: str, tmp_path: Path
) -> None:
    rows = model_fixtures.score_payload(rows=4)["input_data"]
    folder = tmp_path / "inputs"
    folder.mkdir()
    pd.DataFrame(rows["data"], columns=rows["columns"]).to_csv(folder / "a.csv", index=False)

    name = batch.invoke(deployed, folder)
    job = client.batch.jobs[name]
    assert (job.endpoint, job.deployment) == (azure_name(deployed), "blue")
    [given] = job.inputs.values()
    assert (given.type, given.path) == ("uri_folder", str(folder.resolve()))
    assert job.output is not None
    assert job.output.name == "scores.csv"
    assert len(pd.read_csv(job.output, header=None)) == 4
    state = batch.get_job(name)
    assert (state.name, state.status, state.finished) == (name, "Completed", True)


def test_invoke_with_remote_uris(
    batch: AzureMLBatchEndpoints, client: FakeMLClient, deployed: str
) -> None:
    batch.deploy(deployed, "green", V2, SETTINGS, make_default=False)
    uri = "azureml://datastores/workspaceblobstore/paths/in/day.csv"
    job = client.batch.jobs[batch.invoke(deployed, uri, deployment="green")]
    [given] = job.inputs.values()
    assert (given.type, given.path, job.deployment) == ("uri_file", uri, "green")
    folder = "https://example.blob.core.windows.net/data/in/"
    [given] = client.batch.jobs[batch.invoke(deployed, folder)].inputs.values()
    assert given.type == "uri_folder"


def test_missing_things(batch: AzureMLBatchEndpoints, deployed: str) -> None:
    with pytest.raises(EndpointNotFoundError, match="'no-such-batch'"):
        batch.get_endpoint("no-such-batch")
    with pytest.raises(EndpointNotFoundError):
        batch.deploy("no-such-batch", "blue", V1, SETTINGS)
    with pytest.raises(EndpointNotFoundError, match="'purple'"):
        batch.invoke(deployed, "azureml:inputs:1", deployment="purple")
    with pytest.raises(EndpointNotFoundError):
        batch.invoke("no-such-batch", "azureml:inputs:1")
    with pytest.raises(EndpointNotFoundError, match="batchjob-none"):
        batch.get_job("batchjob-none")
    with pytest.raises(InvalidEndpointSpecError, match="models:/"):
        batch.deploy(deployed, "x-dep", ModelRef(V1.name, version="99"), SETTINGS)


def test_delete_endpoint_is_idempotent(
    batch: AzureMLBatchEndpoints, client: FakeMLClient, deployed: str
) -> None:
    batch.delete_endpoint(deployed)
    assert client.batch.endpoints == {}
    assert client.batch.deployments == {}
    batch.delete_endpoint(deployed)  # already gone: succeeds
    with pytest.raises(EndpointNotFoundError):
        batch.get_endpoint(deployed)
