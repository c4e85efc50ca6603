"""Crafted packages against the agent's verify and install path.

A real signed package is mutated (bytes flipped, cut short, hostile entries added, the
manifest rewritten and signed again) and handed to the steps the agent runs: verify,
unpack into staging, verify what landed, install. Each either installs a package that
really is valid or raises `PackageVerificationError`; nothing is written outside the
agent's folder and a refused package leaves the previous version current.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import stat
import tempfile
import warnings
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelferry.edge.install import (
    current_version,
    discard,
    install_version,
    prepare_root,
    staging_folder,
)
from modelferry.edge.state import InstalledVersion
from modelferry.errors import PackageVerificationError
from modelferry.packaging import PackageInputs, SigningKey, build_package
from modelferry.packaging.extraction import safe_extract
from modelferry.packaging.verification import verify_package, verify_tree

pytestmark = pytest.mark.fuzz

KEY = SigningKey.generate()
ESCAPE = "modelferry-fuzz-escape"
HOSTILE_NAMES = [
    f"../{ESCAPE}",
    f"model/../../{ESCAPE}",
    f"/tmp/{ESCAPE}",
    f"C:/{ESCAPE}",
    f"model\\..\\{ESCAPE}",
    "model/./x",
    "model//x",
    "MLMODEL",
    "manifest.json",
    "model/MLmodel/inner",
]


@functools.cache
def _package() -> dict[str, bytes]:
    """The entries of a real signed package, as the packaging tests build it."""
    with tempfile.TemporaryDirectory() as base_name:
        return _build(Path(base_name))


@pytest.fixture
def package() -> dict[str, bytes]:
    """The entries of the real signed package."""
    return _package()


def _build(base: Path) -> dict[str, bytes]:
    folder = base / "mlflow-model"
    folder.mkdir()
    (folder / "MLmodel").write_text("flavors:\n  sklearn:\n    pickled_model: model.skops\n")
    (folder / "model.skops").write_bytes(bytes(range(256)) * 40)
    inputs = PackageInputs(
        package_id="pkg",
        version="2",
        model_dir=folder,
        model_name="m",
        model_version="2",
        run_id=None,
        dataset_digest=None,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        class_names=("no", "yes"),
        requirements=("numpy==2.0.0",),
    )
    # Format 1: its manifest is parsed before anything is authenticated, so it is the
    # format whose parser meets hostile bytes first.
    built = build_package(inputs, KEY, base / "out", package_format=1)
    with zipfile.ZipFile(built.path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def _zip(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    path = Path(tempfile.mkstemp(suffix=".zip")[1])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # duplicate names are the point
            with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
                for info, data in entries:
                    archive.writestr(info, data)
        return path.read_bytes()
    finally:
        path.unlink()


def _signed(entries: dict[str, bytes], manifest: bytes) -> dict[str, bytes]:
    return {
        **entries,
        "manifest.json": manifest,
        "manifest.sig": base64.b64encode(KEY.sign(manifest)),
    }


def _manifest_mutation(draw: st.DrawFn, entries: dict[str, bytes]) -> dict[str, bytes]:
    document = json.loads(entries["manifest.json"])
    kind = draw(st.sampled_from(["deep", "type", "nan", "drop", "file", "raw"]))
    if kind == "deep":
        depth = draw(st.sampled_from([33, 1000, 100_000]))
        text = json.dumps(document)[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"
    elif kind == "raw":
        text = draw(st.text(max_size=200))
    else:
        if kind == "type":
            field = draw(st.sampled_from(sorted(document)))
            document[field] = draw(
                st.one_of(st.integers(), st.none(), st.lists(st.integers(), max_size=3))
            )
        elif kind == "nan":
            document["files"][0]["size"] = float("nan")
        elif kind == "drop":
            document.pop(draw(st.sampled_from(sorted(document))))
        else:
            entry = document["files"][draw(st.integers(0, len(document["files"]) - 1))]
            entry[draw(st.sampled_from(["path", "size", "sha256"]))] = draw(
                st.one_of(st.sampled_from(HOSTILE_NAMES), st.integers(-1, 2**70))
            )
        text = json.dumps(document)
    data = text.encode("utf-8", "surrogatepass")
    return _signed(entries, data) if draw(st.booleans()) else {**entries, "manifest.json": data}


@st.composite
def crafted(draw: st.DrawFn) -> bytes:
    """A package mutated the way an attacker holding the file could."""
    entries = _package()
    kind = draw(st.sampled_from(["flip", "truncate", "entry", "link", "duplicate", "manifest"]))
    if kind in {"flip", "truncate"}:
        data = bytearray(_zip(list(entries.items())))
        at = draw(st.integers(0, len(data) - 1))
        if kind == "truncate":
            return bytes(data[:at])
        data[at] ^= draw(st.integers(1, 255))
        return bytes(data)
    items: list[tuple[zipfile.ZipInfo | str, bytes]] = list(entries.items())
    if kind == "entry":
        items.append((draw(st.sampled_from(HOSTILE_NAMES)), b"escaped"))
    elif kind == "link":
        info = zipfile.ZipInfo(draw(st.sampled_from(["model/link", "link", "model/MLmodel"])))
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        items.append((info, f"../../{ESCAPE}".encode()))
    elif kind == "duplicate":
        name = draw(st.sampled_from(sorted(entries)))
        items.append((name, b"a second copy"))
    else:
        items = list(_manifest_mutation(draw, entries).items())
    return _zip(items)


def _install(zip_path: Path, root: Path) -> None:
    """What the agent's pipeline does with a downloaded package, step by step."""
    manifest = verify_package(zip_path, [KEY.verify_key])
    folder = staging_folder(root) / "package"
    try:
        safe_extract(zip_path, folder, check=lambda unpacked: verify_tree(unpacked, manifest))
        version = InstalledVersion(manifest.package_id, manifest.version, "m", manifest.version)
        install_version(root, folder, version)
    finally:
        discard(folder.parent)


def _install_first_version(root: Path) -> None:
    prepare_root(root)
    folder = staging_folder(root) / "package"
    folder.mkdir()
    (folder / "manifest.json").write_text("{}")
    install_version(root, folder, InstalledVersion("pkg", "1", "m", "1"))


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@settings(max_examples=60)
@given(blob=crafted())
def test_a_crafted_package_installs_only_when_valid(blob: bytes) -> None:
    with tempfile.TemporaryDirectory() as outer_name:
        outer = Path(outer_name)
        root = outer / "edge"
        _install_first_version(root)
        zip_path = outer / "downloads-elsewhere" / "pkg-2.zip"
        zip_path.parent.mkdir()
        zip_path.write_bytes(blob)
        refused: PackageVerificationError | None = None
        try:
            _install(zip_path, root)
        except PackageVerificationError as exc:
            refused = exc
        current = current_version(root)
        assert current is not None
        if refused is not None:
            assert str(refused)
            assert current.version == "1"
        else:
            # Installed: it must really be the package, every file as signed.
            assert current.version == "2"
            verify_tree(root / "current", verify_package(zip_path, [KEY.verify_key]))
        assert sorted(p.name for p in outer.iterdir()) == ["downloads-elsewhere", "edge"]
        assert _listing(outer / "downloads-elsewhere") == {"pkg-2.zip"}
        assert not (Path("/tmp") / ESCAPE).exists()
        assert not os.path.lexists(outer / ESCAPE)


def test_the_unmutated_package_installs(package: dict[str, bytes], tmp_path: Path) -> None:
    root = tmp_path / "edge"
    _install_first_version(root)
    zip_path = tmp_path / "pkg-2.zip"
    zip_path.write_bytes(_zip(list(package.items())))

    _install(zip_path, root)

    current = current_version(root)
    assert current is not None
    assert current.version == "2"
