"""What an endpoint is: named deployments of registered model versions, and traffic.

These are plain values shared by every `EndpointBackend`; a backend turns them into
server processes (local) or Azure ML entities (azureml).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from modelferry.errors import InvalidEndpointSpecError

DeploymentStatus = Literal["creating", "ready", "failed", "stopped"]

#: Azure ML allows at most this share of traffic to be mirrored to one deployment.
MAX_MIRROR_PERCENT = 50


@dataclass(frozen=True)
class ModelRef:
    """A registered model, by version or by alias (exactly one of them).

    A backend resolves an alias to a version when the deployment is created, so that a
    deployment keeps serving the same model when the alias later moves.
    """

    name: str
    version: str | None = None
    alias: str | None = None

    def __post_init__(self) -> None:
        if (self.version is None) == (self.alias is None):
            raise InvalidEndpointSpecError(
                f"model {self.name!r}: give a version or an alias, exactly one"
            )

    @property
    def uri(self) -> str:
        """`models:/NAME/VERSION` or `models:/NAME@ALIAS`."""
        if self.version is not None:
            return f"models:/{self.name}/{self.version}"
        return f"models:/{self.name}@{self.alias}"


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment of an endpoint: a model version and the resources serving it.

    Attributes:
        name: e.g. "blue" or "green"; unique within the endpoint.
        model: the registered model it serves.
        instance_type: Azure ML VM size; the local backend ignores it.
        instance_count: replicas (Azure ML); the local backend runs one.
        request_timeout_ms: how long one scoring request may take.
        max_concurrent_requests: per instance, before requests queue (Azure ML).
    """

    name: str
    model: ModelRef
    instance_type: str = "Standard_DS3_v2"
    instance_count: int = 1
    request_timeout_ms: int = 5000
    max_concurrent_requests: int = 1

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidEndpointSpecError("a deployment needs a name, e.g. 'blue'")
        if self.instance_count < 1:
            raise InvalidEndpointSpecError(
                f"deployment {self.name!r}: instance_count must be at least 1"
            )


@dataclass(frozen=True)
class TrafficSplit:
    """Weights (percent, summing to 100) over deployments, plus optional mirroring.

    Mirrored traffic copies a share of all requests to a deployment and discards its
    answers; a deployment cannot both take live traffic and be mirrored to.
    """

    weights: Mapping[str, int] = field(default_factory=dict)
    mirror: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, weight in {**self.weights, **self.mirror}.items():
            if not 0 <= weight <= 100:
                raise InvalidEndpointSpecError(
                    f"traffic for {name!r} is {weight}; use a percentage from 0 to 100"
                )
        live = {name for name, weight in self.weights.items() if weight > 0}
        if live and sum(self.weights.values()) != 100:
            raise InvalidEndpointSpecError(
                f"traffic weights {dict(self.weights)} sum to {sum(self.weights.values())}; "
                "they must sum to 100"
            )
        for name, percent in self.mirror.items():
            if percent > MAX_MIRROR_PERCENT:
                raise InvalidEndpointSpecError(
                    f"mirror traffic to {name!r} is {percent}%; at most "
                    f"{MAX_MIRROR_PERCENT}% can be mirrored"
                )
            if percent > 0 and name in live:
                raise InvalidEndpointSpecError(
                    f"{name!r} takes live traffic; mirror only to a deployment with none"
                )

    @property
    def deployments(self) -> set[str]:
        """Every deployment named with a non-zero share."""
        return {n for n, w in {**self.weights, **self.mirror}.items() if w > 0}

    def with_weights(self, weights: Mapping[str, int]) -> TrafficSplit:
        """A copy with new live weights; mirroring to a deployment given live traffic stops."""
        mirror = {n: p for n, p in self.mirror.items() if weights.get(n, 0) == 0}
        return TrafficSplit(dict(weights), mirror)


@dataclass(frozen=True)
class EndpointSpec:
    """An online endpoint: a stable scoring URL with key auth in front of its deployments."""

    name: str
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeploymentState:
    """A deployment as the backend sees it now."""

    name: str
    model_name: str
    model_version: str
    status: DeploymentStatus
    detail: str = ""


@dataclass(frozen=True)
class EndpointState:
    """An endpoint as the backend sees it now."""

    name: str
    scoring_uri: str
    deployments: tuple[DeploymentState, ...]
    traffic: TrafficSplit

    def deployment(self, name: str) -> DeploymentState | None:
        """The deployment called `name`, if it exists."""
        return next((d for d in self.deployments if d.name == name), None)


@dataclass(frozen=True)
class DeploymentMetrics:
    """What an endpoint measured for one deployment since a point in time."""

    requests: int
    errors: int
    p99_latency_ms: float | None

    @property
    def error_rate(self) -> float:
        """Errors per request (0 when there were no requests)."""
        return self.errors / self.requests if self.requests else 0.0
