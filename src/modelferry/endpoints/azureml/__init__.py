"""Azure ML managed online endpoints as an `EndpointBackend`.

The azure-ai-ml SDK is an optional extra (`pip install 'modelferry[azure]'`), imported
only when a method needs it. `modelferry.endpoints.azureml.fake.FakeMLClient` stands in
for `MLClient` in tests, with the SDK's method signatures.
"""

from modelferry.endpoints.azureml.backend import AzureMLEndpointBackend, MetricsSource
from modelferry.endpoints.azureml.sdk import INSTALL_HINT, azure_sdk

__all__ = ["INSTALL_HINT", "AzureMLEndpointBackend", "MetricsSource", "azure_sdk"]
