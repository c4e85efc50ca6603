"""Packaging steps: find the version, build and sign its package, verify it, record it.

Nothing is cached: a package is cheap to rebuild and rebuilding gives the same bytes.
"""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelferry.packaging import (
    BuiltPackage,
    Manifest,
    PackageInputs,
    SigningKey,
    VerifyKey,
    build_package,
    verify_package,
)
from modelferry.packaging.registry import (
    ModelSource,
    download_model_folder,
    find_model_source,
    record_package,
)
from modelferry.registry import TrackingSettings
from modelferry.stores.base import PackageStore, StoredPackage
from tasks.retry_policy import TRANSIENT_RETRIES, TRANSIENT_RETRY_DELAYS, retry_on_transient


# Steps that talk to MLflow are retried when it is unreachable, never for a refusal.
@task(
    name="find-model-version",
    cache_policy=NO_CACHE,
    retries=TRANSIENT_RETRIES,
    retry_delay_seconds=TRANSIENT_RETRY_DELAYS,
    retry_condition_fn=retry_on_transient,
    timeout_seconds=300,
)
def find_model_version(
    settings: TrackingSettings, model_name: str, model_version: str | None, model_alias: str
) -> ModelSource:
    """`model_version` of `model_name` if given, else the version `model_alias` points at."""
    return find_model_source(settings, model_name, model_version, model_alias)


# The download is the step that fails transiently; building again after it is harmless
# because the zip is written atomically and comes out the same.
@task(
    name="build-package",
    cache_policy=NO_CACHE,
    retries=TRANSIENT_RETRIES,
    retry_delay_seconds=TRANSIENT_RETRY_DELAYS,
    retry_condition_fn=retry_on_transient,
    timeout_seconds=1800,
)
def build_signed_package(
    settings: TrackingSettings,
    source: ModelSource,
    package_id: str,
    package_version: str,
    signer: SigningKey,
    output_dir: Path,
    package_format: int = 2,
    expires_at: datetime | None = None,
    min_version: str | None = None,
) -> BuiltPackage:
    """Download the version's model and build its signed package into `output_dir`.

    `package_format`, `expires_at` and `min_version` are `build_package`'s: format 2 by
    default, expiring `DEFAULT_EXPIRY_DAYS` after the start of today (UTC), no floor.
    """
    with tempfile.TemporaryDirectory(prefix="modelferry-package-") as tmp:
        model_dir = download_model_folder(settings, source, Path(tmp))
        inputs = PackageInputs(
            package_id=package_id,
            version=package_version,
            model_dir=model_dir,
            model_name=source.name,
            model_version=source.version,
            run_id=source.run_id,
            dataset_digest=source.dataset_digest,
            created_at=source.created_at,
            class_names=source.class_names,
        )
        return build_package(
            inputs,
            signer,
            output_dir,
            package_format=package_format,
            expires_at=expires_at,
            min_version=min_version,
        )


@task(name="verify-package", cache_policy=NO_CACHE, timeout_seconds=900)
def verify_built_package(path: Path, public_keys: list[VerifyKey]) -> Manifest:
    """Verify the zip as a device will: signature, then every file."""
    return verify_package(path, public_keys)


@task(
    name="record-package",
    cache_policy=NO_CACHE,
    retries=TRANSIENT_RETRIES,
    retry_delay_seconds=TRANSIENT_RETRY_DELAYS,
    retry_condition_fn=retry_on_transient,
    timeout_seconds=900,
)
def record_package_on_version(
    settings: TrackingSettings, source: ModelSource, built: BuiltPackage
) -> str:
    """Tag the version with the package and log the zip to its run under `packages/`."""
    return record_package(settings, source, built)


# The store retries transient failures inside `put()`; the task retries once more for an
# outage longer than that. A repeated put of the same bytes is a no-op.
@task(
    name="publish-package",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[10, 60],
    timeout_seconds=1800,
)
def publish_package(store: PackageStore, built: BuiltPackage) -> StoredPackage:
    """Put the package in the store devices download from."""
    return store.put(
        built.path, package_id=built.manifest.package_id, version=built.manifest.version
    )
