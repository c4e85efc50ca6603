"""Endpoint steps: deploy, smoke-test, move traffic, hold a step, measure it."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from modelferry.endpoints.backend import EndpointBackend
from modelferry.endpoints.counters import MetricsMark, StepMetrics
from modelferry.endpoints.spec import (
    DeploymentSpec,
    DeploymentState,
    EndpointSpec,
    EndpointState,
    TrafficSplit,
)
from modelferry.endpoints.traffic import TrafficDriver, TrafficReport
from modelferry.errors import DeploymentFailedError

# Backends hold connections and state files: these steps are never cached.


@task(name="ensure-endpoint", timeout_seconds=1800, cache_policy=NO_CACHE)
def ensure_endpoint(backend: EndpointBackend, spec: EndpointSpec) -> EndpointState:
    """Create the endpoint if missing (idempotent)."""
    return backend.create_or_update_endpoint(spec)


@task(name="deploy-model", timeout_seconds=3600, cache_policy=NO_CACHE)
def deploy_model(backend: EndpointBackend, endpoint: str, spec: DeploymentSpec) -> DeploymentState:
    """Deploy a model version with no traffic; the backend waits until it is ready."""
    return backend.create_or_update_deployment(endpoint, spec)


@task(name="smoke-test-deployment", timeout_seconds=300, cache_policy=NO_CACHE)
def smoke_test_deployment(
    backend: EndpointBackend, endpoint: str, deployment: str, payload: dict[str, Any]
) -> None:
    """Send the model's own input example to the deployment alone; check the answer.

    Raises:
        DeploymentFailedError: no answer, or not one probability per class per row.
    """
    try:
        answer = backend.invoke(endpoint, payload, deployment=deployment)
    except Exception as exc:
        raise DeploymentFailedError(
            f"smoke request to {endpoint}/{deployment} failed: {exc}",
            endpoint=endpoint,
            deployment=deployment,
        ) from exc
    rows = len(payload["input_data"]["data"])
    proba = np.asarray(answer.get("predictions") if isinstance(answer, dict) else answer)
    if proba.ndim != 2 or proba.shape[0] != rows or not np.allclose(proba.sum(axis=1), 1.0):
        raise DeploymentFailedError(
            f"smoke request to {endpoint}/{deployment} gave {str(answer)[:200]}; expected "
            f"{rows} rows of class probabilities",
            endpoint=endpoint,
            deployment=deployment,
        )


@task(name="move-traffic", timeout_seconds=900, cache_policy=NO_CACHE)
def move_traffic(backend: EndpointBackend, endpoint: str, traffic: TrafficSplit) -> EndpointState:
    """Apply a traffic split."""
    return backend.set_traffic(endpoint, traffic)


@task(name="hold-traffic-step", cache_policy=NO_CACHE)
def hold_step(
    backend: EndpointBackend,
    endpoint: str,
    seconds: float,
    replay: Sequence[Mapping[str, Any]] | None = None,
    rate: float = 0.0,
) -> TrafficReport | None:
    """Hold a traffic step for `seconds`, replaying requests meanwhile if given.

    With `replay`, those request bodies are sent through the endpoint's router at `rate`
    per second, with the endpoint key.

    The replayed requests stop when the step ends; how the endpoint answered them is for
    the judge to read from its metrics, so they never fail the step here.
    """
    if not replay:
        time.sleep(seconds)
        return None
    scoring_uri = backend.get_endpoint(endpoint).scoring_uri
    with TrafficDriver(scoring_uri, backend.get_keys(endpoint), replay, rate) as driver:
        time.sleep(seconds)
    return driver.report()


@task(name="mark-endpoint-metrics", timeout_seconds=120, cache_policy=NO_CACHE)
def mark_metrics(backend: EndpointBackend, endpoint: str) -> MetricsMark:
    """Mark where a step's measurement starts: the time, and the endpoint's counters."""
    return backend.mark_metrics(endpoint)


@task(name="read-endpoint-metrics", timeout_seconds=120, cache_policy=NO_CACHE)
def read_metrics(backend: EndpointBackend, endpoint: str, since: MetricsMark) -> StepMetrics:
    """Requests, errors and p99 per deployment since the mark `since`."""
    return backend.get_step_metrics(endpoint, since)
