"""Prefect blocks: where model packages are kept and how devices get links to them."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from pydantic import ConfigDict, Field, SecretStr, model_validator

from blocks.azure_credentials import SERVICE_PRINCIPAL, AzureServicePrincipal
from blocks.base import PackageStoreBlock
from modelferry.stores.azure_blob import AzureBlobPackageStore, LinkSettings
from modelferry.stores.local import DEFAULT_ROOT, LocalPackageStore

if TYPE_CHECKING:
    from azure.identity import ClientSecretCredential, DefaultAzureCredential


class LocalPackageStoreBlock(PackageStoreBlock):
    """Packages in a folder on this host; devices get `file://` links (single host only).

    LocalPackageStoreBlock(root="/srv/modelferry/packages").save("local")
    """

    _block_type_name = "modelferry Local Package Store"
    _block_type_slug = "modelferry-local-package-store"
    _description = "A folder of model packages with file:// links, for one machine."

    root: str = Field(
        default=str(DEFAULT_ROOT),
        description="Folder holding the packages (relative to the flow's working directory).",
    )

    def get_store(self) -> LocalPackageStore:
        """The package store this block configures."""
        return LocalPackageStore(self.root)


class AzureBlobPackageStoreBlock(PackageStoreBlock):
    """Packages in a Blob Storage container; devices get read-only SAS links to one blob.

    Sign in with a connection string (links signed with the account key), or with an
    account URL and Azure AD: preferably a saved `AzureServicePrincipal` in `credentials`
    (one principal for many blocks), else a service principal inline (tenant_id, client_id
    and client_secret, all three) or, with neither, `DefaultAzureCredential` (environment,
    workload or managed identity, Azure CLI login). Azure AD links are signed with user
    delegation keys; the identity needs 'Storage Blob Data Contributor' and
    'Storage Blob Delegator'.

        AzureBlobPackageStoreBlock(account_url="https://acct.blob.core.windows.net",
                                   credentials=AzureServicePrincipal.load("modelferry-sp"),
                                   container="packages").save("production")
    """

    _block_type_name = "modelferry Azure Blob Package Store"
    _block_type_slug = "modelferry-azure-blob-package-store"
    _description = "A Blob Storage container of model packages with short-lived SAS links."
    # A validation error would otherwise echo the raw input, secrets included.
    model_config = ConfigDict(hide_input_in_errors=True)

    container: str = Field(description="Container holding the packages (created if missing).")
    connection_string: SecretStr | None = Field(
        default=None, description="Storage account connection string with AccountKey."
    )
    account_url: str | None = Field(
        default=None, description="Blob endpoint, e.g. https://acct.blob.core.windows.net."
    )
    credentials: AzureServicePrincipal | None = Field(
        default=None,
        description="Azure AD sign-in with account_url, preferred to the inline fields: a "
        "saved AzureServicePrincipal that other blocks share; empty for the inline service "
        "principal or, without one, the default credential.",
    )
    tenant_id: str | None = Field(
        default=None, description="Service principal's tenant id (prefer credentials)."
    )
    client_id: str | None = Field(
        default=None, description="Service principal (app) id (prefer credentials)."
    )
    client_secret: SecretStr | None = Field(
        default=None, description="Service principal secret (prefer credentials)."
    )
    link_expiry_minutes: int = Field(
        default=15, ge=1, le=7 * 24 * 60, description="How long a device's link is valid."
    )
    clock_skew_minutes: int = Field(
        default=5, ge=0, le=60, description="How far in the past a link starts."
    )

    @model_validator(mode="after")
    def _one_way_to_sign_in(self) -> AzureBlobPackageStoreBlock:
        if (self.connection_string is None) == (self.account_url is None):
            raise ValueError("set either connection_string or account_url, not both or neither")
        given = [name for name in SERVICE_PRINCIPAL if getattr(self, name) is not None]
        if (given or self.credentials is not None) and self.connection_string is not None:
            raise ValueError(
                "a service principal signs in with account_url; a connection string needs none"
            )
        if given and self.credentials is not None:
            raise ValueError(
                f"set either credentials or the inline {', '.join(given)}, not both "
                "(credentials is preferred)"
            )
        if given and len(given) < len(SERVICE_PRINCIPAL):
            missing = [name for name in SERVICE_PRINCIPAL if name not in given]
            raise ValueError(
                f"a service principal needs tenant_id, client_id and client_secret; "
                f"{', '.join(missing)} missing (or set none of them for the default credential)"
            )
        return self

    def get_store(self) -> AzureBlobPackageStore:
        """The package store; secrets are unwrapped here and nowhere else."""
        links = LinkSettings(
            expiry=timedelta(minutes=self.link_expiry_minutes),
            clock_skew=timedelta(minutes=self.clock_skew_minutes),
        )
        if self.connection_string is not None:
            return AzureBlobPackageStore.from_connection_string(
                self.connection_string, self.container, links=links
            )
        return AzureBlobPackageStore.from_account_url(
            str(self.account_url), self._credential(), self.container, links=links
        )

    def _credential(self) -> ClientSecretCredential | DefaultAzureCredential:
        if self.credentials is not None:
            return self.credentials.get_credential("AzureBlobPackageStore")
        inline = AzureServicePrincipal(
            tenant_id=self.tenant_id, client_id=self.client_id, client_secret=self.client_secret
        )
        # The inline default credential honours AZURE_CLIENT_ID, as it always has.
        return inline.get_credential("AzureBlobPackageStore", pin_managed_identity=False)
