"""`AzureBlobPackageStore`: packages in a Blob Storage container, read-only SAS links.

Build it from a connection string (links signed with the account key) or from an account
URL and an Azure AD `TokenCredential` (links signed with a user delegation key):

    store = AzureBlobPackageStore.from_account_url(
        "https://acct.blob.core.windows.net", DefaultAzureCredential(), "packages")
    record = store.put(Path("dist/churn-7.zip"), package_id="churn", version="7")
    url = store.link(record)  # GET-able by a device for 15 minutes, read-only, one blob
"""

from __future__ import annotations

import logging
import mimetypes
import re
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from modelferry.errors import PackageStoreError
from modelferry.retrying import Backoff, RetryNotice
from modelferry.stores.azure_sas import BlobSasSigner, LinkSettings, signer_for
from modelferry.stores.azure_sdk import blob_sdk, is_transient, safe_cause, store_error
from modelferry.stores.base import PackageStore, StoredPackage
from modelferry.stores.keys import FileDigest, file_digest, package_key, package_prefix
from modelferry.stores.rules import check_record, existing_or_refuse, resolve_expiry

__all__ = ["AzureBlobPackageStore", "LinkSettings", "UploadRetry"]

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.storage.blob import BlobServiceClient

logger = logging.getLogger(__name__)

# 3-63 lowercase letters, digits and single hyphens, starting and ending alphanumeric.
_CONTAINER = re.compile(r"(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")

DEFAULT_CLIENT_OPTIONS: dict[str, Any] = {
    # The SDK's own per-request retries, with shorter waits than its 15 s default.
    "retry_total": 3,
    "initial_backoff": 2,
    "increment_base": 2,
}


@dataclass(frozen=True)
class UploadRetry:
    """Retries of a whole upload, on top of the SDK's retries of each request."""

    attempts: int = 3
    backoff_s: float = 2.0
    """Longest wait in seconds before the second attempt; it doubles for each further one,
    and each wait is drawn at random below it (jitter)."""


DEFAULT_LINKS = LinkSettings()
DEFAULT_RETRY = UploadRetry()


def _utc_now() -> datetime:
    return datetime.now(UTC)


class AzureBlobPackageStore(PackageStore):
    """Packages as blobs `{package_id}/{version}/{file name}` in one container.

    Each blob carries its SHA-256 in metadata (`sha256`) and its MD5 as Content-MD5, and
    is uploaded with `overwrite=False`: the same bytes again return the stored record,
    other bytes raise `PackageStoreError`. A single-shot upload, or the commit of a
    staged one, makes the blob appear whole or not at all. The container is created on
    the first upload when it is missing.

    Links are SAS URLs for reading exactly one blob, starting `clock_skew` in the past and
    valid for `expires_in`. Errors and logs never contain the account key or a SAS.
    """

    name = "azure_blob"

    def __init__(
        self,
        service: BlobServiceClient,
        container: str,
        *,
        links: LinkSettings = DEFAULT_LINKS,
        retry: UploadRetry = DEFAULT_RETRY,
        clock: Callable[[], datetime] = _utc_now,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Use `service`, whose credential decides how links are signed.

        Args:
            service: a client with the account key (from a connection string) or an Azure
                AD token credential; a SAS or anonymous client cannot sign links.
            container: the container holding the packages.
            links: link expiry, clock skew and delegation key lifetime.
            retry: retries of whole uploads.
            clock: the current time (UTC); tests pass their own.
            sleep: waits between upload attempts; tests pass their own.

        Raises:
            PackageStoreError: the container name is invalid or the credential cannot
                sign links.
        """
        if not _CONTAINER.fullmatch(container):
            raise PackageStoreError(
                f"container name {container!r} is invalid: use 3-63 lowercase letters, "
                "digits and single hyphens, starting and ending with a letter or digit"
            )
        if retry.attempts < 1 or retry.backoff_s < 0:
            raise PackageStoreError(
                "UploadRetry.attempts must be at least 1 and backoff_s not negative"
            )
        if links.expiry <= timedelta(0) or links.clock_skew < timedelta(0):
            raise PackageStoreError(
                "LinkSettings.expiry must be positive and clock_skew not negative"
            )
        self.container = container
        # The SDK's URL holds a SAS token as its query when the client was built with one:
        # cut here, so no message, log line or repr can show it.
        self.account_url = service.url.partition("?")[0].rstrip("/")
        self.links = links
        self.retry = retry
        self._clock = clock
        self._sleep = sleep
        self._containers = service.get_container_client(container)
        self._signer, self._redact = signer_for(service, links)

    @classmethod
    def from_connection_string(
        cls,
        connection_string: str | SecretStr,
        container: str,
        *,
        links: LinkSettings = DEFAULT_LINKS,
        retry: UploadRetry = DEFAULT_RETRY,
        **client_options: Any,
    ) -> AzureBlobPackageStore:
        """A store whose links are signed with the account key in the connection string.

        `client_options` go to `BlobServiceClient` (e.g. `connection_verify`, `retry_total`).

        Raises:
            PackageStoreError: the connection string is malformed or has no account key.
        """
        with blob_sdk():
            from azure.storage.blob import BlobServiceClient
        secret = (
            connection_string.get_secret_value()
            if isinstance(connection_string, SecretStr)
            else connection_string
        )
        try:
            service = BlobServiceClient.from_connection_string(
                secret, **{**DEFAULT_CLIENT_OPTIONS, **client_options}
            )
        except ValueError:
            # Not chained: the SDK's error may quote the string, account key included.
            raise PackageStoreError(
                "the Blob Storage connection string is malformed; copy it from the storage "
                "account's 'Access keys' page (it needs AccountName and AccountKey)"
            ) from None
        return cls(service, container, links=links, retry=retry)

    @classmethod
    def from_account_url(
        cls,
        account_url: str,
        credential: TokenCredential,
        container: str,
        *,
        links: LinkSettings = DEFAULT_LINKS,
        retry: UploadRetry = DEFAULT_RETRY,
        **client_options: Any,
    ) -> AzureBlobPackageStore:
        """A store signing links with user delegation keys got with an Azure AD credential.

        The identity needs 'Storage Blob Data Contributor' (upload) and 'Storage Blob
        Delegator' (links) on the account. `client_options` go to `BlobServiceClient`.

        Raises:
            PackageStoreError: the URL is not https (Azure AD tokens travel only over TLS).
        """
        with blob_sdk():
            from azure.storage.blob import BlobServiceClient
        if not account_url.lower().startswith("https://"):
            raise PackageStoreError(
                f"account URL {account_url!r} must start with https:// to sign in with "
                "Azure AD, e.g. https://<account>.blob.core.windows.net"
            )
        service = BlobServiceClient(
            account_url, credential=credential, **{**DEFAULT_CLIENT_OPTIONS, **client_options}
        )
        return cls(service, container, links=links, retry=retry)

    @property
    def signer(self) -> BlobSasSigner:
        """What signs links: `AccountKeySigner` or `UserDelegationSigner`."""
        return self._signer

    def __repr__(self) -> str:
        return (
            f"AzureBlobPackageStore(account_url={self.account_url!r}, "
            f"container={self.container!r}, signer={type(self._signer).__name__})"
        )

    def put(self, path: Path, *, package_id: str, version: str) -> StoredPackage:
        """Upload the package file; idempotent for the same bytes.

        Transient failures are retried for the whole put (`UploadRetry`, exponential
        backoff with jitter), on top of the SDK's retries of each request.

        Raises:
            PackageStoreError: the file is unreadable, the names are unsafe, the version
                exists with other bytes, or Blob Storage refused or stayed unreachable.
        """
        with blob_sdk():
            from azure.core.exceptions import AzureError
        path = Path(path)
        key = package_key(package_id, version, path.name)
        digest = file_digest(path)
        record = StoredPackage(package_id, version, key, digest.size, digest.sha256)
        doing = f"uploading package {package_id} version {version}"

        def log(retry: RetryNotice) -> None:
            logger.warning(
                "%s to %s failed (attempt %d of %d): %s; retrying in %.1f s",
                doing,
                self._where(key),
                retry.attempt,
                self.retry.attempts,
                self._redact(f"{type(retry.error).__name__}: {retry.error}".splitlines()[0]),
                retry.delay,
            )

        backoff = Backoff.uncapped(self.retry.backoff_s, self.retry.attempts)
        retrying = backoff.retrying(
            (AzureError, OSError), when=is_transient, on_retry=log, sleep=self._sleep
        )
        try:
            return retrying(self._put_once, path, record, digest)
        except (AzureError, OSError) as exc:
            raise self._error(exc, doing, key) from self._cause(exc)

    def get(self, package_id: str, version: str) -> StoredPackage | None:
        """The stored package (SHA-256 from its metadata), or None.

        Raises:
            PackageStoreError: the names are unsafe, the blob was not put by a store (no
                `sha256` metadata), or Blob Storage refused.
        """
        with blob_sdk():
            from azure.core.exceptions import AzureError
        try:
            return self._lookup(package_id, version)
        except AzureError as exc:
            raise self._error(
                exc, f"looking up package {package_id} version {version}"
            ) from self._cause(exc)

    def link(self, package: StoredPackage, expires_in: timedelta | None = None) -> str:
        """A fresh SAS URL reading this one blob, valid for `expires_in` (default: settings).

        Raises:
            PackageStoreError: the package is not in the container (or holds other bytes
                than the record), `expires_in` is not positive or too long for a user
                delegation key, or Blob Storage refused.
        """
        with blob_sdk():
            from azure.core.exceptions import AzureError, ResourceNotFoundError
        expiry = resolve_expiry(expires_in, self.links.expiry)
        check_record(package)
        blob = self._containers.get_blob_client(package.key)
        doing = f"signing a link to package {package.package_id} version {package.version}"
        try:
            properties = blob.get_blob_properties()
            if (properties.metadata or {}).get("sha256") != package.sha256:
                raise PackageStoreError(
                    f"{self._where(package.key)} holds other bytes than this record of "
                    f"package {package.package_id} version {package.version}; get() the "
                    "current record",
                    package=package.package_id,
                    package_version=package.version,
                    store_url=self._blob_url(package.key),
                )
            query = self._signer.sign(self.container, package.key, self._clock(), expiry)
        except ResourceNotFoundError:
            raise PackageStoreError(
                f"package {package.package_id} version {package.version} is not in "
                f"{self._where(package.key)}; put it before asking for a link",
                package=package.package_id,
                package_version=package.version,
                store_url=self._blob_url(package.key),
            ) from None
        except AzureError as exc:
            raise self._error(exc, doing, package.key) from self._cause(exc)
        return f"{blob.url}?{query}"

    def delete(self, package_id: str, version: str) -> None:
        """Delete the version's blobs (and their snapshots); succeeds when there are none.

        Raises:
            PackageStoreError: the names are unsafe or Blob Storage refused.
        """
        with blob_sdk():
            from azure.core.exceptions import AzureError, ResourceNotFoundError
        prefix = package_prefix(package_id, version)
        try:
            names = [b.name for b in self._containers.list_blobs(name_starts_with=prefix)]
            for name in names:
                # Deleted meanwhile is the outcome we want.
                with suppress(ResourceNotFoundError):
                    self._containers.delete_blob(name, delete_snapshots="include")
        except ResourceNotFoundError:
            return  # no container: nothing to delete
        except AzureError as exc:
            raise self._error(
                exc, f"deleting package {package_id} version {version}"
            ) from self._cause(exc)

    def _put_once(self, path: Path, record: StoredPackage, digest: FileDigest) -> StoredPackage:
        """One try at `put()`; the SDK's errors pass through for the retry loop to judge."""
        with blob_sdk():
            from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
        existing = self._lookup(record.package_id, record.version)
        if existing is not None:
            return existing_or_refuse(existing, record.sha256, self._where())
        try:
            try:
                self._upload(path, record, digest)
            except ResourceNotFoundError as exc:
                if getattr(exc, "error_code", None) != "ContainerNotFound":
                    raise
                self._create_container()
                self._upload(path, record, digest)
        except ResourceExistsError:
            # Another put of this version got there first; the same bytes are success.
            raced = self._lookup(record.package_id, record.version)
            if raced is None:
                raise PackageStoreError(
                    f"package {record.package_id} version {record.version} changed in "
                    f"{self._where(record.key)} while it was being put; put it again",
                    package=record.package_id,
                    package_version=record.version,
                    store_url=self._blob_url(record.key),
                ) from None
            return existing_or_refuse(raced, record.sha256, self._where())
        return record

    def _lookup(self, package_id: str, version: str) -> StoredPackage | None:
        """`get()` with the SDK's errors passing through."""
        with blob_sdk():
            from azure.core.exceptions import ResourceNotFoundError
        prefix = package_prefix(package_id, version)
        try:
            blobs = list(self._containers.list_blobs(name_starts_with=prefix, include=["metadata"]))
        except ResourceNotFoundError:
            return None  # no container yet
        files = sorted((b for b in blobs if "/" not in b.name[len(prefix) :]), key=lambda b: b.name)
        if not files:
            return None
        found = files[0]
        sha256 = (found.metadata or {}).get("sha256")
        if not sha256:
            raise PackageStoreError(
                f"blob {found.name!r} in container {self.container!r} has no sha256 metadata: "
                "it was not put by a package store; delete it and put the package again"
            )
        return StoredPackage(package_id, version, found.name, found.size, sha256)

    def _upload(self, path: Path, record: StoredPackage, digest: FileDigest) -> None:
        with blob_sdk():
            from azure.storage.blob import ContentSettings
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        blob = self._containers.get_blob_client(record.key)
        with path.open("rb") as data:
            blob.upload_blob(
                data,
                length=digest.size,
                overwrite=False,
                metadata={
                    "sha256": digest.sha256,
                    "package_id": record.package_id,
                    "version": record.version,
                },
                content_settings=ContentSettings(
                    content_type=content_type, content_md5=bytearray(digest.md5)
                ),
                # Each request carries its MD5 too, so the service rejects a corrupted body.
                validate_content=True,
            )

    def _create_container(self) -> None:
        with blob_sdk():
            from azure.core.exceptions import ResourceExistsError
        with suppress(ResourceExistsError):  # created meanwhile by another upload
            self._containers.create_container()
            logger.info("created container %r at %s", self.container, self.account_url)

    def _blob_url(self, blob: str) -> str:
        return f"{self.account_url}/{self.container}/{blob}"

    def _where(self, blob: str | None = None) -> str:
        container = f"container {self.container!r}"
        return f"{container}, blob {blob!r}" if blob else container

    def _error(self, exc: BaseException, doing: str, blob: str | None = None) -> PackageStoreError:
        return store_error(exc, doing, self._where(blob), self._redact, self.account_url)

    def _cause(self, exc: BaseException) -> BaseException | None:
        return safe_cause(exc, self._redact)
