"""Rules of the `PackageStore` contract that every store applies the same way."""

from __future__ import annotations

from datetime import timedelta

from modelferry.errors import PackageStoreError
from modelferry.stores.base import StoredPackage
from modelferry.stores.keys import split_key


def existing_or_refuse(existing: StoredPackage, sha256: str, where: str) -> StoredPackage:
    """The stored record when it holds the same bytes; a published version never changes.

    Args:
        existing: what the store already holds for this id and version.
        sha256: the digest of the bytes being put.
        where: the store and place, for the message, e.g. "container 'packages'".

    Raises:
        PackageStoreError: the stored bytes differ.
    """
    if existing.sha256 == sha256:
        return existing
    raise PackageStoreError(
        f"package {existing.package_id} version {existing.version} already exists in {where} "
        f"as {existing.key} with different bytes (sha256 {existing.sha256[:12]}..., "
        f"new {sha256[:12]}...); a published version never changes: publish a new version, "
        "or delete this one first if no device uses it"
    )


def resolve_expiry(expires_in: timedelta | None, default: timedelta) -> timedelta:
    """`expires_in`, or the store's default when None.

    Raises:
        PackageStoreError: it is not positive.
    """
    expiry = default if expires_in is None else expires_in
    if expiry <= timedelta(0):
        raise PackageStoreError(f"a link must expire in the future; expires_in was {expiry}")
    return expiry


def check_record(package: StoredPackage) -> str:
    """The file name of a record whose key matches its id and version.

    Raises:
        PackageStoreError: the key is malformed or names another package.
    """
    package_id, version, file_name = split_key(package.key)
    if (package_id, version) != (package.package_id, package.version):
        raise PackageStoreError(
            f"record key {package.key!r} does not belong to package {package.package_id} "
            f"version {package.version}; use the record the store returned"
        )
    return file_name
