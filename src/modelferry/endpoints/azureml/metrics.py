"""Deployment metrics from Azure Monitor: the platform metrics of managed online endpoints.

Azure ML publishes, per online endpoint and minute, `RequestsPerMinute` (dimensions
`deployment`, `statusCode`, `statusCodeClass`, `modelStatusCode`) and `RequestLatency_P99`
(dimension `deployment`), both with the aggregation "Average". `AzureMonitorMetrics` reads
them with azure-monitor-query's `MetricsQueryClient` and turns them into the
`DeploymentMetrics` that `AzureMLEndpointBackend.get_metrics` returns and the rollout judge
reads: requests, 5xx errors and p99 latency of one deployment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from modelferry.endpoints.azureml.sdk import azure_sdk, first_line
from modelferry.endpoints.azureml.workspace import WorkspaceRef
from modelferry.endpoints.spec import DeploymentMetrics
from modelferry.errors import EndpointError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.monitor.query import Metric, MetricsQueryClient

REQUESTS = "RequestsPerMinute"
LATENCY_P99 = "RequestLatency_P99"
#: The metrics' time grain; each point covers one minute.
GRANULARITY = timedelta(minutes=1)
# "Average" is the aggregation Azure ML documents for both metrics. An average is taken
# over every dimension the query does not split by, so requests are split by all of them:
# each series then holds the count of one status code per minute, and counts add up.
_AGGREGATION = "Average"
_REQUEST_SPLIT = ("statusCode", "modelStatusCode")
_MAX_SERIES = 100


def _now() -> datetime:
    return datetime.now(UTC)


class AzureMonitorMetrics:
    """A `MetricsSource`: measures one deployment of a workspace's online endpoints.

    Called as `source(azure_endpoint, azure_deployment, since)`, it sums the requests per
    minute since `since` (errors are the 5xx answers) and gives the p99 latency as the
    mean of the per-minute p99s, weighted by their requests.

    Azure Monitor holds whole minutes, and a minute's metrics arrive one to three minutes
    after it: a window of a minute or two that ends now may show few or no requests, and
    the minute holding `since` counts in full.

    Args:
        client: an `azure.monitor.query.MetricsQueryClient` (or a fake with its signature).
        workspace: the workspace whose endpoints are measured.
        clock: the current time, timezone-aware (tests pass a fixed one).
    """

    def __init__(
        self,
        client: MetricsQueryClient,
        workspace: WorkspaceRef,
        *,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        """Bind to a metrics client; no call is made yet."""
        self._client = client
        self._workspace = workspace
        self._clock = clock

    @classmethod
    def for_workspace(
        cls, workspace: WorkspaceRef, credential: TokenCredential | None = None
    ) -> AzureMonitorMetrics:
        """Metrics of `workspace`, signed in with `credential`.

        The credential is a `DefaultAzureCredential` when None. The identity needs the
        Monitoring Reader role on the endpoints.
        """
        with azure_sdk("Azure Monitor metrics"):
            from azure.identity import DefaultAzureCredential
            from azure.monitor.query import MetricsQueryClient

        return cls(MetricsQueryClient(credential or DefaultAzureCredential()), workspace)

    def endpoint_resource_id(self, endpoint: str) -> str:
        """The Azure resource id of online endpoint `endpoint` (its Azure name)."""
        return f"{self._workspace.resource_id}/onlineEndpoints/{endpoint}"

    def __call__(self, endpoint: str, deployment: str, since: datetime) -> DeploymentMetrics:
        """Requests, 5xx errors and p99 latency of `deployment` from `since` until now.

        `endpoint` and `deployment` are Azure names; a naive `since` is taken as UTC.

        Raises:
            EndpointError: Azure Monitor refused the query (e.g. no Monitoring Reader role).
        """
        start = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
        end = self._clock()
        if start >= end:
            return DeploymentMetrics(0, 0, None)
        only = f"deployment eq '{_quote(deployment)}'"
        split = " and ".join(f"{dimension} eq '*'" for dimension in _REQUEST_SPLIT)
        requests = self._query(endpoint, deployment, REQUESTS, f"{only} and {split}", start, end)
        latency = self._query(endpoint, deployment, LATENCY_P99, only, start, end)

        per_minute: dict[datetime, float] = {}
        errors = 0.0
        for series in requests.timeseries if requests is not None else []:
            failed = _dimension(series.metadata_values, "statusCode").startswith("5")
            for point in series.data:
                count = point.average or 0.0
                per_minute[point.timestamp] = per_minute.get(point.timestamp, 0.0) + count
                errors += count if failed else 0.0
        return DeploymentMetrics(
            requests=round(sum(per_minute.values())),
            errors=round(errors),
            p99_latency_ms=_weighted_p99(latency, per_minute),
        )

    def _query(
        self,
        endpoint: str,
        deployment: str,
        metric: str,
        where: str,
        start: datetime,
        end: datetime,
    ) -> Metric | None:
        with _monitor_errors(f"{metric} of {endpoint}/{deployment}"):
            result = self._client.query_resource(
                self.endpoint_resource_id(endpoint),
                [metric],
                timespan=(start, end),
                granularity=GRANULARITY,
                aggregations=[_AGGREGATION],
                max_results=_MAX_SERIES,
                filter=where,
            )
        return next((m for m in result.metrics if m.name.lower() == metric.lower()), None)


def _weighted_p99(latency: Metric | None, requests: dict[datetime, float]) -> float | None:
    points = [
        (point.timestamp, float(point.average))
        for series in (latency.timeseries if latency is not None else [])
        for point in series.data
        if point.average is not None
    ]
    if not points:
        return None
    weights = [requests.get(timestamp, 0.0) for timestamp, _ in points]
    if sum(weights) <= 0:
        # Latency without request counts (the two metrics arrive separately): the worst
        # minute is the safe reading for a canary.
        return max(value for _, value in points)
    return sum(w * value for w, (_, value) in zip(weights, points, strict=True)) / sum(weights)


def _dimension(values: dict[str, str], name: str) -> str:
    # Azure Monitor answers dimension names in its own casing ("statuscode").
    return next((str(v) for k, v in values.items() if k.lower() == name.lower()), "")


def _quote(value: str) -> str:
    return value.replace("'", "''")


@contextmanager
def _monitor_errors(what: str) -> Iterator[None]:
    with azure_sdk("Azure Monitor metrics"):
        from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError
    try:
        yield
    except ClientAuthenticationError as exc:
        raise EndpointError(
            f"Azure Monitor did not accept the sign-in reading {what}: {first_line(exc)}"
        ) from exc
    except HttpResponseError as exc:
        hint = (
            "; the identity needs the Monitoring Reader role on the endpoint"
            if exc.status_code == 403
            else ""
        )
        raise EndpointError(
            f"Azure Monitor refused reading {what}: {first_line(exc)}{hint}"
        ) from exc
    except AzureError as exc:
        raise EndpointError(f"Azure Monitor failed reading {what}: {first_line(exc)}") from exc
