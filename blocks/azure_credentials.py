"""Prefect block: one Azure AD identity, saved once and named by the Azure resource blocks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, SecretStr, model_validator

from modelferry.extras import requires_extra

if TYPE_CHECKING:
    from azure.identity import ClientSecretCredential, DefaultAzureCredential

#: The fields of a service principal, all three or none.
SERVICE_PRINCIPAL = ("tenant_id", "client_id", "client_secret")


class AzureServicePrincipal(Block):
    """How modelferry signs in to Azure AD, shared by the blocks of the resources it reaches.

    A service principal (tenant_id, client_id and client_secret, all three) or, with none
    of them, `DefaultAzureCredential` (environment, workload or managed identity, Azure CLI
    login); `managed_identity_client_id` picks a user-assigned identity for the latter.
    Save it once and name it in `AzureMLWorkspace(credentials=...)` and
    `AzureBlobPackageStoreBlock(credentials=...)`: rotating the secret is then one edit.

        principal = AzureServicePrincipal(tenant_id="...", client_id="...",
                                          client_secret="...")
        principal.save("modelferry-sp")
        AzureMLWorkspace(subscription_id="...", resource_group="ml-rg",
                         workspace_name="ml-weu",
                         credentials=AzureServicePrincipal.load("modelferry-sp"))
    """

    _block_type_name = "modelferry Azure Service Principal"
    _block_type_slug = "modelferry-azure-service-principal"
    _description = "Azure AD sign-in (service principal or default credential) for Azure blocks."
    # A validation error would otherwise echo the raw input, client_secret included.
    model_config = ConfigDict(hide_input_in_errors=True)

    tenant_id: str | None = Field(default=None, description="Service principal's tenant id.")
    client_id: str | None = Field(default=None, description="Service principal (app) id.")
    client_secret: SecretStr | None = Field(default=None, description="Service principal secret.")
    managed_identity_client_id: str | None = Field(
        default=None, description="User-assigned managed identity, for the default credential."
    )

    @model_validator(mode="after")
    def _one_way_to_sign_in(self) -> AzureServicePrincipal:
        given = self.principal_fields_given()
        if given and len(given) < len(SERVICE_PRINCIPAL):
            missing = [name for name in SERVICE_PRINCIPAL if name not in given]
            raise ValueError(
                f"a service principal needs tenant_id, client_id and client_secret; "
                f"{', '.join(missing)} missing (or set none of them for the default credential)"
            )
        if given and self.managed_identity_client_id is not None:
            raise ValueError(
                "set either a service principal or managed_identity_client_id, not both"
            )
        return self

    def principal_fields_given(self) -> list[str]:
        """The service-principal fields that are set, in `SERVICE_PRINCIPAL` order."""
        return [name for name in SERVICE_PRINCIPAL if getattr(self, name) is not None]

    def get_credential(
        self, purpose: str = "Azure sign-in", *, pin_managed_identity: bool = True
    ) -> ClientSecretCredential | DefaultAzureCredential:
        """The azure-identity credential; the only place the secret is unwrapped.

        Args:
            purpose: what signs in, named by the error raised when the Azure SDKs are
                missing, e.g. "AzureMLWorkspace".
            pin_managed_identity: pass `managed_identity_client_id` to the default
                credential even when None (a system-assigned identity then, whatever
                AZURE_CLIENT_ID says); False leaves that to `DefaultAzureCredential`.
        """
        with requires_extra("azure", purpose, "the Azure SDKs"):
            from azure.identity import ClientSecretCredential, DefaultAzureCredential

        if self.client_secret is not None:
            return ClientSecretCredential(
                tenant_id=str(self.tenant_id),
                client_id=str(self.client_id),
                client_secret=self.client_secret.get_secret_value(),
            )
        options: dict[str, Any] = {}
        if pin_managed_identity or self.managed_identity_client_id is not None:
            options["managed_identity_client_id"] = self.managed_identity_client_id
        return DefaultAzureCredential(**options)
