"""One delivery's package, from link to installed version: what an agent's worker runs.

    download (asking for fresh links) -> verify -> unpack into staging -> smoke -> install

Verification applies the device's trust policy (key roles, revocations, the format it
requires), the package's expiry and the anti-rollback floors kept in `state.json`; an
install raises its model's floor to the package's `min_version`.

Each step that fails raises `StepFailed` with the step's name and a reason the agent
reports as `Error`; whatever fails, the staging folder and the downloaded zip are removed,
nothing new is installed and the previous version stays current. A partial download
(`.part`) is kept, so a later try of the same package resumes it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import httpx

from modelferry.edge.download import (
    DownloadFailedError,
    LinkExpiredError,
    Progress,
    download_package,
)
from modelferry.edge.install import (
    DOWNLOADS_DIR,
    InstallError,
    InstallOutcome,
    current_version,
    discard,
    install_version,
    staging_folder,
)
from modelferry.edge.settings import AgentSettings
from modelferry.edge.smoke import SmokeRunner, SmokeSpec, SmokeTestError
from modelferry.edge.state import InstalledVersion, StateStore
from modelferry.errors import PackageVerificationError
from modelferry.packaging.extraction import safe_extract
from modelferry.packaging.manifest import ID_PATTERN, Manifest
from modelferry.packaging.signing import VerifyKey
from modelferry.packaging.trust import TrustPolicy
from modelferry.packaging.verification import (
    VerifiedPackage,
    verify_signed_package,
    verify_tree,
)

__all__ = ["DeliveryJob", "PackagePipeline", "StepFailed"]

logger = logging.getLogger(__name__)

STATE_DOWNLOADING: Final = "Downloading"
STATE_VERIFYING: Final = "Verifying"
STATE_INSTALLING: Final = "Installing"


@dataclass(frozen=True)
class DeliveryJob:
    """One accepted newDelivery."""

    delivery_id: str
    project_id: str
    package_id: str
    package_version: str

    @property
    def label(self) -> str:
        """`package_id/version`, for messages."""
        return f"{self.package_id}/{self.package_version}"


class StepFailed(Exception):
    """A delivery failed at `step` for `reason`; reported as `Error`."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(reason)
        self.step = step
        self.reason = reason


class Reporter(Protocol):
    """Sends a state report of the delivery under way."""

    def __call__(
        self, state: str, attributes: Mapping[str, Any] | None = ..., attempts: int | None = ...
    ) -> Awaitable[None]: ...


@dataclass
class PackagePipeline:
    """Takes one delivery from its first link to an installed version under `root`.

    `ask_for_link` sends one presignedUrlRequest and returns the URL of the answer, or
    None when none came in time; the pipeline decides how often to ask.
    """

    root: Path
    public_keys: Sequence[VerifyKey] | TrustPolicy
    settings: AgentSettings
    smoke_runner: SmokeRunner
    http_client: httpx.AsyncClient | None
    ask_for_link: Callable[[], Awaitable[str | None]]
    report: Reporter

    async def run(self, job: DeliveryJob) -> dict[str, Any]:
        """Install the job's package; the `Success` attributes, or `StepFailed`."""
        for what, value in (("packageId", job.package_id), ("packageVersion", job.package_version)):
            if not re.fullmatch(ID_PATTERN, value):
                raise StepFailed(
                    "validate", f"{what} {value!r} is not a valid package id or version"
                )
        current = await asyncio.to_thread(current_version, self.root)
        if current is not None and (current.package_id, current.version) == (
            job.package_id,
            job.package_version,
        ):
            return {**version_attributes(current), "alreadyInstalled": True}
        target = self.root / DOWNLOADS_DIR / f"{job.package_id}-{job.package_version}.zip"
        await asyncio.to_thread(_clear_other_downloads, target)
        staged: Path | None = None
        try:
            await self._download(target)
            await self.report(STATE_VERIFYING)
            verified = await self._verify(job, target)
            manifest = verified.manifest
            await self.report(STATE_INSTALLING)
            staged, digest = await self._stage(target, manifest)
            if self.settings.smoke_test:
                await self._smoke(staged, manifest, digest)
            version = InstalledVersion(
                package_id=manifest.package_id,
                version=manifest.version,
                model_name=manifest.model.name,
                model_version=manifest.model.version,
                delivery_id=job.delivery_id,
            )
            outcome = await self._commit(staged, version, verified.min_version)
        finally:
            if staged is not None:
                await asyncio.to_thread(discard, staged.parent)
            if target.exists():
                await asyncio.to_thread(discard, target)
        attributes = version_attributes(outcome.current)
        previous = outcome.previous
        attributes["previousPackageId"] = previous.package_id if previous else None
        attributes["previousVersion"] = previous.version if previous else None
        return attributes

    async def _download(self, target: Path) -> None:
        links_left = max(self.settings.link_requests, 1)

        async def link() -> str:
            nonlocal links_left
            while links_left > 0:
                links_left -= 1
                url = await self.ask_for_link()
                if url is not None:
                    return url
            raise StepFailed(
                "download",
                f"no presignedUrlResponse arrived for {self.settings.link_requests} request(s) "
                f"of {self.settings.link_timeout:g} s each",
            )

        async def progress(update: Progress) -> None:
            attempts = self.settings.progress_send_attempts
            await self.report(STATE_DOWNLOADING, update.attributes(), attempts)

        url = await link()
        while True:
            try:
                await download_package(
                    url,
                    target,
                    client=self.http_client,
                    settings=self.settings.download,
                    on_progress=progress,
                )
                return
            except LinkExpiredError as exc:
                if links_left == 0:
                    raise StepFailed(
                        "download", f"{exc}; gave up after {self.settings.link_requests} link(s)"
                    ) from None
                logger.info("%s; asking for a fresh link", exc)
                url = await link()
            except DownloadFailedError as exc:
                raise StepFailed("download", str(exc)) from None
            except OSError as exc:
                raise StepFailed("download", f"cannot write the package: {exc}") from None

    async def _verify(self, job: DeliveryJob, target: Path) -> VerifiedPackage:
        def verify() -> VerifiedPackage:
            # Read just before: a rollback floor raised by an earlier install applies.
            floors = StateStore(self.root).read().version_floors
            return verify_signed_package(
                target, self.public_keys, self.settings.extraction_limits, version_floors=floors
            )

        try:
            verified = await asyncio.to_thread(verify)
        except PackageVerificationError as exc:
            raise StepFailed("verify", str(exc)) from None
        manifest = verified.manifest
        if (manifest.package_id, manifest.version) != (job.package_id, job.package_version):
            raise StepFailed(
                "verify",
                f"the link delivered {manifest.package_id}/{manifest.version}, "
                f"not the announced {job.label}",
            )
        return verified

    async def _stage(self, target: Path, manifest: Manifest) -> tuple[Path, str]:
        def unpack() -> tuple[Path, str]:
            folder = staging_folder(self.root) / "package"
            try:
                safe_extract(
                    target,
                    folder,
                    self.settings.extraction_limits,
                    check=lambda unpacked: verify_tree(unpacked, manifest),
                )
            except BaseException:
                discard(folder.parent)
                raise
            digest = hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()
            return folder, digest

        try:
            return await asyncio.to_thread(unpack)
        except PackageVerificationError as exc:
            raise StepFailed("install", str(exc)) from None
        except OSError as exc:
            raise StepFailed("install", f"cannot unpack the package: {exc}") from None

    async def _smoke(self, staged: Path, manifest: Manifest, digest: str) -> None:
        spec = SmokeSpec(
            entry_point=manifest.entry_point,
            input_example=manifest.input_example,
            columns=tuple(column.name for column in manifest.input_schema),
            class_names=manifest.class_names,
        )
        smoke = asyncio.ensure_future(self.smoke_runner.run(staged, spec, cache_key=digest))
        started = asyncio.get_running_loop().time()
        try:
            while True:
                done, _ = await asyncio.wait({smoke}, timeout=self.settings.heartbeat_seconds)
                if done:
                    break
                elapsed = asyncio.get_running_loop().time() - started
                await self.report(
                    STATE_INSTALLING, {"step": "smoke prediction", "elapsedSeconds": round(elapsed)}
                )
            smoke.result()
        except SmokeTestError as exc:
            raise StepFailed("smoke", f"smoke prediction failed: {exc}") from None
        except OSError as exc:
            raise StepFailed("smoke", f"cannot start the smoke prediction: {exc}") from None
        finally:
            if not smoke.done():
                smoke.cancel()

    async def _commit(
        self, staged: Path, version: InstalledVersion, min_version: str | None
    ) -> InstallOutcome:
        commit = asyncio.ensure_future(
            asyncio.to_thread(
                install_version,
                self.root,
                staged,
                version,
                keep=self.settings.keep_versions,
                min_version=min_version,
            )
        )
        try:
            return await asyncio.shield(commit)
        except asyncio.CancelledError:
            # The rename has begun in a thread: let it finish before anything is cleaned up.
            await asyncio.wait({commit})
            raise
        except InstallError as exc:
            raise StepFailed("install", str(exc)) from None


def version_attributes(version: InstalledVersion) -> dict[str, Any]:
    """Package and model of an installed version, as state attributes."""
    return {
        "packageId": version.package_id,
        "packageVersion": version.version,
        "modelName": version.model_name,
        "modelVersion": version.model_version,
    }


def _clear_other_downloads(target: Path) -> None:
    """Remove downloads of other packages: only the one under way may take disk space."""
    keep = {target.name, target.name + ".part"}
    if target.parent.is_dir():
        for leftover in target.parent.iterdir():
            if leftover.name not in keep:
                discard(leftover)
