"""Azure ML batch endpoints: a registered MLflow model scoring files on a compute cluster.

A batch endpoint holds deployments; a job started with `invoke` scores every file of an
input folder (or one file) with the endpoint's default deployment, or a named one, and
writes the predictions to one output file. Names pass through `azure_name()`, and models
are registered as `mlflow_model` assets exactly as for online endpoints (`assets`).

    batch = AzureMLBatchEndpoints(ml_client, registry)
    batch.create_or_update_endpoint("churn-batch")
    batch.deploy("churn-batch", "v3", ModelRef("churn", version="3"),
                 BatchDeploymentSettings(compute="cpu-cluster"))
    job = batch.invoke("churn-batch", "azureml://datastores/workspaceblobstore/paths/in/")
    batch.get_job(job).status  # "Running", then "Completed"
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal, TypeVar

from modelferry.endpoints.azureml.assets import download_model, register_model, resolve_version
from modelferry.endpoints.azureml.entities import (
    TAG_MODEL_NAME,
    TAG_MODEL_URI,
    TAG_MODEL_VERSION,
    TAG_NAME,
)
from modelferry.endpoints.azureml.sdk import azure_errors, azure_sdk, wait_for
from modelferry.endpoints.naming import azure_name
from modelferry.endpoints.spec import ModelRef
from modelferry.errors import (
    DeploymentFailedError,
    EndpointError,
    EndpointNotFoundError,
    InvalidEndpointSpecError,
)
from modelferry.registry import ModelRegistry

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import BatchDeployment, BatchEndpoint, ModelBatchDeployment
    from azure.core.polling import LROPoller

_T = TypeVar("_T")

#: Job states after which a batch job changes no more.
FINISHED_JOB_STATES = frozenset({"Completed", "Failed", "Canceled", "NotResponding"})

InputType = Literal["uri_file", "uri_folder"]


@dataclass(frozen=True)
class BatchDeploymentSettings:
    """How a batch deployment runs its jobs (Azure ML's `ModelBatchDeploymentSettings`).

    Attributes:
        compute: the compute cluster's name, e.g. "cpu-cluster".
        instance_count: nodes of the cluster one job uses.
        mini_batch_size: files scored per call of the model.
        max_concurrency_per_instance: scoring processes per node.
        output_file_name: the file every job writes its predictions to.
        output_action: "append_row" (predictions of all files in one file) or "summary_only".
        max_retries: attempts per mini batch before it counts as failed.
        retry_timeout_s: how long one mini batch may take, in seconds.
        error_threshold: failed files a job tolerates; -1 tolerates any number.
        logging_level: "debug", "info" or "warning".
    """

    compute: str
    instance_count: int = 1
    mini_batch_size: int = 10
    max_concurrency_per_instance: int = 1
    output_file_name: str = "predictions.csv"
    output_action: Literal["append_row", "summary_only"] = "append_row"
    max_retries: int = 3
    retry_timeout_s: int = 300
    error_threshold: int = -1
    logging_level: Literal["debug", "info", "warning"] = "info"

    def __post_init__(self) -> None:
        """Refuse settings Azure ML would refuse, before anything is uploaded."""
        positive = ("instance_count", "mini_batch_size", "max_concurrency_per_instance")
        wrong = [f for f in positive if getattr(self, f) < 1]
        if not self.compute:
            wrong.append("compute")
        if self.max_retries < 0 or self.retry_timeout_s < 1:
            wrong.append("max_retries/retry_timeout_s")
        if self.error_threshold < -1:
            wrong.append("error_threshold")
        if wrong:
            raise InvalidEndpointSpecError(f"invalid batch deployment settings: {wrong} in {self}")


@dataclass(frozen=True)
class BatchDeploymentState:
    """A batch deployment as Azure ML reports it, in the names the user gave."""

    name: str
    model_name: str
    model_version: str
    compute: str
    provisioning_state: str


@dataclass(frozen=True)
class BatchEndpointState:
    """A batch endpoint, its deployments and the one jobs go to by default."""

    name: str
    azure_name: str
    scoring_uri: str
    default_deployment: str | None
    deployments: tuple[BatchDeploymentState, ...]


@dataclass(frozen=True)
class BatchJobState:
    """A batch scoring job's status ("Running", "Completed", "Failed", ...)."""

    name: str
    status: str

    @property
    def finished(self) -> bool:
        """True once the job changes no more."""
        return self.status in FINISHED_JOB_STATES


class AzureMLBatchEndpoints:
    """Batch endpoints of one Azure ML workspace.

    Args:
        ml_client: an `azure.ai.ml.MLClient` bound to the workspace (or `FakeMLClient`).
        registry: the MLflow registry the deployed versions come from.
        timeout_s: how long creating, updating or deleting an endpoint or deployment may take.
        poll_interval_s: how often long-running operations are checked.
    """

    def __init__(
        self,
        ml_client: MLClient,
        registry: ModelRegistry,
        *,
        timeout_s: float = 1800.0,
        poll_interval_s: float = 10.0,
    ) -> None:
        """Bind to a workspace client; no call is made yet."""
        self._ml = ml_client
        self._registry = registry
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s

    def create_or_update_endpoint(self, name: str, description: str = "") -> BatchEndpointState:
        """Create the endpoint, or update its description; calling it again changes nothing."""
        with azure_sdk():
            from azure.ai.ml.entities import BatchEndpoint

        try:
            endpoint = self._get(name)
            endpoint.description = description
            endpoint.tags = {**(endpoint.tags or {}), TAG_NAME: name}
        except EndpointNotFoundError:
            endpoint = BatchEndpoint(
                name=azure_name(name), description=description, tags={TAG_NAME: name}
            )
        with azure_errors(f"creating batch endpoint {name!r}"):
            poller = self._ml.batch_endpoints.begin_create_or_update(endpoint)
            self._wait(poller, f"batch endpoint {name!r}")
        return self.get_endpoint(name)

    def get_endpoint(self, name: str) -> BatchEndpointState:
        """The endpoint with its deployments.

        Raises:
            EndpointNotFoundError: there is no batch endpoint `name`.
        """
        endpoint = self._get(name)
        with azure_errors(f"listing deployments of {name!r}", missing=f"batch endpoint {name!r}"):
            deployments = list(self._ml.batch_deployments.list(endpoint_name=azure_name(name)))
        names = {str(d.name): _given_name(d) for d in deployments}
        default = _default_deployment(endpoint)
        return BatchEndpointState(
            name=_given_name(endpoint),
            azure_name=str(endpoint.name),
            scoring_uri=str(endpoint.scoring_uri or ""),
            default_deployment=names.get(default, default) if default else None,
            deployments=tuple(_deployment_state(d) for d in deployments),
        )

    def deploy(
        self,
        endpoint: str,
        deployment_name: str,
        model: ModelRef,
        settings: BatchDeploymentSettings,
        make_default: bool = True,
    ) -> BatchDeploymentState:
        """Register the model version in Azure ML and deploy it on the endpoint's cluster.

        Raises:
            EndpointNotFoundError: the endpoint does not exist.
            InvalidEndpointSpecError: the model version does not exist.
            DeploymentFailedError: Azure ML refused the deployment, or it timed out.
        """
        deadline = time.monotonic() + self.timeout_s
        current = self._get(endpoint)  # fails fast, before any upload
        version = resolve_version(self._registry, model)
        with tempfile.TemporaryDirectory(prefix="modelferry-azureml-") as tmp:
            model_dir = download_model(self._registry, version, Path(tmp))
            with azure_errors(f"registering {version.uri} as an Azure ML model"):
                model_id = register_model(self._ml, version, model_dir)
        wanted = build_batch_deployment(endpoint, deployment_name, model_id, settings)
        wanted.tags = {
            **(wanted.tags or {}),
            TAG_MODEL_NAME: version.name,
            TAG_MODEL_VERSION: version.version,
            TAG_MODEL_URI: version.uri,
        }
        what = f"batch deployment {deployment_name!r} of {endpoint!r}"
        try:
            with azure_errors(
                f"deploying {what}",
                missing=f"batch endpoint {endpoint!r}",
                endpoint=endpoint,
                deployment=deployment_name,
            ):
                poller = self._ml.batch_deployments.begin_create_or_update(wanted)
                deployed = wait_for(poller, what, deadline - time.monotonic(), self.poll_interval_s)
        except EndpointNotFoundError:
            raise
        except EndpointError as exc:
            raise DeploymentFailedError(
                f"{what} failed: {exc}",
                endpoint=endpoint,
                deployment=deployment_name,
                model_name=version.name,
                model_version=version.version,
            ) from exc
        if make_default and _default_deployment(current) != wanted.name:
            _set_default_deployment(current, str(wanted.name))
            with azure_errors(f"making {what} the default", missing=f"batch endpoint {endpoint!r}"):
                poller = self._ml.batch_endpoints.begin_create_or_update(current)
                self._wait(poller, f"default deployment of {endpoint!r}")
        return _deployment_state(deployed)

    def invoke(
        self,
        endpoint: str,
        input_path_or_uri: str | Path,
        deployment: str | None = None,
        *,
        input_type: InputType | None = None,
    ) -> str:
        """Start a job scoring a file or folder (local, datastore, `azureml:` asset or URL).

        A local path is uploaded by the SDK first. `input_type` is guessed when not given:
        local files and URIs whose last part has a suffix are files, the rest folders.

        Returns:
            The job's name, for `get_job`.

        Raises:
            EndpointNotFoundError: the endpoint, or the named deployment, does not exist.
        """
        with azure_sdk():
            from azure.ai.ml import Input
            from azure.ai.ml.exceptions import ValidationErrorType, ValidationException

        path = str(input_path_or_uri)
        if isinstance(input_path_or_uri, Path) or Path(path).exists():
            path = str(Path(path).resolve())
        kind = input_type or _guess_input_type(path)
        with azure_errors(
            f"invoking {endpoint!r}", missing=f"batch endpoint {endpoint!r}", endpoint=endpoint
        ):
            try:
                job = self._ml.batch_endpoints.invoke(
                    endpoint_name=azure_name(endpoint),
                    deployment_name=azure_name(deployment) if deployment else None,
                    inputs={"input": Input(type=kind, path=path)},
                )
            except ValidationException as exc:
                if exc.error_type != ValidationErrorType.RESOURCE_NOT_FOUND:
                    raise
                raise EndpointNotFoundError(
                    f"batch endpoint {endpoint!r} has no deployment {deployment!r}",
                    endpoint=endpoint,
                    deployment=deployment or "",
                ) from exc
        return str(job.name)

    def get_job(self, job_name: str) -> BatchJobState:
        """The status of a job `invoke` started.

        Raises:
            EndpointNotFoundError: there is no job `job_name`.
        """
        with azure_errors(f"reading job {job_name!r}", missing=f"batch job {job_name!r}"):
            job = self._ml.jobs.get(name=job_name)
        return BatchJobState(name=str(job.name), status=str(job.status or "Unknown"))

    def delete_endpoint(self, name: str) -> None:
        """Delete the endpoint and its deployments; succeeds if it does not exist."""
        try:
            with azure_errors(f"deleting batch endpoint {name!r}", missing=f"endpoint {name!r}"):
                poller = self._ml.batch_endpoints.begin_delete(name=azure_name(name))
                self._wait(poller, f"deleting batch endpoint {name!r}")
        except EndpointNotFoundError:
            return

    def _get(self, name: str) -> BatchEndpoint:
        with azure_errors(f"reading batch endpoint {name!r}", missing=f"batch endpoint {name!r}"):
            found: BatchEndpoint = self._ml.batch_endpoints.get(name=azure_name(name))
            return found

    def _wait(self, poller: LROPoller[_T], what: str) -> _T:
        return wait_for(poller, what, self.timeout_s, self.poll_interval_s)


def build_batch_deployment(
    endpoint: str, name: str, model_id: str, settings: BatchDeploymentSettings
) -> ModelBatchDeployment:
    """A deployment of a registered MLflow model: Azure ML's no-code batch scoring."""
    with azure_sdk():
        from azure.ai.ml.entities import (
            BatchRetrySettings,
            ModelBatchDeployment,
            ModelBatchDeploymentSettings,
        )

    return ModelBatchDeployment(
        name=azure_name(name),
        endpoint_name=azure_name(endpoint),
        model=model_id,
        compute=settings.compute,
        settings=ModelBatchDeploymentSettings(
            instance_count=settings.instance_count,
            mini_batch_size=settings.mini_batch_size,
            max_concurrency_per_instance=settings.max_concurrency_per_instance,
            output_action=settings.output_action,  # type: ignore[arg-type]  # the SDK's enum is a str
            output_file_name=settings.output_file_name,
            retry_settings=BatchRetrySettings(
                max_retries=settings.max_retries, timeout=settings.retry_timeout_s
            ),
            error_threshold=settings.error_threshold,
            logging_level=settings.logging_level,
        ),
        tags={TAG_NAME: name},
    )


def _guess_input_type(path: str) -> InputType:
    local = Path(path)
    if local.exists():
        return "uri_file" if local.is_file() else "uri_folder"
    if path.endswith("/") or (path.startswith("azureml:") and "://" not in path):
        return "uri_folder"  # a folder URI, or a registered data asset
    return "uri_file" if PurePosixPath(path.split("?")[0]).suffix else "uri_folder"


def _given_name(entity: BatchEndpoint | BatchDeployment) -> str:
    return str((entity.tags or {}).get(TAG_NAME, entity.name))


def _deployment_state(deployment: BatchDeployment) -> BatchDeploymentState:
    tags = deployment.tags or {}
    return BatchDeploymentState(
        name=_given_name(deployment),
        model_name=str(tags.get(TAG_MODEL_NAME, "")),
        model_version=str(tags.get(TAG_MODEL_VERSION, "")),
        compute=str(deployment.compute or ""),
        provisioning_state=str(deployment.provisioning_state or "Unknown"),
    )


def _default_deployment(endpoint: BatchEndpoint) -> str | None:
    # Built locally, `defaults` is a dict; read from Azure ML, a REST model object.
    defaults: object = endpoint.defaults
    if isinstance(defaults, Mapping):
        found = defaults.get("deployment_name")
    else:
        found = getattr(defaults, "deployment_name", None)
    return str(found) if found else None


def _set_default_deployment(endpoint: BatchEndpoint, azure: str) -> None:
    defaults: object = endpoint.defaults
    if defaults is not None and not isinstance(defaults, Mapping):
        defaults.deployment_name = azure  # type: ignore[attr-defined]  # the REST model
    else:
        endpoint.defaults = {**(endpoint.defaults or {}), "deployment_name": azure}
