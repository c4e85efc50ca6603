"""The package layout, its manifest, and byte-for-byte reproducible builds."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import stat
import zipfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import SecretStr

from modelferry.errors import PackageVerificationError, PackagingError
from modelferry.packaging import (
    FORMAT,
    FORMAT_2,
    STATEMENT_TYPE,
    BuiltPackage,
    Envelope,
    Manifest,
    PackageInputs,
    PackageStatement,
    SigningKey,
    build_package,
    default_expiry,
    read_model_folder,
    score_requirements,
)
from modelferry.serving import azureml_score

CREATED = datetime(2026, 5, 1, 12, 30, 15, 250_000, tzinfo=UTC)
# A fixed key, so that two test runs (not only two builds) give the same bytes.
KEY = SigningKey.from_base64(SecretStr(base64.b64encode(bytes(range(32))).decode()))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real MLflow LightGBM model folder, saved as the registry would hand it out."""
    import lightgbm as lgb
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = lgb.LGBMClassifier(n_estimators=5, num_leaves=7, verbose=-1).fit(x, y)
    folder = tmp_path_factory.mktemp("mlflow") / "model"
    sample = x.head(3)
    mlflow.lightgbm.save_model(
        model,
        str(folder),
        signature=infer_signature(sample, model.predict(sample)),
        input_example=sample,
        pip_requirements=["scikit-learn"],  # spares MLflow inferring them in a subprocess
    )
    return folder


def inputs(model_dir: Path, **changes: object) -> PackageInputs:
    base = PackageInputs(
        package_id="breast-cancer",
        version="7",
        model_dir=model_dir,
        model_name="breast-cancer-classifier",
        model_version="7",
        run_id="0123abcd",
        dataset_digest="sha256:feedface",
        created_at=CREATED,
        class_names=("malignant", "benign"),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def entries(built: BuiltPackage) -> dict[str, bytes]:
    with zipfile.ZipFile(built.path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def test_layout_and_manifest(model_dir: Path, tmp_path: Path) -> None:
    built = build_package(inputs(model_dir), KEY, tmp_path)

    assert built.path == tmp_path / "breast-cancer-7.zip"
    content = entries(built)
    names = list(content)
    assert names == sorted(names)
    assert {"manifest.json", "manifest.dsse.json", "score.py", "requirements.txt"} <= set(names)
    assert "manifest.sig" not in names
    assert {"model/MLmodel", "model/model.skops", "model/input_example.json"} <= set(names)
    assert json.loads(content["model/class_names.json"]) == ["malignant", "benign"]
    assert content["score.py"] == Path(azureml_score.__file__).read_bytes()

    raw = content["manifest.json"]
    manifest = Manifest.from_bytes(raw)
    assert manifest == built.manifest
    assert raw.endswith(b"}\n")
    assert raw == manifest.to_bytes()  # canonical: parsing and writing again is a no-op
    assert list(json.loads(raw)) == sorted(json.loads(raw))
    assert manifest.format == FORMAT_2 == "modelferry-package/2"
    assert (manifest.package_id, manifest.version, manifest.name) == (
        "breast-cancer",
        "7",
        "breast-cancer-classifier",
    )
    assert manifest.model.model_dump() == {
        "name": "breast-cancer-classifier",
        "version": "7",
        "run_id": "0123abcd",
        "flavor": "lightgbm",
    }
    assert manifest.created_at == "2026-05-01T12:30:15Z"
    assert manifest.dataset_digest == "sha256:feedface"
    assert (manifest.entry_point, manifest.requirements) == ("score.py", "requirements.txt")
    assert manifest.input_example == "model/input_example.json"
    assert manifest.class_names == ("malignant", "benign")
    assert len(manifest.input_schema) == 30
    assert manifest.input_schema[0].model_dump() == {
        "name": "mean radius",
        "type": "double",
        "required": True,
    }
    public = base64.b64decode(KEY.verify_key.public_base64)
    assert manifest.signing_key_id == hashlib.sha256(public).hexdigest()[:16]

    # Every entry but the manifest and its signature is listed, with its size and hash.
    listed = {entry.path: entry for entry in manifest.files}
    assert sorted(listed) == [n for n in names if n not in {"manifest.json", "manifest.dsse.json"}]
    for path, entry in listed.items():
        assert entry.size == len(content[path])
        assert entry.sha256 == hashlib.sha256(content[path]).hexdigest()

    # The envelope signs a statement naming the manifest's digest, the model and an expiry.
    envelope = Envelope.from_bytes(content["manifest.dsse.json"])
    assert envelope.payload_type == STATEMENT_TYPE
    assert [s.keyid for s in envelope.signatures] == [KEY.key_id]
    assert KEY.verify_key.is_valid_signature(envelope.signed_bytes, envelope.signatures[0].sig)
    statement = PackageStatement.from_bytes(envelope.payload)
    assert statement == built.statement
    assert statement.manifest_sha256 == hashlib.sha256(raw).hexdigest()
    assert (statement.model.name, statement.model.version) == ("breast-cancer-classifier", "7")
    assert statement.expires_at == default_expiry(CREATED)
    assert statement.min_version is None
    assert built.sha256 == hashlib.sha256(built.path.read_bytes()).hexdigest()
    assert built.size == built.path.stat().st_size


def test_format_1_layout_signs_the_manifest_bytes(model_dir: Path, tmp_path: Path) -> None:
    built = build_package(inputs(model_dir), KEY, tmp_path, package_format=1)

    content = entries(built)
    assert "manifest.dsse.json" not in content
    assert built.manifest.format == FORMAT == "modelferry-package/1"
    assert built.statement is None
    assert content["manifest.sig"].endswith(b"\n")
    signature = base64.b64decode(content["manifest.sig"].rstrip(b"\n"), validate=True)
    assert KEY.verify_key.is_valid_signature(content["manifest.json"], signature)
    assert "format 1 (no expiry)" in built.summary()


def test_requirements_pin_what_score_py_needs(model_dir: Path, tmp_path: Path) -> None:
    from importlib.metadata import version

    built = build_package(inputs(model_dir), KEY, tmp_path)

    lines = entries(built)["requirements.txt"].decode().splitlines()
    assert lines == sorted(lines)
    pins = dict(line.split("==") for line in lines)
    assert set(pins) == {"lightgbm", "numpy", "pyyaml", "scikit-learn", "scipy", "skops"}
    assert pins["lightgbm"] == version("lightgbm")
    assert pins["skops"] == version("skops")
    assert "lightgbm" not in {p.split("==")[0] for p in score_requirements("sklearn")}


def test_zip_entries_are_normalised(model_dir: Path, tmp_path: Path) -> None:
    built = build_package(inputs(model_dir), KEY, tmp_path)

    with zipfile.ZipFile(built.path) as archive:
        infos = archive.infolist()
    assert all(info.date_time == (1980, 1, 1, 0, 0, 0) for info in infos)
    assert all(info.external_attr >> 16 == stat.S_IFREG | 0o644 for info in infos)
    assert all(info.create_system == 3 for info in infos)
    assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in infos)
    assert not any(info.is_dir() for info in infos)


def test_same_inputs_give_the_same_bytes(model_dir: Path, tmp_path: Path) -> None:
    first = build_package(inputs(model_dir), KEY, tmp_path / "a")
    # The same model elsewhere, with other timestamps and permissions on its files.
    moved = tmp_path / "copy" / "somewhere"
    shutil.copytree(model_dir, moved)
    for path in moved.iterdir():
        path.chmod(0o600)
        path.touch()
    second = build_package(inputs(moved), KEY, tmp_path / "b")

    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.sha256 == second.sha256
    # Rebuilding in place replaces the file with the same bytes.
    again = build_package(inputs(model_dir), KEY, tmp_path / "a")
    assert again.sha256 == first.sha256


@pytest.mark.parametrize(
    "change",
    [
        {"created_at": CREATED + timedelta(seconds=1)},
        {"class_names": ("benign", "malignant")},
        {"version": "8"},
        {"dataset_digest": None},
        {"requirements": ("numpy==1.0",)},
    ],
    ids=lambda change: next(iter(change)),
)
def test_a_changed_input_changes_the_bytes(
    model_dir: Path, tmp_path: Path, change: dict[str, object]
) -> None:
    base = build_package(inputs(model_dir), KEY, tmp_path / "base")
    changed = build_package(inputs(model_dir, **change), KEY, tmp_path / "changed")

    assert changed.path.read_bytes() != base.path.read_bytes()


def test_a_changed_model_file_or_key_changes_the_bytes(model_dir: Path, tmp_path: Path) -> None:
    base = build_package(inputs(model_dir), KEY, tmp_path / "base")
    edited = tmp_path / "edited"
    shutil.copytree(model_dir, edited)
    with (edited / "conda.yaml").open("a") as file:
        file.write("# one more line\n")

    assert build_package(inputs(edited), KEY, tmp_path / "e").sha256 != base.sha256
    other_key = build_package(inputs(model_dir), SigningKey.generate(), tmp_path / "k")
    assert other_key.sha256 != base.sha256


def test_created_at_is_utc_and_must_be_aware(model_dir: Path, tmp_path: Path) -> None:
    in_paris = CREATED.astimezone(timezone(timedelta(hours=2)))
    built = build_package(inputs(model_dir, created_at=in_paris), KEY, tmp_path)
    assert built.manifest.created_at == "2026-05-01T12:30:15Z"

    with pytest.raises(PackagingError, match="time-zone aware"):
        build_package(inputs(model_dir, created_at=datetime(2026, 5, 1)), KEY, tmp_path)


@pytest.mark.parametrize("bad", ["my model", "../etc", "", "a/b", "-x"])
def test_ids_that_cannot_name_a_file_are_refused(model_dir: Path, tmp_path: Path, bad: str) -> None:
    with pytest.raises(PackagingError, match="cannot name a package"):
        build_package(inputs(model_dir, package_id=bad), KEY, tmp_path)
    with pytest.raises(PackagingError, match="cannot name a package"):
        build_package(inputs(model_dir, version=bad), KEY, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_links_in_the_model_folder_are_refused(model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    (folder / "extra.txt").symlink_to("/etc/hostname")

    with pytest.raises(PackagingError, match=r"extra\.txt is a link"):
        build_package(inputs(folder), KEY, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_folder_without_a_loadable_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PackagingError, match="not an MLflow model folder"):
        read_model_folder(tmp_path)
    (tmp_path / "MLmodel").write_text("flavors:\n  pytorch: {}\n")
    with pytest.raises(PackagingError, match="has flavors pytorch; a package needs"):
        read_model_folder(tmp_path)


def test_manifest_parsing_names_what_is_wrong(model_dir: Path, tmp_path: Path) -> None:
    manifest = build_package(inputs(model_dir), KEY, tmp_path).manifest
    document = json.loads(manifest.to_bytes())

    with pytest.raises(PackageVerificationError, match="format 'modelferry-package/3'"):
        Manifest.from_bytes(json.dumps({**document, "format": "modelferry-package/3"}).encode())
    with pytest.raises(PackageVerificationError, match="package_id"):
        Manifest.from_bytes(json.dumps({**document, "package_id": "../x"}).encode())
    unsorted = {**document, "files": list(reversed(document["files"]))}
    with pytest.raises(PackageVerificationError, match="sorted by path"):
        Manifest.from_bytes(json.dumps(unsorted).encode())
    climbing = {**document, "files": [{**document["files"][0], "path": "../x"}]}
    with pytest.raises(PackageVerificationError, match=r"'\.\.' component"):
        Manifest.from_bytes(json.dumps(climbing).encode())
    with pytest.raises(PackageVerificationError, match="not UTF-8 JSON"):
        Manifest.from_bytes(b"\xff{")
    # Keys a reader does not know are ignored: additive changes keep format 1.
    extended = Manifest.from_bytes(json.dumps({**document, "future": 1}).encode())
    assert extended == manifest
