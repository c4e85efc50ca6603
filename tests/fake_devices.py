"""Test doubles of the edge delivery protocol: scripted devices, a channel and a store.

`FakeDevice` speaks the device side of docs/protocol.md over a `LocalHub`, following a
`DeviceScript`: it can succeed, fail, stay silent, go quiet half way, send malformed
messages, repeat or contradict its terminal state, ask twice for the link (as after an
expiry) or report for deliveries that are not its own. `FakeFleet` runs many of them on
one event loop; `DevicesInThread` runs a fleet on its own loop in a background thread,
for code (a Prefect flow) that runs its own loop.

`RecordingChannel` wraps the cloud side of a channel and records what the cloud did
(when it opened, what it sent, how many readers it started) and fails on demand.
`FolderPackageStore` is a minimal `PackageStore` with `file://` links.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import threading
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse
from urllib.request import url2pathname

from modelferry.delivery.channels.base import DeliveryChannel
from modelferry.delivery.channels.local import LocalDeviceTransport, LocalHub
from modelferry.delivery.protocol.messages import (
    Message,
    NewDelivery,
    UrlResponse,
    parse,
    presigned_url_request,
    state_report,
    utc_now,
)
from modelferry.errors import ChannelError, PackageStoreError
from modelferry.stores.base import DEFAULT_LINK_EXPIRY, PackageStore, StoredPackage

Behaviour = Literal["Success", "Error", "silent"]


@dataclass(frozen=True)
class DeviceScript:
    """What a fake device does with each newDelivery.

    Attributes:
        result: `Success`, `Error` (with `error_reason`) or `silent` (answers nothing).
        first_results: results for the first deliveries, before `result` applies (a
            device that is away for its first attempt: ``("silent",)``).
        link_requests: how many times to ask for the link (2: as after an expiry).
        progress: the `Downloading` reports, by their `progress` attribute.
        extra_states: intermediate states of its own, reported before `Verifying`.
        stop_after: go quiet after reporting this state (an agent that died).
        malformed: send malformed messages (not JSON, wrong shapes, 100,000-deep nesting,
            NaN) before reporting anything, and again after its terminal state.
        foreign: also report for another delivery, and without a deliveryId.
        minimal: send only what the reference agent must: no `projectId` property, no
            `timestamp`, and a link request without `eventId` or `packageId`.
        duplicate_terminal: send the terminal state twice, then a contradicting one.
        late_states: states sent after the terminal one.
        stale_state: after `Installing`, report this state with an older timestamp.
        tick: a keep-alive `Downloading` report every `tick` seconds instead of finishing
            (a device that never ends); None for none.
        error_reason: the `reason` attribute of an `Error`.
    """

    result: Behaviour = "Success"
    first_results: Sequence[Behaviour] = ()
    link_requests: int = 1
    progress: Sequence[int] = (50, 100)
    extra_states: Sequence[str] = ()
    stop_after: str | None = None
    malformed: bool = False
    foreign: bool = False
    minimal: bool = False
    duplicate_terminal: bool = False
    late_states: Sequence[str] = ()
    stale_state: str | None = None
    tick: float | None = None
    error_reason: str = "signature does not verify"


class ConcurrencyProbe:
    """Counts the devices busy with a delivery at once; can hold them at a gate.

    With `release_at`, each device waits before its terminal state until that many
    devices were busy at the same time, which proves that many ran in parallel.
    """

    def __init__(self, release_at: int | None = None) -> None:
        self.release_at = release_at
        self.active = 0
        self.max_active = 0
        self._gate: asyncio.Event | None = None

    def _event(self) -> asyncio.Event:
        if self._gate is None:
            self._gate = asyncio.Event()
        return self._gate

    def enter(self) -> None:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        if self.release_at is not None and self.active >= self.release_at:
            self._event().set()

    async def hold(self) -> None:
        if self.release_at is not None:
            await self._event().wait()

    def leave(self) -> None:
        self.active -= 1


@dataclass
class FakeDevice:
    """A scripted device on a `LocalHub`; records what it received."""

    device_id: str
    hub: LocalHub
    script: DeviceScript = field(default_factory=DeviceScript)
    probe: ConcurrencyProbe | None = None
    deliveries: list[NewDelivery] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    downloads: list[bytes] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._transport = LocalDeviceTransport(self.device_id, self.hub)
        self._answers: dict[str, asyncio.Queue[str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Connect and serve deliveries until cancelled."""
        try:
            async with self._transport:
                async for message in self._transport.receive():
                    event = parse(message)
                    if isinstance(event, NewDelivery):
                        self.deliveries.append(event)
                        self._answers[event.delivery_id] = asyncio.Queue()
                        task = asyncio.create_task(self._deliver(event, len(self.deliveries)))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                    elif isinstance(event, UrlResponse):
                        self._answers[event.delivery_id].put_nowait(event.url)
        finally:
            for task in list(self._tasks):
                task.cancel()

    async def send(self, message: Message) -> None:
        if self.script.minimal:
            message = _minimal(message)
        await self._transport.send(message)

    async def _state(self, event: NewDelivery, state: str, **attributes: Any) -> None:
        await self.send(
            state_report(
                self.device_id,
                delivery_id=event.delivery_id,
                project_id=event.project_id,
                state=state,
                attributes=attributes,
            )
        )

    async def _deliver(self, event: NewDelivery, number: int) -> None:
        script = self.script
        firsts = list(script.first_results)
        behaviour = firsts[number - 1] if number <= len(firsts) else script.result
        if behaviour == "silent":
            return
        if self.probe is not None:
            self.probe.enter()
        try:
            await self._work(event, behaviour)
        finally:
            if self.probe is not None:
                self.probe.leave()

    async def _work(self, event: NewDelivery, behaviour: Behaviour) -> None:
        script = self.script
        if script.malformed:
            await self._send_malformed(event)
        if script.foreign:
            await self._send_foreign(event)
        await self._state(event, "Received")
        if script.stop_after == "Received":
            return
        for _ in range(script.link_requests):
            await self.send(
                presigned_url_request(
                    self.device_id,
                    delivery_id=event.delivery_id,
                    project_id=event.project_id,
                    package_id=event.package_id,
                )
            )
            url = await self._answers[event.delivery_id].get()
            self.links.append(url)
            self.downloads.append(Path(url2pathname(urlparse(url).path)).read_bytes())
        for percent in script.progress:
            await self._state(event, "Downloading", progress=percent)
        if script.stop_after == "Downloading":
            return
        if script.tick is not None:
            while True:
                await asyncio.sleep(script.tick)
                await self._state(event, "Downloading", progress=99)
        for state in [*script.extra_states, "Verifying", "Installing"]:
            await self._state(event, state)
            if script.stop_after == state:
                return
        if script.stale_state is not None:
            await self.send(
                state_report(
                    self.device_id,
                    delivery_id=event.delivery_id,
                    project_id=event.project_id,
                    state=script.stale_state,
                    now=utc_now() - timedelta(minutes=5),
                )
            )
        if self.probe is not None:
            await self.probe.hold()
        await self._terminal(event, behaviour)

    async def _terminal(self, event: NewDelivery, behaviour: Behaviour) -> None:
        script = self.script
        attributes = {"reason": script.error_reason} if behaviour == "Error" else {}
        final = state_report(
            self.device_id,
            delivery_id=event.delivery_id,
            project_id=event.project_id,
            state=behaviour,
            attributes=attributes,
        )
        await self.send(final)
        self.finished.append(event.delivery_id)
        if script.duplicate_terminal:
            await self.send(final)
            contradiction = "Error" if behaviour == "Success" else "Success"
            await self._state(event, contradiction, reason="contradicting report")
        for state in script.late_states:
            await self._state(event, state)
        if script.malformed:  # after the end, they reach the dispatcher's late path
            await self._send_malformed(event)

    async def _send_malformed(self, event: NewDelivery) -> None:
        props = {"type": "state", "deliveryId": event.delivery_id, "projectId": event.project_id}
        hostile = (
            b"not json",
            b"[1, 2]",
            b'{"timestamp": "2026-01-01T00:00:00Z"}',
            b"[" * 100_000 + b"]" * 100_000,
            b'{"state": "Downloading", "attributes": '
            + b'{"a": ' * 5_000
            + b"1"
            + b"}" * 5_000
            + b"}",
            b'{"state": "Downloading", "attributes": {"bytes": NaN}}',
        )
        for body in hostile:
            await self.send(Message(self.device_id, props, body))
        await self.send(Message(self.device_id, props, b'{"state": "Success", "timestamp": 5}'))
        wrong_kind = {**props, "type": "event", "kind": "somethingElse"}
        await self.send(Message(self.device_id, wrong_kind, b"{}"))

    async def _send_foreign(self, event: NewDelivery) -> None:
        await self.send(
            state_report(
                self.device_id,
                delivery_id="someone-elses-delivery",
                project_id=event.project_id,
                state="Success",
            )
        )
        anonymous = state_report(
            self.device_id, delivery_id="x", project_id=event.project_id, state="Error"
        )
        properties = {k: v for k, v in anonymous.properties.items() if k != "deliveryId"}
        await self.send(replace(anonymous, properties=properties))


def _minimal(message: Message) -> Message:
    """The message without the fields a device may leave out (docs/protocol.md)."""
    properties = {k: v for k, v in message.properties.items() if k != "projectId"}
    body = {
        k: v
        for k, v in json.loads(message.body).items()
        if k not in ("timestamp", "eventId", "packageId")
    }
    return replace(message, properties=properties, body=json.dumps(body).encode())


class FakeFleet:
    """Many fake devices on one hub, run as tasks on the current event loop."""

    def __init__(
        self,
        hub: LocalHub,
        devices: Iterable[str] = (),
        script: DeviceScript | None = None,
        *,
        scripts: Mapping[str, DeviceScript] | None = None,
        probe: ConcurrencyProbe | None = None,
    ) -> None:
        self.hub = hub
        self.probe = probe
        self.devices: dict[str, FakeDevice] = {}
        for device in devices:
            self.add(device, script or DeviceScript())
        for device, own in (scripts or {}).items():
            self.add(device, own)
        self._tasks: list[asyncio.Task[None]] = []

    def add(self, device_id: str, script: DeviceScript | None = None) -> FakeDevice:
        device = FakeDevice(device_id, self.hub, script or DeviceScript(), self.probe)
        self.devices[device_id] = device
        return device

    def __getitem__(self, device_id: str) -> FakeDevice:
        return self.devices[device_id]

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(d.run()) for d in self.devices.values()]
        await asyncio.sleep(0)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> FakeFleet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class DevicesInThread:
    """Runs a `FakeFleet` on its own event loop in a background thread."""

    def __init__(self, fleet: FakeFleet) -> None:
        self.fleet = fleet
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> FakeFleet:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.fleet.start(), self._loop).result(timeout=30)
        return self.fleet

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.fleet.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


class RecordingChannel(DeliveryChannel):
    """Wraps a cloud-side channel; records what the cloud did and fails on demand.

    Attributes:
        opened_since: the `since` given to `open()`.
        sent: every message sent, with the time it was sent.
        readers: how many `receive()` iterations were started.
        fail_sends_to: devices whose C2D messages raise `ChannelError`.
        fail_receive_after: raise `ChannelError` from `receive()` after this many messages.
    """

    def __init__(self, inner: DeliveryChannel) -> None:
        self.inner = inner
        self.name = inner.name
        self.opened_since: datetime | None = None
        self.sent: list[tuple[datetime, Message]] = []
        self.readers = 0
        self.fail_sends_to: set[str] = set()
        self.fail_receive_after: int | None = None

    async def open(self, since: datetime | None = None) -> None:
        self.opened_since = since
        await self.inner.open(since)

    async def send(self, message: Message) -> None:
        if message.device_id in self.fail_sends_to:
            raise ChannelError(f"device {message.device_id!r} is not registered with the hub")
        self.sent.append((utc_now(), message))
        await self.inner.send(message)

    async def receive(self) -> AsyncIterator[Message]:
        self.readers += 1
        count = 0
        async for message in self.inner.receive():
            if self.fail_receive_after is not None and count >= self.fail_receive_after:
                raise ChannelError("the event hub connection was lost")
            count += 1
            yield message

    async def close(self) -> None:
        await self.inner.close()

    def sent_kinds(self, device_id: str) -> list[str]:
        """The kinds of C2D messages sent to a device, in order."""
        return [m.properties.get("kind", "") for _, m in self.sent if m.device_id == device_id]


class FolderPackageStore(PackageStore):
    """A minimal package store in a folder, with a fresh `file://` link per call.

    Attributes:
        links_made: how many links were handed out.
        fail_links: raise `PackageStoreError` from `link()`.
    """

    name = "folder"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.links_made = 0
        self.fail_links = False
        self._lock = threading.Lock()

    def put(self, path: Path, *, package_id: str, version: str) -> StoredPackage:
        key = f"{package_id}/{version}/{path.name}"
        target = self.root / key
        data = path.read_bytes()
        if target.exists() and target.read_bytes() != data:
            raise PackageStoreError(f"{package_id} {version} exists with other bytes")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        return StoredPackage(package_id, version, key, len(data), hashlib.sha256(data).hexdigest())

    def get(self, package_id: str, version: str) -> StoredPackage | None:
        folder = self.root / package_id / version
        files = sorted(folder.glob("*")) if folder.is_dir() else []
        if not files:
            return None
        data = files[0].read_bytes()
        key = f"{package_id}/{version}/{files[0].name}"
        return StoredPackage(package_id, version, key, len(data), hashlib.sha256(data).hexdigest())

    def link(self, package: StoredPackage, expires_in: timedelta = DEFAULT_LINK_EXPIRY) -> str:
        if self.fail_links:
            raise PackageStoreError("the storage account refused to sign a link")
        path = self.root / package.key
        if not path.is_file():
            raise PackageStoreError(f"no package {package.package_id} {package.version}")
        with self._lock:
            self.links_made += 1
            number = self.links_made
        return f"{path.as_uri()}?link={number}"

    def delete(self, package_id: str, version: str) -> None:
        shutil.rmtree(self.root / package_id / version, ignore_errors=True)


def make_package(
    root: Path, package_id: str = "edge-model", version: str = "1.0.0"
) -> tuple[FolderPackageStore, StoredPackage]:
    """A folder store holding one small package."""
    source = root / "build" / f"{package_id}-{version}.zip"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(f"package {package_id} {version}".encode())
    store = FolderPackageStore(root / "store")
    return store, store.put(source, package_id=package_id, version=version)
