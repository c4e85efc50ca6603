"""Verification: signature first, then every file; a failed check installs nothing.

These tests hold for format 1 packages (a bare `manifest.sig`), which devices keep
accepting; format 2 (the DSSE envelope, expiry, version floor) is in
test_packaging_envelope.py.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from modelferry.errors import PackageVerificationError, UnsafeArchiveError
from modelferry.packaging import (
    INVALID_SIGNATURE,
    BuiltPackage,
    Manifest,
    PackageInputs,
    SigningKey,
    build_package,
    safe_extract,
    unpack_package,
    verify_package,
    verify_tree,
    write_deterministic_zip,
)

KEY = SigningKey.generate()

MLMODEL = """\
flavors:
  sklearn:
    pickled_model: model.skops
    serialization_format: skops
saved_input_example_info:
  artifact_path: input_example.json
signature:
  inputs: '[{"type": "double", "name": "a", "required": true}]'
"""


@pytest.fixture
def built(tmp_path: Path) -> BuiltPackage:
    """A small package; the model file is stand-in bytes, which verification never reads."""
    folder = tmp_path / "mlflow-model"
    (folder / "nested").mkdir(parents=True)
    (folder / "MLmodel").write_text(MLMODEL)
    (folder / "model.skops").write_bytes(bytes(range(256)) * 40)
    (folder / "input_example.json").write_text('{"columns": ["a"], "data": [[1.0]]}')
    (folder / "nested" / "notes.txt").write_text("trained on Tuesday\n")
    inputs = PackageInputs(
        package_id="pkg",
        version="1",
        model_dir=folder,
        model_name="m",
        model_version="1",
        run_id=None,
        dataset_digest=None,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        class_names=("no", "yes"),
        requirements=("numpy==2.0.0",),
    )
    return build_package(inputs, KEY, tmp_path / "packages", package_format=1)


def read_all(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def rewrite(path: Path, entries: dict[str, bytes]) -> Path:
    """The package rezipped with `entries`: what an attacker with the file can do."""
    target = path.with_name("altered.zip")
    write_deterministic_zip(target, dict(entries))
    return target


def test_a_good_package_verifies(built: BuiltPackage) -> None:
    manifest = verify_package(built.path, [SigningKey.generate().verify_key, KEY.verify_key])

    assert manifest == built.manifest
    assert manifest.input_example == "model/input_example.json"
    assert "model/nested/notes.txt" in {entry.path for entry in manifest.files}


def test_every_file_is_checked(built: BuiltPackage) -> None:
    listed = [entry.path for entry in built.manifest.files]
    assert len(listed) == 7
    for path in listed:
        entries = read_all(built.path)
        content = bytearray(entries[path])
        content[len(content) // 2] ^= 0x01  # one flipped bit
        entries[path] = bytes(content)

        with pytest.raises(PackageVerificationError) as caught:
            verify_package(rewrite(built.path, entries), [KEY.verify_key])

        message = str(caught.value)
        assert message.startswith(f"{path} does not match its SHA-256"), message
        assert "download it again, and do not install it" in message


def test_a_flipped_byte_in_the_zip_names_the_entry(built: BuiltPackage, tmp_path: Path) -> None:
    with zipfile.ZipFile(built.path) as archive:
        info = archive.getinfo("model/model.skops")
    data = bytearray(built.path.read_bytes())
    # Inside the entry's packed data: past its 30-byte local header and name.
    data[info.header_offset + 30 + len(info.filename) + info.compress_size // 2] ^= 0xFF
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(bytes(data))

    with pytest.raises(PackageVerificationError, match=r"^model/model\.skops "):
        verify_package(damaged, [KEY.verify_key])


def test_a_longer_or_shorter_file_is_named_with_its_size(built: BuiltPackage) -> None:
    entries = read_all(built.path)
    entries["model/MLmodel"] += b"\n"

    with pytest.raises(PackageVerificationError, match=r"^model/MLmodel has more than \d+ bytes"):
        verify_package(rewrite(built.path, entries), [KEY.verify_key])
    entries["model/MLmodel"] = entries["model/MLmodel"][:-10]
    with pytest.raises(PackageVerificationError, match=r"^model/MLmodel has \d+ bytes where"):
        verify_package(rewrite(built.path, entries), [KEY.verify_key])


def test_a_tampered_manifest_fails_the_signature(built: BuiltPackage) -> None:
    entries = read_all(built.path)
    document = json.loads(entries["manifest.json"])
    document["class_names"] = ["yes", "no"]
    entries["manifest.json"] = json.dumps(document, sort_keys=True, indent=2).encode() + b"\n"

    with pytest.raises(PackageVerificationError) as caught:
        verify_package(rewrite(built.path, entries), [KEY.verify_key])

    assert str(caught.value) == INVALID_SIGNATURE
    assert INVALID_SIGNATURE == (
        "manifest signature is invalid: the package was altered or signed with another key"
    )


def test_a_manifest_resigned_by_another_key_with_our_key_id_fails(built: BuiltPackage) -> None:
    import base64

    entries = read_all(built.path)
    entries["manifest.sig"] = base64.b64encode(SigningKey.generate().sign(entries["manifest.json"]))

    with pytest.raises(PackageVerificationError, match=r"^manifest signature is invalid"):
        verify_package(rewrite(built.path, entries), [KEY.verify_key])


def test_an_unknown_key_is_named(built: BuiltPackage) -> None:
    other = SigningKey.generate().verify_key

    with pytest.raises(PackageVerificationError) as caught:
        verify_package(built.path, [other])

    message = str(caught.value)
    assert f"signed with key {KEY.key_id}, which is not trusted here" in message
    assert f"trusted key ids: {other.key_id}" in message
    with pytest.raises(PackageVerificationError, match="trusted key ids: none"):
        verify_package(built.path, [])


def test_an_unlisted_or_missing_file_is_named(built: BuiltPackage) -> None:
    entries = read_all(built.path)

    with pytest.raises(PackageVerificationError, match=r"^model/extra\.py is in the package but"):
        verify_package(rewrite(built.path, {**entries, "model/extra.py": b"x"}), [KEY.verify_key])
    del entries["score.py"]
    with pytest.raises(PackageVerificationError, match=r"^score\.py is listed in the manifest but"):
        verify_package(rewrite(built.path, entries), [KEY.verify_key])


@pytest.mark.parametrize("missing", ["manifest.json", "manifest.sig"])
def test_missing_metadata_is_named(built: BuiltPackage, missing: str) -> None:
    entries = read_all(built.path)
    del entries[missing]

    with pytest.raises(PackageVerificationError, match=f"the package has no {missing}"):
        verify_package(rewrite(built.path, entries), [KEY.verify_key])


def test_a_garbled_signature_or_a_non_zip_is_refused(built: BuiltPackage, tmp_path: Path) -> None:
    entries = read_all(built.path)
    with pytest.raises(PackageVerificationError, match=r"manifest\.sig is not the base64"):
        verify_package(rewrite(built.path, {**entries, "manifest.sig": b"%%%"}), [KEY.verify_key])
    text = tmp_path / "text.zip"
    text.write_text("not a zip")
    with pytest.raises(PackageVerificationError, match=r"text\.zip is not a readable zip"):
        verify_package(text, [KEY.verify_key])


def test_unsafe_entries_are_refused_before_the_signature(built: BuiltPackage) -> None:
    entries = read_all(built.path)

    with pytest.raises(UnsafeArchiveError, match=r"'\.\./evil' has an empty, '\.' or '\.\.'"):
        verify_package(rewrite(built.path, {**entries, "../evil": b"x"}), [KEY.verify_key])


def test_verify_tree_checks_an_unpacked_folder(built: BuiltPackage, tmp_path: Path) -> None:
    manifest = verify_package(built.path, [KEY.verify_key])
    folder = safe_extract(built.path, tmp_path / "unpacked")
    verify_tree(folder, manifest)

    def fails(message: str) -> None:
        with pytest.raises(PackageVerificationError, match=message):
            verify_tree(folder, manifest)

    notes = folder / "model" / "nested" / "notes.txt"
    original = notes.read_bytes()
    notes.write_bytes(original.replace(b"Tuesday", b"Tuesdaz"))
    fails("^model/nested/notes.txt does not match its SHA-256")
    notes.unlink()
    fails("^model/nested/notes.txt is listed in the manifest but missing")
    notes.symlink_to(folder / "score.py")
    fails("^model/nested/notes.txt is a link or special file")
    notes.unlink()
    notes.write_bytes(original)
    (folder / "model" / "stowaway.py").write_text("import os\n")
    fails("^model/stowaway.py is in the package folder but not in its manifest")
    (folder / "model" / "stowaway.py").unlink()
    verify_tree(folder, manifest)


def test_unpack_package_installs_only_what_verifies(built: BuiltPackage, tmp_path: Path) -> None:
    manifest = unpack_package(built.path, tmp_path / "ok", [KEY.verify_key])
    assert manifest == built.manifest
    assert (tmp_path / "ok" / "model" / "MLmodel").read_text() == MLMODEL

    with pytest.raises(PackageVerificationError, match="not trusted here"):
        unpack_package(built.path, tmp_path / "refused", [SigningKey.generate().verify_key])
    assert not (tmp_path / "refused").exists()
    assert [p.name for p in tmp_path.iterdir() if "refused" in p.name] == []


def test_extraction_check_failure_leaves_nothing(built: BuiltPackage, tmp_path: Path) -> None:
    # A file changed between verification and unpacking (a swapped file on disk).
    manifest = verify_package(built.path, [KEY.verify_key])
    swapped = tmp_path / "swapped.zip"
    entries = read_all(built.path)
    entries["score.py"] = b"import os; os.system('reboot')\n"
    shutil.copy(rewrite(built.path, entries), swapped)

    with pytest.raises(PackageVerificationError, match=r"^score\.py has 31 bytes where"):
        safe_extract(swapped, tmp_path / "dest", check=lambda d: verify_tree(d, manifest))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".dest", "dest"))) == []


def test_manifest_round_trips_from_the_zip(built: BuiltPackage) -> None:
    raw = read_all(built.path)["manifest.json"]

    assert Manifest.from_bytes(raw).to_bytes() == raw


def _resigned(built: BuiltPackage, manifest: bytes) -> Path:
    """The package with `manifest` as its manifest, signed with the trusted key."""
    import base64

    entries = read_all(built.path)
    entries["manifest.json"] = manifest
    entries["manifest.sig"] = base64.b64encode(KEY.sign(manifest))
    return rewrite(built.path, entries)


@pytest.mark.parametrize("depth", [200_000, 5_000])
def test_a_deeply_nested_manifest_is_a_verification_error(built: BuiltPackage, depth: int) -> None:
    document = json.loads(read_all(built.path)["manifest.json"])
    # Signed with the trusted key, so the nesting reaches the manifest's own parser.
    body = json.dumps(document)[:-1] + ', "extra": ' + "[" * depth + "]" * depth + "}"
    with pytest.raises(PackageVerificationError, match=r"^manifest\.json nests deeper than"):
        verify_package(_resigned(built, body.encode()), [KEY.verify_key])
    # Unsigned, it must not get as far as the key lookup either.
    with pytest.raises(PackageVerificationError, match=r"^manifest\.json nests deeper than"):
        Manifest.from_bytes(("[" * depth + "]" * depth).encode())


def test_nesting_inside_manifest_strings_does_not_count(built: BuiltPackage) -> None:
    document = json.loads(read_all(built.path)["manifest.json"])
    document["name"] = '["{' * 1000 + '\\"'
    body = json.dumps(document, sort_keys=True, indent=2).encode() + b"\n"

    assert verify_package(_resigned(built, body), [KEY.verify_key]).name == document["name"]


def test_an_oversized_manifest_is_refused_by_its_parser() -> None:
    from modelferry.packaging.manifest import MAX_MANIFEST_BYTES

    with pytest.raises(PackageVerificationError, match=r"^manifest\.json is larger than"):
        Manifest.from_bytes(b" " * (MAX_MANIFEST_BYTES + 1) + b"{}")
