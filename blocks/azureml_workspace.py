"""Prefect block: an Azure ML workspace and how to sign in to it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, SecretStr, model_validator

from modelferry.endpoints.azureml import AzureMLEndpointBackend, azure_sdk
from modelferry.registry import ModelRegistry

if TYPE_CHECKING:
    from azure.ai.ml import MLClient

_SERVICE_PRINCIPAL = ("client_id", "tenant_id", "client_secret")


class AzureMLWorkspace(Block):
    """An Azure ML workspace whose managed online endpoints modelferry deploys to.

    Signs in with a service principal (client_id, tenant_id and client_secret, all three)
    or, with none of them, with `DefaultAzureCredential` (environment, workload or managed
    identity, Azure CLI login); `managed_identity_client_id` picks a user-assigned
    identity for the latter.

        AzureMLWorkspace(subscription_id="...", resource_group="ml-rg",
                         workspace_name="ml-weu").save("production")
    """

    _block_type_name = "modelferry Azure ML Workspace"
    _block_type_slug = "modelferry-azureml-workspace"
    _description = "Azure ML workspace for modelferry's online endpoints."
    # A validation error would otherwise echo the raw input, client_secret included.
    model_config = ConfigDict(hide_input_in_errors=True)

    subscription_id: str = Field(description="Azure subscription id of the workspace.")
    resource_group: str = Field(description="Resource group of the workspace.")
    workspace_name: str = Field(description="Azure ML workspace name.")
    client_id: str | None = Field(default=None, description="Service principal (app) id.")
    tenant_id: str | None = Field(default=None, description="Service principal's tenant id.")
    client_secret: SecretStr | None = Field(default=None, description="Service principal secret.")
    managed_identity_client_id: str | None = Field(
        default=None, description="User-assigned managed identity, for the default credential."
    )
    environment: str | None = Field(
        default=None,
        description="Azure ML environment for a custom scoring script, e.g. azureml:scoring:3; "
        "empty for Azure ML's no-code MLflow deployment.",
    )
    code_path: str | None = Field(
        default=None, description="Folder with the scoring script (with `environment`)."
    )
    scoring_script: str = Field(default="score.py", description="Scoring script file name.")

    @model_validator(mode="after")
    def _one_way_to_sign_in(self) -> AzureMLWorkspace:
        given = [name for name in _SERVICE_PRINCIPAL if getattr(self, name) is not None]
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
        if (self.environment is None) != (self.code_path is None):
            raise ValueError("environment and code_path go together (a custom scoring script)")
        return self

    def get_client(self) -> MLClient:
        """An `MLClient` for the workspace; the secret is unwrapped here and nowhere else."""
        with azure_sdk("AzureMLWorkspace"):
            from azure.ai.ml import MLClient
            from azure.identity import ClientSecretCredential, DefaultAzureCredential

        if self.client_secret is not None:
            credential: ClientSecretCredential | DefaultAzureCredential = ClientSecretCredential(
                tenant_id=str(self.tenant_id),
                client_id=str(self.client_id),
                client_secret=self.client_secret.get_secret_value(),
            )
        else:
            credential = DefaultAzureCredential(
                managed_identity_client_id=self.managed_identity_client_id
            )
        return MLClient(
            credential,
            subscription_id=self.subscription_id,
            resource_group_name=self.resource_group,
            workspace_name=self.workspace_name,
        )

    def get_backend(self, registry: ModelRegistry) -> AzureMLEndpointBackend:
        """The endpoint backend for this workspace, deploying versions from `registry`."""
        return AzureMLEndpointBackend(
            self.get_client(),
            registry,
            environment=self.environment,
            code_path=Path(self.code_path) if self.code_path else None,
            scoring_script=self.scoring_script,
        )
