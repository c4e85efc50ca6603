"""Provisioning one deployment: wait for Azure ML, check the outcome, explain a failure."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from modelferry.endpoints.azureml.entities import (
    TAG_MODEL_NAME,
    TAG_MODEL_VERSION,
    TAG_NAME,
    TAG_STATUS,
)
from modelferry.endpoints.azureml.sdk import azure_errors, wait_for
from modelferry.endpoints.naming import azure_name
from modelferry.errors import DeploymentFailedError, EndpointError, EndpointNotFoundError

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import OnlineDeployment

_LOG_LINES_IN_ERRORS = 20
logger = logging.getLogger(__name__)


def provision(
    ml_client: MLClient,
    endpoint: str,
    deployment: OnlineDeployment,
    deadline: float,
    poll_interval_s: float,
) -> OnlineDeployment:
    """Create or update `deployment` on `endpoint`; it as Azure ML reports it, Succeeded.

    Raises:
        EndpointNotFoundError: the endpoint does not exist.
        DeploymentFailedError: it failed or timed out; the message ends with its log.
    """
    tags = deployment.tags or {}
    name = str(tags.get(TAG_NAME, deployment.name))
    failure = None
    try:
        with azure_errors(
            f"deploying {name!r}", missing=f"endpoint {endpoint!r}", endpoint=endpoint
        ):
            poller = ml_client.online_deployments.begin_create_or_update(deployment)
            wait_for(poller, f"deployment {name!r}", deadline - time.monotonic(), poll_interval_s)
    except EndpointNotFoundError:
        raise
    except EndpointError as exc:  # failed provisioning, refused, or timed out
        failure = str(exc)
    current = find_deployment(ml_client, endpoint, name)
    if failure is None and (current is None or current.provisioning_state != "Succeeded"):
        state = current.provisioning_state if current is not None else "missing"
        failure = f"provisioning ended {state!r}"
    if failure is not None or current is None:
        raise DeploymentFailedError(
            failure_message(ml_client, endpoint, name, str(failure)),
            endpoint=endpoint,
            deployment=name,
            model_name=str(tags.get(TAG_MODEL_NAME, "")),
            model_version=str(tags.get(TAG_MODEL_VERSION, "")),
        )
    return current


def is_current(existing: OnlineDeployment | None, wanted: OnlineDeployment) -> bool:
    """True when `existing` is healthy and already as `wanted`: no rollout is needed.

    Azure ML rolls a deployment out again on every update, which takes minutes; skipping
    an update that changes nothing keeps `create_or_update_deployment` cheap to repeat.
    Code and environment are compared by the tags `build_deployment` sets (a digest of the
    code folder, the environment's name and version): Azure ML reports both back as asset
    ids, which say nothing about the files they were made from.
    """
    if existing is None or existing.provisioning_state != "Succeeded":
        return False
    fields = ("model", "instance_type", "instance_count", "request_settings")
    same = all(getattr(existing, f) == getattr(wanted, f) for f in fields)
    return same and (existing.tags or {}) == (wanted.tags or {})


def find_deployment(ml_client: MLClient, endpoint: str, name: str) -> OnlineDeployment | None:
    """The deployment as Azure ML has it now, or None if it (or its endpoint) is missing."""
    try:
        with azure_errors(f"reading deployment {name!r}", missing=f"deployment {name!r}"):
            found: OnlineDeployment = ml_client.online_deployments.get(
                name=azure_name(name), endpoint_name=azure_name(endpoint)
            )
            return found
    except EndpointNotFoundError:
        return None


def mark_failed(
    ml_client: MLClient, deployment: OnlineDeployment, deadline: float, poll_interval_s: float
) -> None:
    """Tag a provisioned deployment as failed, so that no traffic is routed to it."""
    # Best effort: the error the caller raises next matters more than this update.
    deployment.tags = {**(deployment.tags or {}), TAG_STATUS: "failed"}
    try:
        with azure_errors(f"marking deployment {deployment.name!r} failed"):
            poller = ml_client.online_deployments.begin_create_or_update(deployment)
            timeout = max(deadline - time.monotonic(), 1.0)
            wait_for(poller, "marking failed", timeout, poll_interval_s)
    except EndpointError:
        logger.warning("could not tag deployment %s as failed", deployment.name)


def failure_message(ml_client: MLClient, endpoint: str, name: str, reason: str) -> str:
    """What failed and why, with the last lines of the deployment's log."""
    try:
        with azure_errors(f"reading logs of {name!r}", missing=f"deployment {name!r}"):
            logs = ml_client.online_deployments.get_logs(
                name=azure_name(name),
                endpoint_name=azure_name(endpoint),
                lines=_LOG_LINES_IN_ERRORS,
            )
    except EndpointError as exc:
        logs = f"(no logs: {exc})"
    return (
        f"deployment {name!r} of endpoint {endpoint!r} failed: {reason}. It takes no "
        f"traffic. Last log lines:\n{str(logs).rstrip() or '(empty)'}"
    )
