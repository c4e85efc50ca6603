"""`EndpointBackend` on Azure ML managed online endpoints, through the azure-ai-ml SDK."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import SecretStr

from modelferry.endpoints.azureml.assets import (
    download_model,
    register_model,
    resolve_version,
    smoke_request,
)
from modelferry.endpoints.azureml.deployments import (
    failure_message,
    find_deployment,
    is_current,
    mark_failed,
    provision,
)
from modelferry.endpoints.azureml.entities import (
    TAG_NAME,
    build_deployment,
    build_endpoint,
    deployment_state,
    endpoint_state,
    given_names,
)
from modelferry.endpoints.azureml.scoring import (
    SCORING_SCRIPT,
    scoring_environment,
    write_api_documents,
    write_code_folder,
)
from modelferry.endpoints.azureml.sdk import azure_errors, azure_sdk, wait_for
from modelferry.endpoints.backend import EndpointBackend
from modelferry.endpoints.naming import azure_name
from modelferry.endpoints.spec import (
    DeploymentMetrics,
    DeploymentSpec,
    DeploymentState,
    EndpointSpec,
    EndpointState,
    TrafficSplit,
)
from modelferry.errors import (
    DeploymentFailedError,
    EndpointError,
    EndpointNotFoundError,
    InvalidEndpointSpecError,
)
from modelferry.registry import ModelRegistry

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import Environment, OnlineDeployment, OnlineEndpoint
    from azure.core.polling import LROPoller

#: Measures one deployment: (Azure endpoint name, Azure deployment name, since) → metrics.
MetricsSource = Callable[[str, str, datetime], DeploymentMetrics]

_T = TypeVar("_T")


class AzureMLEndpointBackend(EndpointBackend):
    """Managed online endpoints of one Azure ML workspace (see `EndpointBackend`).

    Names are passed through `azure_name()`; states report the names the user gave.
    Models are registered in the workspace as `mlflow_model` assets from the MLflow files.

    By default deployments run modelferry's scoring script (`scoring.write_code_folder`),
    which answers class probabilities, `{"predictions": [[p0, p1], ...], "classes": [...]}`,
    in an environment pinning the model libraries installed here (`scoring.scoring_environment`).
    `environment` replaces that environment, `code_path` (with `scoring_script`) the script.
    `no_code_mlflow=True` leaves scoring to Azure ML's no-code MLflow server instead, which
    answers predicted labels (`[0, 1, ...]`), not probabilities.

    Args:
        ml_client: an `azure.ai.ml.MLClient` bound to the workspace (or `FakeMLClient`).
        registry: the MLflow registry the deployed versions come from.
        environment: an Azure ML environment, a reference (e.g. "azureml:scoring:3") or an
            `Environment`; by default one pinning the installed model libraries.
        code_path: a folder holding your own `scoring_script`; by default modelferry's.
        scoring_script: file name of the scoring script inside `code_path`.
        no_code_mlflow: deploy without a scoring script (Azure ML's MLflow server; labels).
        metrics_source: measures a deployment for `get_metrics`, e.g. `AzureMonitorMetrics`.
        timeout_s: how long endpoint operations (create, update, delete) may take.
        poll_interval_s: how often long-running operations are checked.

    Raises:
        InvalidEndpointSpecError: `no_code_mlflow` together with an environment or code.
    """

    display_name = "Azure ML"

    def __init__(
        self,
        ml_client: MLClient,
        registry: ModelRegistry,
        *,
        environment: str | Environment | None = None,
        code_path: Path | None = None,
        scoring_script: str = "score.py",
        no_code_mlflow: bool = False,
        metrics_source: MetricsSource | None = None,
        timeout_s: float = 1800.0,
        poll_interval_s: float = 10.0,
    ) -> None:
        """Bind to a workspace client; no call is made yet."""
        if no_code_mlflow and (environment is not None or code_path is not None):
            raise InvalidEndpointSpecError(
                "no_code_mlflow deploys with Azure ML's own MLflow server, without a scoring "
                "script: drop environment and code_path, or drop no_code_mlflow"
            )
        self._ml = ml_client
        self._registry = registry
        self._environment = environment
        self._code_path = code_path
        self._scoring_script = scoring_script
        self._no_code = no_code_mlflow
        self._metrics_source = metrics_source
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s

    def create_or_update_endpoint(self, spec: EndpointSpec) -> EndpointState:
        """Create the endpoint (key auth) or update its description and tags; minutes."""
        wanted: OnlineEndpoint = build_endpoint(spec)
        current = self._find_endpoint(spec.name)
        if current is not None:
            # Updating the entity Azure returned keeps its traffic and mirroring as they are.
            current.description, current.tags = wanted.description, wanted.tags
            wanted = current
        with azure_errors(f"creating endpoint {spec.name!r}"):
            poller = self._ml.online_endpoints.begin_create_or_update(wanted)
            self._wait(poller, f"endpoint {spec.name!r}", self.timeout_s)
        return self.get_endpoint(spec.name)

    def get_endpoint(self, name: str) -> EndpointState:
        """The endpoint's deployments, traffic and scoring URI."""
        endpoint, deployments = self._read(name)
        return endpoint_state(endpoint, deployments)

    def list_endpoints(self) -> list[EndpointState]:
        """Endpoints of the workspace that modelferry created (tagged `modelferry.name`)."""
        states = []
        with azure_errors("listing endpoints"):
            endpoints = [e for e in self._ml.online_endpoints.list() if TAG_NAME in (e.tags or {})]
        for endpoint in endpoints:
            try:
                states.append(self.get_endpoint(str(endpoint.name)))
            except EndpointNotFoundError:
                continue  # deleted while we were listing
        return states

    def delete_endpoint(self, name: str) -> None:
        """Delete the endpoint and its deployments; succeeds if it does not exist."""
        try:
            with azure_errors(
                f"deleting endpoint {name!r}", missing=f"endpoint {name!r}", endpoint=name
            ):
                poller = self._ml.online_endpoints.begin_delete(name=azure_name(name))
                self._wait(poller, f"deleting endpoint {name!r}", self.timeout_s)
        except EndpointNotFoundError:
            return

    def create_or_update_deployment(
        self, endpoint: str, spec: DeploymentSpec, timeout_s: float = 600.0
    ) -> DeploymentState:
        """Register the model, deploy it with no traffic, wait, then send a smoke request.

        The smoke request is the model's logged input example, pinned to this deployment.
        """
        deadline = time.monotonic() + timeout_s
        self._read(endpoint)  # fails fast, before any upload, when the endpoint is missing
        version = resolve_version(self._registry, spec.model)
        # The code folder must last until the SDK has uploaded it, inside `provision`.
        with tempfile.TemporaryDirectory(prefix="modelferry-azureml-") as tmp:
            environment, code_path, script = self._scoring(Path(tmp) / "code")
            model_dir = download_model(self._registry, version, Path(tmp) / "model")
            if code_path is not None and self._code_path is None:
                title = f"{endpoint}/{spec.name}: {version.name} v{version.version}"
                write_api_documents(code_path, model_dir, title, version.version)
            smoke = smoke_request(model_dir)
            with azure_errors(f"registering {version.uri} as an Azure ML model"):
                model_id = register_model(self._ml, version, model_dir)
            deployment = build_deployment(
                endpoint,
                spec,
                version,
                model_id,
                environment=environment,
                code_path=code_path,
                scoring_script=script,
            )
            existing = find_deployment(self._ml, endpoint, spec.name)
            if is_current(existing, deployment) and existing is not None:
                return deployment_state(existing)
            current = provision(self._ml, endpoint, deployment, deadline, self.poll_interval_s)
        if smoke is not None:
            try:
                self.invoke(endpoint, smoke, deployment=spec.name)
            except EndpointError as exc:
                mark_failed(self._ml, current, deadline, self.poll_interval_s)
                reason = f"its smoke request failed: {exc}"
                message = failure_message(self._ml, endpoint, spec.name, reason)
                raise DeploymentFailedError(
                    message,
                    endpoint=endpoint,
                    deployment=spec.name,
                    model_name=version.name,
                    model_version=version.version,
                ) from exc
        return deployment_state(current)

    def delete_deployment(self, endpoint: str, name: str) -> None:
        """Delete one deployment; refused while it takes live or mirrored traffic."""
        try:
            current, _ = self._read(endpoint)
            azure = azure_name(name)
            shares = {**(current.traffic or {}), **(current.mirror_traffic or {})}
            if shares.get(azure, 0) > 0:
                raise InvalidEndpointSpecError(
                    f"deployment {name!r} of endpoint {endpoint!r} takes {shares[azure]}% of "
                    "traffic; move its traffic (set_traffic) before deleting it"
                )
            with azure_errors(
                f"deleting deployment {name!r}",
                missing=f"deployment {name!r}",
                endpoint=endpoint,
                deployment=name,
            ):
                poller = self._ml.online_deployments.begin_delete(
                    name=azure, endpoint_name=azure_name(endpoint)
                )
                self._wait(poller, f"deleting deployment {name!r}", self.timeout_s)
        except EndpointNotFoundError:
            return

    def set_traffic(self, endpoint: str, traffic: TrafficSplit) -> EndpointState:
        """Replace the weights and mirroring in one endpoint update; minutes on Azure ML."""
        current, deployments = self._read(endpoint)
        by_azure = {str(d.name): d for d in deployments}
        for name in {**traffic.weights, **traffic.mirror}:
            if azure_name(name) not in by_azure:
                known = sorted(given_names(deployments).values())
                raise EndpointNotFoundError(
                    f"endpoint {endpoint!r} has no deployment {name!r}; it has {known}",
                    endpoint=endpoint,
                    deployment=name,
                )
        for name in traffic.deployments:
            state = deployment_state(by_azure[azure_name(name)])
            if state.status != "ready":
                raise InvalidEndpointSpecError(
                    f"deployment {name!r} is {state.status} ({state.detail}); only a ready "
                    "deployment can take traffic"
                )
        weights = {azure_name(n): w for n, w in traffic.weights.items()}
        current.traffic = {azure: weights.get(azure, 0) for azure in by_azure}
        current.mirror_traffic = {azure_name(n): p for n, p in traffic.mirror.items() if p > 0}
        with azure_errors(
            f"setting traffic of endpoint {endpoint!r}",
            missing=f"endpoint {endpoint!r}",
            endpoint=endpoint,
        ):
            poller = self._ml.online_endpoints.begin_create_or_update(current)
            self._wait(poller, f"traffic of endpoint {endpoint!r}", self.timeout_s)
        return self.get_endpoint(endpoint)

    def get_keys(self, endpoint: str) -> SecretStr:
        """The endpoint's primary key."""
        with azure_errors(
            f"reading keys of endpoint {endpoint!r}",
            missing=f"endpoint {endpoint!r}",
            endpoint=endpoint,
        ):
            keys = self._ml.online_endpoints.get_keys(name=azure_name(endpoint))
        primary = getattr(keys, "primary_key", None)
        if not primary:
            raise EndpointError(f"endpoint {endpoint!r} does not use key auth; it has no keys")
        return SecretStr(primary)

    def rotate_key(self, endpoint: str) -> SecretStr:
        """Not offered: Azure ML regenerates keys itself (`az ml online-endpoint ...`).

        Raises:
            OperationNotSupportedError: always, naming the Azure CLI command to use.
        """
        raise self._not_supported(
            endpoint,
            "rotate_key",
            "rotating scoring keys",
            "regenerate the key with `az ml online-endpoint regenerate-keys --name "
            f"{azure_name(endpoint)} --key-type primary`, then read it with `get_keys` (from a "
            f"shell: `modelferry endpoints key {endpoint} --backend azureml`)",
        )

    def invoke(
        self, endpoint: str, payload: Mapping[str, Any], deployment: str | None = None
    ) -> Any:
        """Score one request (Azure ML `input_data` format); the decoded JSON answer."""
        with azure_sdk():
            from azure.ai.ml.exceptions import ValidationErrorType, ValidationException

        with tempfile.TemporaryDirectory(prefix="modelferry-request-") as tmp:
            request = Path(tmp) / "request.json"
            request.write_text(json.dumps(payload))
            with azure_errors(
                f"invoking endpoint {endpoint!r}",
                missing=f"endpoint {endpoint!r}",
                endpoint=endpoint,
                deployment=deployment or "",
            ):
                try:
                    text = self._ml.online_endpoints.invoke(
                        endpoint_name=azure_name(endpoint),
                        request_file=str(request),
                        deployment_name=azure_name(deployment) if deployment else None,
                    )
                except ValidationException as exc:
                    if exc.error_type != ValidationErrorType.RESOURCE_NOT_FOUND:
                        raise
                    raise EndpointNotFoundError(
                        f"endpoint {endpoint!r} has no deployment {deployment!r}",
                        endpoint=endpoint,
                        deployment=deployment or "",
                    ) from exc
        try:
            answer = json.loads(text)
            # A scoring script that returns a JSON string gets it encoded once more.
            return json.loads(answer) if isinstance(answer, str) else answer
        except ValueError as exc:
            raise EndpointError(f"endpoint {endpoint!r} answered non-JSON: {text[:200]!r}") from exc

    def get_metrics(self, endpoint: str, since: datetime) -> dict[str, DeploymentMetrics]:
        """Metrics per deployment from the `metrics_source` given to the constructor.

        Raises:
            EndpointError: the backend was built without a `metrics_source`.
        """
        if self._metrics_source is None:
            raise EndpointError(
                "AzureMLEndpointBackend.get_metrics needs a metrics_source: Azure ML reports "
                "requests, errors and latency through Azure Monitor. Pass "
                "metrics_source=AzureMonitorMetrics.for_workspace(workspace), or build the "
                "backend from the AzureMLWorkspace block, which does."
            )
        _, deployments = self._read(endpoint)
        names = given_names(deployments)
        azure_endpoint = azure_name(endpoint)
        return {names[azure]: self._metrics_source(azure_endpoint, azure, since) for azure in names}

    def get_logs(self, endpoint: str, deployment: str, lines: int = 100) -> str:
        """The last `lines` lines of the deployment's inference-server log."""
        with azure_errors(
            f"reading logs of {deployment!r}",
            missing=f"deployment {deployment!r}",
            endpoint=endpoint,
            deployment=deployment,
        ):
            logs = self._ml.online_deployments.get_logs(
                name=azure_name(deployment), endpoint_name=azure_name(endpoint), lines=lines
            )
        return str(logs)

    def _scoring(self, code_folder: Path) -> tuple[str | Environment | None, Path | None, str]:
        """The environment, code folder and scoring script deployments get (None: no-code).

        modelferry's script is written to `code_folder` unless a `code_path` was given.
        """
        if self._no_code:
            return None, None, self._scoring_script
        environment = self._environment or scoring_environment()
        if self._code_path is None:
            return environment, write_code_folder(code_folder), SCORING_SCRIPT
        if not (self._code_path / self._scoring_script).is_file():
            raise InvalidEndpointSpecError(
                f"code_path {str(self._code_path)!r} holds no scoring script "
                f"{self._scoring_script!r}; give the folder and file name of your script"
            )
        return environment, self._code_path, self._scoring_script

    def _read(self, endpoint: str) -> tuple[OnlineEndpoint, list[OnlineDeployment]]:
        azure = azure_name(endpoint)
        with azure_errors(
            f"reading endpoint {endpoint!r}", missing=f"endpoint {endpoint!r}", endpoint=endpoint
        ):
            found = self._ml.online_endpoints.get(name=azure)
            return found, list(self._ml.online_deployments.list(endpoint_name=azure))

    def _find_endpoint(self, name: str) -> OnlineEndpoint | None:
        try:
            return self._read(name)[0]
        except EndpointNotFoundError:
            return None

    def _wait(self, poller: LROPoller[_T], what: str, timeout_s: float) -> _T:
        return wait_for(poller, what, timeout_s, self.poll_interval_s)
