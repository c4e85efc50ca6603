"""The `PackageStore` interface.

A store keeps signed package zips under `{package_id}/{version}/{file name}` and hands out
short-lived, read-only links to exactly one package. Implementations: `local` (a folder,
`file://` links, single host) and `azure_blob` (Blob Storage, SAS links). All pass the shared
contract suite in `modelferry.testing.contracts.store`.

Contract:
- `put()` uploads a package file and returns its `StoredPackage`. It is idempotent: putting
  the same bytes again returns the same record; putting *different* bytes under an existing
  id and version raises `PackageStoreError` (a published version never changes under
  devices). An upload is all-or-nothing: a failed or interrupted `put()` leaves no partial
  package visible. Transient failures are retried inside; what still fails raises
  `PackageStoreError`.
- `link()` returns a fresh URL for every call, read-only, for this one package, valid for
  `expires_in` (default 15 minutes). Devices fetch it with a plain HTTP GET (or read it as
  a file for `file://`). Unknown package → `PackageStoreError`.
- `get()` returns the stored record or None; `delete()` of a missing package succeeds.
- All calls block until done; call them from async code with `asyncio.to_thread`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

DEFAULT_LINK_EXPIRY = timedelta(minutes=15)


@dataclass(frozen=True)
class StoredPackage:
    """A package in a store."""

    package_id: str
    version: str
    key: str
    """Where it lives in the store: `{package_id}/{version}/{file name}`."""
    size: int
    sha256: str


class PackageStore(ABC):
    """Keeps package zips and hands out read-only, short-lived links to them."""

    name: str = "store"

    @abstractmethod
    def put(self, path: Path, *, package_id: str, version: str) -> StoredPackage:
        """Upload the package file at `path`; idempotent for the same bytes."""

    @abstractmethod
    def get(self, package_id: str, version: str) -> StoredPackage | None:
        """The stored package, or None when there is none."""

    @abstractmethod
    def link(self, package: StoredPackage, expires_in: timedelta = DEFAULT_LINK_EXPIRY) -> str:
        """A fresh read-only URL to this one package, valid for `expires_in`."""

    @abstractmethod
    def delete(self, package_id: str, version: str) -> None:
        """Remove the package; succeeds when there is none."""
