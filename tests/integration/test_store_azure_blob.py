"""The Blob Storage package store against Azurite: the shared contract and SAS behaviour.

Two Azurite instances run for this module: plain HTTP for the account-key store (built
from a connection string), and HTTPS with Azure AD bearer tokens (`--oauth basic`) for the
store that signs links with user delegation keys.
"""

from __future__ import annotations

import logging
import ssl
import time
import traceback
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from azure.storage.blob import BlobServiceClient

from modelferry.errors import PackageStoreError
from modelferry.stores.azure_blob import AzureBlobPackageStore, UploadRetry
from modelferry.stores.base import PackageStore
from modelferry.testing.contracts.store import MakePackage, PackageStoreContract
from tests.azurite import (
    OBJECT_ID,
    TENANT_ID,
    Azurite,
    EmulatorTokenCredential,
    running_azurite,
)

pytestmark = pytest.mark.integration

PLANTED_KEY = "UExBTlRFRC1TRUNSRVQtS0VZLW5vdC10aGUtcmVhbC1vbmUtMTIzNDU2Nzg5MA=="


@pytest.fixture(scope="module")
def azurite_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    with running_azurite(tmp_path_factory.mktemp("azurite-http")) as azurite:
        yield azurite


@pytest.fixture(scope="module")
def azurite_oauth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    with running_azurite(tmp_path_factory.mktemp("azurite-oauth"), oauth=True) as azurite:
        yield azurite


def new_container() -> str:
    return f"packages-{uuid.uuid4().hex[:16]}"


def account_key_store(azurite: Azurite, **kwargs: Any) -> AzureBlobPackageStore:
    return AzureBlobPackageStore.from_connection_string(
        azurite.connection_string, new_container(), **kwargs
    )


def delegation_store(azurite: Azurite, **kwargs: Any) -> AzureBlobPackageStore:
    return AzureBlobPackageStore.from_account_url(
        azurite.account_url,
        EmulatorTokenCredential(),
        new_container(),
        connection_verify=str(azurite.ca_file),
        **kwargs,
    )


class AzureLinkChecks(PackageStoreContract):
    """What a SAS link must and must not allow, on top of the shared contract."""

    http_verify: ssl.SSLContext | bool = True

    def fetch(self, url: str) -> bytes:
        response = httpx.get(url, timeout=30, verify=self.http_verify)
        response.raise_for_status()
        return response.content

    def status(self, method: str, url: str, content: bytes | None = None) -> int:
        headers = {"x-ms-blob-type": "BlockBlob"} if method == "PUT" else {}
        response = httpx.request(
            method, url, content=content, headers=headers, timeout=30, verify=self.http_verify
        )
        return response.status_code

    def test_a_link_cannot_write_or_delete(
        self, store: PackageStore, package_id: str, make_package: MakePackage
    ) -> None:
        record = store.put(make_package(b"published"), package_id=package_id, version="1")
        url = store.link(record)
        assert self.status("PUT", url, b"overwritten") == 403
        assert self.status("DELETE", url) == 403
        assert self.fetch(url) == b"published"

    def test_an_expired_link_is_refused(
        self, store: PackageStore, package_id: str, make_package: MakePackage
    ) -> None:
        record = store.put(make_package(b"short-lived"), package_id=package_id, version="1")
        url = store.link(record, expires_in=timedelta(seconds=1))
        time.sleep(2.5)
        assert self.status("GET", url) == 403

    def test_a_link_reads_only_its_own_blob(
        self, store: PackageStore, package_id: str, make_package: MakePackage
    ) -> None:
        one = store.put(make_package(b"one"), package_id=package_id, version="1")
        two = store.put(make_package(b"two"), package_id=package_id, version="2")
        url_one, url_two = urlparse(store.link(one)), urlparse(store.link(two))
        borrowed = url_two._replace(query=url_one.query).geturl()
        assert self.status("GET", borrowed) == 403

    def test_a_link_grants_read_on_one_blob_from_before_now(
        self, store: PackageStore, package_id: str, make_package: MakePackage
    ) -> None:
        record = store.put(make_package(b"x"), package_id=package_id, version="1")
        before = datetime.now(UTC).replace(microsecond=0)
        query = parse_qs(urlparse(store.link(record)).query)
        after = datetime.now(UTC)
        assert query["sp"] == ["r"]
        assert query["sr"] == ["b"]
        start = datetime.fromisoformat(query["st"][0])
        expiry = datetime.fromisoformat(query["se"][0])
        assert before - timedelta(minutes=5, seconds=3) <= start <= after - timedelta(minutes=5)
        assert before + timedelta(minutes=15) <= expiry <= after + timedelta(minutes=15)

    def test_blob_carries_its_digests(
        self, store: AzureBlobPackageStore, package_id: str, make_package: MakePackage
    ) -> None:
        content = b"digested" * 1000
        record = store.put(make_package(content), package_id=package_id, version="1")
        properties = self.reader(store).get_blob_properties()
        assert properties.metadata["sha256"] == record.sha256
        assert properties.content_settings.content_md5 == _md5(content)
        assert properties.content_settings.content_type == "application/zip"
        assert properties.size == len(content)

    def reader(self, store: AzureBlobPackageStore) -> Any:
        raise NotImplementedError


class TestAccountKeyContract(AzureLinkChecks):
    @pytest.fixture
    def store(self, azurite_http: Azurite) -> AzureBlobPackageStore:
        store = account_key_store(azurite_http)
        self._azurite = azurite_http
        return store

    def reader(self, store: AzureBlobPackageStore) -> Any:
        service = BlobServiceClient.from_connection_string(self._azurite.connection_string)
        blobs = list(service.get_container_client(store.container).list_blobs())
        return service.get_blob_client(store.container, blobs[0].name)


class TestUserDelegationContract(AzureLinkChecks):
    @pytest.fixture
    def store(self, azurite_oauth: Azurite) -> AzureBlobPackageStore:
        self.http_verify = ssl.create_default_context(cafile=str(azurite_oauth.ca_file))
        self._azurite = azurite_oauth
        return delegation_store(azurite_oauth)

    def reader(self, store: AzureBlobPackageStore) -> Any:
        service = BlobServiceClient(
            self._azurite.account_url,
            credential=EmulatorTokenCredential(),
            connection_verify=str(self._azurite.ca_file),
        )
        blobs = list(service.get_container_client(store.container).list_blobs())
        return service.get_blob_client(store.container, blobs[0].name)


def test_delegation_links_carry_the_key_and_expire_before_it(
    azurite_oauth: Azurite, tmp_path: Path
) -> None:
    credential = EmulatorTokenCredential()
    service = BlobServiceClient(
        azurite_oauth.account_url,
        credential=credential,
        connection_verify=str(azurite_oauth.ca_file),
    )
    fetched: list[tuple[datetime, datetime]] = []
    real_get_key = service.get_user_delegation_key

    def counting_get_key(key_start_time: datetime, key_expiry_time: datetime, **kw: Any) -> Any:
        fetched.append((key_start_time, key_expiry_time))
        return real_get_key(key_start_time, key_expiry_time, **kw)

    service.get_user_delegation_key = counting_get_key
    store = AzureBlobPackageStore(service, new_container())
    path = tmp_path / "p.zip"
    path.write_bytes(b"delegated")
    record = store.put(path, package_id="churn", version="1")
    verify = ssl.create_default_context(cafile=str(azurite_oauth.ca_file))

    urls = [store.link(record) for _ in range(3)]

    assert len(fetched) == 1  # one key, cached for every link
    assert credential.requests
    assert {scopes for scopes in credential.requests} == {("https://storage.azure.com/.default",)}
    for url in urls:
        query = parse_qs(urlparse(url).query)
        assert query["skoid"] == [OBJECT_ID]
        assert query["sktid"] == [TENANT_ID]
        assert query["spr"] == ["https"]
        key_expiry = datetime.fromisoformat(query["ske"][0])
        assert datetime.fromisoformat(query["se"][0]) < key_expiry
        assert httpx.get(url, verify=verify, timeout=30).content == b"delegated"


def test_the_container_is_created_on_first_put(azurite_http: Azurite, tmp_path: Path) -> None:
    store = account_key_store(azurite_http)
    service = BlobServiceClient.from_connection_string(azurite_http.connection_string)
    assert not service.get_container_client(store.container).exists()
    assert store.get("churn", "1") is None
    store.delete("churn", "1")
    path = tmp_path / "p.zip"
    path.write_bytes(b"x")
    store.put(path, package_id="churn", version="1")
    assert service.get_container_client(store.container).exists()


def test_a_planted_key_never_shows(
    azurite_http: Azurite, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good = account_key_store(azurite_http)
    path = tmp_path / "p.zip"
    path.write_bytes(b"x")
    record = good.put(path, package_id="churn", version="1")
    store = AzureBlobPackageStore.from_connection_string(
        azurite_http.connection_string_with_key(PLANTED_KEY),
        good.container,
        retry=UploadRetry(attempts=2, backoff_s=0),
        logging_enable=True,  # the SDK's own request logging, headers and all
    )

    failures = []
    for call in (
        lambda: store.put(path, package_id="churn", version="2"),
        lambda: store.get("churn", "1"),
        lambda: store.link(record),
        lambda: store.delete("churn", "1"),
    ):
        with pytest.raises(PackageStoreError) as failed:
            call()
        failures.append(failed.value)

    for error in failures:
        text = "".join(traceback.format_exception(error))
        assert PLANTED_KEY not in text
        assert "access was refused" in str(error)
        assert f"container {good.container!r}" in str(error)
    assert "blob 'churn/1/p.zip'" in str(failures[2])
    assert PLANTED_KEY not in repr(store)
    assert caplog.records, "the SDK logged nothing: the check below would prove nothing"
    assert PLANTED_KEY not in caplog.text
    assert good.get("churn", "2") is None


def test_links_leave_no_signature_in_logs(
    azurite_http: Azurite, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = account_key_store(azurite_http, logging_enable=True)
    path = tmp_path / "p.zip"
    path.write_bytes(b"x")
    record = store.put(path, package_id="churn", version="1")
    signature = parse_qs(urlparse(store.link(record)).query)["sig"][0]
    assert signature not in caplog.text
    assert azurite_http.connection_string.split("AccountKey=")[1].split(";")[0] not in caplog.text


def _md5(content: bytes) -> bytearray:
    import hashlib

    return bytearray(hashlib.md5(content).digest())
