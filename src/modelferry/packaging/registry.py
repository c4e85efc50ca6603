"""The MLflow side of packaging: which version to package, its files, and the record of it.

Every function raises `TrackingUnavailableError` when MLflow cannot be reached (worth a
retry) and `RegistryError` when it refuses the operation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelferry.errors import PackagingError
from modelferry.packaging.build import BuiltPackage
from modelferry.registry import CLASS_NAMES_TAG, ModelRegistry, TrackingSettings, tracking_errors

#: Tags set on a model version once it is packaged.
PACKAGE_ID_TAG = "modelferry.package.id"
PACKAGE_VERSION_TAG = "modelferry.package.version"
PACKAGE_SHA256_TAG = "modelferry.package.sha256"
PACKAGE_KEY_TAG = "modelferry.package.signing_key_id"
#: The run artifact folder packages are logged under.
PACKAGE_ARTIFACT_PATH = "packages"
DATASET_DIGEST_TAG = "dataset.digest"
DEFAULT_CLASS_NAMES = ("0", "1")


@dataclass(frozen=True)
class ModelSource:
    """A registered model version to package."""

    name: str
    version: str
    run_id: str | None
    created_at: datetime
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        """`models:/NAME/VERSION`."""
        return f"models:/{self.name}/{self.version}"

    @property
    def class_names(self) -> tuple[str, ...]:
        """The class names tagged at registration, else `("0", "1")`."""
        names = self.tags.get(CLASS_NAMES_TAG)
        return tuple(str(n) for n in json.loads(names)) if names else DEFAULT_CLASS_NAMES

    @property
    def dataset_digest(self) -> str | None:
        """The training data digest tagged at registration, if any."""
        return self.tags.get(DATASET_DIGEST_TAG)


def find_model_source(
    settings: TrackingSettings, name: str, version: str | None, alias: str
) -> ModelSource:
    """Version `version` of `name` when given, else the version `alias` points at.

    Raises:
        PackagingError: no version has that alias.
    """
    from mlflow import MlflowClient

    settings.activate()
    client = MlflowClient(settings.tracking_uri, settings.registry_uri)
    if version is None:
        found = ModelRegistry(settings).get_by_alias(name, alias)
        if found is None:
            raise PackagingError(
                f"model {name!r} has no version aliased {alias!r}; register and approve one, "
                "or pass model_version"
            )
        version = found.version
    with tracking_errors(settings, f"reading {name!r} version {version}"):
        mv = client.get_model_version(name, version)
    return _to_source(mv)


def download_model_folder(settings: TrackingSettings, source: ModelSource, dest: Path) -> Path:
    """Download the version's MLflow model into `dest`; the folder holding `MLmodel`.

    Raises:
        PackagingError: the download holds no `MLmodel`.
    """
    import mlflow.artifacts

    dest.mkdir(parents=True, exist_ok=True)
    with tracking_errors(settings, f"downloading {source.uri}"):
        settings.activate()
        mlflow.artifacts.download_artifacts(artifact_uri=source.uri, dst_path=str(dest))
    found = sorted(dest.rglob("MLmodel"), key=lambda p: (len(p.parts), str(p)))
    if not found:
        raise PackagingError(f"{source.uri} holds no MLflow model (no MLmodel file)")
    return found[0].parent


def record_package(settings: TrackingSettings, source: ModelSource, built: BuiltPackage) -> str:
    """Tag the version with the package and log the zip to its run under `packages/`.

    Idempotent: recording the same package again overwrites the same tags and artifact.

    Returns:
        The artifact's path in the run, or "" when the version has no run.
    """
    from mlflow import MlflowClient

    manifest = built.manifest
    ModelRegistry(settings).set_tags(
        source.name,
        source.version,
        {
            PACKAGE_ID_TAG: manifest.package_id,
            PACKAGE_VERSION_TAG: manifest.version,
            PACKAGE_SHA256_TAG: built.sha256,
            PACKAGE_KEY_TAG: manifest.signing_key_id,
        },
    )
    if source.run_id is None:
        return ""
    with tracking_errors(settings, f"logging {built.path.name} to run {source.run_id}"):
        settings.activate()
        client = MlflowClient(settings.tracking_uri, settings.registry_uri)
        client.log_artifact(source.run_id, str(built.path), PACKAGE_ARTIFACT_PATH)
    return f"{PACKAGE_ARTIFACT_PATH}/{built.path.name}"


def _to_source(mv: Any) -> ModelSource:
    created = datetime.fromtimestamp(int(mv.creation_timestamp) / 1000, tz=UTC)
    return ModelSource(
        name=mv.name,
        version=str(mv.version),
        run_id=mv.run_id or None,
        created_at=created,
        tags=dict(mv.tags or {}),
    )
