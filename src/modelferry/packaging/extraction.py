"""Unpack a zip without trusting it: every unpack of a package goes through `safe_extract`."""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

from modelferry.errors import PackageVerificationError, UnsafeArchiveError
from modelferry.packaging.archive import (
    DEFAULT_LIMITS,
    EntryBudget,
    ExtractionLimits,
    check_entries,
    entry_kind,
)

_CHUNK = 256 * 1024
# Created exclusively, never through an existing link.
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)


def safe_extract(
    zip_path: Path,
    dest: Path,
    limits: ExtractionLimits = DEFAULT_LIMITS,
    check: Callable[[Path], object] | None = None,
) -> Path:
    """Unpack `zip_path` into the new folder `dest`, all of it or nothing.

    Entries are checked by name, type and declared size first (`check_entries`), then
    unpacked into a temporary sibling of `dest` while the bytes that really come out are
    counted against `limits`. Files get mode 0644 and folders 0755 (less the umask),
    whatever the archive says. `check`, when given, runs on the unpacked folder before it is
    renamed to `dest` (say, `verify_tree`); if it raises, nothing is left behind.

    Returns:
        `dest`.

    Raises:
        UnsafeArchiveError: an entry is unsafe or the archive exceeds `limits`; the message
            names the entry.
        PackageVerificationError: not a zip archive, or an entry is corrupt (CRC mismatch).
        FileExistsError: `dest` exists already.
    """
    if dest.exists():
        raise FileExistsError(f"{dest} exists; unpack into a new folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        _extract_into(zip_path, staging, limits)
        if check is not None:
            check(staging)
        staging.chmod(0o755)
        os.rename(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def _extract_into(zip_path: Path, folder: Path, limits: ExtractionLimits) -> None:
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PackageVerificationError(
            f"{zip_path.name} is not a readable zip archive ({exc}); download it again"
        ) from None
    with archive:
        entries = check_entries(archive.infolist(), limits)
        budget = EntryBudget(limits, zip_path.stat().st_size)
        for info in entries:
            target = folder.joinpath(*info.filename.removesuffix("/").split("/"))
            if entry_kind(info) == "folder":
                target.mkdir(mode=0o755, parents=True, exist_ok=True)
                continue
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            _extract_file(archive, info, target, budget)


def _extract_file(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: EntryBudget
) -> None:
    written = 0
    try:
        with archive.open(info) as src, os.fdopen(os.open(target, _OPEN_FLAGS, 0o644), "wb") as dst:
            # read(n) inflates at most n bytes: a bomb is stopped within one chunk.
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                budget.take(info, written, len(chunk))
                dst.write(chunk)
    except FileExistsError:
        raise UnsafeArchiveError(f"archive entry {info.filename!r} overwrites another") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        # A CRC mismatch, a truncated stream or an unsupported compression method.
        raise PackageVerificationError(
            f"archive entry {info.filename!r} is corrupt ({exc}); download the package again"
        ) from None
