"""Specs to Azure ML entities, and Azure ML entities back to endpoint states.

Azure names are `azure_name()` of the names a user gave; the given name rides along in
the entity's tags, so that states report names the way the user wrote them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from modelferry.endpoints.azureml.scoring import environment_label, folder_digest
from modelferry.endpoints.azureml.sdk import azure_sdk
from modelferry.endpoints.naming import azure_name
from modelferry.endpoints.spec import (
    DeploymentSpec,
    DeploymentState,
    DeploymentStatus,
    EndpointSpec,
    EndpointState,
    TrafficSplit,
)
from modelferry.registry import RegisteredVersion

if TYPE_CHECKING:
    from azure.ai.ml.entities import (
        Environment,
        ManagedOnlineDeployment,
        ManagedOnlineEndpoint,
        Model,
        OnlineDeployment,
        OnlineEndpoint,
    )

#: Tag holding the name the user gave (the Azure name may be a cleaned, hashed form).
TAG_NAME = "modelferry.name"
TAG_MODEL_NAME = "modelferry.model_name"
TAG_MODEL_VERSION = "modelferry.model_version"
TAG_MODEL_URI = "modelferry.model_uri"
TAG_SOURCE = "modelferry.source"
#: Set to "failed" on a deployment that provisioned but failed its smoke request.
TAG_STATUS = "modelferry.status"
#: The scoring script and a digest of its code folder ("score.py sha256:…").
TAG_CODE = "modelferry.code"
#: The environment the scoring script runs in (a reference, or name:version).
TAG_ENVIRONMENT = "modelferry.environment"

# Azure ML model names allow up to 255 characters.
_MODEL_NAME_LENGTH = 255

_STATUS: dict[str, DeploymentStatus] = {
    "succeeded": "ready",
    "failed": "failed",
    "canceled": "failed",
    "deleting": "stopped",
}


def build_endpoint(spec: EndpointSpec) -> ManagedOnlineEndpoint:
    """A key-authenticated managed online endpoint, tagged with the name the user gave."""
    with azure_sdk():
        from azure.ai.ml.entities import ManagedOnlineEndpoint

    return ManagedOnlineEndpoint(
        name=azure_name(spec.name),
        auth_mode="key",
        description=spec.description,
        tags={**spec.tags, TAG_NAME: spec.name},
    )


def azure_model_name(model_name: str) -> str:
    """The Azure ML model name for a registered MLflow model."""
    return azure_name(model_name, max_length=_MODEL_NAME_LENGTH)


def build_model(version: RegisteredVersion, path: Path) -> Model:
    """An Azure ML MLflow model from the files of `version`, tagged with its metrics."""
    with azure_sdk():
        from azure.ai.ml.constants import AssetTypes
        from azure.ai.ml.entities import Model

    metrics = {k: v for k, v in version.tags.items() if k.startswith("metric.")}
    return Model(
        name=azure_model_name(version.name),
        version=version.version,
        type=AssetTypes.MLFLOW_MODEL,
        path=str(path),
        description=f"{version.uri}, registered by modelferry",
        tags={
            **metrics,
            TAG_MODEL_URI: version.uri,
            TAG_SOURCE: version.source,
            **({"modelferry.run_id": version.run_id} if version.run_id else {}),
        },
    )


def build_deployment(
    endpoint: str,
    spec: DeploymentSpec,
    version: RegisteredVersion,
    model_id: str,
    *,
    environment: str | Environment | None = None,
    code_path: Path | None = None,
    scoring_script: str = "score.py",
) -> ManagedOnlineDeployment:
    """A managed deployment of a registered Azure ML model on endpoint `endpoint`.

    With `environment` and `code_path`, `scoring_script` in `code_path` serves the model in
    that environment; with neither, Azure ML's no-code MLflow server does (it answers
    labels). Tags record a digest of the code folder and the environment, so that an
    unchanged deployment is recognised (`deployments.is_current`) without comparing files.
    """
    with azure_sdk():
        from azure.ai.ml.entities import (
            CodeConfiguration,
            ManagedOnlineDeployment,
            OnlineRequestSettings,
            ProbeSettings,
        )

    scoring: dict[str, str] = {}
    code = None
    if code_path is not None:
        code = CodeConfiguration(code=str(code_path), scoring_script=scoring_script)
        scoring[TAG_CODE] = f"{scoring_script} sha256:{folder_digest(code_path)}"
    if environment is not None:
        scoring[TAG_ENVIRONMENT] = environment_label(environment)
    return ManagedOnlineDeployment(
        name=azure_name(spec.name),
        endpoint_name=azure_name(endpoint),
        model=model_id,
        environment=environment,
        code_configuration=code,
        instance_type=spec.instance_type,
        instance_count=spec.instance_count,
        request_settings=OnlineRequestSettings(
            request_timeout_ms=spec.request_timeout_ms,
            max_concurrent_requests_per_instance=spec.max_concurrent_requests,
        ),
        # Loading a model can take a while: liveness allows 5 minutes before restarts,
        # readiness takes the instance out of rotation after 30 s of failures.
        liveness_probe=ProbeSettings(
            initial_delay=10, period=10, timeout=2, success_threshold=1, failure_threshold=30
        ),
        readiness_probe=ProbeSettings(
            initial_delay=10, period=10, timeout=2, success_threshold=1, failure_threshold=3
        ),
        tags={
            TAG_NAME: spec.name,
            TAG_MODEL_NAME: version.name,
            TAG_MODEL_VERSION: version.version,
            TAG_MODEL_URI: version.uri,
            **scoring,
        },
    )


def deployment_state(deployment: OnlineDeployment) -> DeploymentState:
    """What a deployment serves and whether it is ready, in the user's names."""
    tags = deployment.tags or {}
    provisioning = str(deployment.provisioning_state or "creating").lower()
    status = _STATUS.get(provisioning, "creating")
    detail = f"Azure ML provisioning state: {deployment.provisioning_state}"
    if status == "ready" and tags.get(TAG_STATUS) == "failed":
        status, detail = "failed", "provisioned, but failed its smoke request"
    return DeploymentState(
        name=str(tags.get(TAG_NAME, deployment.name)),
        model_name=str(tags.get(TAG_MODEL_NAME, "")),
        model_version=str(tags.get(TAG_MODEL_VERSION, "")),
        status=status,
        detail=detail,
    )


def given_names(deployments: Iterable[OnlineDeployment]) -> dict[str, str]:
    """Azure deployment name → the name the user gave it."""
    return {str(d.name): str((d.tags or {}).get(TAG_NAME, d.name)) for d in deployments}


def endpoint_state(
    endpoint: OnlineEndpoint, deployments: Iterable[OnlineDeployment]
) -> EndpointState:
    """The endpoint with its deployments and traffic, in the user's names."""
    deployments = list(deployments)
    names = given_names(deployments)
    return EndpointState(
        name=str((endpoint.tags or {}).get(TAG_NAME, endpoint.name)),
        scoring_uri=endpoint.scoring_uri or "",
        deployments=tuple(deployment_state(d) for d in deployments),
        traffic=TrafficSplit(
            weights=_rename(endpoint.traffic, names),
            mirror=_rename(getattr(endpoint, "mirror_traffic", None), names),
        ),
    )


def _rename(shares: Mapping[str, int] | None, names: Mapping[str, str]) -> dict[str, int]:
    return {names.get(azure, azure): int(share) for azure, share in (shares or {}).items()}
