"""Signing read-only SAS links to exactly one blob, with an account key or a delegation key.

A link grants read (`sp=r`) on one blob (`sr=b`), starts a little in the past so a device
whose clock runs behind can use it at once, and expires after the requested time. With
Azure AD credentials it is signed with a user delegation key: the key is cached and
renewed before it runs out, and every link expires before the key that signed it.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from modelferry.errors import PackageStoreError
from modelferry.redaction import Redactor
from modelferry.stores.azure_sdk import blob_sdk
from modelferry.stores.base import DEFAULT_LINK_EXPIRY

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient, UserDelegationKey


@dataclass(frozen=True)
class LinkSettings:
    """How links are signed."""

    expiry: timedelta = DEFAULT_LINK_EXPIRY
    """How long a link is valid when `link()` is not told."""
    clock_skew: timedelta = timedelta(minutes=5)
    """How far in the past a link starts, for devices whose clock runs behind."""
    delegation_key_lifetime: timedelta = timedelta(days=1)
    """How long a user delegation key is asked for (Azure AD credentials; at most 7 days)."""


MAX_DELEGATION_KEY_LIFETIME = timedelta(days=7)
"""Azure issues user delegation keys for at most seven days."""

KEY_MARGIN = timedelta(minutes=5)
"""A link expires at least this long before the key that signed it."""

START_HEADROOM = timedelta(minutes=5)
"""How far before a link's start a delegation key starts (see `IssuedStarts`)."""


class IssuedStarts:
    """Makes every link for a blob unique although signed times have one-second resolution.

    Links asked for one blob within the same second would carry the same signed start and
    expiry, hence the same URL; each further one starts one second earlier instead. A start
    further in the past grants nothing: a URL cannot be used before it is handed out.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._second: datetime | None = None
        self._counts: dict[str, int] = {}

    def earlier_links(self, blob: str, now: datetime) -> int:
        """How many links for `blob` were signed in the second `now` (whole seconds)."""
        with self._lock:
            if now != self._second:
                self._second = now
                self._counts.clear()
            count = self._counts.get(blob, 0)
            self._counts[blob] = count + 1
            return count


class BlobSasSigner(ABC):
    """Signs read-only SAS query strings for one blob.

    Args:
        account_name: the storage account the blobs are in.
        clock_skew: how far before now a link's validity starts, for clocks that differ.
        https_only: links refuse plain HTTP.
    """

    def __init__(self, account_name: str, *, clock_skew: timedelta, https_only: bool) -> None:
        self.account_name = account_name
        self.clock_skew = clock_skew
        self.https_only = https_only
        self._issued = IssuedStarts()

    def sign(self, container: str, blob: str, now: datetime, expires_in: timedelta) -> str:
        """The SAS query string (no leading `?`) for reading `container/blob`.

        Raises:
            PackageStoreError: a delegation key cannot be had, or cannot outlive the link.
        """
        now = now.replace(microsecond=0)
        earlier = self._issued.earlier_links(f"{container}/{blob}", now)
        start = now - self.clock_skew - timedelta(seconds=earlier)
        return self._sign(container, blob, start, now + expires_in, now)

    @abstractmethod
    def _sign(
        self, container: str, blob: str, start: datetime, expiry: datetime, now: datetime
    ) -> str:
        """Sign a read SAS valid from `start` to `expiry`."""

    def _generate(
        self,
        container: str,
        blob: str,
        start: datetime,
        expiry: datetime,
        *,
        account_key: str | None = None,
        delegation_key: UserDelegationKey | None = None,
    ) -> str:
        with blob_sdk():
            from azure.storage.blob import BlobSasPermissions, generate_blob_sas
        return generate_blob_sas(
            self.account_name,
            container,
            blob,
            account_key=account_key,
            user_delegation_key=delegation_key,
            permission=BlobSasPermissions(read=True),
            start=start,
            expiry=expiry,
            protocol="https" if self.https_only else None,
        )


class AccountKeySigner(BlobSasSigner):
    """Signs with the storage account key (service SAS)."""

    def __init__(
        self, account_name: str, account_key: str, *, clock_skew: timedelta, https_only: bool
    ) -> None:
        super().__init__(account_name, clock_skew=clock_skew, https_only=https_only)
        self._account_key = account_key

    def _sign(
        self, container: str, blob: str, start: datetime, expiry: datetime, now: datetime
    ) -> str:
        return self._generate(container, blob, start, expiry, account_key=self._account_key)


class UserDelegationSigner(BlobSasSigner):
    """Signs with a user delegation key got with the service client's Azure AD credential.

    The key is fetched on the first link, lives `key_lifetime` (at most seven days) and is
    renewed once it would expire less than `KEY_MARGIN` after the link being signed.
    """

    def __init__(
        self,
        service: BlobServiceClient,
        account_name: str,
        *,
        clock_skew: timedelta,
        https_only: bool,
        key_lifetime: timedelta,
    ) -> None:
        if not timedelta(0) < key_lifetime <= MAX_DELEGATION_KEY_LIFETIME:
            raise PackageStoreError(
                f"a user delegation key lives more than 0 and at most 7 days, not {key_lifetime}"
            )
        super().__init__(account_name, clock_skew=clock_skew, https_only=https_only)
        self._service = service
        self._key_lifetime = key_lifetime
        self._lock = threading.Lock()
        self._key: UserDelegationKey | None = None
        self._key_start = datetime.min
        self._key_expiry = datetime.min

    def _sign(
        self, container: str, blob: str, start: datetime, expiry: datetime, now: datetime
    ) -> str:
        key, key_start = self._key_for(expiry, now)
        # A burst can step a start back past the key's own start (see IssuedStarts).
        return self._generate(container, blob, max(start, key_start), expiry, delegation_key=key)

    def _key_for(self, expiry: datetime, now: datetime) -> tuple[UserDelegationKey, datetime]:
        """A cached key valid until `KEY_MARGIN` after `expiry`, fetching one if needed."""
        needed = expiry + KEY_MARGIN
        if needed > now + MAX_DELEGATION_KEY_LIFETIME:
            raise PackageStoreError(
                f"a link signed with Azure AD credentials can live at most "
                f"{MAX_DELEGATION_KEY_LIFETIME - KEY_MARGIN} (a user delegation key lives "
                f"7 days and must outlive the link); ask for a shorter expires_in"
            )
        with self._lock:
            if self._key is None or self._key_expiry < needed or self._key_start > now:
                start = now - self.clock_skew - START_HEADROOM
                longest = now + MAX_DELEGATION_KEY_LIFETIME
                wanted = min(max(now + self._key_lifetime, needed), longest)
                key = self._service.get_user_delegation_key(
                    key_start_time=start, key_expiry_time=wanted
                )
                self._key = key
                self._key_start = _parse_time(key.signed_start, start)
                self._key_expiry = _parse_time(key.signed_expiry, wanted)
                if self._key_expiry < needed:
                    raise PackageStoreError(
                        f"Azure issued a user delegation key expiring at {self._key_expiry:%c} "
                        f"UTC, before the link would ({expiry:%c} UTC); ask for a shorter "
                        "expires_in"
                    )
            return self._key, self._key_start


def _parse_time(value: str | None, fallback: datetime) -> datetime:
    """A time the service returned (ISO 8601, UTC), or what was asked for."""
    if not value:
        return fallback
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=fallback.tzinfo)


def signer_for(service: BlobServiceClient, links: LinkSettings) -> tuple[BlobSasSigner, Redactor]:
    """The signer the client's credential allows, and a redactor for that credential."""
    credential = service.credential
    account_name = service.account_name
    if not account_name:
        raise PackageStoreError(
            f"cannot tell the storage account from {service.url!r}; use an account URL like "
            "https://<account>.blob.core.windows.net"
        )
    https_only = service.url.lower().startswith("https://")
    account_key = getattr(credential, "account_key", None)
    if isinstance(account_key, str) and account_key:
        signer: BlobSasSigner = AccountKeySigner(
            account_name, account_key, clock_skew=links.clock_skew, https_only=https_only
        )
        return signer, Redactor([account_key])
    if callable(getattr(credential, "get_token", None)):
        signer = UserDelegationSigner(
            service,
            account_name,
            clock_skew=links.clock_skew,
            https_only=https_only,
            key_lifetime=links.delegation_key_lifetime,
        )
        return signer, Redactor()
    raise PackageStoreError(
        "AzureBlobPackageStore cannot sign links with this client's credential: use a "
        "connection string with AccountKey, or an account URL with an Azure AD credential "
        "(a SAS or anonymous client cannot sign SAS links)"
    )
