"""Check a package before anything in it is trusted: signature and policy first, then every file."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from modelferry.errors import (
    PackageExpiredError,
    PackageFormatError,
    PackageVerificationError,
)
from modelferry.packaging.archive import (
    DEFAULT_LIMITS,
    EntryBudget,
    ExtractionLimits,
    check_entries,
)
from modelferry.packaging.envelope import MAX_ENVELOPE_BYTES, Envelope
from modelferry.packaging.extraction import safe_extract
from modelferry.packaging.manifest import (
    ENVELOPE_NAME,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    METADATA_NAMES,
    SIGNATURE_NAME,
    FileEntry,
    Manifest,
    load_manifest_document,
)
from modelferry.packaging.signing import INVALID_SIGNATURE, VerifyKey
from modelferry.packaging.statement import STATEMENT_TYPE, PackageStatement, check_version_floor
from modelferry.packaging.trust import TrustPolicy, trust_policy

MAX_SIGNATURE_BYTES = 1024
_ALTERED = "the package is corrupt or was altered: download it again, and do not install it"
_CHUNK = 256 * 1024


@dataclass(frozen=True)
class VerifiedPackage:
    """A package that passed verification, and what vouched for it.

    Attributes:
        manifest: the verified manifest.
        statement: the signed statement (format 2), or None (format 1).
        signer_key_ids: the trusted package-signing keys whose signatures verified.
    """

    manifest: Manifest
    statement: PackageStatement | None
    signer_key_ids: tuple[str, ...]

    @property
    def min_version(self) -> str | None:
        """The version floor the package sets for its model, if any."""
        return self.statement.min_version if self.statement else None


def verify_package(
    zip_path: Path,
    public_keys: Iterable[VerifyKey] | TrustPolicy,
    limits: ExtractionLimits = DEFAULT_LIMITS,
) -> Manifest:
    """Verify a package zip without unpacking it; its manifest when everything checks out.

    `verify_signed_package` with the current time and no version floors.

    Raises:
        PackageVerificationError: naming the key id or the file at fault, and what to do.
        UnsafeArchiveError: an entry is unsafe to unpack (a subclass of the above).
    """
    return verify_signed_package(zip_path, public_keys, limits).manifest


def verify_signed_package(
    zip_path: Path,
    trust: Iterable[VerifyKey] | TrustPolicy,
    limits: ExtractionLimits = DEFAULT_LIMITS,
    *,
    now: datetime | None = None,
    version_floors: Mapping[str, str] | None = None,
) -> VerifiedPackage:
    """Verify a package zip (format 1 or 2) without unpacking it.

    In order: the entries are safe to unpack (`check_entries`); the signature is valid
    and made by trusted, unrevoked package-signing keys (format 1: `manifest.sig` over
    `manifest.json`, by the key its `signing_key_id` names; format 2: the DSSE envelope
    `manifest.dsse.json` over a statement that names `manifest.json`'s SHA-256); the
    manifest follows its format; format 2 only: the package has not expired at `now`
    and carries a model version no lower than its own `min_version`; the model version
    is not below `version_floors[model name]`; every listed file is present with the
    listed size and SHA-256, and nothing else is in the zip.

    Args:
        zip_path: the package.
        trust: a `TrustPolicy`, or plain public keys (each trusted to sign packages).
        limits: bounds on what the archive may unpack to.
        now: the time expiry is judged at; default the current time.
        version_floors: model name -> the lowest version accepted (the device's ratchet).

    Raises:
        PackageVerificationError: naming the key id, the version, the expiry or the file
            at fault, and what to do; the subclasses say which (`RevokedKeyError`,
            `KeyRoleError`, `UntrustedKeyError`, `PackageExpiredError`,
            `VersionFloorError`, `PackageFormatError`, `UnsafeArchiveError`).
    """
    policy = trust_policy(trust)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PackageVerificationError(
            f"{zip_path.name} is not a readable zip archive ({exc}); download it again"
        ) from None
    with archive:
        entries = {info.filename: info for info in check_entries(archive.infolist(), limits)}
        if ENVELOPE_NAME in entries and SIGNATURE_NAME in entries:
            raise PackageVerificationError(
                f"the package holds both {SIGNATURE_NAME} and {ENVELOPE_NAME}; {_ALTERED}"
            )
        if ENVELOPE_NAME in entries:
            verified = _verify_format_2(archive, entries, policy, now or datetime.now(UTC))
        else:
            if policy.minimum_format > 1:
                raise PackageFormatError(
                    f"the package is format 1 (signed by {SIGNATURE_NAME}, with no expiry or "
                    f"version floor) and this device requires format {policy.minimum_format}: "
                    "ask for the package to be built again in format 2 (the default)",
                    found=1,
                    required=policy.minimum_format,
                )
            verified = _verify_format_1(archive, entries, policy)
        manifest = verified.manifest
        check_version_floor(manifest.model.name, manifest.model.version, version_floors or {})
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
    return verified


def _verify_format_1(
    archive: zipfile.ZipFile, entries: dict[str, zipfile.ZipInfo], policy: TrustPolicy
) -> VerifiedPackage:
    manifest_bytes = _read_metadata(archive, entries, MANIFEST_NAME, MAX_MANIFEST_BYTES)
    signature = _decode_signature(
        _read_metadata(archive, entries, SIGNATURE_NAME, MAX_SIGNATURE_BYTES)
    )
    claimed = _claimed_key_id(manifest_bytes)
    key = policy.signer_for(claimed)
    if not key.is_valid_signature(manifest_bytes, signature):
        raise PackageVerificationError(INVALID_SIGNATURE)
    manifest = Manifest.from_bytes(manifest_bytes)
    if manifest.format_number != 1:
        raise PackageVerificationError(
            f"{MANIFEST_NAME} says {manifest.format} but the package is signed as format 1 "
            f"({SIGNATURE_NAME}); {_ALTERED}"
        )
    return VerifiedPackage(manifest, None, (claimed,))


def _verify_format_2(
    archive: zipfile.ZipFile,
    entries: dict[str, zipfile.ZipInfo],
    policy: TrustPolicy,
    now: datetime,
) -> VerifiedPackage:
    envelope = Envelope.from_bytes(
        _read_metadata(archive, entries, ENVELOPE_NAME, MAX_ENVELOPE_BYTES), name=ENVELOPE_NAME
    )
    # Signatures first: nothing in the payload is looked at before it is authenticated.
    signers = policy.accepted_signers(envelope)
    if envelope.payload_type != STATEMENT_TYPE:
        raise PackageVerificationError(
            f"{ENVELOPE_NAME} carries a {envelope.payload_type!r} payload, not a package "
            f"statement ({STATEMENT_TYPE}); do not install it"
        )
    statement = PackageStatement.from_bytes(envelope.payload)
    manifest_bytes = _read_metadata(archive, entries, MANIFEST_NAME, MAX_MANIFEST_BYTES)
    statement.check_manifest(hashlib.sha256(manifest_bytes).hexdigest())
    manifest = Manifest.from_bytes(manifest_bytes)
    named = (statement.package_id, statement.version, statement.model.name, statement.model.version)
    if manifest.format_number != 2 or named != (
        manifest.package_id,
        manifest.version,
        manifest.model.name,
        manifest.model.version,
    ):
        raise PackageVerificationError(
            f"the signed statement and {MANIFEST_NAME} disagree on the format, package or "
            f"model version; {_ALTERED}"
        )
    expires = statement.expires_at
    if now >= expires:
        raise PackageExpiredError(
            f"the package {statement.label} expired at {statement.expires} (it is now "
            f"{now.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}); ask for it to be built and signed "
            "again with a later expiry, or check this device's clock",
            package=statement.label,
            expires=statement.expires,
        )
    if statement.min_version is not None:
        check_version_floor(
            manifest.model.name,
            manifest.model.version,
            {manifest.model.name: statement.min_version},
        )
    return VerifiedPackage(manifest, statement, signers)


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
    public_keys: Iterable[VerifyKey] | TrustPolicy,
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
