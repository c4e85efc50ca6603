"""The Azure ML backend against `FakeMLClient`: the shared contract, then Azure specifics."""

from __future__ import annotations

import inspect
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from azure.ai.ml import load_model, load_online_deployment, load_online_endpoint
from azure.ai.ml.entities import Environment, ManagedOnlineDeployment, ManagedOnlineEndpoint, Model
from azure.ai.ml.operations import (
    ModelOperations,
    OnlineDeploymentOperations,
    OnlineEndpointOperations,
)
from azure.monitor.query import MetricsQueryClient

from modelferry.endpoints.azureml import AzureMLEndpointBackend, AzureMonitorMetrics
from modelferry.endpoints.azureml.entities import azure_model_name, build_endpoint
from modelferry.endpoints.azureml.scoring import (
    BASE_IMAGE,
    SCORING_SCRIPT,
    folder_digest,
    scoring_environment,
    write_code_folder,
)
from modelferry.endpoints.naming import azure_name
from modelferry.endpoints.spec import (
    DeploymentMetrics,
    DeploymentSpec,
    EndpointSpec,
    ModelRef,
    TrafficSplit,
)
from modelferry.errors import (
    DeploymentFailedError,
    EndpointError,
    EndpointNotFoundError,
    InvalidEndpointSpecError,
)
from modelferry.registry import ModelRegistry, TrackingSettings
from modelferry.serving import azureml_score
from modelferry.testing.azureml.endpoints import (
    FakeOnlineDeploymentOperations,
    FakeOnlineEndpointOperations,
)
from modelferry.testing.azureml.ml_client import FakeMLClient, FakeModelOperations
from modelferry.testing.azureml.scoring import score_probabilities
from modelferry.testing.contracts.endpoint import EndpointBackendContract
from tests import model_fixtures
from tests.integration import inference_server_env

V1 = ModelRef(model_fixtures.MODEL_NAME, version="1")
V2 = ModelRef(model_fixtures.MODEL_NAME, version="2")
METRIC_TAGS = {"metric.roc_auc": "0.991000", "metric.f1": "0.965000"}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> TrackingSettings:
    settings = model_fixtures.register_versions(tmp_path_factory.mktemp("azureml-mlflow"))
    ModelRegistry(settings).set_tags(model_fixtures.MODEL_NAME, "1", METRIC_TAGS)
    return settings


@pytest.fixture
def client(tmp_path: Path) -> FakeMLClient:
    return FakeMLClient(tmp_path / "workspace")


@pytest.fixture
def backend(client: FakeMLClient, settings: TrackingSettings) -> AzureMLEndpointBackend:
    return AzureMLEndpointBackend(client, ModelRegistry(settings), poll_interval_s=0.01)


class TestAzureMLContract(EndpointBackendContract):
    @pytest.fixture
    def model_refs(self) -> tuple[ModelRef, ModelRef]:
        return V1, V2

    @pytest.fixture
    def score_payload(self) -> dict[str, Any]:
        return model_fixtures.score_payload()


@pytest.fixture
def blue(backend: AzureMLEndpointBackend) -> str:
    """Endpoint "Churn_EP" (not a valid Azure name) with deployment "blue" of v1."""
    backend.create_or_update_endpoint(EndpointSpec("Churn_EP", tags={"team": "ml"}))
    backend.create_or_update_deployment("Churn_EP", DeploymentSpec("blue", V1))
    return "Churn_EP"


def test_names_are_made_valid_and_reported_as_given(
    backend: AzureMLEndpointBackend, client: FakeMLClient, blue: str
) -> None:
    backend.create_or_update_deployment(blue, DeploymentSpec("Green_2", V2))
    state = backend.set_traffic(blue, TrafficSplit({"Green_2": 100}))
    azure_ep, azure_green = azure_name("Churn_EP"), azure_name("Green_2")
    assert set(client.endpoints) == {azure_ep}
    assert (azure_ep, azure_green) in client.deployments
    assert client.endpoints[azure_ep].traffic == {azure_green: 100}
    assert state.name == blue
    assert {d.name for d in state.deployments} == {"blue", "Green_2"}
    assert dict(state.traffic.weights) == {"Green_2": 100}
    assert backend.get_endpoint(azure_ep) == backend.get_endpoint(blue)


def test_model_is_registered_once_as_mlflow_model_with_metric_tags(
    backend: AzureMLEndpointBackend, client: FakeMLClient, blue: str
) -> None:
    backend.create_or_update_deployment(blue, DeploymentSpec("blue", V1))
    models = [e for e in client.submitted if isinstance(e, Model)]
    assert len(models) == 1  # the second deployment reused the registered version
    rollouts = [e for e in client.submitted if isinstance(e, ManagedOnlineDeployment)]
    assert len(rollouts) == 1  # and, as nothing changed, did not roll it out again
    model = client.registered_models[(azure_model_name(V1.name), "1")]
    assert model.type == "mlflow_model"
    assert METRIC_TAGS.items() <= (model.tags or {}).items()
    assert (model.tags or {})["modelferry.model_uri"] == V1.uri
    assert (Path(str(model.path)) / "MLmodel").is_file()
    deployment = client.deployments[(azure_name(blue), "blue")]
    assert deployment.model == client.model_arm_id(azure_model_name(V1.name), "1")
    # The rollout was smoke-tested with the model's input example (5 rows), pinned.
    smokes = [(r.deployment, len(r.payload["input_data"]["data"])) for r in client.requests]
    assert smokes == [("blue", 5)]
    backend.create_or_update_deployment(blue, DeploymentSpec("blue", V1, instance_count=2))
    assert client.deployments[(azure_name(blue), "blue")].instance_count == 2  # changed: rolled


def test_deployment_entity_carries_the_spec(
    backend: AzureMLEndpointBackend, client: FakeMLClient, blue: str
) -> None:
    spec = DeploymentSpec(
        "big", V2, instance_type="Standard_F4s_v2", instance_count=3,
        request_timeout_ms=9000, max_concurrent_requests=4,
    )  # fmt: skip
    backend.create_or_update_deployment(blue, spec)
    entity = client.deployments[(azure_name(blue), "big")]
    assert isinstance(entity, ManagedOnlineDeployment)
    assert (entity.instance_type, entity.instance_count) == ("Standard_F4s_v2", 3)
    assert entity.request_settings.request_timeout_ms == 9000
    assert entity.request_settings.max_concurrent_requests_per_instance == 4
    assert entity.liveness_probe.failure_threshold == 30
    assert entity.readiness_probe.period == 10
    assert client.endpoints[azure_name(blue)].auth_mode == "key"


def test_failed_provisioning_raises_with_logs_and_takes_no_traffic(
    backend: AzureMLEndpointBackend, client: FakeMLClient, blue: str
) -> None:
    client.fail_next_deployment("green", "ResourceNotReady: container crashed", logs=["OOM"])
    with pytest.raises(DeploymentFailedError, match="'green'") as info:
        backend.create_or_update_deployment(blue, DeploymentSpec("green", V2))
    assert "container crashed" in str(info.value)
    assert str(info.value).endswith("OOM")
    assert (info.value.endpoint, info.value.deployment) == (blue, "green")
    assert (info.value.model_name, info.value.model_version) == (V2.name, "2")
    state = backend.get_endpoint(blue).deployment("green")
    assert state is not None
    assert state.status == "failed"
    with pytest.raises(InvalidEndpointSpecError, match="failed"):
        backend.set_traffic(blue, TrafficSplit({"green": 100}))


def test_stalled_provisioning_times_out(
    backend: AzureMLEndpointBackend, client: FakeMLClient, blue: str
) -> None:
    client.stall_next_deployment("green")
    with pytest.raises(DeploymentFailedError, match="did not finish within"):
        backend.create_or_update_deployment(blue, DeploymentSpec("green", V2), timeout_s=0.2)


def test_failed_smoke_request_marks_the_deployment_failed(
    backend: AzureMLEndpointBackend, client: FakeMLClient, blue: str
) -> None:
    client.fail_scoring(azure_name(blue), "green", "ModuleNotFoundError: skops")
    with pytest.raises(DeploymentFailedError, match=r"smoke request failed.*skops") as info:
        backend.create_or_update_deployment(blue, DeploymentSpec("green", V2))
    assert (info.value.endpoint, info.value.deployment) == (blue, "green")
    assert (info.value.model_name, info.value.model_version) == (V2.name, "2")
    state = backend.get_endpoint(blue).deployment("green")
    assert state is not None
    assert state.status == "failed"


def test_model_references(backend: AzureMLEndpointBackend, blue: str) -> None:
    ModelRegistry(backend._registry.settings).set_alias(V1.name, "champion", "2")
    state = backend.create_or_update_deployment(
        blue, DeploymentSpec("champ", ModelRef(V1.name, alias="champion"))
    )
    assert state.model_version == "2"
    for ref in (ModelRef(V1.name, version="99"), ModelRef(V1.name, alias="nobody")):
        with pytest.raises(InvalidEndpointSpecError, match="models:/"):
            backend.create_or_update_deployment(blue, DeploymentSpec("x-dep", ref))


def test_invoke_errors(backend: AzureMLEndpointBackend, blue: str) -> None:
    payload = model_fixtures.score_payload()
    with pytest.raises(EndpointError, match="No valid deployments"):
        backend.invoke(blue, payload)  # no traffic set yet
    with pytest.raises(EndpointNotFoundError, match="'green'") as info:
        backend.invoke(blue, payload, deployment="green")
    assert (info.value.endpoint, info.value.deployment) == (blue, "green")
    with pytest.raises(EndpointNotFoundError) as info:
        backend.invoke("ct-no-such-endpoint", payload)
    assert info.value.endpoint == "ct-no-such-endpoint"


def test_get_metrics_needs_a_source(
    client: FakeMLClient, settings: TrackingSettings, blue: str
) -> None:
    registry = ModelRegistry(settings)
    with pytest.raises(EndpointError, match="needs a metrics_source"):
        AzureMLEndpointBackend(client, registry).get_metrics(blue, datetime.now(UTC))
    calls = []

    def source(endpoint: str, deployment: str, since: datetime) -> DeploymentMetrics:
        calls.append((endpoint, deployment))
        return DeploymentMetrics(10, 1, 42.0)

    backend = AzureMLEndpointBackend(client, registry, metrics_source=source)
    assert backend.get_metrics(blue, datetime.now(UTC)) == {"blue": DeploymentMetrics(10, 1, 42.0)}
    assert calls == [(azure_name(blue), "blue")]


def test_default_deployment_runs_modelferrys_scoring_script(
    backend: AzureMLEndpointBackend, client: FakeMLClient, blue: str
) -> None:
    sent = [e for e in client.submitted if isinstance(e, ManagedOnlineDeployment)][-1]
    code = sent.code_configuration
    assert code is not None
    assert code.scoring_script == SCORING_SCRIPT
    # The uploaded code folder holds the installed scoring script, byte for byte, and the
    # deployment's API documents, which Azure ML's inference server serves at /swagger.json.
    stored = client.deployments[(azure_name(blue), "blue")]
    uploaded = client.code_assets[stored.code_configuration.code]
    installed = Path(azureml_score.__file__).read_bytes()
    assert sorted(p.name for p in uploaded.iterdir()) == [
        SCORING_SCRIPT, "swagger2.json", "swagger3.json",
    ]  # fmt: skip
    assert (uploaded / SCORING_SCRIPT).read_bytes() == installed
    document = json.loads((uploaded / "swagger3.json").read_text())
    assert document["info"]["title"] == f"{blue}/blue: {model_fixtures.MODEL_NAME} v1"
    inputs = document["components"]["schemas"]["InputData"]["example"]["input_data"]
    assert len(inputs["columns"]) == 30
    assert json.loads((uploaded / "swagger2.json").read_text())["swagger"] == "2.0"
    # Its environment: Azure ML's base image, conda pinning what the inference-server
    # integration test installs (this venv's model library versions).
    environment = sent.environment
    assert isinstance(environment, Environment)
    assert environment.image == BASE_IMAGE
    pip = environment.conda_file["dependencies"][-1]["pip"]
    assert sorted(pip) == sorted(inference_server_env.requirements())
    assert (
        f"python={sys.version_info.major}.{sys.version_info.minor}"
        in (environment.conda_file["dependencies"])
    )
    assert stored.environment in client.environments
    # The script answered: probabilities with the class names registered with the model.
    answer = backend.invoke(blue, model_fixtures.score_payload(2), deployment="blue")
    assert answer["classes"] == ["malignant", "benign"]
    assert [round(sum(row), 6) for row in answer["predictions"]] == [1.0, 1.0]


def test_code_folder_and_environment_are_deterministic(tmp_path: Path) -> None:
    first = write_code_folder(tmp_path / "a")
    second = write_code_folder(tmp_path / "b")
    assert folder_digest(first) == folder_digest(second)
    (second / "__pycache__").mkdir()
    (second / "__pycache__" / "x.pyc").write_bytes(b"cache")
    assert folder_digest(first) == folder_digest(second)  # caches do not count
    (second / SCORING_SCRIPT).write_text("# changed\n")
    assert folder_digest(first) != folder_digest(second)
    one, two = scoring_environment(), scoring_environment()
    assert (one.name, one.version) == (two.name, two.version)  # named by its content


def test_unchanged_redeploy_keeps_the_rollout_a_changed_script_rolls_it(
    client: FakeMLClient, settings: TrackingSettings, tmp_path: Path
) -> None:
    code = write_code_folder(tmp_path / "mine")
    backend = AzureMLEndpointBackend(
        client, ModelRegistry(settings), code_path=code, scoring_script=SCORING_SCRIPT
    )
    backend.create_or_update_endpoint(EndpointSpec("own-code"))
    backend.create_or_update_deployment("own-code", DeploymentSpec("blue", V1))
    backend.create_or_update_deployment("own-code", DeploymentSpec("blue", V1))
    rollouts = [e for e in client.submitted if isinstance(e, ManagedOnlineDeployment)]
    assert len(rollouts) == 1  # same files, same environment: nothing to roll out
    tags = client.deployments[("own-code", "blue")].tags
    assert tags["modelferry.code"] == f"{SCORING_SCRIPT} sha256:{folder_digest(code)}"
    with (code / SCORING_SCRIPT).open("a") as script:
        script.write("\n# a fix\n")
    backend.create_or_update_deployment("own-code", DeploymentSpec("blue", V1))
    rollouts = [e for e in client.submitted if isinstance(e, ManagedOnlineDeployment)]
    assert len(rollouts) == 2
    assert len(client.code_assets) == 2  # the changed folder was uploaded anew


def test_own_code_needs_its_scoring_script(
    client: FakeMLClient, settings: TrackingSettings, tmp_path: Path
) -> None:
    backend = AzureMLEndpointBackend(
        client, ModelRegistry(settings), code_path=tmp_path, environment="azureml:scoring:1"
    )
    backend.create_or_update_endpoint(EndpointSpec("custom-ep"))
    with pytest.raises(InvalidEndpointSpecError, match=r"holds no scoring script 'score\.py'"):
        backend.create_or_update_deployment("custom-ep", DeploymentSpec("blue", V1))
    assert not client.deployments
    assert not client.registered_models  # refused before anything was uploaded


def test_scoring_script_that_does_not_parse_fails_the_deployment(
    client: FakeMLClient, settings: TrackingSettings, tmp_path: Path
) -> None:
    (tmp_path / "score.py").write_text("def init(:\n")
    backend = AzureMLEndpointBackend(client, ModelRegistry(settings), code_path=tmp_path)
    backend.create_or_update_endpoint(EndpointSpec("custom-ep"))
    with pytest.raises(DeploymentFailedError, match="cannot be read or parsed"):
        backend.create_or_update_deployment("custom-ep", DeploymentSpec("blue", V1))
    assert not client.code_assets  # the SDK refuses before uploading anything


def test_given_environment_reference_is_used_with_modelferrys_script(
    client: FakeMLClient, settings: TrackingSettings
) -> None:
    backend = AzureMLEndpointBackend(
        client, ModelRegistry(settings), environment="azureml:scoring:1"
    )
    backend.create_or_update_endpoint(EndpointSpec("custom-ep"))
    backend.create_or_update_deployment("custom-ep", DeploymentSpec("blue", V1))
    sent = [e for e in client.submitted if isinstance(e, ManagedOnlineDeployment)][-1]
    assert sent.environment == "azureml:scoring:1"
    assert sent.code_configuration.scoring_script == SCORING_SCRIPT
    stored = client.deployments[("custom-ep", "blue")]
    assert stored.environment == client.asset_arm_id("environments", "scoring", "1")
    assert stored.tags["modelferry.environment"] == "azureml:scoring:1"


def test_no_code_mlflow_only_when_asked_and_it_answers_labels(
    client: FakeMLClient, settings: TrackingSettings, tmp_path: Path
) -> None:
    registry = ModelRegistry(settings)
    for conflicting in ({"environment": "azureml:scoring:1"}, {"code_path": tmp_path}):
        with pytest.raises(InvalidEndpointSpecError, match="no_code_mlflow"):
            AzureMLEndpointBackend(client, registry, no_code_mlflow=True, **conflicting)
    backend = AzureMLEndpointBackend(client, registry, no_code_mlflow=True)
    backend.create_or_update_endpoint(EndpointSpec("no-code"))
    backend.create_or_update_deployment("no-code", DeploymentSpec("blue", V1))
    entity = client.deployments[("no-code", "blue")]
    assert (entity.environment, entity.code_configuration) == (None, None)
    payload = model_fixtures.score_payload(5)
    answer = backend.invoke("no-code", payload, deployment="blue")
    # Labels, as Azure ML's MLflow server answers: the likelier class of each row.
    model_dir = Path(str(client.model_for(entity.model).path))
    probabilities = score_probabilities(model_dir, payload)["predictions"]
    assert answer == [int(p1 > p0) for p0, p1 in probabilities]


def test_model_from_another_source_is_refused(
    backend: AzureMLEndpointBackend, client: FakeMLClient, blue: str
) -> None:
    stored = client.registered_models[(azure_model_name(V1.name), "1")]
    stored.tags = {**(stored.tags or {}), "modelferry.source": "models:/elsewhere/1"}
    with pytest.raises(InvalidEndpointSpecError, match="registered from models:/elsewhere"):
        backend.create_or_update_deployment(blue, DeploymentSpec("again", V1))


@pytest.mark.parametrize(
    ("fake", "real", "methods"),
    [
        (
            FakeOnlineEndpointOperations,
            OnlineEndpointOperations,
            ["begin_create_or_update", "get", "list", "begin_delete", "get_keys", "invoke"],
        ),
        (
            FakeOnlineDeploymentOperations,
            OnlineDeploymentOperations,
            ["begin_create_or_update", "get", "list", "begin_delete", "get_logs"],
        ),
        (FakeModelOperations, ModelOperations, ["create_or_update", "get"]),
    ],
)
def test_fake_methods_have_the_sdk_signatures(fake: type, real: type, methods: list[str]) -> None:
    def shape(function: Any) -> list[tuple[str, Any, Any]]:
        parameters = inspect.signature(function).parameters.values()
        return [(p.name, p.kind, p.default) for p in parameters]

    for method in methods:
        assert shape(getattr(fake, method)) == shape(getattr(real, method)), method


def test_recorded_entities_round_trip_through_sdk_yaml(
    backend: AzureMLEndpointBackend, client: FakeMLClient, blue: str, tmp_path: Path
) -> None:
    backend.create_or_update_deployment(blue, DeploymentSpec("green", V2))
    backend.set_traffic(blue, TrafficSplit({"blue": 100}, {"green": 20}))
    endpoint = client.endpoints[azure_name(blue)]
    assert isinstance(endpoint, ManagedOnlineEndpoint)
    # An endpoint's dump() returns the YAML document instead of writing it.
    (tmp_path / "endpoint.yml").write_text(yaml.safe_dump(json.loads(json.dumps(endpoint.dump()))))
    loaded = load_online_endpoint(tmp_path / "endpoint.yml")
    fields = ("name", "auth_mode", "description", "tags", "traffic", "mirror_traffic")
    assert {f: getattr(loaded, f) for f in fields} == {f: getattr(endpoint, f) for f in fields}
    assert loaded.traffic == {"blue": 100}

    sent = [e for e in client.submitted if isinstance(e, ManagedOnlineDeployment)]
    stored = list(client.deployments.values())
    for index, deployment in enumerate([*sent, *stored]):
        deployment.dump(tmp_path / f"deployment-{index}.yml")
        again = load_online_deployment(tmp_path / f"deployment-{index}.yml")
        for field in ("name", "endpoint_name", "model", "instance_type", "instance_count", "tags"):
            assert getattr(again, field) == getattr(deployment, field), field
        for field in ("request_settings", "liveness_probe", "readiness_probe"):
            assert getattr(again, field) == getattr(deployment, field), field
        assert again.code_configuration == deployment.code_configuration
        assert again.code_configuration.scoring_script == SCORING_SCRIPT
        if isinstance(deployment.environment, Environment):  # as sent: inline
            fields = ("name", "version", "image", "conda_file", "description")
            assert {f: getattr(again.environment, f) for f in fields} == {
                f: getattr(deployment.environment, f) for f in fields
            }
        else:  # as Azure ML reports it: the registered environment's id
            assert again.environment == deployment.environment
            assert deployment.environment in client.environments

    for (name, version), model in client.registered_models.items():
        model.dump(tmp_path / f"{name}-{version}.yml")
        again_model = load_model(tmp_path / f"{name}-{version}.yml")
        fields = ("name", "version", "type", "tags", "path", "description")
        assert {f: getattr(again_model, f) for f in fields} == {
            f: getattr(model, f) for f in fields
        }


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "azure.ai.ml.entities", None)
    with pytest.raises(ImportError, match=r"pip install 'modelferry\[azure\]'"):
        build_endpoint(EndpointSpec("x-ep"))


WORKSPACE = {"subscription_id": "sub-1", "resource_group": "rg", "workspace_name": "ws"}
PRINCIPAL = {"client_id": "app-1", "tenant_id": "tenant-1", "client_secret": "s3cret-value"}


@pytest.mark.parametrize(
    ("auth", "credential", "arguments"),
    [
        ({}, "DefaultAzureCredential", {"managed_identity_client_id": None}),
        (
            PRINCIPAL,
            "ClientSecretCredential",
            {"tenant_id": "tenant-1", "client_id": "app-1", "client_secret": "s3cret-value"},
        ),
        (
            {"managed_identity_client_id": "mi-1"},
            "DefaultAzureCredential",
            {"managed_identity_client_id": "mi-1"},
        ),
        (
            {"environment": "azureml:env:1"},
            "DefaultAzureCredential",
            {"managed_identity_client_id": None},
        ),
    ],
    ids=["default", "service-principal", "managed-identity", "environment-alone"],
)
def test_workspace_block_signs_in_as_its_options_say(
    auth: dict[str, str],
    credential: str,
    arguments: dict[str, str | None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import azure.identity

    from blocks.azureml_workspace import AzureMLWorkspace

    built: list[tuple[str, dict[str, Any]]] = []

    def recording(real: type) -> type:
        class Recording(real):  # type: ignore[misc, valid-type]
            def __init__(self, **kwargs: Any) -> None:
                built.append((real.__name__, kwargs))
                super().__init__(**kwargs)

        return Recording

    for name in ("ClientSecretCredential", "DefaultAzureCredential"):
        monkeypatch.setattr(azure.identity, name, recording(getattr(azure.identity, name)))
    block = AzureMLWorkspace(**WORKSPACE, **auth)

    client = block.get_client()  # builds the credential; no call to Azure is made

    # One credential, of the kind the options ask for; the secret unwrapped only into it.
    assert built == [(credential, arguments)]
    assert (client.subscription_id, client.resource_group_name, client.workspace_name) == (
        "sub-1",
        "rg",
        "ws",
    )
    # The block stores what it was given (a saved block loads back the same sign-in).
    AzureMLWorkspace.model_validate(block.model_dump()).get_client()
    assert built == [(credential, arguments)] * 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"client_id": "app-1"}, "tenant_id, client_secret missing"),
        ({"client_id": "app-1", "tenant_id": "t"}, "client_secret missing"),
        ({"client_secret": "s3cret-value"}, "client_id, tenant_id missing"),
        ({**PRINCIPAL, "managed_identity_client_id": "mi-1"}, "not both"),
        ({"no_code_mlflow": True, "environment": "azureml:scoring:1"}, "no_code_mlflow"),
        ({"no_code_mlflow": True, "code_path": "scoring/"}, "no_code_mlflow"),
    ],
)
def test_workspace_block_rejects_bad_combinations(extra: dict[str, str], message: str) -> None:
    from blocks.azureml_workspace import AzureMLWorkspace

    with pytest.raises(ValueError, match=message) as info:
        AzureMLWorkspace(**WORKSPACE, **extra)
    assert "s3cret-value" not in str(info.value)


def test_workspace_block_keeps_the_secret_secret(settings: TrackingSettings) -> None:
    from azure.identity import ClientSecretCredential

    from blocks.azureml_workspace import AzureMLWorkspace

    block = AzureMLWorkspace(**WORKSPACE, **PRINCIPAL)
    for shown in (repr(block), str(block), block.model_dump_json()):
        assert "s3cret-value" not in shown
    client = block.get_client()  # builds credentials; no call to Azure is made
    assert (client.subscription_id, client.resource_group_name) == ("sub-1", "rg")
    assert isinstance(client._credential, ClientSecretCredential)
    backend = block.get_backend(ModelRegistry(settings))
    assert isinstance(backend, AzureMLEndpointBackend)
    # Its metrics come from Azure Monitor, for this workspace's endpoints.
    source = backend._metrics_source
    assert isinstance(source, AzureMonitorMetrics)
    assert source.endpoint_resource_id("ep") == (
        "/subscriptions/sub-1/resourceGroups/rg/providers/"
        "Microsoft.MachineLearningServices/workspaces/ws/onlineEndpoints/ep"
    )
    assert isinstance(source._client, MetricsQueryClient)
