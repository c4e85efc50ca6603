"""Zip archives: written byte-for-byte reproducibly, and checked entry by entry when read.

Written: entries sorted by name, every timestamp 1980-01-01 00:00:00, mode 0644 regular
files made on "Unix", DEFLATE at zlib's default level 6, no folder entries, no comments,
no extra fields (but ZIP64 sizes for files over 2 GiB). The same inputs (and the same zlib)
give the same bytes.

Read: `check_entries` refuses, before anything is unpacked, every entry that could land
outside its folder or be something other than a plain file or folder; the limits on size
and compression ratio are enforced again while the data streams (`EntryBudget`), because
the sizes in the headers are only claims.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from modelferry.errors import UnsafeArchiveError
from modelferry.packaging.manifest import entry_name_problem

FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o644
_UNIX = 3
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ExtractionLimits:
    """What an archive may unpack to before it is refused as unsafe.

    Attributes:
        max_entries: entries in the archive (files and folders).
        max_total_bytes: bytes of all entries unpacked, counted as they stream.
        max_ratio: unpacked bytes per packed byte of one entry; zip bombs reach 1000.
        ratio_after_bytes: the ratio is judged only past this many unpacked bytes of an
            entry, so that small, very compressible files (sparse JSON) are not refused.
    """

    max_entries: int = 10_000
    max_total_bytes: int = 4 * 1024**3
    max_ratio: float = 100.0
    ratio_after_bytes: int = 1024 * 1024


DEFAULT_LIMITS = ExtractionLimits()


def write_deterministic_zip(target: Path, entries: Mapping[str, Path | bytes]) -> None:
    """Write `entries` (archive name → file or bytes) to `target`, reproducibly.

    The zip is written beside `target` and renamed onto it: readers never see half a file.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w") as archive:
            for name in sorted(entries):
                _write_entry(archive, name, entries[name])
        tmp.chmod(FILE_MODE)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_entry(archive: zipfile.ZipFile, name: str, source: Path | bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=FIXED_DATE_TIME)
    info.create_system = _UNIX
    info.external_attr = (stat.S_IFREG | FILE_MODE) << 16
    # The level stays unset: zipfile then uses zlib's Z_DEFAULT_COMPRESSION, which is level 6.
    info.compress_type = zipfile.ZIP_DEFLATED
    if isinstance(source, bytes):
        archive.writestr(info, source)
        return
    # Known before writing, so that zipfile picks ZIP64 headers only for files that need them.
    info.file_size = source.stat().st_size
    with source.open("rb") as src, archive.open(info, "w") as dst:
        shutil.copyfileobj(src, dst, _CHUNK)


def check_entries(
    infos: Iterable[zipfile.ZipInfo], limits: ExtractionLimits = DEFAULT_LIMITS
) -> list[zipfile.ZipInfo]:
    """The entries, once each is known to be safe to unpack by name, type and declared size.

    Raises:
        UnsafeArchiveError: naming the first entry that is absolute, has a drive letter or
            a `..` component, is a link or any other non-regular file, is encrypted,
            repeats a name (also differing in case only), clashes a file with a folder,
            or would make the archive exceed `limits`.
    """
    entries = list(infos)
    if len(entries) > limits.max_entries:
        raise UnsafeArchiveError(
            f"the archive has {len(entries)} entries; at most {limits.max_entries} are allowed"
        )
    seen: dict[str, str] = {}
    files: set[str] = set()
    folders: set[str] = set()
    declared = 0
    for info in entries:
        name = info.filename
        problem = entry_name_problem(name)
        if problem:
            raise UnsafeArchiveError(f"archive entry {name!r} {problem}; refusing to unpack")
        kind = entry_kind(info)
        if kind is None:
            raise UnsafeArchiveError(
                f"archive entry {name!r} is a symbolic link or another special file "
                f"(mode {info.external_attr >> 16:o}); only plain files and folders are allowed"
            )
        if info.flag_bits & 0x1:
            raise UnsafeArchiveError(f"archive entry {name!r} is encrypted; refusing to unpack")
        key = name.removesuffix("/").casefold()
        if key in seen:
            raise UnsafeArchiveError(
                f"archive entry {name!r} repeats the name {seen[key]!r}; "
                "an archive must hold each path once"
            )
        seen[key] = name
        path = name.removesuffix("/")
        (folders if kind == "folder" else files).add(path)
        parents = path.split("/")[:-1]
        folders.update("/".join(parents[: i + 1]) for i in range(len(parents)))
        declared += info.file_size
        if declared > limits.max_total_bytes:
            raise UnsafeArchiveError(
                f"archive entry {name!r} takes the unpacked size past "
                f"{limits.max_total_bytes} bytes; refusing to unpack"
            )
    clash = sorted(files & folders)
    if clash:
        raise UnsafeArchiveError(f"archive entry {clash[0]!r} is both a file and a folder")
    return entries


def entry_kind(info: zipfile.ZipInfo) -> str | None:
    """The kind of an entry: "file" or "folder"; None for links, devices, pipes, sockets.

    The Unix mode sits in the high 16 bits of `external_attr`; archives made elsewhere
    may leave them 0, which means a plain file (or a folder when the name ends in `/`).
    """
    mode = info.external_attr >> 16
    file_type = stat.S_IFMT(mode)
    if info.filename.endswith("/"):
        return "folder" if file_type in (0, stat.S_IFDIR) else None
    if file_type in (0, stat.S_IFREG):
        return "file"
    return None


class EntryBudget:
    """Counts the bytes that really come out of entries, and stops at the limits.

    `archive_size` caps the packed size an entry may claim: an entry cannot have read more
    packed bytes than the archive holds, whatever its header says.
    """

    def __init__(self, limits: ExtractionLimits, archive_size: int) -> None:
        """Start counting at zero for an archive file of `archive_size` bytes."""
        self.limits = limits
        self.archive_size = archive_size
        self.total = 0

    def take(self, info: zipfile.ZipInfo, entry_bytes: int, chunk: int) -> None:
        """Account `chunk` more bytes of `info`, which has now produced `entry_bytes`.

        Raises:
            UnsafeArchiveError: the total or the entry's compression ratio is over its limit.
        """
        self.total += chunk
        if self.total > self.limits.max_total_bytes:
            raise UnsafeArchiveError(
                f"archive entry {info.filename!r} unpacks past the limit of "
                f"{self.limits.max_total_bytes} bytes in total; refusing to unpack"
            )
        if entry_bytes > self.limits.ratio_after_bytes:
            packed = max(1, min(info.compress_size, self.archive_size))
            if entry_bytes / packed > self.limits.max_ratio:
                raise UnsafeArchiveError(
                    f"archive entry {info.filename!r} unpacks to more than "
                    f"{self.limits.max_ratio:g} times its packed size (a zip bomb?); "
                    "refusing to unpack"
                )
