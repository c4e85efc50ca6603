"""The package-store blocks: validation, the stores they build, and secrets kept hidden."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from blocks.package_store import AzureBlobPackageStoreBlock, LocalPackageStoreBlock
from modelferry.stores.azure_blob import AzureBlobPackageStore
from modelferry.stores.azure_sas import AccountKeySigner, UserDelegationSigner
from modelferry.stores.local import DEFAULT_ROOT, LocalPackageStore

ACCOUNT_KEY = "QkxPQ0stVEVTVC1LRVktbm90LWEtcmVhbC1vbmUtMDEyMzQ1Njc4OQ=="
CONNECTION_STRING = (
    f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={ACCOUNT_KEY};"
    "EndpointSuffix=core.windows.net"
)
CLIENT_SECRET = "client-secret-7f3a9c"


def test_local_block_builds_a_local_store(tmp_path: Path) -> None:
    store = LocalPackageStoreBlock(root=str(tmp_path)).get_store()
    assert isinstance(store, LocalPackageStore)
    assert store.root == tmp_path
    assert LocalPackageStoreBlock().get_store().root == DEFAULT_ROOT


def test_connection_string_block_signs_with_the_account_key() -> None:
    block = AzureBlobPackageStoreBlock(
        connection_string=CONNECTION_STRING,
        container="packages",
        link_expiry_minutes=30,
        clock_skew_minutes=2,
    )
    store = block.get_store()
    assert isinstance(store, AzureBlobPackageStore)
    assert isinstance(store.signer, AccountKeySigner)
    assert store.account_url == "https://acct.blob.core.windows.net"
    assert store.container == "packages"
    assert store.links.expiry == timedelta(minutes=30)
    assert store.links.clock_skew == timedelta(minutes=2)


def test_service_principal_block_signs_with_delegation_keys() -> None:
    block = AzureBlobPackageStoreBlock(
        account_url="https://acct.blob.core.windows.net",
        tenant_id="00000000-0000-4000-8000-000000000001",
        client_id="00000000-0000-4000-8000-000000000003",
        client_secret=CLIENT_SECRET,
        container="packages",
    )
    store = block.get_store()
    assert isinstance(store.signer, UserDelegationSigner)
    assert store.links.expiry == timedelta(minutes=15)
    assert store.links.clock_skew == timedelta(minutes=5)


def test_no_service_principal_means_the_default_credential() -> None:
    block = AzureBlobPackageStoreBlock(
        account_url="https://acct.blob.core.windows.net", container="packages"
    )
    assert type(block._credential()).__name__ == "DefaultAzureCredential"


@pytest.mark.parametrize(
    "block",
    [
        AzureBlobPackageStoreBlock(connection_string=CONNECTION_STRING, container="packages"),
        AzureBlobPackageStoreBlock(
            account_url="https://acct.blob.core.windows.net",
            tenant_id="t",
            client_id="c",
            client_secret=CLIENT_SECRET,
            container="packages",
        ),
    ],
)
def test_secrets_stay_hidden(block: AzureBlobPackageStoreBlock) -> None:
    shown = [
        repr(block),
        str(block),
        str(block.model_dump()),
        block.model_dump_json(),
        repr(block.get_store()),
    ]
    for text in shown:
        assert ACCOUNT_KEY not in text
        assert CLIENT_SECRET not in text


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "either connection_string or account_url"),
        (
            {"connection_string": CONNECTION_STRING, "account_url": "https://a"},
            "either connection_string or account_url",
        ),
        (
            {"connection_string": CONNECTION_STRING, "client_secret": CLIENT_SECRET},
            "a connection string needs none",
        ),
        ({"account_url": "https://a", "client_secret": CLIENT_SECRET}, "tenant_id, client_id"),
        ({"account_url": "https://a", "link_expiry_minutes": 0}, "greater than or equal to 1"),
    ],
)
def test_sign_in_options_that_cannot_be_combined(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as refused:
        AzureBlobPackageStoreBlock(container="packages", **fields)
    assert ACCOUNT_KEY not in str(refused.value)
    assert CLIENT_SECRET not in str(refused.value)
