"""`package-model`: build a signed package of a registered model version for edge devices.

Run it by hand from the repository root:

    python -m flows.package_model --model-name breast-cancer-classifier
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from prefect import flow, get_run_logger

from flows.current_run import completed
from flows.inputs import Targets
from modelferry.errors import PackagingError
from modelferry.packaging import DEFAULT_EXPIRY_DAYS, default_expiry
from modelferry.registry import CHAMPION
from modelferry.registry.tracking import DEFAULT_HOME
from tasks.packaging import (
    build_signed_package,
    find_model_version,
    publish_package,
    record_package_on_version,
    verify_built_package,
)

# Builds stay apart from the local package store (`.modelferry/packages`) they are put in.
DEFAULT_OUTPUT_DIR = DEFAULT_HOME / "builds"


@dataclass(frozen=True)
class PackagedModel:
    """What `package-model` built: where the zip is, what it holds, how to recognise it."""

    path: Path
    package_id: str
    package_version: str
    model_name: str
    model_version: str
    flavor: str
    files: int
    signing_key_id: str
    sha256: str
    size: int
    artifact_path: str
    store: str
    store_key: str
    package_format: int = 2
    expires: str | None = None
    min_version: str | None = None

    def summary(self) -> str:
        """The package in one line."""
        terms = f"format {self.package_format}"
        if self.expires:
            terms += f", expires {self.expires}"
        if self.min_version:
            terms += f", min version {self.min_version}"
        return (
            f"Packaged {self.model_name} v{self.model_version} as {self.package_id} "
            f"{self.package_version}: {self.path} ({self.size} bytes, sha256 {self.sha256[:12]}, "
            f"signed by key {self.signing_key_id}, {terms}); in the {self.store} store as "
            f"{self.store_key}"
        )


@flow(name="package-model", log_prints=True)
def package_model(
    model_name: str,
    model_version: str | None = None,
    model_alias: str = CHAMPION,
    package_id: str | None = None,
    package_version: str | None = None,
    targets: Targets = Targets(),  # noqa: B008 (frozen: one shared default is safe)
    output_dir: str | None = None,
    expires_in_days: int = DEFAULT_EXPIRY_DAYS,
    expires_at: datetime | None = None,
    min_version: str | None = None,
    package_format: int = 2,
) -> PackagedModel:
    """Package a registered model version, sign it, verify it and record it on the version.

    Args:
        model_name: the registered model.
        model_version: a version number; wins over `model_alias`.
        model_alias: the alias of the version to package when `model_version` is not given.
        package_id: the package's id; default the model name.
        package_version: the package's version; default the model version.
        targets: where MLflow, the signing key and the package store are: saved blocks,
            or the embedded default (`Targets`): the development key under
            `.modelferry/keys/`, the local store under `.modelferry/packages` where
            devices fetch the package, MLflow from `MLFLOW_TRACKING_URI` or embedded.
        output_dir: where the zip is built; default `.modelferry/builds`.
        expires_in_days: the length of the package's validity periods, counted from the
            model version's creation: devices refuse it at the end of the first period
            that leaves a third of it ahead, so rebuilding on another day gives the same
            bytes.
        expires_at: an exact, time-zone-aware expiry instead (e.g. to rebuild a package
            byte for byte on another day).
        min_version: once a device installs this package it refuses versions of this model
            below `min_version` (anti-rollback); default no floor.
        package_format: 2 (signed statement with expiry and floor) or 1, for devices that
            predate format 2 (`expires_*` and `min_version` then do not apply).

    Returns:
        The package built. Rebuilding the same version gives the same bytes, on any day
        of its expiry period (see `modelferry.packaging.default_expiry`).
    """
    logger = get_run_logger()
    settings = targets.tracking_settings()
    signer = targets.package_signing_key()
    if targets.signing_key:
        logger.info("Signing with key %s from block %r", signer.key_id, targets.signing_key)
    if expires_in_days < 1:
        raise PackagingError(f"expires_in_days must be at least 1, not {expires_in_days}")
    source = find_model_version(settings, model_name, model_version, model_alias)
    expires = None
    if package_format != 1:
        expires = expires_at or default_expiry(source.created_at, days=expires_in_days)
    built = build_signed_package(
        settings,
        source,
        package_id or model_name,
        package_version or source.version,
        signer,
        Path(output_dir) if output_dir else DEFAULT_OUTPUT_DIR,
        package_format,
        expires,
        min_version,
    )
    manifest = verify_built_package(built.path, [signer.verify_key])
    if manifest != built.manifest:
        raise PackagingError(f"{built.path} changed between building and verifying it")
    artifact = record_package_on_version(settings, source, built)
    store = targets.package_store()
    stored = publish_package(store, built)
    logger.info(built.summary())

    packaged = PackagedModel(
        path=built.path,
        package_id=manifest.package_id,
        package_version=manifest.version,
        model_name=manifest.model.name,
        model_version=manifest.model.version,
        flavor=manifest.model.flavor,
        files=len(manifest.files),
        signing_key_id=manifest.signing_key_id,
        sha256=built.sha256,
        size=built.size,
        artifact_path=artifact,
        store=store.name,
        store_key=stored.key,
        package_format=manifest.format_number,
        expires=built.statement.expires if built.statement else None,
        min_version=built.statement.min_version if built.statement else None,
    )
    return completed(packaged)


def main(argv: list[str] | None = None) -> int:
    """Command line: package one version, print where the package is."""
    parser = argparse.ArgumentParser(prog="python -m flows.package_model")
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--model-version")
    parser.add_argument("--model-alias", default=CHAMPION)
    parser.add_argument("--package-id")
    parser.add_argument("--package-version")
    parser.add_argument("--signing-key-block")
    parser.add_argument("--mlflow-block")
    parser.add_argument("--tracking-uri")
    parser.add_argument("--output-dir")
    parser.add_argument("--store-block")
    parser.add_argument("--expires-in-days", type=int, default=DEFAULT_EXPIRY_DAYS)
    parser.add_argument("--expires-at", type=_aware_time, help="ISO-8601 with a time zone")
    parser.add_argument("--min-version")
    parser.add_argument("--package-format", type=int, choices=(1, 2), default=2)
    args = parser.parse_args(argv)
    packaged = package_model(
        args.model_name,
        args.model_version,
        args.model_alias,
        args.package_id,
        args.package_version,
        Targets(
            tracking=args.mlflow_block,
            tracking_uri=args.tracking_uri,
            signing_key=args.signing_key_block,
            store=args.store_block,
        ),
        args.output_dir,
        args.expires_in_days,
        args.expires_at,
        args.min_version,
        args.package_format,
    )
    print(packaged.summary())
    return 0


def _aware_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone; add Z or +00:00")
    return moment


if __name__ == "__main__":
    sys.exit(main())
