"""Where a package lives in a store (`{package_id}/{version}/{file name}`) and its digests."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from modelferry.errors import PackageStoreError

# One path segment in a key: safe as a folder name on any OS and as a blob name in a URL,
# and unable to climb out of its folder (it cannot be "." or "..").
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_CHUNK = 1024 * 1024


def package_prefix(package_id: str, version: str) -> str:
    """The key prefix of one package version, `{package_id}/{version}/`.

    Raises:
        PackageStoreError: the id or version is empty, too long or has characters other
            than letters, digits, `.`, `_` and `-` (or does not start with a letter or digit).
    """
    _check_segment("package id", package_id)
    _check_segment("version", version)
    return f"{package_id}/{version}/"


def package_key(package_id: str, version: str, file_name: str) -> str:
    """The key of a package file, `{package_id}/{version}/{file name}`.

    Raises:
        PackageStoreError: a part is not a safe name (see `package_prefix`).
    """
    prefix = package_prefix(package_id, version)
    _check_segment("file name", file_name)
    return prefix + file_name


def split_key(key: str) -> tuple[str, str, str]:
    """`(package_id, version, file name)` of a key made by `package_key`.

    Raises:
        PackageStoreError: the key does not have that shape.
    """
    parts = key.split("/")
    if len(parts) != 3:
        raise PackageStoreError(
            f"package key {key!r} is not '{{package_id}}/{{version}}/{{file name}}'; "
            "use the key of a record the store returned"
        )
    package_key(*parts)
    return parts[0], parts[1], parts[2]


@dataclass(frozen=True)
class FileDigest:
    """Size and digests of a file's bytes."""

    size: int
    sha256: str
    """Hex SHA-256: what identifies a package's bytes in every store."""
    md5: bytes
    """Raw MD5, for stores (Blob Storage) that check uploads with Content-MD5."""


def file_digest(path: Path) -> FileDigest:
    """Read `path` once and return its size, SHA-256 and MD5.

    Raises:
        PackageStoreError: the file is missing or unreadable.
    """
    sha256 = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False)
    size = 0
    try:
        with path.open("rb") as stream:
            while chunk := stream.read(_CHUNK):
                sha256.update(chunk)
                md5.update(chunk)
                size += len(chunk)
    except FileNotFoundError:
        raise PackageStoreError(
            f"package file {path} does not exist; build the package first"
        ) from None
    except OSError as exc:
        raise PackageStoreError(f"cannot read package file {path}: {exc.strerror or exc}") from exc
    return FileDigest(size=size, sha256=sha256.hexdigest(), md5=md5.digest())


def _check_segment(what: str, value: str) -> None:
    if not isinstance(value, str) or not _SEGMENT.fullmatch(value):
        raise PackageStoreError(
            f"{what} {value!r} cannot name a stored package: use 1-128 letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
