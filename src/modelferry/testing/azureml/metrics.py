"""`FakeMetricsQueryClient`: Azure Monitor's metrics of online endpoints, in memory, for tests.

Its `query_resource` has the signature of azure-monitor-query's
`MetricsQueryClient.query_resource` (a test compares them with `inspect.signature`) and
answers with the SDK's own result types. It keeps samples as Azure ML emits them, one per
minute and combination of dimension values, and aggregates them as Azure Monitor does:
`$filter` selects (`dim eq 'value'`) and splits (`dim eq '*'`), every dimension left
unsplit is averaged over, a time grain without data holds `average=None`, and at most
`max_results` series (10 by default) come back. It refuses what Azure Monitor refuses:
unknown metrics, dimensions a metric lacks, aggregations other than "Average".

    metrics = FakeMetricsQueryClient()
    metrics.record_requests(resource_id, "blue", minute, 120)
    metrics.record_requests(resource_id, "blue", minute, 3, status_code=503)
    metrics.record_latency(resource_id, "blue", minute, 41.0)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from modelferry.endpoints.azureml.sdk import azure_sdk
from modelferry.testing.azureml.scoring import refused

with azure_sdk("FakeMetricsQueryClient"):
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
    )
    from azure.monitor.query import Metric, MetricsQueryResult, MetricValue, TimeSeriesElement

__all__ = ["DIMENSIONS", "FakeMetricsQueryClient", "MetricSample"]

#: Dimensions Azure ML publishes per metric of an online endpoint, and their units.
DIMENSIONS: dict[str, tuple[str, ...]] = {
    "RequestsPerMinute": ("deployment", "statusCode", "statusCodeClass", "modelStatusCode"),
    "RequestLatency_P99": ("deployment",),
}
_UNITS = {"RequestsPerMinute": "Count", "RequestLatency_P99": "MilliSeconds"}
_NAMESPACE = "microsoft.machinelearningservices/workspaces/onlineendpoints"
_CONDITION = re.compile(r"^\s*(\w+)\s+eq\s+'((?:[^']|'')*)'\s*$", re.IGNORECASE)
_DEFAULT_TOP = 10

Timespan = timedelta | tuple[datetime, timedelta] | tuple[datetime, datetime]


@dataclass(frozen=True)
class MetricSample:
    """One value Azure ML emitted: a metric of a resource, for one minute and dimension set."""

    resource_id: str
    metric: str
    minute: datetime
    dimensions: tuple[tuple[str, str], ...]
    value: float


class FakeMetricsQueryClient:
    """Stands in for `azure.monitor.query.MetricsQueryClient`; see the module docstring.

    Attributes:
        samples: every sample recorded.
        queries: the keyword arguments of every `query_resource` call, with the resource.
    """

    def __init__(self, *, region: str = "westeurope") -> None:
        """An empty metrics store; `region` is reported as the resources' region."""
        self.region = region
        self.samples: list[MetricSample] = []
        self.queries: list[dict[str, Any]] = []
        self._failures: list[HttpResponseError] = []

    def record_requests(
        self,
        resource_id: str,
        deployment: str,
        minute: datetime,
        count: int,
        *,
        status_code: int = 200,
        model_status_code: int | None = None,
    ) -> None:
        """`count` requests to `deployment` in `minute` answered `status_code`."""
        model_status = status_code if model_status_code is None else model_status_code
        dimensions = {
            "deployment": deployment,
            "statusCode": str(status_code),
            "statusCodeClass": f"{str(status_code)[0]}xx",
            "modelStatusCode": str(model_status),
        }
        self._record(resource_id, "RequestsPerMinute", minute, dimensions, float(count))

    def record_latency(
        self, resource_id: str, deployment: str, minute: datetime, p99_ms: float
    ) -> None:
        """The p99 request latency of `deployment` in `minute`."""
        self._record(resource_id, "RequestLatency_P99", minute, {"deployment": deployment}, p99_ms)

    def fail_next_query(self, message: str = "AuthorizationFailed", status: int = 403) -> None:
        """The next query is refused with `status`, raised as azure-core maps it.

        401 is raised as `ClientAuthenticationError`, 404 as `ResourceNotFoundError`.
        """
        error = refused(message, status)
        mapped = {401: ClientAuthenticationError, 404: ResourceNotFoundError}.get(status)
        if mapped is not None:
            error = mapped(message=error.message)
            error.status_code = status
        self._failures.append(error)

    def query_resource(
        self,
        resource_uri: str,
        metric_names: Sequence[str],
        *,
        timespan: Timespan | None = None,
        granularity: timedelta | None = None,
        aggregations: Sequence[str] | None = None,
        max_results: int | None = None,
        order_by: str | None = None,
        filter: str | None = None,
        metric_namespace: str | None = None,
        **kwargs: Any,
    ) -> MetricsQueryResult:
        """Aggregate the recorded samples as Azure Monitor answers a metrics query."""
        self.queries.append(
            {
                "resource_uri": resource_uri,
                "metric_names": list(metric_names),
                "timespan": timespan,
                "granularity": granularity,
                "aggregations": list(aggregations or []),
                "max_results": max_results,
                "filter": filter,
            }
        )
        if self._failures:
            raise self._failures.pop(0)
        grain = granularity or timedelta(minutes=1)
        if grain < timedelta(minutes=1) or grain % timedelta(minutes=1):
            raise refused(f"granularity {grain} is not a whole number of minutes")
        if any(a.lower() != "average" for a in aggregations or ["Average"]):
            raise refused(f"aggregations {list(aggregations or [])}: these metrics have Average")
        start, end = _window(timespan)
        conditions = _parse_filter(filter)
        metrics = [
            self._metric(resource_uri, name, conditions, start, end, grain, max_results)
            for name in metric_names
        ]
        return MetricsQueryResult(
            timespan=f"{start.isoformat()}/{end.isoformat()}",
            granularity=grain,
            namespace=_NAMESPACE,
            resource_region=self.region,
            cost=len(metrics),
            metrics=metrics,
        )

    def _metric(
        self,
        resource_uri: str,
        name: str,
        conditions: list[tuple[str, str]],
        start: datetime,
        end: datetime,
        grain: timedelta,
        max_results: int | None,
    ) -> Metric:
        known = next((m for m in DIMENSIONS if m.lower() == name.lower()), None)
        if known is None:
            raise refused(
                f"Failed to find metric configuration for provider: {_NAMESPACE}, metric: {name}"
            )
        dimensions = {d.lower(): d for d in DIMENSIONS[known]}
        unknown = [d for d, _ in conditions if d.lower() not in dimensions]
        if unknown:
            used = ",".join(d.lower() for d, _ in conditions)
            raise refused(
                f"Metric: {known} does not support requested dimension combination: {used}, "
                f"supported ones are: {','.join(dimensions)}"
            )
        split = [d.lower() for d, value in conditions if value == "*"]
        fixed = {d.lower(): value.lower() for d, value in conditions if value != "*"}
        first = _floor(start, grain)
        groups: dict[tuple[str, ...], dict[datetime, list[float]]] = {}
        for sample in self.samples:
            values = {k.lower(): v for k, v in sample.dimensions}
            if (
                sample.resource_id.lower() != resource_uri.lower()
                or sample.metric != known
                or not first <= sample.minute < end
                or any(values.get(d, "").lower() != v for d, v in fixed.items())
            ):
                continue
            key = tuple(values.get(d, "") for d in split)
            groups.setdefault(key, {}).setdefault(_floor(sample.minute, grain), []).append(
                sample.value
            )
        if not split and not groups:
            groups[()] = {}  # an unsplit query answers one series, empty or not
        grains = [first + i * grain for i in range(int((end - first) / grain) + 1)]
        grains = [g for g in grains if g < end]
        ranked = sorted(groups.items(), key=lambda kv: -sum(map(sum, kv[1].values())))
        series = [
            TimeSeriesElement(
                metadata_values={
                    **{d: fixed[d] for d in fixed},
                    **dict(zip(split, key, strict=True)),
                },
                data=[
                    MetricValue(
                        timestamp=g,
                        average=sum(by_grain[g]) / len(by_grain[g]) if g in by_grain else None,
                    )
                    for g in grains
                ],
            )
            for key, by_grain in ranked[: max_results or _DEFAULT_TOP]
        ]
        return Metric(
            id=f"{resource_uri}/providers/Microsoft.Insights/metrics/{known}",
            type="Microsoft.Insights/metrics",
            name=known,
            unit=_UNITS[known],
            timeseries=series,
            display_description=f"{known} of the online endpoint",
        )

    def _record(
        self,
        resource_id: str,
        metric: str,
        minute: datetime,
        dimensions: dict[str, str],
        value: float,
    ) -> None:
        at = _floor(minute if minute.tzinfo else minute.replace(tzinfo=UTC), timedelta(minutes=1))
        self.samples.append(MetricSample(resource_id, metric, at, tuple(dimensions.items()), value))


def _window(timespan: Timespan | None) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    if timespan is None:
        return now - timedelta(hours=1), now
    if isinstance(timespan, timedelta):
        return now - timespan, now
    start, second = timespan
    end = start + second if isinstance(second, timedelta) else second
    if start >= end:
        raise refused(f"timespan {start.isoformat()}/{end.isoformat()} is empty")
    return start, end


def _parse_filter(text: str | None) -> list[tuple[str, str]]:
    if not text:
        return []
    conditions = []
    for part in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE):
        match = _CONDITION.match(part)
        if match is None:
            raise refused(f"$filter {text!r}: expected conditions like dimension eq 'value'")
        conditions.append((match[1], match[2].replace("''", "'")))
    return conditions


def _floor(moment: datetime, grain: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((moment - epoch) // grain) * grain
