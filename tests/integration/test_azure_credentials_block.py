"""One saved `AzureServicePrincipal` shared by the Azure blocks, against a real Prefect server.

The Blob store's Azure AD path and the workspace cannot reach Azure here, so the sign-in is
checked where the credential is built: azure-identity's classes, recording what they get.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import BlockDocumentUpdate
from pydantic import ValidationError

from blocks.azure_credentials import AzureServicePrincipal
from blocks.azureml_workspace import AzureMLWorkspace
from blocks.package_store import AzureBlobPackageStoreBlock

pytestmark = pytest.mark.integration

SECRET = f"sp-secret-{uuid.uuid4().hex}"
PRINCIPAL = {"tenant_id": "tenant-1", "client_id": "app-1", "client_secret": SECRET}
WORKSPACE = {"subscription_id": "sub-1", "resource_group": "rg", "workspace_name": "ws"}
ACCOUNT_URL = "https://acct.blob.core.windows.net"

Built = list[tuple[str, dict[str, Any]]]


def _name() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> Built:
    """Every azure-identity credential built, as (class name, keyword arguments)."""
    import azure.identity

    seen: Built = []

    def recording(real: type) -> type:
        class Recording(real):  # type: ignore[misc, valid-type]
            def __init__(self, **kwargs: Any) -> None:
                seen.append((real.__name__, kwargs))
                super().__init__(**kwargs)

        return Recording

    for name in ("ClientSecretCredential", "DefaultAzureCredential"):
        monkeypatch.setattr(azure.identity, name, recording(getattr(azure.identity, name)))
    return seen


def test_one_saved_principal_signs_in_the_store_and_the_workspace(
    prefect_harness: str, built: Built
) -> None:
    principal, store, workspace = _name(), _name(), _name()
    AzureServicePrincipal(**PRINCIPAL).save(principal)
    shared = AzureServicePrincipal.load(principal)
    AzureBlobPackageStoreBlock(
        account_url=ACCOUNT_URL, container="packages", credentials=shared
    ).save(store)
    AzureMLWorkspace(**WORKSPACE, credentials=shared).save(workspace)

    loaded_store = Block.load(f"modelferry-azure-blob-package-store/{store}")
    loaded_workspace = AzureMLWorkspace.load(workspace)
    assert isinstance(loaded_store, AzureBlobPackageStoreBlock)
    # Both documents reference the one saved principal, not copies of it.
    for block in (loaded_store, loaded_workspace):
        assert block.credentials is not None
        assert block.credentials._block_document_id == shared._block_document_id
    loaded_store.get_store()
    loaded_workspace.get_client()
    signed_in = ("ClientSecretCredential", PRINCIPAL)
    assert built == [signed_in, signed_in]

    # Rotating the secret is one edit, seen by every block that names the principal.
    AzureServicePrincipal(**{**PRINCIPAL, "client_secret": "rotated"}).save(
        principal, overwrite=True
    )
    AzureMLWorkspace.load(workspace).get_client()
    assert built[-1] == ("ClientSecretCredential", {**PRINCIPAL, "client_secret": "rotated"})


def test_the_ui_schema_offers_the_principal_as_a_block(prefect_harness: str) -> None:
    for block_type in (AzureBlobPackageStoreBlock, AzureMLWorkspace):
        schema = block_type._to_block_schema().fields
        field = schema["properties"]["credentials"]
        assert {"$ref": "#/definitions/AzureServicePrincipal"} in field["anyOf"]
        assert "preferred" in field["description"]
        definition = schema["definitions"]["AzureServicePrincipal"]
        assert definition["block_type_slug"] == "modelferry-azure-service-principal"
        assert schema["block_schema_references"]["credentials"]["block_type_slug"] == (
            "modelferry-azure-service-principal"
        )


def _strip_to_old_fields(block: Block, name: str) -> None:
    """Rewrite a saved block's document as saved before `credentials` existed."""
    assert block._block_document_id is not None
    data = {k: v for k, v in block.model_dump().items() if k != "credentials"}
    for key in ("client_secret", "connection_string"):
        if data.get(key) is not None:
            data[key] = getattr(block, key).get_secret_value()
    with get_client(sync_client=True) as client:
        client.update_block_document(
            block._block_document_id,
            BlockDocumentUpdate(data=data, merge_existing_data=False),
        )
        document = client.read_block_document(block._block_document_id)
    assert "credentials" not in document.data, name


def test_blocks_saved_with_inline_fields_only_load_and_sign_in_as_before(
    prefect_harness: str, built: Built
) -> None:
    store, workspace, default = _name(), _name(), _name()
    blob = AzureBlobPackageStoreBlock(account_url=ACCOUNT_URL, container="packages", **PRINCIPAL)
    blob.save(store)
    ml = AzureMLWorkspace(**WORKSPACE, **PRINCIPAL)
    ml.save(workspace)
    bare = AzureMLWorkspace(**WORKSPACE, managed_identity_client_id="mi-1")
    bare.save(default)
    for block, name in ((blob, store), (ml, workspace), (bare, default)):
        _strip_to_old_fields(block, name)

    AzureBlobPackageStoreBlock.load(store).get_store()
    AzureMLWorkspace.load(workspace).get_client()
    AzureMLWorkspace.load(default).get_client()
    AzureBlobPackageStoreBlock(account_url=ACCOUNT_URL, container="packages")._credential()
    assert built == [
        ("ClientSecretCredential", PRINCIPAL),
        ("ClientSecretCredential", PRINCIPAL),
        ("DefaultAzureCredential", {"managed_identity_client_id": "mi-1"}),
        # The store's default credential is built as it always was: no arguments.
        ("DefaultAzureCredential", {}),
    ]


@pytest.mark.parametrize(
    ("block_type", "fields", "inline"),
    [
        (
            AzureBlobPackageStoreBlock,
            {"account_url": ACCOUNT_URL, "container": "packages", **PRINCIPAL},
            "tenant_id, client_id, client_secret",
        ),
        (AzureMLWorkspace, {**WORKSPACE, **PRINCIPAL}, "client_id, tenant_id, client_secret"),
        (
            AzureMLWorkspace,
            {**WORKSPACE, "managed_identity_client_id": "mi-1"},
            "managed_identity_client_id",
        ),
    ],
    ids=["store", "workspace", "workspace-managed-identity"],
)
def test_credentials_and_inline_sign_in_together_are_refused_naming_both(
    prefect_harness: str, block_type: type[Block], fields: dict[str, str], inline: str
) -> None:
    name = _name()
    AzureServicePrincipal(**PRINCIPAL).save(name)
    with pytest.raises(ValidationError) as caught:
        block_type(**fields, credentials=AzureServicePrincipal.load(name))
    message = str(caught.value)
    assert f"set either credentials or the inline {inline}, not both" in message
    assert SECRET not in message


def test_a_connection_string_store_refuses_credentials(prefect_harness: str) -> None:
    with pytest.raises(ValidationError, match="a connection string needs none"):
        AzureBlobPackageStoreBlock(
            connection_string="UseDevelopmentStorage=true",
            container="packages",
            credentials=AzureServicePrincipal(**PRINCIPAL),
        )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tenant_id": "t", "client_secret": SECRET}, "client_id missing"),
        ({**PRINCIPAL, "managed_identity_client_id": "mi-1"}, "not both"),
    ],
)
def test_the_principal_refuses_half_a_sign_in_without_echoing_the_secret(
    fields: dict[str, str], message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        AzureServicePrincipal(**fields)
    assert SECRET not in f"{caught.value!r} {caught.value}"


def test_the_secret_stays_out_of_reprs(prefect_harness: str) -> None:
    name = _name()
    AzureServicePrincipal(**PRINCIPAL).save(name)
    shared = AzureServicePrincipal.load(name)
    blocks: list[Block] = [
        shared,
        AzureMLWorkspace(**WORKSPACE, credentials=shared),
        AzureBlobPackageStoreBlock(
            account_url=ACCOUNT_URL, container="packages", credentials=shared
        ),
    ]
    for block in blocks:
        for shown in (repr(block), str(block), str(block.model_dump()), block.model_dump_json()):
            assert SECRET not in shown


def test_without_a_principal_the_default_credential_signs_in(built: Built) -> None:
    AzureServicePrincipal().get_credential()
    AzureServicePrincipal(managed_identity_client_id="mi-1").get_credential()
    assert built == [
        ("DefaultAzureCredential", {"managed_identity_client_id": None}),
        ("DefaultAzureCredential", {"managed_identity_client_id": "mi-1"}),
    ]
