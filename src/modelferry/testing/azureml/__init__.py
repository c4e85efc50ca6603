"""Azure ML and Azure Monitor in memory, for tests of code that drives Azure ML endpoints.

`FakeMLClient` stands in for `azure.ai.ml.MLClient` (online and batch endpoints,
deployments, models, jobs) and `FakeMetricsQueryClient` for Azure Monitor's
`MetricsQueryClient`; both keep the SDKs' method signatures and entities:

    from modelferry.endpoints.azureml import AzureMLEndpointBackend, AzureMonitorMetrics
    from modelferry.testing.azureml import FakeMetricsQueryClient, FakeMLClient

    client = FakeMLClient(tmp_path)
    backend = AzureMLEndpointBackend(client, registry)
    client.fail_next_deployment("green", "ImagePullFailure")

Needs the `azure` extra (`pip install 'modelferry[azure]'`). Each name is imported when
first used, so `FakeMetricsQueryClient` alone does not import azure-ai-ml.
"""

from typing import TYPE_CHECKING

from modelferry.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from modelferry.testing.azureml.batch import FakeBatchJob
    from modelferry.testing.azureml.metrics import FakeMetricsQueryClient, MetricSample
    from modelferry.testing.azureml.ml_client import FakeMLClient, FakeModelOperations

__all__ = [
    "FakeBatchJob",
    "FakeMLClient",
    "FakeMetricsQueryClient",
    "FakeModelOperations",
    "MetricSample",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "FakeBatchJob": "batch",
        "FakeMLClient": "ml_client",
        "FakeMetricsQueryClient": "metrics",
        "FakeModelOperations": "ml_client",
        "MetricSample": "metrics",
    },
)
