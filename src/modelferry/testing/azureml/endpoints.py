"""The endpoint and deployment operations of `FakeMLClient` (see `ml_client`)."""

from __future__ import annotations

import ast
import copy
import json
import random
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelferry.endpoints.azureml.sdk import azure_sdk
from modelferry.testing.azureml.scoring import (
    FakePoller,
    FakeRequest,
    refused,
    remote_only,
    score_labels,
    score_with_script,
)

with azure_sdk("FakeMLClient"):
    from azure.ai.ml.entities import EndpointAuthKeys, OnlineDeployment, OnlineEndpoint
    from azure.ai.ml.exceptions import ValidationErrorType, ValidationException
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

if TYPE_CHECKING:
    from modelferry.testing.azureml.ml_client import FakeMLClient

# Azure ML's rule for endpoint and deployment names.
_NAME = re.compile(r"^[a-zA-Z]([-a-zA-Z0-9]{1,30}[a-zA-Z0-9])$")


class FakeOnlineEndpointOperations:
    """`MLClient.online_endpoints`."""

    def __init__(self, client: FakeMLClient) -> None:
        """Operate on `client`'s state."""
        self._c = client

    def begin_create_or_update(
        self, endpoint: OnlineEndpoint, *, local: bool = False
    ) -> FakePoller[OnlineEndpoint]:
        """Create or replace the endpoint; checks traffic as the service does."""
        remote_only(local)
        c = self._c
        c.submitted.append(copy.deepcopy(endpoint))
        name = str(endpoint.name)
        if not _NAME.match(name):
            raise refused(f"invalid endpoint name {name!r}")
        # The SDK drops zero weights before sending, as here.
        endpoint.traffic = {k.lower(): v for k, v in (endpoint.traffic or {}).items() if v}
        mirror = getattr(endpoint, "mirror_traffic", None) or {}
        endpoint.mirror_traffic = {k.lower(): v for k, v in mirror.items() if v}
        _check_traffic(c, name, endpoint.traffic, endpoint.mirror_traffic)
        stored = copy.deepcopy(endpoint)
        stored._provisioning_state = "Succeeded"
        stored._scoring_uri = f"https://{name}.{c.location}.inference.ml.azure.com/score"
        c.endpoints[name] = stored
        c.keys.setdefault(
            name,
            EndpointAuthKeys(
                primary_key=secrets.token_urlsafe(24), secondary_key=secrets.token_urlsafe(24)
            ),
        )
        return FakePoller(copy.deepcopy(stored))

    def get(self, name: str, *, local: bool = False) -> OnlineEndpoint:
        """The endpoint; ResourceNotFoundError when missing."""
        remote_only(local)
        return copy.deepcopy(self._c.endpoint(name))

    def list(self, *, local: bool = False) -> list[OnlineEndpoint]:
        """Every endpoint of the workspace."""
        remote_only(local)
        return [copy.deepcopy(e) for e in self._c.endpoints.values()]

    def begin_delete(self, name: str | None = None, *, local: bool = False) -> FakePoller[None]:
        """Delete the endpoint and its deployments; ResourceNotFoundError when missing."""
        remote_only(local)
        self._c.endpoint(str(name))
        del self._c.endpoints[str(name)]
        for key in [k for k in self._c.deployments if k[0] == name]:
            del self._c.deployments[key]
        return FakePoller(None)

    def get_keys(self, name: str) -> EndpointAuthKeys:
        """The endpoint's keys."""
        self._c.endpoint(name)
        return copy.deepcopy(self._c.keys[name])

    def invoke(
        self,
        endpoint_name: str,
        *,
        request_file: str | None = None,
        deployment_name: str | None = None,
        input_data: Any = None,
        params_override: Any = None,
        local: bool = False,
        **kwargs: Any,
    ) -> str:
        """Route one request by traffic (or to `deployment_name`) and score it for real."""
        remote_only(local)
        c = self._c
        if deployment_name:
            known = [d for (e, d) in c.deployments if e == endpoint_name]
            if deployment_name not in known:
                raise ValidationException(
                    message=f"Deployment name {deployment_name} not found for this endpoint",
                    no_personal_data_message="Deployment name not found for this endpoint",
                    error_type=ValidationErrorType.RESOURCE_NOT_FOUND,
                )
        payload = json.loads(Path(str(request_file)).read_text())
        endpoint = c.endpoint(endpoint_name)
        chosen = deployment_name or _pick(c.random, endpoint.traffic or {})
        if chosen is None:
            raise refused("No valid deployments to route to. Set traffic or pin one.", 424)
        answer = _score(c, endpoint_name, chosen, payload)
        request = FakeRequest(endpoint_name, chosen, payload)
        if deployment_name is None:
            for mirror, percent in (getattr(endpoint, "mirror_traffic", None) or {}).items():
                if c.random.random() * 100 < percent:
                    request.mirrored_to.append(mirror)
                    _score(c, endpoint_name, mirror, payload)
        c.requests.append(request)
        return json.dumps(answer)


class FakeOnlineDeploymentOperations:
    """`MLClient.online_deployments`."""

    def __init__(self, client: FakeMLClient) -> None:
        """Operate on `client`'s state."""
        self._c = client

    def begin_create_or_update(
        self,
        deployment: OnlineDeployment,
        *,
        local: bool = False,
        vscode_debug: bool = False,
        skip_script_validation: bool = False,
        local_enable_gpu: bool = False,
        **kwargs: Any,
    ) -> FakePoller[OnlineDeployment]:
        """Provision the deployment: Succeeded, or as `fail_next_deployment` / `stall_…` say.

        As the SDK does, the scoring script is checked first (unless skipped), then the
        code folder uploaded and the environment registered; the entity passed in is
        changed to refer to them by asset id.
        """
        remote_only(local)
        c = self._c
        c.submitted.append(copy.deepcopy(deployment))
        code = deployment.code_configuration
        if code is not None and not skip_script_validation and str(code.code) not in c.code_assets:
            _validate_scoring_script(Path(str(code.code)) / str(code.scoring_script))
        endpoint, name = str(deployment.endpoint_name), str(deployment.name)
        c.endpoint(endpoint)  # the SDK checks the endpoint exists first, as here
        if not _NAME.match(name):
            raise refused(f"invalid deployment name {name!r}")
        model = c.model_for(deployment.model)
        if (deployment.environment is None) != (code is None):
            raise refused("give an environment and a scoring script together, or neither")
        if code is not None:
            code.code = c.upload_code(str(code.code))
        if deployment.environment is not None:
            deployment.environment = c.register_environment(deployment.environment)
        stored = copy.deepcopy(deployment)
        log = c.logs.setdefault((endpoint, name), [])
        log.append(f"Downloading model {model.name}:{model.version}")
        error: HttpResponseError | None = None
        if name in c._next_failures:
            message, lines = c._next_failures.pop(name)
            stored._provisioning_state, error = "Failed", refused(message, 500)
            log.extend(lines)
        elif name in c._stalls:
            c._stalls.discard(name)
            stored._provisioning_state = "Creating"
        else:
            stored._provisioning_state = "Succeeded"
            log.append("Scoring server ready: GET / answered 200")
        c.deployments[(endpoint, name)] = stored
        return FakePoller(
            copy.deepcopy(stored), error, stalled=stored.provisioning_state == "Creating"
        )

    def get(self, name: str, endpoint_name: str, *, local: bool | None = False) -> OnlineDeployment:
        """The deployment; ResourceNotFoundError when it or its endpoint is missing."""
        return copy.deepcopy(_deployment(self._c, endpoint_name, name))

    def list(self, endpoint_name: str, *, local: bool = False) -> list[OnlineDeployment]:
        """The endpoint's deployments."""
        self._c.endpoint(endpoint_name)
        return [copy.deepcopy(d) for (e, _), d in self._c.deployments.items() if e == endpoint_name]

    def begin_delete(
        self, name: str, endpoint_name: str, *, local: bool | None = False
    ) -> FakePoller[None]:
        """Delete the deployment; refused while it takes traffic."""
        _deployment(self._c, endpoint_name, name)
        endpoint = self._c.endpoint(endpoint_name)
        shares = {**(endpoint.traffic or {}), **(getattr(endpoint, "mirror_traffic", {}) or {})}
        if shares.get(name, 0) > 0:
            raise refused(f"deployment {name} takes {shares[name]}% of traffic; set it to 0")
        del self._c.deployments[(endpoint_name, name)]
        return FakePoller(None)

    def get_logs(
        self,
        name: str,
        endpoint_name: str,
        lines: int,
        *,
        container_type: str | None = None,
        local: bool = False,
    ) -> str:
        """The last `lines` lines the deployment logged."""
        _deployment(self._c, endpoint_name, name)
        return "\n".join(self._c.logs.get((endpoint_name, name), [])[-lines:])


def _validate_scoring_script(script: Path) -> None:
    # As the SDK's validate_scoring_script: the file must exist and parse.
    try:
        ast.parse(script.read_text(), str(script))
    except (OSError, SyntaxError) as exc:
        raise ValidationException(
            message=f"scoring script {script} cannot be read or parsed: {exc}",
            no_personal_data_message="the scoring script cannot be read or parsed",
            error_type=ValidationErrorType.CANNOT_PARSE,
        ) from exc


def _deployment(c: FakeMLClient, endpoint: str, name: str) -> OnlineDeployment:
    c.endpoint(endpoint)
    if (endpoint, name) not in c.deployments:
        raise ResourceNotFoundError(f"(ResourceNotFound) deployment {endpoint}/{name} not found")
    return c.deployments[(endpoint, name)]


def _check_traffic(
    c: FakeMLClient, endpoint: str, traffic: dict[str, int], mirror: dict[str, int]
) -> None:
    known = {d: dep for (e, d), dep in c.deployments.items() if e == endpoint}
    for name in {**traffic, **mirror}:
        if name not in known:
            raise refused(f"traffic names deployment {name}, which does not exist")
        if known[name].provisioning_state != "Succeeded":
            raise refused(f"deployment {name} is {known[name].provisioning_state}")
    if traffic and sum(traffic.values()) != 100:
        raise refused(f"traffic {traffic} must sum to 100")
    for name, percent in mirror.items():
        if percent > 50 or name in traffic:
            raise refused(f"mirror traffic to {name}: at most 50%, to a deployment with none")


def _pick(rng: random.Random, traffic: dict[str, int]) -> str | None:
    live = [(name, weight) for name, weight in traffic.items() if weight > 0]
    if not live:
        return None
    names, weights = zip(*live, strict=True)
    return str(rng.choices(names, weights)[0])


def _score(c: FakeMLClient, endpoint: str, name: str, payload: Any) -> Any:
    deployment = _deployment(c, endpoint, name)
    if deployment.provisioning_state != "Succeeded":
        raise refused(f"deployment {name} is {deployment.provisioning_state}", 503)
    if (endpoint, name) in c._scoring_failures:
        raise refused(c._scoring_failures[(endpoint, name)], 500)
    model = c.model_for(deployment.model)
    model_dir, code = Path(str(model.path)), deployment.code_configuration
    try:
        if c.scorer is not None:
            answer = c.scorer(model_dir, payload)
        elif code is not None:
            script = c.code_assets[str(code.code)] / str(code.scoring_script)
            answer = score_with_script(script, model_dir, payload)
        else:
            answer = score_labels(model_dir, payload)
    except ValueError as exc:
        raise refused(f"scoring failed: {exc}", 400) from exc
    if isinstance(answer, dict):
        answer = {**answer, "deployment": name, "model_version": model.version}
    c.logs.setdefault((endpoint, name), []).append(f"POST /score 200 ({name})")
    return answer
