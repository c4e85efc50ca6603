"""Which Azure ML workspace: its subscription, resource group and name, and clients for it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from modelferry.endpoints.azureml.sdk import azure_sdk
from modelferry.errors import InvalidConfigError

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.core.credentials import TokenCredential

#: Environment variables naming the workspace when no value is given.
ENV_SUBSCRIPTION_ID = "AZUREML_SUBSCRIPTION_ID"
ENV_RESOURCE_GROUP = "AZUREML_RESOURCE_GROUP"
ENV_WORKSPACE = "AZUREML_WORKSPACE"


@dataclass(frozen=True)
class WorkspaceRef:
    """Where an Azure ML workspace is; holds no credentials.

    workspace = WorkspaceRef.resolve()  # from AZUREML_SUBSCRIPTION_ID, ...
    backend = AzureMLEndpointBackend(workspace.ml_client(), registry)
    """

    subscription_id: str
    resource_group: str
    workspace_name: str

    @property
    def resource_id(self) -> str:
        """The workspace's Azure resource id (online endpoints are resources below it)."""
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{self.workspace_name}"
        )

    @classmethod
    def resolve(
        cls,
        subscription_id: str | None = None,
        resource_group: str | None = None,
        workspace_name: str | None = None,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> WorkspaceRef:
        """The workspace from the values given, else from `AZUREML_*` environment variables.

        Raises:
            InvalidConfigError: a value is neither given nor set in the environment.
        """
        environ = os.environ if environ is None else environ
        given = {
            ENV_SUBSCRIPTION_ID: subscription_id or environ.get(ENV_SUBSCRIPTION_ID, ""),
            ENV_RESOURCE_GROUP: resource_group or environ.get(ENV_RESOURCE_GROUP, ""),
            ENV_WORKSPACE: workspace_name or environ.get(ENV_WORKSPACE, ""),
        }
        missing = [name for name, value in given.items() if not value.strip()]
        if missing:
            raise InvalidConfigError(
                f"the Azure ML workspace is not fully named: set {', '.join(missing)} "
                "(or give the subscription id, resource group and workspace name)"
            )
        return cls(*(value.strip() for value in given.values()))

    def ml_client(self, credential: TokenCredential | None = None) -> MLClient:
        """An `MLClient` for the workspace; no call is made yet.

        Without `credential`, `DefaultAzureCredential` signs in: a service principal from
        AZURE_CLIENT_ID / AZURE_TENANT_ID / AZURE_CLIENT_SECRET, a workload or managed
        identity, or an Azure CLI login.
        """
        with azure_sdk("Azure ML workspaces"):
            from azure.ai.ml import MLClient
            from azure.identity import DefaultAzureCredential

        return MLClient(
            credential or DefaultAzureCredential(),
            subscription_id=self.subscription_id,
            resource_group_name=self.resource_group,
            workspace_name=self.workspace_name,
        )
