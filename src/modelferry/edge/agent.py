"""The reference edge agent: the device side of the delivery protocol (PROTOCOL.md).

For each C2D `newDelivery` the agent reports `Received`, asks for a link
(`presignedUrlRequest`), downloads the package when the `presignedUrlResponse` comes
(`Downloading`, with bytes/total/percent), verifies its signature and every file
(`Verifying`), unpacks it into a staging folder and runs a smoke prediction with its
input example (`Installing`), installs it atomically and reports `Success`, or `Error`
with the stage and the reason. A failure leaves nothing installed and the previous
version current.

The agent is one asyncio task pair (a reader and a worker) over a `DeviceTransport`: no
thread of its own, so one process can run many (see `modelferry.edge.fleet`). Blocking
file work runs in the loop's default executor; the smoke prediction in a child process.

Guarantees:
- One delivery at a time; others queue in arrival order.
- A repeated `deliveryId` is answered from `ROOT/state.json`: a finished one re-reports
  its terminal state without downloading again; one queued or under way is ignored.
- A delivery of the version already current reports `Success` without reinstalling.
- Deliveries cut short by a restart are resumed (a fresh link, the partial download).
- Malformed C2D messages are logged and skipped.
- A `ChannelError` from a send is retried with backoff; it never ends the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx

from modelferry.delivery.channel import DeviceTransport
from modelferry.delivery.messages import (
    STATE_ERROR,
    STATE_SUCCESS,
    Message,
    NewDelivery,
    UrlResponse,
    parse,
    presigned_url_request,
    state_report,
)
from modelferry.edge.download import (
    DownloadFailedError,
    DownloadSettings,
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
    prepare_root,
    staging_folder,
)
from modelferry.edge.smoke import SmokeRunner, SmokeSettings, SmokeSpec, SmokeTestError
from modelferry.edge.state import DeliveryRecord, InstalledVersion, StateStore
from modelferry.errors import ChannelError, MalformedMessageError, PackageVerificationError
from modelferry.packaging.archive import DEFAULT_LIMITS, ExtractionLimits
from modelferry.packaging.extraction import safe_extract
from modelferry.packaging.manifest import ID_PATTERN, Manifest
from modelferry.packaging.signing import VerifyKey
from modelferry.packaging.verification import verify_package, verify_tree

__all__ = ["AgentSettings", "EdgeAgent", "load_public_keys"]

logger = logging.getLogger(__name__)

STATE_RECEIVED: Final = "Received"
STATE_DOWNLOADING: Final = "Downloading"
STATE_VERIFYING: Final = "Verifying"
STATE_INSTALLING: Final = "Installing"


@dataclass(frozen=True)
class AgentSettings:
    """How an agent behaves; the defaults suit a real device."""

    keep_versions: int = 3
    """Installed versions kept, the current one included (older ones are deleted)."""
    link_timeout: float = 60.0
    """Seconds to wait for a `presignedUrlResponse` before asking again."""
    link_requests: int = 5
    """Links asked for per delivery (the first and the re-asks after expiry or silence)."""
    send_backoff: float = 0.5
    """Seconds before re-sending a message the transport refused; doubled each time."""
    send_max_backoff: float = 30.0
    progress_send_attempts: int = 3
    """Tries for a `Downloading` report (others are retried until sent or stopped)."""
    download: DownloadSettings = field(default_factory=DownloadSettings)
    smoke: SmokeSettings = field(default_factory=SmokeSettings)
    smoke_test: bool = True
    """Run the smoke prediction before installing. Only protocol benchmarks turn it off."""
    extraction_limits: ExtractionLimits = DEFAULT_LIMITS


def load_public_keys(values: Iterable[str | Path]) -> list[VerifyKey]:
    """Trusted keys from files or from inline base64 / PEM text.

    Raises:
        PackageVerificationError: a value is neither a readable key file nor a key.
    """
    keys = []
    for value in values:
        path = Path(value)
        text = str(value)
        try:
            if path.is_file():
                text = path.read_text(encoding="utf-8")
        except OSError:
            pass  # not a file name (too long, say): take it as the key itself
        keys.append(VerifyKey.load(text))
    return keys


@dataclass(frozen=True)
class _Job:
    delivery_id: str
    project_id: str
    package_id: str
    package_version: str

    @property
    def label(self) -> str:
        return f"{self.package_id}/{self.package_version}"


class _Failed(Exception):
    """A delivery failed at `stage` for `reason`; reported as `Error`."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(reason)
        self.stage = stage
        self.reason = reason


class EdgeAgent:
    """Receives deliveries for one device and installs them under `root`."""

    def __init__(
        self,
        transport: DeviceTransport,
        root: Path,
        public_keys: Iterable[VerifyKey],
        settings: AgentSettings | None = None,
        *,
        smoke_runner: SmokeRunner | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        """Set up an agent; nothing happens until `run()`.

        Args:
            transport: The device's transport (local, MQTT or IoT Hub), not yet open.
            root: The agent's folder: versions, `current`, state, downloads.
            public_keys: The keys a package's manifest must be signed with (one of them).
            settings: Behaviour; defaults suit a real device.
            smoke_runner: Shared between agents of one process to bound concurrent smoke
                tests; by default the agent has its own.
            http_client: Shared between agents of one process; by default each download
                opens its own.
        """
        self.transport = transport
        self.root = Path(root)
        self.public_keys = list(public_keys)
        if not self.public_keys:
            raise ValueError("an edge agent needs at least one trusted public key")
        self.settings = settings or AgentSettings()
        self.smoke_runner = smoke_runner or SmokeRunner(self.settings.smoke)
        self.http_client = http_client
        self.connected = asyncio.Event()
        self._store = StateStore(self.root)
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._active: set[str] = set()
        self._link: tuple[str, asyncio.Future[str]] | None = None
        self._stop: asyncio.Event | None = None
        self._log = logger

    @property
    def device_id(self) -> str:
        """The device this agent acts for."""
        return self.transport.device_id

    def stop(self) -> None:
        """Ask a running agent to stop (from its own event loop)."""
        if self._stop is not None:
            self._stop.set()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Open the transport and handle deliveries until `stop` is set or it closes.

        On stop, a delivery under way is abandoned cleanly (nothing installed, the partial
        download kept) and resumed by the next run.
        """
        self._stop = stop or asyncio.Event()
        await asyncio.to_thread(prepare_root, self.root)
        if not await self._open():
            return
        self.connected.set()
        for record in (await asyncio.to_thread(self._store.read)).pending():
            self._log.info("%s: resuming delivery %s", self.device_id, record.delivery_id)
            self._enqueue(
                _Job(
                    record.delivery_id,
                    record.project_id,
                    record.package_id,
                    record.package_version,
                )
            )
        tasks = [
            asyncio.create_task(self._read(), name=f"edge-read-{self.device_id}"),
            asyncio.create_task(self._work(), name=f"edge-work-{self.device_id}"),
            asyncio.create_task(self._stop.wait(), name=f"edge-stop-{self.device_id}"),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception):
                    self._log.error("%s: agent task failed: %r", self.device_id, result)
            self.connected.clear()
            try:
                await self.transport.close()
            except ChannelError as exc:
                self._log.warning("%s: closing the transport failed: %s", self.device_id, exc)

    # ------------------------------------------------------------------------ transport

    async def _open(self) -> bool:
        delay = self.settings.send_backoff
        while not self._stopped:
            try:
                await self.transport.open()
                return True
            except ChannelError as exc:
                self._log.warning(
                    "%s: cannot connect (%s); retrying in %.1f s", self.device_id, exc, delay
                )
                await self._sleep(delay)
                delay = min(delay * 2, self.settings.send_max_backoff)
        return False

    @property
    def _stopped(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    async def _sleep(self, seconds: float) -> None:
        assert self._stop is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def _send(self, message: Message, attempts: int | None = None) -> bool:
        """Send, retrying a refused message with backoff; False when `attempts` ran out."""
        delay = self.settings.send_backoff
        attempt = 0
        while True:
            try:
                await self.transport.send(message)
                return True
            except ChannelError as exc:
                attempt += 1
                if attempts is not None and attempt >= attempts:
                    self._log.warning("%s: dropped a message: %s", self.device_id, exc)
                    return False
                self._log.warning(
                    "%s: send failed (%s); retrying in %.1f s", self.device_id, exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.send_max_backoff)

    async def _report(
        self,
        job: _Job,
        state: str,
        attributes: Mapping[str, Any] | None = None,
        attempts: int | None = None,
    ) -> None:
        message = state_report(
            self.device_id,
            delivery_id=job.delivery_id,
            project_id=job.project_id,
            state=state,
            attributes=attributes,
        )
        await self._send(message, attempts)

    # ------------------------------------------------------------------------ reading

    async def _read(self) -> None:
        delay = self.settings.send_backoff
        while True:
            try:
                async for message in self.transport.receive():
                    delay = self.settings.send_backoff
                    try:
                        await self._dispatch(message)
                    except Exception:  # one bad message must not end the reader
                        self._log.exception("%s: could not handle a message", self.device_id)
                return  # the transport was closed
            except ChannelError as exc:
                self._log.warning(
                    "%s: receiving failed (%s); reconnecting in %.1f s", self.device_id, exc, delay
                )
                await self._sleep(delay)
                delay = min(delay * 2, self.settings.send_max_backoff)
                if self._stopped or not await self._open():
                    return

    async def _dispatch(self, message: Message) -> None:
        try:
            event = parse(message)
        except MalformedMessageError as exc:
            self._log.warning("%s: skipped a malformed message: %s", self.device_id, exc)
            return
        if isinstance(event, NewDelivery):
            await self._accept(event)
        elif isinstance(event, UrlResponse):
            waiting = self._link
            if waiting is not None and waiting[0] == event.delivery_id and not waiting[1].done():
                waiting[1].set_result(event.url)
            else:
                self._log.info(
                    "%s: ignored a link for delivery %s (none was awaited)",
                    self.device_id,
                    event.delivery_id,
                )
        else:
            self._log.warning(
                "%s: skipped a device-to-cloud %s message on the C2D stream",
                self.device_id,
                type(event).__name__,
            )

    async def _accept(self, event: NewDelivery) -> None:
        job = _Job(event.delivery_id, event.project_id, event.package_id, event.package_version)
        if job.delivery_id in self._active:
            self._log.info("%s: delivery %s is already under way", self.device_id, job.delivery_id)
            return
        known = (await asyncio.to_thread(self._store.read)).deliveries.get(job.delivery_id)
        if known is not None and known.terminal:
            self._log.info(
                "%s: delivery %s was handled before: %s",
                self.device_id,
                job.delivery_id,
                known.state,
            )
            await self._report(job, known.state, known.attributes)
            return
        # Recorded and reported before the worker may see it, so that its terminal state
        # can never be overwritten by this `Received`.
        self._active.add(job.delivery_id)
        try:
            await self._record(job, STATE_RECEIVED)
            attributes = {"packageId": job.package_id, "packageVersion": job.package_version}
            await self._report(job, STATE_RECEIVED, attributes)
        finally:
            self._queue.put_nowait(job)

    def _enqueue(self, job: _Job) -> None:
        self._active.add(job.delivery_id)
        self._queue.put_nowait(job)

    async def _record(
        self, job: _Job, state: str, attributes: Mapping[str, Any] | None = None
    ) -> None:
        record = DeliveryRecord(
            job.delivery_id,
            job.project_id,
            job.package_id,
            job.package_version,
            state,
            dict(attributes or {}),
        )

        def save() -> None:
            with self._store.update() as saved:
                saved.record(record)

        await asyncio.to_thread(save)

    # ------------------------------------------------------------------------ working

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self._deliver(job)
            finally:
                self._active.discard(job.delivery_id)

    async def _deliver(self, job: _Job) -> None:
        self._log.info("%s: delivery %s of %s", self.device_id, job.delivery_id, job.label)
        try:
            attributes = await self._install(job)
            state = STATE_SUCCESS
        except _Failed as failure:
            state = STATE_ERROR
            attributes = {
                "packageId": job.package_id,
                "packageVersion": job.package_version,
                "stage": failure.stage,
                "reason": failure.reason,
            }
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:  # a bug must fail this delivery, not the agent
            self._log.exception("%s: delivery %s failed", self.device_id, job.delivery_id)
            state = STATE_ERROR
            attributes = {
                "packageId": job.package_id,
                "packageVersion": job.package_version,
                "stage": "internal",
                "reason": f"internal error: {type(exc).__name__}: {exc}",
            }
        await self._record(job, state, attributes)
        level = logging.INFO if state == STATE_SUCCESS else logging.WARNING
        self._log.log(
            level, "%s: delivery %s: %s %s", self.device_id, job.delivery_id, state, attributes
        )
        await self._report(job, state, attributes)

    async def _install(self, job: _Job) -> dict[str, Any]:
        for what, value in (("packageId", job.package_id), ("packageVersion", job.package_version)):
            if not re.fullmatch(ID_PATTERN, value):
                raise _Failed("validate", f"{what} {value!r} is not a valid package id or version")
        current = await asyncio.to_thread(current_version, self.root)
        if current is not None and (current.package_id, current.version) == (
            job.package_id,
            job.package_version,
        ):
            return {**_version_attributes(current), "alreadyInstalled": True}
        target = self.root / DOWNLOADS_DIR / f"{job.package_id}-{job.package_version}.zip"
        await asyncio.to_thread(_clear_other_downloads, target)
        staged: Path | None = None
        try:
            await self._download(job, target)
            await self._report(job, STATE_VERIFYING)
            manifest = await self._verify(job, target)
            await self._report(job, STATE_INSTALLING)
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
            outcome = await self._commit(staged, version)
        finally:
            if staged is not None:
                await asyncio.to_thread(discard, staged.parent)
            if target.exists():
                await asyncio.to_thread(discard, target)
        attributes = _version_attributes(outcome.current)
        previous = outcome.previous
        attributes["previousPackageId"] = previous.package_id if previous else None
        attributes["previousVersion"] = previous.version if previous else None
        return attributes

    async def _commit(self, staged: Path, version: InstalledVersion) -> InstallOutcome:
        commit = asyncio.ensure_future(
            asyncio.to_thread(
                install_version, self.root, staged, version, keep=self.settings.keep_versions
            )
        )
        try:
            return await asyncio.shield(commit)
        except asyncio.CancelledError:
            # The rename has begun in a thread: let it finish before anything is cleaned up.
            await asyncio.wait({commit})
            raise
        except InstallError as exc:
            raise _Failed("install", str(exc)) from None

    async def _download(self, job: _Job, target: Path) -> None:
        links_left = max(self.settings.link_requests, 1)

        async def progress(update: Progress) -> None:
            await self._report(
                job, STATE_DOWNLOADING, update.attributes(), self.settings.progress_send_attempts
            )

        url, links_left = await self._ask_for_link(job, links_left)
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
                    raise _Failed(
                        "download",
                        f"{exc}; gave up after {self.settings.link_requests} link(s)",
                    ) from None
                self._log.info("%s: %s; asking for a fresh link", self.device_id, exc)
                url, links_left = await self._ask_for_link(job, links_left)
            except DownloadFailedError as exc:
                raise _Failed("download", str(exc)) from None
            except OSError as exc:
                raise _Failed("download", f"cannot write the package: {exc}") from None

    async def _ask_for_link(self, job: _Job, links_left: int) -> tuple[str, int]:
        """Send a presignedUrlRequest and wait for its answer; ask again on silence."""
        while links_left > 0:
            links_left -= 1
            future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self._link = (job.delivery_id, future)
            try:
                request = presigned_url_request(
                    self.device_id,
                    delivery_id=job.delivery_id,
                    project_id=job.project_id,
                    package_id=job.package_id,
                )
                await self._send(request)
                try:
                    return await asyncio.wait_for(future, self.settings.link_timeout), links_left
                except TimeoutError:
                    self._log.warning(
                        "%s: no link for delivery %s within %g s",
                        self.device_id,
                        job.delivery_id,
                        self.settings.link_timeout,
                    )
            finally:
                self._link = None
        raise _Failed(
            "download",
            f"no presignedUrlResponse arrived for {self.settings.link_requests} request(s) "
            f"of {self.settings.link_timeout:g} s each",
        )

    async def _verify(self, job: _Job, target: Path) -> Manifest:
        try:
            manifest = await asyncio.to_thread(
                verify_package, target, self.public_keys, self.settings.extraction_limits
            )
        except PackageVerificationError as exc:
            raise _Failed("verify", str(exc)) from None
        if (manifest.package_id, manifest.version) != (job.package_id, job.package_version):
            raise _Failed(
                "verify",
                f"the link delivered {manifest.package_id}/{manifest.version}, "
                f"not the announced {job.label}",
            )
        return manifest

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
            raise _Failed("install", str(exc)) from None
        except OSError as exc:
            raise _Failed("install", f"cannot unpack the package: {exc}") from None

    async def _smoke(self, staged: Path, manifest: Manifest, digest: str) -> None:
        spec = SmokeSpec(
            entry_point=manifest.entry_point,
            input_example=manifest.input_example,
            columns=tuple(column.name for column in manifest.input_schema),
            class_names=manifest.class_names,
        )
        try:
            await self.smoke_runner.run(staged, spec, cache_key=digest)
        except SmokeTestError as exc:
            raise _Failed("smoke", f"smoke prediction failed: {exc}") from None
        except OSError as exc:
            raise _Failed("smoke", f"cannot start the smoke prediction: {exc}") from None


def _version_attributes(version: InstalledVersion) -> dict[str, Any]:
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
