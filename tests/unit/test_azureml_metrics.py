"""Azure Monitor metrics of online endpoints, against `FakeMetricsQueryClient`."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.monitor.query import (
    Metric,
    MetricsQueryClient,
    MetricsQueryResult,
    MetricValue,
    TimeSeriesElement,
)

from modelferry.endpoints.azureml import AzureMLEndpointBackend, AzureMonitorMetrics, WorkspaceRef
from modelferry.endpoints.counters import MetricsMark, StepMetrics
from modelferry.endpoints.naming import azure_name
from modelferry.endpoints.rollout import RolloutPolicy, judge_measured_step, judge_step
from modelferry.endpoints.spec import DeploymentMetrics, DeploymentSpec, EndpointSpec, ModelRef
from modelferry.errors import EndpointError, InvalidConfigError
from modelferry.registry import ModelRegistry, TrackingSettings
from modelferry.testing.azureml.metrics import FakeMetricsQueryClient
from modelferry.testing.azureml.ml_client import FakeMLClient
from tests import model_fixtures

WORKSPACE = WorkspaceRef("sub-1", "rg", "ws")
ENDPOINT_ID = (
    "/subscriptions/sub-1/resourceGroups/rg/providers/"
    "Microsoft.MachineLearningServices/workspaces/ws/onlineEndpoints/churn"
)
NOW = datetime(2026, 11, 3, 12, 0, 30, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@pytest.fixture
def monitor() -> FakeMetricsQueryClient:
    return FakeMetricsQueryClient()


@pytest.fixture
def source(monitor: FakeMetricsQueryClient) -> AzureMonitorMetrics:
    return AzureMonitorMetrics(monitor, WORKSPACE, clock=lambda: NOW)  # type: ignore[arg-type]


def minute(ago: int) -> datetime:
    """The start of the minute `ago` minutes before the one holding NOW."""
    return NOW.replace(second=0) - ago * MINUTE


def test_fake_query_resource_has_the_sdk_signature() -> None:
    def shape(function: Any) -> list[tuple[str, Any, Any]]:
        parameters = inspect.signature(function).parameters.values()
        return [(p.name, p.kind, p.default) for p in parameters]

    fake = FakeMetricsQueryClient.query_resource
    assert shape(fake) == shape(MetricsQueryClient.query_resource)


def test_fake_answers_with_the_sdk_result_types(monitor: FakeMetricsQueryClient) -> None:
    monitor.record_requests(ENDPOINT_ID, "blue", minute(1), 12)
    result = monitor.query_resource(
        ENDPOINT_ID,
        ["RequestsPerMinute"],
        timespan=(minute(3), NOW),
        granularity=MINUTE,
        aggregations=["Average"],
        filter="deployment eq 'blue'",
    )
    assert isinstance(result, MetricsQueryResult)
    (metric,) = result.metrics
    assert isinstance(metric, Metric)
    (series,) = metric.timeseries
    assert isinstance(series, TimeSeriesElement)
    assert all(isinstance(point, MetricValue) for point in series.data)
    # Every minute of the window is answered; those without data hold None.
    assert [(p.timestamp, p.average) for p in series.data] == [
        (minute(3), None),
        (minute(2), None),
        (minute(1), 12.0),
        (minute(0), None),
    ]


def test_fake_refuses_what_azure_monitor_refuses(monitor: FakeMetricsQueryClient) -> None:
    window = {"timespan": (minute(3), NOW), "granularity": MINUTE}
    with pytest.raises(HttpResponseError, match="does not support requested dimension"):
        monitor.query_resource(
            ENDPOINT_ID, ["RequestLatency_P99"], filter="statusCode eq '*'", **window
        )
    with pytest.raises(HttpResponseError, match="Failed to find metric configuration"):
        monitor.query_resource(ENDPOINT_ID, ["RequestCount"], **window)
    with pytest.raises(HttpResponseError, match="Average"):
        monitor.query_resource(ENDPOINT_ID, ["RequestsPerMinute"], aggregations=["Total"], **window)


def test_requests_errors_and_p99_of_one_deployment(
    monitor: FakeMetricsQueryClient, source: AzureMonitorMetrics
) -> None:
    monitor.record_requests(ENDPOINT_ID, "blue", minute(2), 100)
    monitor.record_requests(ENDPOINT_ID, "blue", minute(2), 4, status_code=400)
    # Two kinds of 5xx in one minute: averaged over, they would count 3, not 6.
    monitor.record_requests(ENDPOINT_ID, "blue", minute(2), 2, status_code=500)
    monitor.record_requests(ENDPOINT_ID, "blue", minute(2), 4, status_code=502, model_status_code=0)
    monitor.record_requests(ENDPOINT_ID, "blue", minute(1), 290)
    monitor.record_latency(ENDPOINT_ID, "blue", minute(2), 80.0)
    monitor.record_latency(ENDPOINT_ID, "blue", minute(1), 40.0)
    # Other deployments, and blue before the window, do not count.
    monitor.record_requests(ENDPOINT_ID, "green", minute(1), 1000, status_code=503)
    monitor.record_latency(ENDPOINT_ID, "green", minute(1), 900.0)
    monitor.record_requests(ENDPOINT_ID, "blue", minute(9), 500, status_code=500)

    measured = source("churn", "blue", minute(2) + timedelta(seconds=10))

    assert measured.requests == 400
    assert measured.errors == 6  # the 5xx answers; a 400 is the client's error
    # The per-minute p99s, weighted by each minute's requests.
    assert measured.p99_latency_ms == pytest.approx((110 * 80.0 + 290 * 40.0) / 400)


def test_queries_name_the_endpoint_and_filter_the_deployment(
    monitor: FakeMetricsQueryClient, source: AzureMonitorMetrics
) -> None:
    since = minute(5)
    source("churn", "blue", since)
    requests, latency = monitor.queries
    assert {requests["resource_uri"], latency["resource_uri"]} == {ENDPOINT_ID}
    assert requests["metric_names"] == ["RequestsPerMinute"]
    assert latency["metric_names"] == ["RequestLatency_P99"]
    for query in (requests, latency):
        assert query["timespan"] == (since, NOW)
        assert query["granularity"] == MINUTE
        assert query["aggregations"] == ["Average"]
        assert query["filter"].startswith("deployment eq 'blue'")
    assert latency["filter"] == "deployment eq 'blue'"


def test_no_traffic_measures_nothing(source: AzureMonitorMetrics) -> None:
    assert source("churn", "blue", minute(5)) == DeploymentMetrics(0, 0, None)
    assert source("churn", "blue", NOW + MINUTE) == DeploymentMetrics(0, 0, None)


def test_naive_since_is_utc(monitor: FakeMetricsQueryClient, source: AzureMonitorMetrics) -> None:
    monitor.record_requests(ENDPOINT_ID, "blue", minute(1), 7)
    assert source("churn", "blue", minute(2).replace(tzinfo=None)).requests == 7


@pytest.mark.parametrize(
    ("status", "expected"),
    [(403, "Monitoring Reader role"), (401, "did not accept the sign-in"), (500, "refused")],
)
def test_refused_query_raises_endpoint_error(
    monitor: FakeMetricsQueryClient, source: AzureMonitorMetrics, status: int, expected: str
) -> None:
    monitor.fail_next_query("AuthorizationFailed", status)
    with pytest.raises(EndpointError, match=expected) as info:
        source("churn", "blue", minute(5))
    assert "RequestsPerMinute of churn/blue" in str(info.value)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> TrackingSettings:
    return model_fixtures.register_versions(tmp_path_factory.mktemp("azureml-metrics"))


def test_backend_measures_each_deployment_for_the_rollout_judge(
    settings: TrackingSettings, tmp_path: Path, monitor: FakeMetricsQueryClient
) -> None:
    client = FakeMLClient(tmp_path / "workspace", subscription_id="sub-1",
                          resource_group_name="rg", workspace_name="ws")  # fmt: skip
    source = AzureMonitorMetrics(monitor, WORKSPACE, clock=lambda: NOW)  # type: ignore[arg-type]
    backend = AzureMLEndpointBackend(
        client, ModelRegistry(settings), metrics_source=source, poll_interval_s=0.01
    )
    backend.create_or_update_endpoint(EndpointSpec("Churn_EP"))
    for slot, version in (("blue", "1"), ("Green_2", "2")):
        ref = ModelRef(model_fixtures.MODEL_NAME, version=version)
        backend.create_or_update_deployment("Churn_EP", DeploymentSpec(slot, ref))
    resource = f"{WORKSPACE.resource_id}/onlineEndpoints/{azure_name('Churn_EP')}"
    green = azure_name("Green_2")
    for ago in (2, 1):
        monitor.record_requests(resource, "blue", minute(ago), 200)
        monitor.record_requests(resource, "blue", minute(ago), 1, status_code=500)
        monitor.record_latency(resource, "blue", minute(ago), 30.0)
        monitor.record_requests(resource, green, minute(ago), 40)
        monitor.record_requests(resource, green, minute(ago), 10, status_code=503)
        monitor.record_latency(resource, green, minute(ago), 35.0)

    metrics = backend.get_metrics("Churn_EP", minute(2))

    assert metrics == {
        "blue": DeploymentMetrics(402, 2, 30.0),
        "Green_2": DeploymentMetrics(100, 20, 35.0),
    }
    verdict = judge_step(metrics["Green_2"], metrics["blue"], RolloutPolicy())
    assert not verdict.passed
    assert "error rate 20.0%" in verdict.reason
    # A canary step on Azure ML is the time window from its mark on.
    step = backend.get_step_metrics("Churn_EP", MetricsMark(minute(2)))
    assert step == StepMetrics(metrics)
    assert judge_measured_step(step, "Green_2", "blue", RolloutPolicy()) == verdict


def test_workspace_from_values_or_environment() -> None:
    environ = {
        "AZUREML_SUBSCRIPTION_ID": "sub-env",
        "AZUREML_RESOURCE_GROUP": "rg-env",
        "AZUREML_WORKSPACE": "ws-env",
    }
    assert WorkspaceRef.resolve(environ=environ) == WorkspaceRef("sub-env", "rg-env", "ws-env")
    given = WorkspaceRef.resolve("sub-1", workspace_name="ws", environ=environ)
    assert given == WorkspaceRef("sub-1", "rg-env", "ws")
    with pytest.raises(InvalidConfigError, match="AZUREML_RESOURCE_GROUP, AZUREML_WORKSPACE"):
        WorkspaceRef.resolve("sub-1", environ={})
