"""The batch endpoint, batch deployment and job operations of `FakeMLClient` (see `ml_client`).

Same signatures as azure-ai-ml's `BatchEndpointOperations`, `BatchDeploymentOperations`
and `JobOperations` for the methods modelferry calls. `invoke` records a `FakeBatchJob`;
when its input is a local CSV file or a folder of them, the job scores them with the
deployed model's files and writes the predictions, as the no-code MLflow deployment does.
"""

from __future__ import annotations

import builtins
import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelferry.endpoints.azureml.sdk import azure_sdk
from modelferry.testing.azureml.scoring import FakePoller, refused, score_probabilities

with azure_sdk("FakeMLClient"):
    from azure.ai.ml import Input
    from azure.ai.ml.entities import (
        BatchDeployment,
        BatchEndpoint,
        BatchJob,
        Job,
        PipelineJob,
    )
    from azure.ai.ml.exceptions import ValidationErrorType, ValidationException
    from azure.core.exceptions import ResourceNotFoundError

if TYPE_CHECKING:
    from modelferry.testing.azureml.ml_client import FakeMLClient

# Azure ML's rule for endpoint and deployment names.
_NAME = re.compile(r"[a-zA-Z][-a-zA-Z0-9]{1,30}[a-zA-Z0-9]")
_JOB_TYPE = "Microsoft.MachineLearningServices/workspaces/batchEndpoints/jobs"

__all__ = [
    "FakeBatchDeploymentOperations",
    "FakeBatchEndpointOperations",
    "FakeBatchJob",
    "FakeBatchWorkspace",
    "FakeJobOperations",
]


@dataclass
class FakeBatchJob:
    """One batch job the fake ran; `output` holds its predictions when it scored files."""

    name: str
    endpoint: str
    deployment: str
    inputs: dict[str, Input]
    status: str = "Completed"
    output: Path | None = None
    error: str | None = None


@dataclass
class FakeBatchWorkspace:
    """The batch part of the fake workspace: endpoints, deployments and jobs by name."""

    endpoints: dict[str, BatchEndpoint] = field(default_factory=dict)
    deployments: dict[tuple[str, str], BatchDeployment] = field(default_factory=dict)
    jobs: dict[str, FakeBatchJob] = field(default_factory=dict)

    def endpoint(self, name: str) -> BatchEndpoint:
        """The stored endpoint; ResourceNotFoundError when missing."""
        if name not in self.endpoints:
            raise ResourceNotFoundError(f"(ResourceNotFound) batch endpoint {name} not found")
        return self.endpoints[name]


class FakeBatchEndpointOperations:
    """`MLClient.batch_endpoints`."""

    def __init__(self, client: FakeMLClient, batch: FakeBatchWorkspace) -> None:
        """Operate on `client`'s models and submissions and on `batch`."""
        self._c = client
        self._b = batch

    def begin_create_or_update(self, endpoint: BatchEndpoint) -> FakePoller[BatchEndpoint]:
        """Create or replace the endpoint; its default deployment must exist."""
        self._c.submitted.append(copy.deepcopy(endpoint))
        name = str(endpoint.name)
        _check_name(name, "batch endpoint")
        default = (endpoint.defaults or {}).get("deployment_name")
        if default and (name, default) not in self._b.deployments:
            raise refused(f"default deployment {default} of {name} does not exist")
        stored = copy.deepcopy(endpoint)
        stored._provisioning_state = "Succeeded"
        stored._scoring_uri = f"https://{name}.{self._c.location}.inference.ml.azure.com/jobs"
        self._b.endpoints[name] = stored
        return FakePoller(copy.deepcopy(stored))

    def get(self, name: str) -> BatchEndpoint:
        """The endpoint; ResourceNotFoundError when missing."""
        return copy.deepcopy(self._b.endpoint(name))

    def list(self) -> list[BatchEndpoint]:
        """Every batch endpoint of the workspace."""
        return [copy.deepcopy(e) for e in self._b.endpoints.values()]

    def begin_delete(self, name: str) -> FakePoller[None]:
        """Delete the endpoint and its deployments; ResourceNotFoundError when missing."""
        self._b.endpoint(name)
        del self._b.endpoints[name]
        for key in [k for k in self._b.deployments if k[0] == name]:
            del self._b.deployments[key]
        return FakePoller(None)

    def invoke(
        self,
        endpoint_name: str,
        *,
        deployment_name: str | None = None,
        inputs: dict[str, Input] | None = None,
        **kwargs: Any,
    ) -> BatchJob:
        """Run a job at once on the named or default deployment; it ends Completed or Failed."""
        endpoint = self._b.endpoint(endpoint_name)
        known = [d for (e, d) in self._b.deployments if e == endpoint_name]
        if deployment_name and deployment_name not in known:
            message = f"Deployment name {deployment_name} not found for this endpoint"
            raise ValidationException(
                message=message,
                no_personal_data_message="Deployment name not found for this endpoint",
                error_type=ValidationErrorType.RESOURCE_NOT_FOUND,
            )
        chosen = deployment_name or (endpoint.defaults or {}).get("deployment_name")
        if not chosen:
            raise refused(f"batch endpoint {endpoint_name} has no default deployment", 400)
        given = dict(inputs or {})
        if kwargs.get("input") is not None:  # the SDK's older single-input keyword
            given["input"] = kwargs["input"]
        if not given:
            raise refused("a batch job needs an input", 400)
        name = f"batchjob-{self._c.random.getrandbits(128):032x}"
        job = FakeBatchJob(name, endpoint_name, chosen, copy.deepcopy(given))
        _run(self._c, self._b.deployments[(endpoint_name, chosen)], job)
        self._b.jobs[name] = job
        return BatchJob(name=name, type=_JOB_TYPE, status=job.status)

    def list_jobs(self, endpoint_name: str) -> builtins.list[BatchJob]:
        """The endpoint's jobs, as `invoke` returned them."""
        self._b.endpoint(endpoint_name)
        return [
            BatchJob(name=j.name, status=j.status)
            for j in self._b.jobs.values()
            if j.endpoint == endpoint_name
        ]


class FakeBatchDeploymentOperations:
    """`MLClient.batch_deployments`."""

    def __init__(self, client: FakeMLClient, batch: FakeBatchWorkspace) -> None:
        """Operate on `client`'s models and submissions and on `batch`."""
        self._c = client
        self._b = batch

    def begin_create_or_update(
        self, deployment: BatchDeployment, *, skip_script_validation: bool = False, **kwargs: Any
    ) -> FakePoller[BatchDeployment]:
        """Provision the deployment (Succeeded); the endpoint and model must exist."""
        self._c.submitted.append(copy.deepcopy(deployment))
        endpoint, name = str(deployment.endpoint_name), str(deployment.name)
        self._b.endpoint(endpoint)
        _check_name(name, "batch deployment")
        self._c.model_for(deployment.model)
        if not deployment.compute:
            raise refused(f"batch deployment {name} needs a compute cluster")
        stored = copy.deepcopy(deployment)
        stored._provisioning_state = "Succeeded"
        self._b.deployments[(endpoint, name)] = stored
        return FakePoller(copy.deepcopy(stored))

    def get(self, name: str, endpoint_name: str) -> BatchDeployment:
        """The deployment; ResourceNotFoundError when it or its endpoint is missing."""
        self._b.endpoint(endpoint_name)
        if (endpoint_name, name) not in self._b.deployments:
            raise ResourceNotFoundError(f"(ResourceNotFound) deployment {name} not found")
        return copy.deepcopy(self._b.deployments[(endpoint_name, name)])

    def list(self, endpoint_name: str) -> list[BatchDeployment]:
        """The endpoint's deployments."""
        self._b.endpoint(endpoint_name)
        return [copy.deepcopy(d) for (e, _), d in self._b.deployments.items() if e == endpoint_name]

    def begin_delete(self, name: str, endpoint_name: str) -> FakePoller[None]:
        """Delete the deployment; refused while it is the endpoint's default."""
        self.get(name, endpoint_name)
        if (self._b.endpoint(endpoint_name).defaults or {}).get("deployment_name") == name:
            raise refused(f"deployment {name} is the default of {endpoint_name}")
        del self._b.deployments[(endpoint_name, name)]
        return FakePoller(None)


class FakeJobOperations:
    """`MLClient.jobs`, for the batch jobs the fake ran."""

    def __init__(self, batch: FakeBatchWorkspace) -> None:
        """Read jobs from `batch`."""
        self._b = batch

    def get(self, name: str) -> Job:
        """The job (a batch job shows as a pipeline job); ResourceNotFoundError when missing."""
        if name not in self._b.jobs:
            raise ResourceNotFoundError(f"(UserError) job {name} not found")
        found = self._b.jobs[name]
        job = PipelineJob(name=name, display_name=name, experiment_name=found.endpoint)
        job._status = found.status
        return job


def _check_name(name: str, what: str) -> None:
    if not _NAME.fullmatch(name):
        raise refused(f"invalid {what} name {name!r}")


def _run(c: FakeMLClient, deployment: BatchDeployment, job: FakeBatchJob) -> None:
    """Score local CSV inputs with the model's files; remote inputs are only recorded."""
    files: list[Path] = []
    for given in job.inputs.values():
        path = Path(str(given.path))
        files += sorted(path.glob("*.csv")) if path.is_dir() else [path] if path.is_file() else []
    if not files:
        return
    import pandas as pd

    model = c.model_for(deployment.model)
    settings = getattr(deployment, "settings", None)
    output_name = getattr(settings, "output_file_name", None) or "predictions.csv"
    scorer = c.scorer or score_probabilities
    rows = []
    try:
        for file in files:
            frame = pd.read_csv(file)
            data = {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}
            answer = scorer(Path(str(model.path)), {"input_data": data})
            predictions = answer["predictions"] if isinstance(answer, dict) else answer
            rows += [[file.name, *_as_row(p)] for p in predictions]
    except (ValueError, KeyError) as exc:
        job.status, job.error = "Failed", str(exc)
        return
    job.output = c.storage / "batch-jobs" / job.name / output_name
    job.output.parent.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(job.output, header=False, index=False)


def _as_row(prediction: Any) -> list[Any]:
    return list(prediction) if isinstance(prediction, list | tuple) else [prediction]
