"""Build a signed, reproducible model package from a downloaded MLflow model folder."""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.util import find_spec
from pathlib import Path

from modelferry.errors import PackagingError
from modelferry.packaging.archive import write_deterministic_zip
from modelferry.packaging.envelope import sign_envelope
from modelferry.packaging.manifest import (
    ENVELOPE_NAME,
    FORMATS,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    FileEntry,
    Manifest,
    ModelInfo,
    check_package_id,
    entry_name_problem,
    format_created_at,
    package_file_name,
)
from modelferry.packaging.model_folder import read_model_folder, score_requirements
from modelferry.packaging.signing import SigningKey
from modelferry.packaging.statement import (
    STATEMENT_TYPE,
    PackageStatement,
    StatementModel,
    check_version_text,
    default_expiry,
    is_below,
)
from modelferry.packaging.verification import file_sha256

MODEL_PREFIX = "model/"
ENTRY_POINT = "score.py"
REQUIREMENTS = "requirements.txt"
CLASS_NAMES = "class_names.json"
#: The module whose source becomes the package's score.py.
SCORE_MODULE = "modelferry.serving.azureml_score"


@dataclass(frozen=True)
class PackageInputs:
    """Everything a package is built from; the same inputs give the same zip bytes.

    Attributes:
        package_id: the package's id (letters, digits, `.`, `_`, `-`).
        version: the package version (same characters).
        model_dir: the MLflow model folder, holding `MLmodel`.
        model_name: the registered model it is a version of.
        model_version: that version.
        run_id: the MLflow run that logged it, if known.
        dataset_digest: digest of the training data, if known.
        created_at: a time-zone-aware moment, e.g. the model version's creation time
            (so that rebuilding the same version gives the same bytes).
        class_names: class names, position = label value.
        name: a human-readable package name; default the model name.
        requirements: pinned requirements of score.py; default `score_requirements()`
            for the model's flavor, at the versions installed here.
        python_version: `major.minor` the package is built for; default this Python's.
    """

    package_id: str
    version: str
    model_dir: Path
    model_name: str
    model_version: str
    run_id: str | None
    dataset_digest: str | None
    created_at: datetime
    class_names: Sequence[str]
    name: str | None = None
    requirements: Sequence[str] | None = None
    python_version: str | None = None


@dataclass(frozen=True)
class BuiltPackage:
    """A package zip on disk and what it holds (`statement` is None for format 1)."""

    path: Path
    manifest: Manifest
    sha256: str
    size: int
    statement: PackageStatement | None = None

    def summary(self) -> str:
        """The package in one line."""
        line = f"{self.manifest.summary()}; {self.size} bytes, sha256 {self.sha256[:12]}"
        if self.statement is None:
            return line + "; format 1 (no expiry)"
        floor = self.statement.min_version
        return (
            line
            + f"; format 2, expires {self.statement.expires}"
            + (f", min version {floor}" if floor else "")
        )


def build_package(
    inputs: PackageInputs,
    signer: SigningKey,
    output_dir: Path,
    *,
    package_format: int = 2,
    expires_at: datetime | None = None,
    min_version: str | None = None,
    co_signers: Sequence[SigningKey] = (),
) -> BuiltPackage:
    """Write `{package_id}-{version}.zip` into `output_dir`, signed by `signer`.

    The zip holds `manifest.json`, its signature, the model folder under `model/` (with
    `model/class_names.json`), `score.py` and `requirements.txt`; see
    docs/package-format.md. An existing file of that name is replaced atomically.

    Args:
        inputs: what the package is built from.
        signer: the package-signing key; its id is the manifest's `signing_key_id`.
        output_dir: where the zip is written.
        package_format: 2 (a DSSE envelope with expiry and version floor) or 1 (a bare
            signature of the manifest, for devices that predate format 2).
        expires_at: format 2: when devices stop accepting the package; default
            the end of the first `DEFAULT_EXPIRY_DAYS` period from `created_at` that
            leaves a third of it ahead (see `default_expiry`).
        min_version: format 2: once a device installs this package, it refuses versions
            of this model below `min_version` (anti-rollback); default no floor.
        co_signers: format 2: more keys signing the envelope, for devices that require
            several signatures.

    Raises:
        PackagingError: a bad id or version, a model folder score.py cannot load, a
            link or special file in the folder, a naive `created_at` or `expires_at`, an
            expiry already past, a `min_version` above the model version, or format 2
            options given for format 1.
    """
    package_id = check_package_id(inputs.package_id, "package_id")
    version = check_package_id(inputs.version, "package version")
    if package_format not in FORMATS:
        raise PackagingError(f"package_format must be 1 or 2, not {package_format!r}")
    if package_format == 1 and (expires_at or min_version or co_signers):
        raise PackagingError(
            "a format 1 package carries no expiry, version floor or second signature: "
            "build format 2 for expires_at, min_version or co_signers"
        )
    expires = _expiry(expires_at, inputs.created_at) if package_format == 2 else None
    if min_version is not None:
        _check_floor(inputs.model_version, min_version)
    folder = read_model_folder(inputs.model_dir)
    requirements = inputs.requirements or score_requirements(folder.flavor)
    generated = {
        MODEL_PREFIX + CLASS_NAMES: json.dumps(list(inputs.class_names)).encode("utf-8") + b"\n",
        ENTRY_POINT: score_script_source(),
        REQUIREMENTS: "".join(f"{line}\n" for line in sorted(requirements)).encode("utf-8"),
    }
    contents: dict[str, Path | bytes] = {**_model_files(inputs.model_dir), **generated}
    example = folder.input_example
    manifest = Manifest(
        format=FORMATS[package_format],
        package_id=package_id,
        name=inputs.name or inputs.model_name,
        version=version,
        model=ModelInfo(
            name=inputs.model_name,
            version=inputs.model_version,
            run_id=inputs.run_id,
            flavor=folder.flavor,
        ),
        dataset_digest=inputs.dataset_digest,
        created_at=format_created_at(inputs.created_at),
        python_version=inputs.python_version or f"{sys.version_info[0]}.{sys.version_info[1]}",
        entry_point=ENTRY_POINT,
        requirements=REQUIREMENTS,
        input_schema=folder.input_schema,
        input_example=MODEL_PREFIX + example if example else None,
        class_names=tuple(inputs.class_names),
        signing_key_id=signer.key_id,
        files=tuple(_file_entry(path, contents[path]) for path in sorted(contents)),
    )
    manifest_bytes = manifest.to_bytes()
    statement = None
    if expires is None:
        metadata = {SIGNATURE_NAME: base64.b64encode(signer.sign(manifest_bytes)) + b"\n"}
    else:
        statement = PackageStatement(
            package_id=package_id,
            version=version,
            model=StatementModel(name=inputs.model_name, version=inputs.model_version),
            manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
            expires=format_created_at(expires),
            min_version=min_version,
        )
        envelope = sign_envelope(STATEMENT_TYPE, statement.to_bytes(), [signer, *co_signers])
        metadata = {ENVELOPE_NAME: envelope.to_bytes()}
    target = output_dir / package_file_name(package_id, version)
    write_deterministic_zip(target, {**contents, MANIFEST_NAME: manifest_bytes, **metadata})
    return BuiltPackage(target, manifest, file_sha256(target), target.stat().st_size, statement)


def _expiry(expires_at: datetime | None, created_at: datetime) -> datetime:
    if expires_at is None:
        if created_at.tzinfo is None:
            raise PackagingError("created_at must be time-zone aware (e.g. datetime.now(UTC))")
        return default_expiry(created_at)
    if expires_at.tzinfo is None:
        raise PackagingError("expires_at must be time-zone aware (e.g. datetime.now(UTC))")
    if expires_at <= datetime.now(UTC):
        raise PackagingError(
            f"expires_at {format_created_at(expires_at)} has passed: every device would "
            "refuse the package; give a later expiry"
        )
    return expires_at


def _check_floor(model_version: str, min_version: str) -> None:
    check_version_text(min_version, "min_version")
    below = is_below(model_version, min_version)
    if below is None:
        raise PackagingError(
            f"min_version {min_version} needs a numbered model version to compare with, "
            f"not {model_version!r}"
        )
    if below:
        raise PackagingError(
            f"min_version {min_version} is above the packaged model version {model_version}: "
            "a device would refuse this very package; give a min_version of at most "
            f"{model_version}"
        )


def score_script_source() -> bytes:
    """The bytes of the scoring script that becomes the package's `score.py`."""
    spec = find_spec(SCORE_MODULE)
    if spec is None or spec.origin is None:
        raise PackagingError(f"cannot find the source of {SCORE_MODULE}")
    return Path(spec.origin).read_bytes()


def _model_files(model_dir: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(model_dir.rglob("*")):
        relative = path.relative_to(model_dir).as_posix()
        if path.is_symlink() or not (path.is_dir() or path.is_file()):
            raise PackagingError(
                f"{path} is a link or special file; a package holds plain files only"
            )
        if path.is_dir() or relative == CLASS_NAMES:
            continue
        name = MODEL_PREFIX + relative
        problem = entry_name_problem(name)
        if problem:
            raise PackagingError(f"{path} cannot be packaged: its name {problem}")
        files[name] = path
    return files


def _file_entry(path: str, content: Path | bytes) -> FileEntry:
    if isinstance(content, bytes):
        return FileEntry(path=path, size=len(content), sha256=hashlib.sha256(content).hexdigest())
    return FileEntry(path=path, size=content.stat().st_size, sha256=file_sha256(content))
