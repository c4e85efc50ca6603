"""Check a package before anything in it is trusted: signature first, then every file."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from modelferry.errors import PackageVerificationError
from modelferry.packaging.archive import (
    DEFAULT_LIMITS,
    EntryBudget,
    ExtractionLimits,
    check_entries,
)
from modelferry.packaging.extraction import safe_extract
from modelferry.packaging.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    METADATA_NAMES,
    SIGNATURE_NAME,
    FileEntry,
    Manifest,
    load_manifest_document,
)
from modelferry.packaging.signing import VerifyKey

MAX_SIGNATURE_BYTES = 1024
INVALID_SIGNATURE = (
    "manifest signature is invalid: the package was altered or signed with another key"
)
_ALTERED = "the package is corrupt or was altered: download it again, and do not install it"
_CHUNK = 256 * 1024


def verify_package(
    zip_path: Path, public_keys: Iterable[VerifyKey], limits: ExtractionLimits = DEFAULT_LIMITS
) -> Manifest:
    """Verify a package zip without unpacking it; its manifest when everything checks out.

    In order: the entries are safe to unpack (`check_entries`); `manifest.sig` is a valid
    signature of the exact bytes of `manifest.json` by a key in `public_keys` (picked by
    the manifest's `signing_key_id`); the manifest follows the format; every listed file is
    present with the listed size and SHA-256; and nothing else is in the zip.

    Raises:
        PackageVerificationError: naming the key id or the file at fault, and what to do.
        UnsafeArchiveError: an entry is unsafe to unpack (a subclass of the above).
    """
    trusted = {key.key_id: key for key in public_keys}
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PackageVerificationError(
            f"{zip_path.name} is not a readable zip archive ({exc}); download it again"
        ) from None
    with archive:
        entries = {info.filename: info for info in check_entries(archive.infolist(), limits)}
        manifest_bytes = _read_metadata(archive, entries, MANIFEST_NAME, MAX_MANIFEST_BYTES)
        signature = _decode_signature(
            _read_metadata(archive, entries, SIGNATURE_NAME, MAX_SIGNATURE_BYTES)
        )
        claimed = _claimed_key_id(manifest_bytes)
        key = trusted.get(claimed)
        if key is None:
            known = ", ".join(sorted(trusted)) or "none"
            raise PackageVerificationError(
                f"the package is signed with key {claimed}, which is not trusted here "
                f"(trusted key ids: {known}); add that key's public key to the trusted keys "
                "if it is yours, or ask for a package signed with a trusted key"
            )
        if not key.is_valid_signature(manifest_bytes, signature):
            raise PackageVerificationError(INVALID_SIGNATURE)
        manifest = Manifest.from_bytes(manifest_bytes)
        listed = {entry.path for entry in manifest.files}
        unlisted = sorted(set(entries) - listed - METADATA_NAMES)
        if unlisted:
            raise PackageVerificationError(
                f"{unlisted[0]} is in the package but not in its manifest; {_ALTERED}"
            )
        budget = EntryBudget(limits, zip_path.stat().st_size)
        for entry in manifest.files:
            info = entries.get(entry.path)
            if info is None:
                raise PackageVerificationError(
                    f"{entry.path} is listed in the manifest but missing from the package; "
                    f"{_ALTERED}"
                )
            with _reading(archive, info) as stream:
                _check_content(entry, stream, functools.partial(budget.take, info))
    return manifest


def verify_tree(folder: Path, manifest: Manifest) -> None:
    """Check an unpacked package folder against its (already verified) manifest.

    Every listed file must be a regular file with the listed size and SHA-256; nothing
    else may be there except `manifest.json` and `manifest.sig`; no links.

    Raises:
        PackageVerificationError: naming the file at fault.
    """
    listed = {entry.path: entry for entry in manifest.files}
    for root, folders, files in os.walk(folder):
        for name in sorted(folders + files):
            path = Path(root, name)
            relative = path.relative_to(folder).as_posix()
            mode = path.lstat().st_mode
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise PackageVerificationError(
                    f"{relative} is a link or special file in the package folder; {_ALTERED}"
                )
            if relative not in listed and relative not in METADATA_NAMES:
                raise PackageVerificationError(
                    f"{relative} is in the package folder but not in its manifest; {_ALTERED}"
                )
    for entry in manifest.files:
        path = folder.joinpath(*entry.path.split("/"))
        if not path.is_file() or path.is_symlink():
            raise PackageVerificationError(
                f"{entry.path} is listed in the manifest but missing from the package folder; "
                f"{_ALTERED}"
            )
        with path.open("rb") as stream:
            _check_content(entry, stream, None)


def unpack_package(
    zip_path: Path,
    dest: Path,
    public_keys: Iterable[VerifyKey],
    limits: ExtractionLimits = DEFAULT_LIMITS,
) -> Manifest:
    """Verify a package, unpack it safely into the new folder `dest`, verify what landed.

    `dest` appears only when all three steps pass; otherwise nothing is left behind.
    """
    manifest = verify_package(zip_path, public_keys, limits)
    safe_extract(zip_path, dest, limits, check=lambda folder: verify_tree(folder, manifest))
    return manifest


def file_sha256(path: Path) -> str:
    """The SHA-256 (lowercase hex) of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_content(
    entry: FileEntry, stream: IO[bytes], take: Callable[[int, int], None] | None
) -> None:
    digest = hashlib.sha256()
    size = 0
    # Read one byte past the listed size at most: a longer file is wrong, whatever it holds.
    while chunk := stream.read(min(_CHUNK, entry.size + 1 - size)):
        size += len(chunk)
        if take is not None:
            take(size, len(chunk))
        digest.update(chunk)
        if size > entry.size:
            break
    if size != entry.size:
        shown = f"more than {entry.size}" if size > entry.size else str(size)
        raise PackageVerificationError(
            f"{entry.path} has {shown} bytes where the manifest lists {entry.size}; {_ALTERED}"
        )
    if digest.hexdigest() != entry.sha256:
        raise PackageVerificationError(
            f"{entry.path} does not match its SHA-256 in the manifest; {_ALTERED}"
        )


def _read_metadata(
    archive: zipfile.ZipFile, entries: dict[str, zipfile.ZipInfo], name: str, limit: int
) -> bytes:
    info = entries.get(name)
    if info is None:
        raise PackageVerificationError(
            f"the package has no {name}; it is not a modelferry package, or it is damaged"
        )
    with _reading(archive, info) as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise PackageVerificationError(f"{name} is larger than {limit} bytes; refusing to read it")
    return data


@contextmanager
def _reading(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[IO[bytes]]:
    try:
        with archive.open(info) as stream:
            yield stream
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        # A CRC mismatch, a truncated stream or an unsupported compression method.
        raise PackageVerificationError(f"{info.filename} is corrupt ({exc}); {_ALTERED}") from None


def _decode_signature(data: bytes) -> bytes:
    try:
        signature = base64.b64decode(data.strip(), validate=True)
    except binascii.Error:
        signature = b""
    if len(signature) != 64:
        raise PackageVerificationError(
            f"{SIGNATURE_NAME} is not the base64 of a 64-byte Ed25519 signature; {_ALTERED}"
        )
    return signature


def _claimed_key_id(manifest_bytes: bytes) -> str:
    # Read before the signature is checked, only to pick the key: the id is signed too.
    # The bounded reader: these bytes are not trusted yet.
    document = load_manifest_document(manifest_bytes)
    claimed = document.get("signing_key_id") if isinstance(document, dict) else None
    if not isinstance(claimed, str):
        raise PackageVerificationError(f"{MANIFEST_NAME} names no signing key; {_ALTERED}")
    return claimed
