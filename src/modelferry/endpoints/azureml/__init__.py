"""Azure ML managed online endpoints as an `EndpointBackend`.

The azure-ai-ml SDK (and azure-monitor-query, for metrics) is an optional extra
(`pip install 'modelferry[azure]'`), imported only when a method needs it.
`modelferry.testing.azureml.FakeMLClient` stands in for `MLClient` in tests, and
`modelferry.testing.azureml.FakeMetricsQueryClient` for Azure Monitor's
`MetricsQueryClient`, with the SDKs' method signatures.
"""

from modelferry.endpoints.azureml.backend import AzureMLEndpointBackend, MetricsSource
from modelferry.endpoints.azureml.metrics import AzureMonitorMetrics
from modelferry.endpoints.azureml.sdk import INSTALL_HINT, azure_sdk
from modelferry.endpoints.azureml.workspace import WorkspaceRef

__all__ = [
    "INSTALL_HINT",
    "AzureMLEndpointBackend",
    "AzureMonitorMetrics",
    "MetricsSource",
    "WorkspaceRef",
    "azure_sdk",
]
