"""`LocalPackageStore`: packages in a folder, `file://` links (single host)."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import uuid
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

from modelferry.errors import PackageStoreError
from modelferry.stores.base import DEFAULT_LINK_EXPIRY, PackageStore, StoredPackage
from modelferry.stores.keys import file_digest, package_key, package_prefix
from modelferry.stores.rules import check_record, existing_or_refuse, resolve_expiry

DEFAULT_ROOT = Path(".modelferry/packages")
"""The embedded default's store, relative to the working directory."""

_CHUNK = 1024 * 1024
_TICK = timedelta(microseconds=1)


class LocalPackageStore(PackageStore):
    """Packages under a folder, `{root}/{package_id}/{version}/{file name}`.

    `put()` copies the file to a hidden temporary file next to its final place, fsyncs it
    and publishes it with a hard link: a reader sees the whole file or nothing, and unlike
    a rename a link never replaces a file another writer published in the meantime. The
    folder needs a filesystem with hard links (any local Linux, macOS or NTFS disk).

    Links are `file://` URLs to the file itself, so they only work on this host (or where
    the same path is mounted). Each carries its expiry as a query value,
    `?expires=2026-03-01T12:15:00.000000Z` (UTC), which makes every link distinct and
    which the reference edge agent honours; read the file at the URL's path. **Expiry
    cannot be enforced for file URLs**: whoever can read the folder can read the package
    for as long as it exists, whatever the link says. Use this store for the embedded
    default and tests; use `AzureBlobPackageStore` for devices elsewhere.
    """

    name = "local"

    def __init__(self, root: Path | str = DEFAULT_ROOT) -> None:
        """Keep packages under `root` (created on the first `put()`)."""
        self.root = Path(root)
        self._lock = threading.Lock()
        self._last_issued = datetime.min.replace(tzinfo=UTC)

    def __repr__(self) -> str:
        return f"LocalPackageStore(root={str(self.root)!r})"

    def put(self, path: Path, *, package_id: str, version: str) -> StoredPackage:
        """Copy the package file in atomically; idempotent for the same bytes.

        Raises:
            PackageStoreError: the file is unreadable, the names are unsafe, the version
                exists with other bytes, or the folder cannot be written.
        """
        path = Path(path)
        key = package_key(package_id, version, path.name)
        existing = self.get(package_id, version)
        if existing is not None:
            return existing_or_refuse(existing, file_digest(path).sha256, self._where)
        if not path.is_file():
            raise PackageStoreError(
                f"package file {path} does not exist; build the package first",
                package=package_id,
                package_version=version,
                store_url=str(self.root),
            )
        folder = self.root / package_id / version
        temp = folder / f".{path.name}.{uuid.uuid4().hex}.tmp"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            size, sha256 = _copy_synced(path, temp)
            try:
                os.link(temp, self.root / key)
            except FileExistsError:
                # Another put of this version won the race; same bytes is still success.
                raced = self.get(package_id, version)
                if raced is None:  # deleted again in between
                    raise PackageStoreError(
                        f"package {package_id} version {version} changed in {self._where} "
                        "while it was being put; put it again",
                        package=package_id,
                        package_version=version,
                        store_url=str(self.root),
                    ) from None
                return existing_or_refuse(raced, sha256, self._where)
            _sync_folder(folder)
        except OSError as exc:
            raise PackageStoreError(
                f"cannot write package {package_id} version {version} to {self._where}: "
                f"{exc.strerror or exc}; check that the folder is writable and has space",
                package=package_id,
                package_version=version,
                store_url=str(self.root),
            ) from exc
        finally:
            with suppress(OSError):  # never made, or a hidden leftover get() ignores
                temp.unlink()
        return StoredPackage(package_id, version, key, size, sha256)

    def get(self, package_id: str, version: str) -> StoredPackage | None:
        """The stored package (its SHA-256 read from disk), or None.

        Raises:
            PackageStoreError: the names are unsafe or the file cannot be read.
        """
        prefix = package_prefix(package_id, version)
        file = self._find(self.root / prefix)
        if file is None:
            return None
        digest = file_digest(file)
        return StoredPackage(package_id, version, prefix + file.name, digest.size, digest.sha256)

    def link(self, package: StoredPackage, expires_in: timedelta | None = None) -> str:
        """A `file://` URL to the package file, stating its expiry (not enforced: see class).

        Raises:
            PackageStoreError: the package is not in this store (or was replaced), or
                `expires_in` is not positive.
        """
        valid_for = resolve_expiry(expires_in, DEFAULT_LINK_EXPIRY)
        check_record(package)
        file = self.root / package.key
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            size = None
        if size != package.size:
            raise PackageStoreError(
                f"package {package.package_id} version {package.version} is not in "
                f"{self._where} as {package.key}; put it before asking for a link",
                package=package.package_id,
                package_version=package.version,
                store_url=str(self.root),
            )
        with self._lock:
            # Each link is issued strictly after the last, so two calls never give one URL.
            issued = max(datetime.now(UTC), self._last_issued + _TICK)
            self._last_issued = issued
        expires = issued + valid_for
        return f"{file.resolve().as_uri()}?expires={expires:%Y-%m-%dT%H:%M:%S.%fZ}"

    def delete(self, package_id: str, version: str) -> None:
        """Remove the version's folder; succeeds when there is none.

        Raises:
            PackageStoreError: the names are unsafe or the folder cannot be removed.
        """
        folder = self.root / package_prefix(package_id, version)
        try:
            shutil.rmtree(folder)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise PackageStoreError(
                f"cannot delete package {package_id} version {version} from {self._where}: "
                f"{exc.strerror or exc}",
                package=package_id,
                package_version=version,
                store_url=str(self.root),
            ) from exc
        with suppress(OSError):  # the id's folder goes once its last version is gone
            folder.parent.rmdir()

    @property
    def _where(self) -> str:
        return f"local store {self.root}"

    @staticmethod
    def _find(folder: Path) -> Path | None:
        """The package file in a version's folder; hidden (temporary) files do not count."""
        try:
            names = sorted(
                entry.name
                for entry in os.scandir(folder)
                if entry.is_file() and not entry.name.startswith(".")
            )
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise PackageStoreError(f"cannot read {folder}: {exc.strerror or exc}") from exc
        return folder / names[0] if names else None


def _copy_synced(source: Path, target: Path) -> tuple[int, str]:
    """Copy `source` to a new `target`, flushed to disk; its size and SHA-256."""
    sha256 = hashlib.sha256()
    size = 0
    try:
        reader = source.open("rb")
    except OSError as exc:
        raise PackageStoreError(
            f"cannot read package file {source}: {exc.strerror or exc}; build the package first"
        ) from exc
    with reader, target.open("xb") as writer:
        while chunk := reader.read(_CHUNK):
            sha256.update(chunk)
            size += len(chunk)
            writer.write(chunk)
        writer.flush()
        os.fsync(writer.fileno())
    return size, sha256.hexdigest()


def _sync_folder(folder: Path) -> None:
    """Flush the folder entry so the published name survives a crash."""
    if not hasattr(os, "O_DIRECTORY"):  # Windows cannot open folders; NTFS journals them
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
