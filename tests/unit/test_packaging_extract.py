"""Safe extraction against crafted archives: escapes, links, duplicates, bombs."""

from __future__ import annotations

import re
import stat
import struct
import time
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelferry.errors import PackageVerificationError, UnsafeArchiveError
from modelferry.packaging import ExtractionLimits, safe_extract
from modelferry.packaging.archive import EntryBudget

GIB = 1024**3


def make_zip(path: Path, files: dict[str, bytes], mode: int = stat.S_IFREG | 0o644) -> Path:
    """A zip made with zipfile, each entry with the Unix `mode` given."""
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names; we want them
        for name, content in files.items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = mode << 16
            archive.writestr(info, content)
    return path


@dataclass(frozen=True)
class RawEntry:
    """An entry written byte by byte: any sizes and any packed data, true or not."""

    name: str
    packed: bytes
    crc: int
    size: int
    mode: int = stat.S_IFREG | 0o644


def raw_zip(path: Path, entries: list[RawEntry]) -> Path:
    """A DEFLATE zip written by hand, so headers can claim what the data is not."""
    body = bytearray()
    directory = bytearray()
    for entry in entries:
        name = entry.name.encode()
        offset = len(body)
        # Local file header: version 2.0, no flags, DEFLATE, 1980-01-01 00:00.
        body += struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 33, entry.crc,
            len(entry.packed), entry.size, len(name), 0,
        )  # fmt: skip
        body += name + entry.packed
        directory += struct.pack(
            "<IHHHHHHIIIHHHHHII", 0x02014B50, (3 << 8) | 20, 20, 0, 8, 0, 33, entry.crc,
            len(entry.packed), entry.size, len(name), 0, 0, 0, 0, entry.mode << 16, offset,
        )  # fmt: skip
        directory += name
    end = struct.pack(
        "<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(directory), len(body), 0
    )
    path.write_bytes(bytes(body + directory + end))
    return path


@pytest.fixture(scope="module")
def gigabyte_of_zeros(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1 MB zip that unpacks to 1 GiB of zeros, built without inflating it once.

    After a full flush DEFLATE forgets its history, so every MiB of zeros packs to the
    same bytes: the stream is one such block repeated 1024 times.
    """
    mib = bytes(1024 * 1024)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    packer.compress(mib)
    packer.flush(zlib.Z_FULL_FLUSH)
    block = packer.compress(mib) + packer.flush(zlib.Z_FULL_FLUSH)
    packed = block * 1024 + packer.flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(1024):
        crc = zlib.crc32(mib, crc)
    path = tmp_path_factory.mktemp("bomb") / "bomb.zip"
    return raw_zip(path, [RawEntry("model/zeros.bin", packed, crc, GIB)])


def assert_nothing_left(dest: Path) -> None:
    assert not dest.exists()
    leftovers = [p.name for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}.")]
    assert leftovers == []


def refused(zip_path: Path, dest: Path, match: str, **limits: int | float) -> None:
    with pytest.raises(UnsafeArchiveError, match=match):
        safe_extract(zip_path, dest, ExtractionLimits(**limits))  # type: ignore[arg-type]
    assert_nothing_left(dest)


def test_a_plain_archive_unpacks_with_safe_modes(tmp_path: Path) -> None:
    source = make_zip(
        tmp_path / "ok.zip",
        {"score.py": b"print(1)\n", "model/MLmodel": b"flavors: {}\n"},
        mode=stat.S_IFREG | 0o4777,  # setuid and world-writable: not honoured
    )
    with zipfile.ZipFile(source, "a") as archive:
        archive.mkdir("model/empty")

    dest = safe_extract(source, tmp_path / "out")

    assert (dest / "score.py").read_bytes() == b"print(1)\n"
    assert (dest / "model" / "MLmodel").read_bytes() == b"flavors: {}\n"
    assert stat.S_IMODE((dest / "score.py").stat().st_mode) == 0o644
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755
    assert (dest / "model" / "empty").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.zip", "out"]


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("/etc/cron.d/job", "is an absolute path"),
        ("../outside.txt", r"'\.\.' component"),
        ("model/../../outside.txt", r"'\.\.' component"),
        ("C:/Windows/evil.dll", "drive letter"),
        ("..\\outside.txt", "backslash"),
        ("model//x", "empty"),
    ],
)
def test_entries_that_escape_are_refused(tmp_path: Path, name: str, problem: str) -> None:
    source = make_zip(tmp_path / "bad.zip", {"fine.txt": b"ok", name: b"pwned"})

    refused(source, tmp_path / "pkg" / "out", re.escape(f"archive entry {name!r}") + f".*{problem}")
    assert not (tmp_path / "outside.txt").exists()
    assert not (tmp_path / "pkg" / "outside.txt").exists()


@pytest.mark.parametrize(
    "file_type", [stat.S_IFLNK, stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFSOCK]
)
def test_links_and_special_files_are_refused(tmp_path: Path, file_type: int) -> None:
    source = make_zip(tmp_path / "link.zip", {"model/MLmodel": b"/etc/passwd"}, file_type | 0o777)

    refused(source, tmp_path / "out", "'model/MLmodel' is a symbolic link or another special")


def test_a_folder_entry_that_is_a_link_is_refused(tmp_path: Path) -> None:
    source = make_zip(tmp_path / "link.zip", {"model/": b"/etc"}, stat.S_IFLNK | 0o777)

    refused(source, tmp_path / "out", "'model/' is a symbolic link")


@pytest.mark.parametrize(
    ("names", "match"),
    [
        (["a.txt", "a.txt"], "'a.txt' repeats the name 'a.txt'"),
        (["Model.skops", "model.skops"], "'model.skops' repeats the name 'Model.skops'"),
        (["model", "model/MLmodel"], "'model' is both a file and a folder"),
    ],
)
def test_duplicate_and_clashing_names_are_refused(
    tmp_path: Path, names: list[str], match: str
) -> None:
    source = tmp_path / "dup.zip"
    with warnings.catch_warnings(), zipfile.ZipFile(source, "w") as archive:
        warnings.simplefilter("ignore")
        for index, name in enumerate(names):
            archive.writestr(name, f"copy {index}")

    refused(source, tmp_path / "out", match)


def test_too_many_entries_are_refused(tmp_path: Path) -> None:
    source = make_zip(tmp_path / "many.zip", {f"f{i}.txt": b"x" for i in range(6)})

    refused(source, tmp_path / "out", "has 6 entries; at most 5", max_entries=5)
    assert safe_extract(source, tmp_path / "fine", ExtractionLimits(max_entries=6)).is_dir()


def test_a_declared_total_over_the_limit_is_refused_before_unpacking(tmp_path: Path) -> None:
    source = make_zip(tmp_path / "big.zip", {"a.bin": bytes(600_000), "b.bin": bytes(600_000)})

    refused(source, tmp_path / "out", "'b.bin' takes the unpacked size past 1000000 bytes",
            max_total_bytes=1_000_000)  # fmt: skip


def test_a_zip_bomb_is_stopped_while_streaming(gigabyte_of_zeros: Path, tmp_path: Path) -> None:
    assert gigabyte_of_zeros.stat().st_size < 2 * 1024 * 1024
    with zipfile.ZipFile(gigabyte_of_zeros) as archive:
        assert archive.getinfo("model/zeros.bin").file_size == GIB  # honest, and within 4 GiB

    started = time.monotonic()
    refused(gigabyte_of_zeros, tmp_path / "out", "'model/zeros.bin' unpacks to more than 100 times")

    # Stopped after a few MiB, not after inflating a gigabyte.
    assert time.monotonic() - started < 5


def test_the_budget_counts_bytes_as_they_come_out() -> None:
    # zipfile already stops an entry at its declared size; the budget does not rely on it.
    info = zipfile.ZipInfo("model/zeros.bin")
    info.compress_size = 1_000
    budget = EntryBudget(ExtractionLimits(max_total_bytes=250_000, max_ratio=1e9), 10_000)
    budget.take(info, 200_000, 200_000)
    with pytest.raises(UnsafeArchiveError, match=r"'model/zeros\.bin' unpacks past the limit"):
        budget.take(info, 300_000, 100_000)

    # The packed size an entry may claim is capped by the archive's size.
    info.compress_size = 10**12
    budget = EntryBudget(ExtractionLimits(max_ratio=100, ratio_after_bytes=0), 1_000)
    budget.take(info, 100_000, 100_000)
    with pytest.raises(UnsafeArchiveError, match="more than 100 times its packed size"):
        budget.take(info, 100_001, 1)


def test_a_header_that_understates_the_size_is_not_believed(tmp_path: Path) -> None:
    content = bytes(5_000_000)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    packed = packer.compress(content) + packer.flush()
    # The headers claim 100 bytes; the data inflates to 5 MB.
    source = raw_zip(tmp_path / "liar.zip", [RawEntry("x.bin", packed, zlib.crc32(content), 100)])

    with pytest.raises(PackageVerificationError, match=r"'x\.bin' is corrupt"):
        safe_extract(source, tmp_path / "out", ExtractionLimits(max_total_bytes=1000))
    assert_nothing_left(tmp_path / "out")


def test_a_non_zip_and_an_existing_destination_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(PackageVerificationError, match=r"junk\.zip is not a readable zip"):
        safe_extract(junk, tmp_path / "out")
    assert_nothing_left(tmp_path / "out")

    source = make_zip(tmp_path / "ok.zip", {"a.txt": b"a"})
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="unpack into a new folder"):
        safe_extract(source, tmp_path / "taken")


def test_a_failing_check_leaves_nothing(tmp_path: Path) -> None:
    source = make_zip(tmp_path / "ok.zip", {"a.txt": b"a"})
    seen: list[bytes] = []

    def check(folder: Path) -> None:
        seen.append((folder / "a.txt").read_bytes())
        raise PackageVerificationError("a.txt is not what the manifest says")

    with pytest.raises(PackageVerificationError, match=r"a\.txt is not what"):
        safe_extract(source, tmp_path / "out", check=check)
    assert seen == [b"a"]
    assert_nothing_left(tmp_path / "out")
