"""The Blob Storage package store at the SDK boundary: signing, key renewal, retries, secrecy.

`FakeBlobService` keeps the signatures of the SDK methods the store calls (checked below)
and holds blobs in memory; it fails on demand. What needs a real service (a link that
downloads, a SAS the service refuses) is tested against Azurite in
tests/integration/test_store_azure_blob.py.
"""

from __future__ import annotations

import base64
import inspect
import logging
import sys
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import (
    BlobClient,
    BlobProperties,
    BlobServiceClient,
    BlobType,
    ContainerClient,
    UserDelegationKey,
)

from modelferry.errors import PackageStoreError
from modelferry.stores.azure_blob import AzureBlobPackageStore, LinkSettings, UploadRetry
from modelferry.stores.azure_sas import KEY_MARGIN

PLANTED_KEY = "UExBTlRFRC1TRUNSRVQtS0VZLW5vdC10aGUtcmVhbC1vbmUtMTIzNDU2Nzg5MA=="
PLANTED_SIG = "c2lnbmF0dXJlLXRoYXQtbXVzdC1ub3QtbGVhaw%3D"
T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
DEFAULT = timedelta(minutes=15)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _http_error(cls: type[HttpResponseError], status: int, code: str, message: str) -> Any:
    error = cls(message)
    error.status_code = status
    error.error_code = code  # what the storage SDK adds
    return error


class FakeBlobService:
    """In-memory Blob Storage behind `BlobServiceClient`'s methods; fails on demand."""

    def __init__(self, credential: Any, url: str = "https://acct.blob.core.windows.net/") -> None:
        self.url = url
        self.account_name = "acct"
        self.credential = credential
        self.containers: dict[str, dict[str, BlobProperties]] = {}
        self.contents: dict[tuple[str, str], bytes] = {}
        self.upload_failures: list[Exception] = []
        self.uploads = 0
        self.key_requests: list[tuple[datetime, datetime]] = []
        self.longest_key: timedelta | None = None

    def get_container_client(self, container: Any) -> FakeContainerClient:
        return FakeContainerClient(self, str(container))

    def get_user_delegation_key(
        self, key_start_time: datetime, key_expiry_time: datetime, **kwargs: Any
    ) -> UserDelegationKey:
        self.key_requests.append((key_start_time, key_expiry_time))
        if self.longest_key is not None:
            key_expiry_time = min(key_expiry_time, key_start_time + self.longest_key)
        key = UserDelegationKey()
        key.signed_oid = "00000000-0000-4000-8000-000000000002"
        key.signed_tid = "00000000-0000-4000-8000-000000000001"
        key.signed_start = _iso(key_start_time)
        key.signed_expiry = _iso(key_expiry_time)
        key.signed_service = "b"
        key.signed_version = "2025-07-05"
        key.value = base64.b64encode(f"key-{len(self.key_requests)}".encode() * 4).decode()
        return key


class FakeContainerClient:
    def __init__(self, service: FakeBlobService, container: str) -> None:
        self.service = service
        self.container = container

    def _blobs(self) -> dict[str, BlobProperties]:
        blobs = self.service.containers.get(self.container)
        if blobs is None:
            raise _http_error(
                ResourceNotFoundError, 404, "ContainerNotFound", "container does not exist"
            )
        return blobs

    def get_blob_client(
        self, blob: str, snapshot: str | None = None, *, version_id: str | None = None
    ) -> FakeBlobClient:
        return FakeBlobClient(self, blob)

    def list_blobs(
        self, name_starts_with: str | None = None, include: Any = None, **kwargs: Any
    ) -> list[BlobProperties]:
        blobs = self._blobs()
        return [p for name, p in sorted(blobs.items()) if name.startswith(name_starts_with or "")]

    def create_container(
        self, metadata: dict[str, str] | None = None, public_access: Any = None, **kwargs: Any
    ) -> dict[str, Any]:
        if self.container in self.service.containers:
            raise _http_error(ResourceExistsError, 409, "ContainerAlreadyExists", "exists")
        self.service.containers[self.container] = {}
        return {}

    def delete_blob(self, blob: str, delete_snapshots: str | None = None, **kwargs: Any) -> None:
        if self._blobs().pop(blob, None) is None:
            raise _http_error(ResourceNotFoundError, 404, "BlobNotFound", "no such blob")


class FakeBlobClient:
    def __init__(self, container: FakeContainerClient, blob: str) -> None:
        self._container = container
        self.blob_name = blob
        self.url = f"{container.service.url}{container.container}/{blob}"

    def upload_blob(
        self,
        data: Any,
        blob_type: Any = BlobType.BLOCKBLOB,
        length: int | None = None,
        metadata: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        service = self._container.service
        service.uploads += 1
        if service.upload_failures:
            raise service.upload_failures.pop(0)
        blobs = self._container._blobs()
        if self.blob_name in blobs and kwargs.get("overwrite") is False:
            raise _http_error(ResourceExistsError, 409, "BlobAlreadyExists", "blob exists")
        content = data.read()
        properties = BlobProperties()
        properties.name = self.blob_name
        properties.size = len(content)
        properties.metadata = dict(metadata or {})
        properties.content_settings = kwargs["content_settings"]
        blobs[self.blob_name] = properties
        service.contents[(self._container.container, self.blob_name)] = content
        return {}

    def get_blob_properties(self, **kwargs: Any) -> BlobProperties:
        properties = self._container._blobs().get(self.blob_name)
        if properties is None:
            raise _http_error(ResourceNotFoundError, 404, "BlobNotFound", "no such blob")
        return properties


@pytest.mark.parametrize(
    ("fake", "real"),
    [
        (FakeBlobService.get_container_client, BlobServiceClient.get_container_client),
        (FakeBlobService.get_user_delegation_key, BlobServiceClient.get_user_delegation_key),
        (FakeContainerClient.get_blob_client, ContainerClient.get_blob_client),
        (FakeContainerClient.list_blobs, ContainerClient.list_blobs),
        (FakeContainerClient.create_container, ContainerClient.create_container),
        (FakeContainerClient.delete_blob, ContainerClient.delete_blob),
        (FakeBlobClient.upload_blob, BlobClient.upload_blob),
        (FakeBlobClient.get_blob_properties, BlobClient.get_blob_properties),
    ],
)
def test_fakes_keep_the_sdk_signatures(fake: Any, real: Any) -> None:
    fake_params = inspect.signature(fake).parameters
    real_params = inspect.signature(real).parameters
    assert list(fake_params) == list(real_params)
    for name, param in fake_params.items():
        assert param.kind == real_params[name].kind, name
        assert param.default == real_params[name].default, name


def account_key_credential(key: str = PLANTED_KEY) -> Any:
    """The credential object a connection-string client really holds."""
    return BlobServiceClient.from_connection_string(
        f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={key};"
        "EndpointSuffix=core.windows.net"
    ).credential


class TokenCredentialStub:
    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        raise AssertionError("the fake service never asks for a token")


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def package(tmp_path: Path) -> Path:
    path = tmp_path / "churn-3.zip"
    path.write_bytes(b"PK\x03\x04 churn" * 100)
    return path


def make_store(
    service: FakeBlobService, clock: Clock | None = None, **kwargs: Any
) -> AzureBlobPackageStore:
    kwargs.setdefault("retry", UploadRetry(attempts=3, backoff_s=0))
    return AzureBlobPackageStore(
        service,
        "packages",
        clock=clock or Clock(),
        **kwargs,
    )


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}


def test_account_key_link_reads_one_blob_from_before_now(package: Path) -> None:
    service = FakeBlobService(account_key_credential())
    store = make_store(service)
    record = store.put(package, package_id="churn", version="3")
    url = store.link(record)
    assert url.startswith("https://acct.blob.core.windows.net/packages/churn/3/churn-3.zip?")
    query = query_of(url)
    assert (query["sp"], query["sr"], query["spr"]) == ("r", "b", "https")
    now = T0.replace(microsecond=0)
    assert query["st"] == _iso(now - timedelta(minutes=5))
    assert query["se"] == _iso(now + timedelta(minutes=15))
    assert "skoid" not in query
    assert PLANTED_KEY not in url


def test_link_settings_set_the_default_expiry_and_skew(package: Path) -> None:
    service = FakeBlobService(account_key_credential(), url="http://127.0.0.1:1/acct/")
    store = make_store(
        service, links=LinkSettings(expiry=timedelta(minutes=30), clock_skew=timedelta(0))
    )
    record = store.put(package, package_id="churn", version="3")
    query = query_of(store.link(record))
    now = T0.replace(microsecond=0)
    assert (query["st"], query["se"]) == (_iso(now), _iso(now + timedelta(minutes=30)))
    assert "spr" not in query  # an http endpoint (an emulator) must stay usable
    assert query_of(store.link(record, timedelta(minutes=2)))["se"] == _iso(
        now + timedelta(minutes=2)
    )


def test_links_in_the_same_second_still_differ(package: Path) -> None:
    clock = Clock()
    store = make_store(FakeBlobService(account_key_credential()), clock)
    record = store.put(package, package_id="churn", version="3")
    urls = [store.link(record) for _ in range(3)]
    assert len(set(urls)) == 3
    starts = [datetime.fromisoformat(query_of(u)["st"]) for u in urls]
    assert starts[0] - starts[1] == starts[1] - starts[2] == timedelta(seconds=1)
    assert {query_of(u)["se"] for u in urls} == {_iso(T0.replace(microsecond=0) + DEFAULT)}
    clock.now += timedelta(seconds=1)
    assert datetime.fromisoformat(query_of(store.link(record))["st"]) == starts[0] + timedelta(
        seconds=1
    )


def test_delegation_key_is_cached_and_renewed_before_it_runs_out(package: Path) -> None:
    service = FakeBlobService(TokenCredentialStub())
    clock = Clock()
    store = make_store(service, clock)
    record = store.put(package, package_id="churn", version="3")

    first = query_of(store.link(record))
    clock.now += timedelta(hours=12)
    second = query_of(store.link(record))
    assert len(service.key_requests) == 1
    start, expiry = service.key_requests[0]
    assert start <= T0 - timedelta(minutes=5)
    assert expiry == T0.replace(microsecond=0) + timedelta(days=1)
    assert first["ske"] == second["ske"]

    # A 15-minute link must end KEY_MARGIN (5 minutes) before its key: 20 minutes before
    # the key expires is the last moment the cached key serves.
    clock.now = T0 + timedelta(days=1) - timedelta(minutes=20)
    assert query_of(store.link(record))["ske"] == first["ske"]
    clock.now += timedelta(seconds=1)
    renewed = query_of(store.link(record))
    assert len(service.key_requests) == 2
    assert renewed["ske"] != first["ske"]

    for query in (first, second, renewed):
        assert query["skoid"] == "00000000-0000-4000-8000-000000000002"
        assert query["sktid"] == "00000000-0000-4000-8000-000000000001"
        assert datetime.fromisoformat(query["se"]) + KEY_MARGIN <= datetime.fromisoformat(
            query["ske"]
        )
        assert datetime.fromisoformat(query["skt"]) <= datetime.fromisoformat(query["st"])


def test_a_long_link_gets_a_key_that_outlives_it(package: Path) -> None:
    service = FakeBlobService(TokenCredentialStub())
    store = make_store(service, links=LinkSettings(delegation_key_lifetime=timedelta(hours=1)))
    record = store.put(package, package_id="churn", version="3")
    query = query_of(store.link(record, expires_in=timedelta(days=3)))
    assert datetime.fromisoformat(query["se"]) + KEY_MARGIN <= datetime.fromisoformat(query["ske"])
    with pytest.raises(PackageStoreError, match="at most"):
        store.link(record, expires_in=timedelta(days=7))


def test_a_key_shorter_than_the_link_is_refused(package: Path) -> None:
    service = FakeBlobService(TokenCredentialStub())
    service.longest_key = timedelta(minutes=10)
    store = make_store(service)
    record = store.put(package, package_id="churn", version="3")
    with pytest.raises(PackageStoreError, match="user delegation key expiring"):
        store.link(record)


def test_transient_upload_failure_is_retried(
    package: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service = FakeBlobService(account_key_credential())
    service.containers["packages"] = {}
    service.upload_failures = [
        ServiceResponseError("connection reset"),
        _http_error(HttpResponseError, 503, "ServerBusy", "busy"),
    ]
    record = make_store(service).put(package, package_id="churn", version="3")
    assert service.uploads == 3
    assert service.contents[("packages", record.key)] == package.read_bytes()
    assert "attempt 1 of 3" in caplog.text
    assert "attempt 2 of 3" in caplog.text


def test_upload_gives_up_after_its_attempts(package: Path) -> None:
    service = FakeBlobService(account_key_credential())
    service.upload_failures = [ServiceRequestError("unreachable")] * 3
    with pytest.raises(PackageStoreError, match="cannot reach") as failed:
        make_store(service).put(package, package_id="churn", version="3")
    assert service.uploads == 3
    assert "container 'packages', blob 'churn/3/churn-3.zip'" in str(failed.value)
    assert "uploading package churn version 3" in str(failed.value)


def test_a_sas_in_the_service_url_is_never_shown(
    package: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A client built on an account URL with a SAS token keeps it in `.url`.
    service = FakeBlobService(
        account_key_credential(),
        url=f"https://acct.blob.core.windows.net/?sv=2025-07-05&sp=rw&sig={PLANTED_SIG}",
    )
    service.upload_failures = [ServiceRequestError("unreachable")] * 3
    store = make_store(service)
    with pytest.raises(PackageStoreError, match="cannot reach") as failed:
        store.put(package, package_id="churn", version="3")
    assert store.account_url == "https://acct.blob.core.windows.net"
    for shown in (str(failed.value), repr(store), caplog.text):
        assert PLANTED_SIG not in shown


def test_a_refused_upload_is_not_retried(package: Path) -> None:
    service = FakeBlobService(account_key_credential())
    service.upload_failures = [_http_error(HttpResponseError, 400, "InvalidHeader", "bad")]
    with pytest.raises(PackageStoreError, match="HttpResponseError: bad"):
        make_store(service).put(package, package_id="churn", version="3")
    assert service.uploads == 1


def test_the_container_is_created_when_missing(package: Path) -> None:
    service = FakeBlobService(account_key_credential())
    store = make_store(service)
    assert store.get("churn", "3") is None
    store.delete("churn", "3")
    record = store.put(package, package_id="churn", version="3")
    assert list(service.containers) == ["packages"]
    properties = service.containers["packages"][record.key]
    assert properties.metadata == {"sha256": record.sha256, "package_id": "churn", "version": "3"}
    assert properties.content_settings.content_type == "application/zip"
    assert len(properties.content_settings.content_md5) == 16


def test_a_blob_without_a_digest_is_not_taken_for_a_package(package: Path) -> None:
    service = FakeBlobService(account_key_credential())
    store = make_store(service)
    store.put(package, package_id="churn", version="3")
    service.containers["packages"]["churn/3/churn-3.zip"].metadata = {}
    with pytest.raises(PackageStoreError, match="no sha256 metadata"):
        store.get("churn", "3")


def test_a_record_of_other_bytes_gets_no_link(package: Path) -> None:
    service = FakeBlobService(account_key_credential())
    store = make_store(service)
    record = store.put(package, package_id="churn", version="3")
    service.containers["packages"][record.key].metadata["sha256"] = "f" * 64
    with pytest.raises(PackageStoreError, match="holds other bytes"):
        store.link(record)


def test_secrets_in_sdk_errors_never_reach_messages_or_logs(
    package: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    service = FakeBlobService(account_key_credential())
    leaky = f"failed GET https://acct/x?sv=1&sig={PLANTED_SIG} with key {PLANTED_KEY}"
    service.upload_failures = [ServiceResponseError(leaky)] * 3
    with pytest.raises(PackageStoreError) as failed:
        make_store(service).put(package, package_id="churn", version="3")
    text = "".join(traceback.format_exception(failed.value))
    assert "with key ***" in str(failed.value)
    assert "sig=***" in str(failed.value)
    assert failed.value.__cause__ is None  # the SDK's error carried a secret: not chained
    for secret in (PLANTED_KEY, PLANTED_SIG):
        assert secret not in text
        assert secret not in caplog.text
    assert "attempt 2 of 3" in caplog.text


def test_an_unreachable_account_names_the_place_and_hides_the_key(
    package: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = AzureBlobPackageStore.from_connection_string(
        f"DefaultEndpointsProtocol=http;AccountName=acct;AccountKey={PLANTED_KEY};"
        "BlobEndpoint=http://127.0.0.1:9/acct;",  # the discard port: nothing listens
        "packages",
        retry=UploadRetry(attempts=2, backoff_s=0),
        retry_total=0,
        logging_enable=True,
    )
    with pytest.raises(
        PackageStoreError, match=r"cannot reach http://127\.0\.0\.1:9/acct"
    ) as failed:
        store.put(package, package_id="churn", version="3")
    assert "container 'packages', blob 'churn/3/churn-3.zip'" in str(failed.value)
    assert PLANTED_KEY not in "".join(traceback.format_exception(failed.value))
    assert PLANTED_KEY not in caplog.text
    assert PLANTED_KEY not in repr(store)
    assert "attempt 1 of 2" in caplog.text


def test_a_malformed_connection_string_is_not_echoed() -> None:
    with pytest.raises(PackageStoreError, match="malformed") as failed:
        AzureBlobPackageStore.from_connection_string(f"garbage{PLANTED_KEY}", "packages")
    assert PLANTED_KEY not in str(failed.value)
    assert failed.value.__cause__ is None


def test_a_sas_connection_string_cannot_sign_links() -> None:
    with pytest.raises(PackageStoreError, match="cannot sign links") as failed:
        AzureBlobPackageStore.from_connection_string(
            "BlobEndpoint=https://acct.blob.core.windows.net/;"
            f"SharedAccessSignature=sv=2025-07-05&sp=r&sig={PLANTED_SIG}",
            "packages",
        )
    assert PLANTED_SIG not in str(failed.value)


def test_azure_ad_needs_https() -> None:
    with pytest.raises(PackageStoreError, match="https://"):
        AzureBlobPackageStore.from_account_url(
            "http://acct.blob.core.windows.net", TokenCredentialStub(), "packages"
        )


@pytest.mark.parametrize("name", ["ab", "Packages", "pack--ages", "-packages", "a" * 64])
def test_invalid_container_names_are_refused(name: str) -> None:
    with pytest.raises(PackageStoreError, match="container name"):
        AzureBlobPackageStore(
            FakeBlobService(account_key_credential()),
            name,
        )


def test_a_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "azure.storage.blob", None)
    with pytest.raises(ImportError, match=r"modelferry\[azure\]"):
        AzureBlobPackageStore.from_connection_string("x", "packages")


def test_upload_retries_wait_a_jittered_doubling_window(
    package: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service = FakeBlobService(account_key_credential())
    service.containers["packages"] = {}
    service.upload_failures = [
        ServiceResponseError("connection reset"),
        _http_error(HttpResponseError, 503, "ServerBusy", "busy"),
        ServiceRequestError("unreachable"),
    ]
    waits: list[float] = []
    store = make_store(
        service,
        retry=UploadRetry(attempts=4, backoff_s=2.0),
        sleep=lambda seconds: waits.append(float(seconds)),
    )
    with caplog.at_level(logging.WARNING):
        store.put(package, package_id="churn", version="3")
    assert service.uploads == 4
    assert len(waits) == 3
    assert all(0.0 <= w <= window for w, window in zip(waits, [2.0, 4.0, 8.0], strict=True))
    assert waits != [2.0, 4.0, 8.0]
    assert "attempt 3 of 4" in caplog.text
    assert f"retrying in {waits[2]:.1f} s" in caplog.text


def test_a_refused_or_final_upload_waits_for_nothing(package: Path) -> None:
    waits: list[float] = []
    service = FakeBlobService(account_key_credential())
    service.upload_failures = [_http_error(HttpResponseError, 403, "AuthorizationFailure", "no")]
    store = make_store(service, sleep=lambda seconds: waits.append(float(seconds)))
    with pytest.raises(PackageStoreError):
        store.put(package, package_id="churn", version="3")
    assert service.uploads == 1
    assert waits == []


def test_a_negative_upload_backoff_is_refused() -> None:
    with pytest.raises(PackageStoreError, match="backoff_s not negative"):
        make_store(FakeBlobService(account_key_credential()), retry=UploadRetry(backoff_s=-1))
