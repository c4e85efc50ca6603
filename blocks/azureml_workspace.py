"""Prefect block: an Azure ML workspace and how to sign in to it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ConfigDict, Field, SecretStr, model_validator

from blocks.azure_credentials import AzureServicePrincipal
from blocks.base import EndpointBackendBlock
from modelferry.endpoints.azureml import (
    AzureMLEndpointBackend,
    AzureMonitorMetrics,
    WorkspaceRef,
)
from modelferry.registry import ModelRegistry

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.identity import ClientSecretCredential, DefaultAzureCredential

# The order the inline fields' messages have always named them in.
_SERVICE_PRINCIPAL = ("client_id", "tenant_id", "client_secret")


class AzureMLWorkspace(EndpointBackendBlock):
    """An Azure ML workspace whose managed online endpoints modelferry deploys to.

    Signs in preferably with a saved `AzureServicePrincipal` in `credentials` (one
    principal for many blocks); else with a service principal inline (client_id, tenant_id
    and client_secret, all three) or, with none of them, with `DefaultAzureCredential`
    (environment, workload or managed identity, Azure CLI login);
    `managed_identity_client_id` picks a user-assigned identity for the latter. The
    identity needs to manage online endpoints and, for the canary checks, to read their
    metrics (Monitoring Reader).

    Deployments run modelferry's scoring script (class probabilities) unless
    `no_code_mlflow` asks for Azure ML's no-code MLflow server, which answers labels.

        AzureMLWorkspace(subscription_id="...", resource_group="ml-rg",
                         workspace_name="ml-weu",
                         credentials=AzureServicePrincipal.load("modelferry-sp"),
                         ).save("production")
    """

    _block_type_name = "modelferry Azure ML Workspace"
    _block_type_slug = "modelferry-azureml-workspace"
    _description = "Azure ML workspace for modelferry's online endpoints."
    # A validation error would otherwise echo the raw input, client_secret included.
    model_config = ConfigDict(hide_input_in_errors=True)

    subscription_id: str = Field(description="Azure subscription id of the workspace.")
    resource_group: str = Field(description="Resource group of the workspace.")
    workspace_name: str = Field(description="Azure ML workspace name.")
    credentials: AzureServicePrincipal | None = Field(
        default=None,
        description="Azure AD sign-in, preferred to the inline fields: a saved "
        "AzureServicePrincipal that other blocks share; empty for the inline fields.",
    )
    client_id: str | None = Field(
        default=None, description="Service principal (app) id (prefer credentials)."
    )
    tenant_id: str | None = Field(
        default=None, description="Service principal's tenant id (prefer credentials)."
    )
    client_secret: SecretStr | None = Field(
        default=None, description="Service principal secret (prefer credentials)."
    )
    managed_identity_client_id: str | None = Field(
        default=None,
        description="User-assigned managed identity, for the default credential "
        "(prefer credentials).",
    )
    environment: str | None = Field(
        default=None,
        description="Azure ML environment for the scoring script, e.g. azureml:scoring:3; "
        "empty for one pinning the model libraries modelferry runs with.",
    )
    code_path: str | None = Field(
        default=None,
        description="Folder with your own scoring script; empty for modelferry's.",
    )
    scoring_script: str = Field(
        default="score.py", description="File name of your scoring script in code_path."
    )
    no_code_mlflow: bool = Field(
        default=False,
        description="Deploy with Azure ML's no-code MLflow server, which answers predicted "
        "labels instead of class probabilities (no environment or code_path then).",
    )

    @model_validator(mode="after")
    def _one_way_to_sign_in(self) -> AzureMLWorkspace:
        given = [name for name in _SERVICE_PRINCIPAL if getattr(self, name) is not None]
        inline = given + ["managed_identity_client_id"] * (
            self.managed_identity_client_id is not None
        )
        if inline and self.credentials is not None:
            raise ValueError(
                f"set either credentials or the inline {', '.join(inline)}, not both "
                "(credentials is preferred)"
            )
        if given and len(given) < len(_SERVICE_PRINCIPAL):
            missing = [name for name in _SERVICE_PRINCIPAL if name not in given]
            raise ValueError(
                f"a service principal needs client_id, tenant_id and client_secret; "
                f"{', '.join(missing)} missing (or set none of them for the default credential)"
            )
        if given and self.managed_identity_client_id is not None:
            raise ValueError(
                "set either a service principal or managed_identity_client_id, not both"
            )
        if self.no_code_mlflow and (self.environment or self.code_path):
            raise ValueError(
                "no_code_mlflow deploys without a scoring script: leave environment and "
                "code_path empty, or turn no_code_mlflow off"
            )
        return self

    def get_client(self) -> MLClient:
        """An `MLClient` for the workspace; no call is made yet."""
        return self._workspace().ml_client(self._credential())

    def get_backend(self, registry: ModelRegistry) -> AzureMLEndpointBackend:
        """The endpoint backend for this workspace, deploying versions from `registry`.

        Its `get_metrics` reads Azure Monitor (`AzureMonitorMetrics`), signed in as the
        workspace client is.
        """
        workspace, credential = self._workspace(), self._credential()
        return AzureMLEndpointBackend(
            workspace.ml_client(credential),
            registry,
            environment=self.environment,
            code_path=Path(self.code_path) if self.code_path else None,
            scoring_script=self.scoring_script,
            no_code_mlflow=self.no_code_mlflow,
            metrics_source=AzureMonitorMetrics.for_workspace(workspace, credential),
        )

    def _workspace(self) -> WorkspaceRef:
        return WorkspaceRef(self.subscription_id, self.resource_group, self.workspace_name)

    def _credential(self) -> ClientSecretCredential | DefaultAzureCredential:
        principal = self.credentials
        if principal is None:
            principal = AzureServicePrincipal(
                tenant_id=self.tenant_id,
                client_id=self.client_id,
                client_secret=self.client_secret,
                managed_identity_client_id=self.managed_identity_client_id,
            )
        return principal.get_credential("AzureMLWorkspace")
