"""`FakeMLClient`: an Azure ML workspace in memory, for tests (like `structlog.testing`).

Its `online_endpoints`, `online_deployments` and `models` have the methods of azure-ai-ml's
operation classes that modelferry calls, with the same signatures (a test compares them
with `inspect.signature`). It keeps the real SDK entities it was given, checks what the
service would refuse (traffic to unknown deployments, weights not summing to 100, deleting
a deployment with traffic), and scores requests with the real model files.

As the SDK does, a deployment's code folder is uploaded (copied) as a code asset and its
environment registered; the stored deployment refers to both by asset id, as Azure ML
reports them. Requests to a deployment with a scoring script run that script (`init()`,
then `run()`) from the uploaded copy; requests to a no-code deployment answer predicted
labels, as Azure ML's MLflow server does. Answers that are JSON objects get "deployment"
and "model_version" added. Pass `scorer=` to answer every request otherwise.

    client = FakeMLClient(tmp_path)
    backend = AzureMLEndpointBackend(client, registry)
    client.fail_next_deployment("green", "ImagePullFailure")
"""

from __future__ import annotations

import copy
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from modelferry.endpoints.azureml.scoring import folder_digest
from modelferry.endpoints.azureml.sdk import azure_sdk
from modelferry.testing.azureml.batch import (
    FakeBatchDeploymentOperations,
    FakeBatchEndpointOperations,
    FakeBatchWorkspace,
    FakeJobOperations,
)
from modelferry.testing.azureml.endpoints import (
    FakeOnlineDeploymentOperations,
    FakeOnlineEndpointOperations,
)
from modelferry.testing.azureml.scoring import FakeRequest, Scorer, refused

with azure_sdk("FakeMLClient"):
    from azure.ai.ml.entities import (
        EndpointAuthKeys,
        Environment,
        Model,
        OnlineDeployment,
        OnlineEndpoint,
    )
    from azure.ai.ml.exceptions import ValidationErrorType, ValidationException
    from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

__all__ = ["FakeMLClient", "FakeModelOperations", "FakeRequest"]


class FakeMLClient:
    """Stands in for `azure.ai.ml.MLClient`; see the module docstring.

    Attributes:
        endpoints: stored endpoints by name.
        deployments: stored deployments by (endpoint, deployment).
        registered_models: stored models by (name, version); `path` is the fake's copy.
        code_assets: uploaded code folders (the fake's copies) by asset id.
        environments: registered environments by asset id, as they were given.
        submitted: every entity passed to a create/update call, copied as it was passed.
        requests: every scoring request answered, in order.
    """

    def __init__(
        self,
        storage: Path | None = None,
        *,
        subscription_id: str = "00000000-0000-0000-0000-000000000000",
        resource_group_name: str = "modelferry-test",
        workspace_name: str = "fake-workspace",
        location: str = "westeurope",
        scorer: Scorer | None = None,
        seed: int = 0,
    ) -> None:
        """Model uploads are copied under `storage` (a temporary folder when None)."""
        if storage is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fake-azureml-")
            storage = Path(self._tmp.name)
        self.storage = storage
        self.subscription_id = subscription_id
        self.resource_group_name = resource_group_name
        self.workspace_name = workspace_name
        self.location = location
        self.scorer = scorer
        self.random = random.Random(seed)
        self.endpoints: dict[str, OnlineEndpoint] = {}
        self.deployments: dict[tuple[str, str], OnlineDeployment] = {}
        self.registered_models: dict[tuple[str, str], Model] = {}
        self.code_assets: dict[str, Path] = {}
        self.environments: dict[str, Environment | str] = {}
        self.keys: dict[str, EndpointAuthKeys] = {}
        self.logs: dict[tuple[str, str], list[str]] = {}
        self.submitted: list[Any] = []
        self.requests: list[FakeRequest] = []
        self._next_failures: dict[str, tuple[str, list[str]]] = {}
        self._stalls: set[str] = set()
        self._scoring_failures: dict[tuple[str, str], str] = {}
        self.online_endpoints = FakeOnlineEndpointOperations(self)
        self.online_deployments = FakeOnlineDeploymentOperations(self)
        self.models = FakeModelOperations(self)
        # Batch endpoints, deployments and their jobs (see `batch`).
        self.batch = FakeBatchWorkspace()
        self.batch_endpoints = FakeBatchEndpointOperations(self, self.batch)
        self.batch_deployments = FakeBatchDeploymentOperations(self, self.batch)
        self.jobs = FakeJobOperations(self.batch)

    def fail_next_deployment(
        self,
        name: str,
        message: str = "ResourceNotReady: User container has crashed",
        *,
        logs: list[str] | None = None,
    ) -> None:
        """The next create/update of deployment `name` ends in provisioning state Failed."""
        self._next_failures[name] = (message, logs or [f"Traceback: {message}"])

    def stall_next_deployment(self, name: str) -> None:
        """The next create/update of deployment `name` never finishes (stays Creating)."""
        self._stalls.add(name)

    def fail_scoring(self, endpoint: str, deployment: str, message: str = "500 Internal") -> None:
        """Requests routed to this deployment fail, as when its scoring script raises."""
        self._scoring_failures[(endpoint, deployment)] = message

    def model_arm_id(self, name: str, version: str) -> str:
        """The asset id Azure ML gives a registered model version."""
        return self.asset_arm_id("models", name, version)

    def asset_arm_id(self, kind: str, name: str, version: str) -> str:
        """The id of a workspace asset: `kind` is "models", "codes" or "environments"."""
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/"
            f"{self.resource_group_name}/providers/Microsoft.MachineLearningServices/"
            f"workspaces/{self.workspace_name}/{kind}/{name}/versions/{version}"
        )

    def upload_code(self, code: str) -> str:
        """The asset id of a code folder, copied (uploaded) once per content, as the SDK does."""
        if code in self.code_assets:
            return code
        folder = Path(code)
        if not folder.is_dir():
            raise refused(f"code {code!r} is neither a folder nor a code asset of the workspace")
        name = folder_digest(folder)[:36]
        asset = self.asset_arm_id("codes", name, "1")
        if asset not in self.code_assets:
            target = self.storage / "codes" / name
            shutil.copytree(folder, target, ignore=shutil.ignore_patterns("__pycache__"))
            self.code_assets[asset] = target
        return asset

    def register_environment(self, environment: Environment | str) -> str:
        """The asset id of an environment (registered as given); references are resolved."""
        if isinstance(environment, str):
            if environment.startswith("azureml://registries/") or environment in self.environments:
                return environment  # a curated (registry) environment, or one of ours
            match = re.fullmatch(r"azureml:([^:/]+):([^:/]+)", environment)
            if match is None:
                raise refused(f"environment {environment!r} is not a valid reference")
            name, version = match[1], match[2]
        else:
            name, version = str(environment.name), str(environment.version)
        asset = self.asset_arm_id("environments", name, version)
        self.environments.setdefault(asset, copy.deepcopy(environment))
        return asset

    def model_for(self, reference: Any) -> Model:
        """The registered model a deployment's `model` field refers to."""
        if isinstance(reference, str):
            match = re.search(r"models/([^/]+)/versions/([^/]+)$", reference) or re.fullmatch(
                r"azureml:([^:]+):([^:]+)", reference
            )
            if match and (match[1], match[2]) in self.registered_models:
                return self.registered_models[(match[1], match[2])]
        raise refused(f"model {reference!r} is not registered in the workspace", 404)

    def endpoint(self, name: str) -> OnlineEndpoint:
        """The stored endpoint; ResourceNotFoundError when missing."""
        if name not in self.endpoints:
            raise ResourceNotFoundError(f"(ResourceNotFound) online endpoint {name} not found")
        return self.endpoints[name]


class FakeModelOperations:
    """`MLClient.models`."""

    def __init__(self, client: FakeMLClient) -> None:
        """Operate on `client`'s state."""
        self._c = client

    def create_or_update(self, model: Model) -> Model:
        """Register a model version, copying (uploading) its files; versions are immutable."""
        c = self._c
        c.submitted.append(copy.deepcopy(model))
        name = str(model.name)
        versions = [int(v) for (n, v) in c.registered_models if n == name and v.isdigit()]
        version = str(model.version or max(versions, default=0) + 1)
        if (name, version) in c.registered_models:
            raise ResourceExistsError(f"model {name}:{version} exists; versions are immutable")
        source = Path(str(model.path))
        if not source.is_dir():
            raise refused(f"model path {source} is not a folder to upload")
        target = c.storage / "models" / name / version
        shutil.copytree(source, target)
        stored = copy.deepcopy(model)
        stored.version, stored.path = version, str(target)
        stored._id = c.model_arm_id(name, version)
        c.registered_models[(name, version)] = stored
        return copy.deepcopy(stored)

    def get(self, name: str, version: str | None = None, label: str | None = None) -> Model:
        """One version (or label "latest"); ResourceNotFoundError when missing."""
        if label == "latest":
            versions = [int(v) for (n, v) in self._c.registered_models if n == name]
            version = str(max(versions)) if versions else None
        if version is None:
            raise ValidationException(
                message="Must provide either version or label",
                no_personal_data_message="Must provide either version or label",
                error_type=ValidationErrorType.MISSING_FIELD,
            )
        if (name, version) not in self._c.registered_models:
            raise ResourceNotFoundError(f"(ResourceNotFound) model {name}:{version} not found")
        return copy.deepcopy(self._c.registered_models[(name, version)])
