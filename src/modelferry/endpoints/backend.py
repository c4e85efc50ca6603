"""The `EndpointBackend` interface: one contract, implemented locally and on Azure ML."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import SecretStr

from modelferry.endpoints.counters import MetricsMark, StepMetrics
from modelferry.endpoints.spec import (
    DeploymentMetrics,
    DeploymentSpec,
    DeploymentState,
    EndpointSpec,
    EndpointState,
    TrafficSplit,
)
from modelferry.errors import OperationNotSupportedError


@dataclass(frozen=True)
class TrafficRollback:
    """What `rollback_traffic` did.

    Attributes:
        state: the endpoint after the rollback.
        replaced: the split in force before it.
        changes: how many recorded traffic changes it undid.
        release: the release it undid (e.g. "green (v2)"), None when it undid steps.
    """

    state: EndpointState
    replaced: TrafficSplit
    changes: int
    release: str | None


class EndpointBackend(ABC):
    """Runs online endpoints: create, deploy, route traffic, observe, delete.

    The contract every implementation keeps (the shared contract tests check it):

    - `create_or_update_*` are idempotent: the same spec twice leaves one endpoint or
      deployment, unchanged; a changed spec updates it in place.
    - `delete_*` of something that does not exist succeeds (it is already gone).
    - Methods that change things block until the change took effect or failed; each says
      how long it may take. None of them moves traffic implicitly: a new deployment gets
      0% until `set_traffic` says otherwise.
    - Unknown endpoints or deployments raise `EndpointNotFoundError`; invalid requests raise
      `InvalidEndpointSpecError`; a deployment that does not become ready raises
      `DeploymentFailedError` and is left in state "failed", never taking traffic.
    - Optional operations (`rollback_traffic`, `rotate_key`) that a backend does not offer
      raise `OperationNotSupportedError`, naming the backend, the operation and what to do
      instead; nothing is changed.
    """

    #: How messages name this backend ("local", "Azure ML"); the class name when empty.
    display_name: ClassVar[str] = ""

    @abstractmethod
    def create_or_update_endpoint(self, spec: EndpointSpec) -> EndpointState:
        """Create the endpoint, or update its description and tags.

        Blocks until it exists (seconds locally, minutes on Azure ML).
        """

    @abstractmethod
    def get_endpoint(self, name: str) -> EndpointState:
        """The endpoint's deployments, traffic and scoring URI.

        Raises:
            EndpointNotFoundError: no endpoint has this name.
        """

    @abstractmethod
    def list_endpoints(self) -> list[EndpointState]:
        """Every endpoint this backend manages, by name."""

    @abstractmethod
    def delete_endpoint(self, name: str) -> None:
        """Delete the endpoint and all its deployments; succeeds if it does not exist."""

    @abstractmethod
    def create_or_update_deployment(
        self, endpoint: str, spec: DeploymentSpec, timeout_s: float = 600.0
    ) -> DeploymentState:
        """Deploy `spec.model` under `spec.name`, with no traffic, and wait until it is ready.

        Ready means loaded and answering a smoke request. Blocks up to `timeout_s`.

        Raises:
            EndpointNotFoundError: the endpoint does not exist.
            DeploymentFailedError: it did not become ready in time (left "failed").
        """

    @abstractmethod
    def delete_deployment(self, endpoint: str, name: str) -> None:
        """Delete one deployment; succeeds if it does not exist.

        Raises:
            InvalidEndpointSpecError: it still takes live or mirrored traffic.
        """

    @abstractmethod
    def set_traffic(self, endpoint: str, traffic: TrafficSplit) -> EndpointState:
        """Replace the endpoint's traffic weights and mirroring, atomically.

        Every named deployment must exist and be ready. In-flight requests finish on the
        deployment they started on. Blocks until the new split is in force.

        Raises:
            EndpointNotFoundError: the endpoint or a named deployment does not exist.
            InvalidEndpointSpecError: a named deployment is not ready.
        """

    def rollback_traffic(self, endpoint: str, steps: int | None = None) -> TrafficRollback:
        """Undo the last release (`steps=None`), or the last `steps` traffic changes.

        A release begins with the first traffic change that gives a newly deployed model
        version traffic; undoing it restores the split in force before that change, in one
        step, however many canary steps followed. Optional: backends that keep no traffic
        history raise `OperationNotSupportedError` (this default).

        Raises:
            EndpointNotFoundError: the endpoint does not exist.
            InvalidEndpointSpecError: nothing (or fewer than `steps` changes) to undo.
            OperationNotSupportedError: the backend keeps no traffic history.
        """
        raise self._not_supported(
            endpoint,
            "rollback_traffic",
            "rolling back traffic",
            f"it keeps no earlier traffic split of endpoint {endpoint!r} to go back to; set "
            "the split you want instead with `set_traffic` (from a shell: `modelferry "
            f"endpoints traffic {endpoint} DEPLOYMENT=PERCENT ...`)",
        )

    @abstractmethod
    def get_keys(self, endpoint: str) -> SecretStr:
        """The endpoint's primary key, for `Authorization: Bearer <key>`."""

    def rotate_key(self, endpoint: str) -> SecretStr:
        """Replace the endpoint's primary key and return the new one.

        The new key is accepted once this returns; the old one is refused. Optional:
        backends that cannot rotate keys raise `OperationNotSupportedError` (this default).

        Raises:
            EndpointNotFoundError: the endpoint does not exist.
            OperationNotSupportedError: the backend cannot rotate keys.
        """
        raise self._not_supported(
            endpoint,
            "rotate_key",
            "rotating scoring keys",
            f"endpoint {endpoint!r} keeps the key it has; replace it with the tools of the "
            "service that runs the endpoint",
        )

    def _not_supported(
        self, endpoint: str, operation: str, doing: str, instead: str
    ) -> OperationNotSupportedError:
        """The error of an optional operation this backend does not offer."""
        backend = self.display_name or type(self).__name__
        return OperationNotSupportedError(
            f"the {backend} endpoint backend does not support {doing}: {instead}",
            endpoint=endpoint,
            backend=backend,
            operation=operation,
        )

    @abstractmethod
    def invoke(
        self,
        endpoint: str,
        payload: Mapping[str, Any],
        deployment: str | None = None,
    ) -> Any:
        """Send one scoring request through the endpoint (routed, or pinned to `deployment`).

        Returns the decoded JSON answer.
        """

    @abstractmethod
    def get_metrics(self, endpoint: str, since: datetime) -> dict[str, DeploymentMetrics]:
        """Requests, errors and p99 latency per deployment since `since`.

        A canary step is measured with `mark_metrics` and `get_step_metrics` instead,
        which are exact on backends that keep counters.
        """

    def mark_metrics(self, endpoint: str) -> MetricsMark:
        """Where a measurement starts (a canary step), for `get_step_metrics`.

        This default marks the time now. A backend whose endpoints keep cumulative
        counters returns them too, so that the step's counts are exact however many
        requests it sees.
        """
        return MetricsMark(datetime.now(UTC))

    def get_step_metrics(self, endpoint: str, mark: MetricsMark) -> StepMetrics:
        """Requests, errors and p99 latency per deployment since `mark`.

        Backends that tell routed requests from pinned ones count the routed ones only.
        This default asks `get_metrics` for the time since `mark.at`.
        """
        return StepMetrics(self.get_metrics(endpoint, mark.at))

    @abstractmethod
    def get_logs(self, endpoint: str, deployment: str, lines: int = 100) -> str:
        """The last `lines` lines of a deployment's log."""
