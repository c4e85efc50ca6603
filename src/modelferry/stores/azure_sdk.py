"""Using the optional Blob Storage SDK: importing it, and turning its errors into ours.

Messages never carry a secret: the account key and any SAS signature are cut out of
everything that reaches an exception or a log line.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from modelferry.errors import PackageStoreError
from modelferry.extras import install_hint, requires_extra
from modelferry.redaction import MASK, Redactor

INSTALL_HINT = install_hint("azure")
#: What a secret is replaced with (`modelferry.redaction.MASK`).
REDACTED = MASK
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@contextmanager
def blob_sdk() -> Iterator[None]:
    """Wrap imports of `azure.*`: a missing SDK raises a `MissingExtraError` naming the extra."""
    with requires_extra("azure", "AzureBlobPackageStore", "the Azure SDKs"):
        yield


def is_transient(exc: BaseException) -> bool:
    """Whether trying the whole operation again may succeed."""
    with blob_sdk():
        from azure.core.exceptions import (
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
        )
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return True
    return isinstance(exc, HttpResponseError) and exc.status_code in _TRANSIENT_STATUS


def store_error(
    exc: BaseException, doing: str, where: str, redact: Redactor, account_url: str
) -> PackageStoreError:
    """A `PackageStoreError` saying what failed, where, and what to do; no secret in it.

    Raise it `from safe_cause(exc, redact)`.

    Args:
        exc: the SDK's (or the OS's) error.
        doing: what was being done, e.g. "uploading package churn version 3".
        where: the container and blob, e.g. "container 'packages', blob 'churn/3/p.zip'".
        redact: cuts the store's secrets out of the SDK's text.
        account_url: the storage account's blob endpoint (not a secret).
    """
    with blob_sdk():
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
        )
    raw = str(exc).strip()
    text = redact(raw)
    detail = text.splitlines()[0].rstrip(".") if text else ""
    status = exc.status_code if isinstance(exc, HttpResponseError) else None
    if isinstance(exc, ClientAuthenticationError) or status == 403:
        advice = (
            "access was refused: check the connection string's account key, or that the "
            "Azure AD identity has the 'Storage Blob Data Contributor' role on the account "
            "(links signed with Azure AD also need 'Storage Blob Delegator')"
        )
    elif isinstance(exc, ServiceRequestError):
        advice = (
            f"cannot reach {account_url}: check the account URL (or connection string) "
            "and the network, then run again"
        )
    elif isinstance(exc, ServiceResponseError) or status in _TRANSIENT_STATUS:
        advice = "Blob Storage did not answer in full: run again later"
    elif isinstance(exc, OSError):
        advice = "check that the package file exists and is readable"
    else:
        advice = "check the storage account and the container, then run again"
    return PackageStoreError(
        f"{doing} failed ({where} at {account_url}): {type(exc).__name__}: {detail}; {advice}"
    )


def safe_cause(exc: BaseException, redact: Redactor) -> BaseException | None:
    """`exc` to chain under our error, or None when its text carries a secret."""
    text = str(exc)
    return exc if redact(text) == text else None
