"""The edge agent against a scripted cloud side on the in-process transport.

The cloud side here is a script: it sends newDelivery, answers each presignedUrlRequest
with a link chosen by the test (file:// or http://) and records every state the device
reports. Packages are built with the packaging module from a real, small LightGBM model,
so verification and the smoke prediction (the package's own score.py in a child
process) run for real.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import http.server
import io
import json
import logging
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from modelferry.delivery.channels.base import DeliveryChannel, DeviceTransport
from modelferry.delivery.channels.local import LocalChannel, LocalDeviceTransport, LocalHub
from modelferry.delivery.outcomes import FleetResult
from modelferry.delivery.protocol import messages as m
from modelferry.edge import (
    AgentSettings,
    DownloadSettings,
    EdgeAgent,
    InstallError,
    SmokeRunner,
    create_local_agents,
    current_version,
    rollback,
    run_agents,
    start_local_agents,
)
from modelferry.edge.local_agents import wait_connected
from modelferry.edge.state import StateStore
from modelferry.errors import ChannelError, VersionFloorError
from modelferry.packaging import (
    INVALID_SIGNATURE,
    PackageInputs,
    SigningKey,
    TrustPolicy,
    VerifyKey,
    build_package,
)
from modelferry.stores.local import LocalPackageStore
from modelferry.structured_logging import JsonLogFormatter
from tests.model_fixtures import save_small_lightgbm_model

KEY = SigningKey.from_base64(SecretStr(base64.b64encode(bytes(range(32))).decode()))
STRANGER = SigningKey.from_base64(SecretStr(base64.b64encode(bytes(range(1, 33))).decode()))
PACKAGE_ID = "breast-cancer"
DEVICE = "edge-1"
PROJECT = "proj-1"
FAST = AgentSettings(
    link_timeout=5.0,
    send_backoff=0.01,
    download=DownloadSettings(backoff=0.01, progress_seconds=0.0),
)
# One runner for the module: each package (by manifest digest) is smoke-tested once.
SMOKE = SmokeRunner()


# ---------------------------------------------------------------------------- packages


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real MLflow LightGBM model folder with a signature and a 3-row input example."""
    folder = tmp_path_factory.mktemp("mlflow") / "model"
    save_small_lightgbm_model(folder, example_rows=3)
    return folder


def _build(
    model_dir: Path, out: Path, version: str, signer: SigningKey = KEY, **signing: Any
) -> Path:
    inputs = PackageInputs(
        package_id=PACKAGE_ID,
        version=version,
        model_dir=model_dir,
        model_name="bc-classifier",
        model_version=version,
        run_id=None,
        dataset_digest=None,
        created_at=datetime(2026, 5, 1, tzinfo=UTC),
        class_names=("malignant", "benign"),
    )
    return build_package(inputs, signer, out, **signing).path


@pytest.fixture(scope="module")
def packages(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Signed packages: versions 1 and 2, one whose example breaks its model, and more."""
    out = tmp_path_factory.mktemp("packages")
    built = {version: _build(model_dir, out, version) for version in ("1", "2")}
    # A valid, signed package whose input example lacks a column: score.py refuses it.
    broken = out / "broken-model"
    shutil.copytree(model_dir, broken)
    example_file = broken / "input_example.json"
    example = json.loads(example_file.read_text())
    example["columns"] = example["columns"][1:]
    example["data"] = [row[1:] for row in example["data"]]
    example_file.write_text(json.dumps(example))
    built["smoke-fails"] = _build(broken, out / "broken", "9")
    built["stranger"] = _build(model_dir, out / "stranger", "5", STRANGER)
    built["flipped"] = _rewrite(built["2"], out / "flipped", "score.py", _flip_byte)
    built["tampered"] = _rewrite(built["2"], out / "tampered", "manifest.json", _bump_model)
    built["2-floor"] = _build(model_dir, out / "floor", "2", min_version="2")
    built["2-format1"] = _build(model_dir, out / "format1", "2", package_format=1)
    return built


def _flip_byte(data: bytes) -> bytes:
    changed = bytearray(data)
    changed[len(changed) // 2] ^= 0x01
    return bytes(changed)


def _bump_model(data: bytes) -> bytes:
    manifest = json.loads(data)
    manifest["model"]["version"] = "999"
    return (json.dumps(manifest, sort_keys=True, indent=2) + "\n").encode()


def _rewrite(source: Path, folder: Path, name: str, change: Callable[[bytes], bytes]) -> Path:
    """A copy of the package zip with one entry's bytes changed (the rest untouched)."""
    folder.mkdir()
    target = folder / source.name
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            data = old.read(info)
            new.writestr(info, change(data) if info.filename == name else data)
    return target


# ---------------------------------------------------------------------------- the cloud


@dataclass
class ScriptedCloud:
    """The cloud side: answers link requests with `answer(request, n)`, records states.

    `n` counts the requests of that delivery from 1; an answer of None sends nothing.
    """

    channel: DeliveryChannel
    answer: Callable[[m.UrlRequest, int], str | None]
    requests: list[m.UrlRequest] = field(default_factory=list)
    reports: list[m.StateReport] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ScriptedCloud:
        await self.channel.open(since=m.utc_now())
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._reader is not None
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.channel.close()

    async def deliver(self, delivery_id: str, version: str, device: str = DEVICE) -> None:
        await self.channel.send(
            m.new_delivery(
                device,
                delivery_id=delivery_id,
                project_id=PROJECT,
                package_id=PACKAGE_ID,
                package_version=version,
            )
        )

    def states(self, delivery_id: str) -> list[str]:
        return [r.state for r in self.reports if r.delivery_id == delivery_id]

    def requests_for(self, delivery_id: str) -> int:
        return sum(1 for r in self.requests if r.delivery_id == delivery_id)

    async def wait_terminal(
        self, delivery_id: str, count: int = 1, timeout: float = 90.0
    ) -> list[m.StateReport]:
        """The reports of that delivery once `count` terminal states arrived."""

        def ready() -> bool:
            return sum(r.terminal for r in self.reports if r.delivery_id == delivery_id) >= count

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(ready), timeout)
        return [r for r in self.reports if r.delivery_id == delivery_id]

    async def _read(self) -> None:
        async for message in self.channel.receive():
            event = m.parse(message)
            if isinstance(event, m.UrlRequest):
                self.requests.append(event)
                url = self.answer(event, self.requests_for(event.delivery_id))
                if url is not None:
                    await self.channel.send(
                        m.presigned_url_response(
                            event.device_id,
                            delivery_id=event.delivery_id,
                            project_id=event.project_id,
                            url=url,
                        )
                    )
            elif isinstance(event, m.StateReport):
                async with self._changed:
                    self.reports.append(event)
                    self._changed.notify_all()


def link_to(path: Path) -> Callable[[m.UrlRequest, int], str]:
    return lambda request, n: path.as_uri()


@contextlib.asynccontextmanager
async def running_agent(
    hub: LocalHub,
    root: Path,
    settings: AgentSettings = FAST,
    transport: DeviceTransport | None = None,
    smoke: SmokeRunner = SMOKE,
    keys: list[VerifyKey] | TrustPolicy | None = None,
) -> AsyncIterator[EdgeAgent]:
    agent = EdgeAgent(
        transport or LocalDeviceTransport(DEVICE, hub),
        root,
        [KEY.verify_key] if keys is None else keys,
        settings,
        smoke_runner=smoke,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_agents([agent], stop))
    await asyncio.wait_for(agent.connected.wait(), 10)
    try:
        yield agent
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def installed(root: Path) -> tuple[str, str] | None:
    version = current_version(root)
    return None if version is None else (version.package_id, version.version)


def leftovers(root: Path) -> list[str]:
    """What an agent left in its staging and download folders (should be nothing)."""
    return sorted(
        str(path.relative_to(root))
        for folder in ("staging", "downloads")
        for path in (root / folder).iterdir()
    )


def versions_on_disk(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "versions" / PACKAGE_ID).glob("*"))


async def deliver(
    root: Path,
    link: Callable[[m.UrlRequest, int], str | None],
    *deliveries: tuple[str, str],
    settings: AgentSettings = FAST,
    keys: list[VerifyKey] | TrustPolicy | None = None,
) -> ScriptedCloud:
    """Run an agent on `root` and the cloud script until each delivery ended."""
    hub = LocalHub()
    async with (
        ScriptedCloud(LocalChannel(hub), link) as cloud,
        running_agent(hub, root, settings, keys=keys),
    ):
        for delivery_id, version in deliveries:
            await cloud.deliver(delivery_id, version)
            await cloud.wait_terminal(delivery_id)
    return cloud


# ---------------------------------------------------------------------------- tests


def test_a_delivery_reports_each_state_and_installs_atomically(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "edge"
    cloud = asyncio.run(deliver(root, link_to(packages["1"]), ("d-1", "1")))

    states = cloud.states("d-1")
    assert states[0] == "Received"
    assert states[-3:] == ["Verifying", "Installing", "Success"]
    assert set(states[1:-3]) == {"Downloading"}
    downloading = [r.attributes for r in cloud.reports if r.state == "Downloading"]
    size = packages["1"].stat().st_size
    assert downloading[-1] == {"bytes": size, "total": size, "percent": 100.0}
    assert [r.device_id for r in cloud.requests] == [DEVICE]
    assert cloud.requests[0].package_id == PACKAGE_ID
    success = cloud.reports[-1]
    assert dict(success.attributes) == {
        "packageId": PACKAGE_ID,
        "packageVersion": "1",
        "modelName": "bc-classifier",
        "modelVersion": "1",
        "previousPackageId": None,
        "previousVersion": None,
    }
    assert (root / "current").is_symlink()
    assert str((root / "current").readlink()) == f"versions/{PACKAGE_ID}/1"
    for name in ("manifest.json", "manifest.dsse.json", "score.py", "model/MLmodel"):
        assert (root / "current" / name).is_file()
    assert not list((root / "current").rglob("__pycache__"))  # left as verified
    assert leftovers(root) == []
    record = StateStore(root).read().deliveries["d-1"]
    assert (record.state, record.attributes) == ("Success", dict(success.attributes))


def test_a_relative_root_installs_and_passes_the_smoke_prediction(
    packages: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The smoke child runs elsewhere; a root given relative to here must still work."""
    monkeypatch.chdir(tmp_path)
    cloud = asyncio.run(deliver(Path("devices/edge"), link_to(packages["1"]), ("d-1", "1")))
    assert cloud.states("d-1")[-1] == "Success", cloud.reports[-1].attributes
    assert (tmp_path / "devices" / "edge" / "current" / "score.py").is_file()


class SlowSmoke(SmokeRunner):
    """A smoke prediction that takes a while, as on a slow device."""

    async def run(self, package_dir: Path, spec: Any, *, cache_key: str | None = None) -> Any:
        await asyncio.sleep(0.8)
        return await super().run(package_dir, spec, cache_key=cache_key)


def test_a_slow_smoke_prediction_keeps_reporting_installing(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    """The cloud's inactivity clock must see a device busy with its smoke test as alive."""
    settings = dataclasses.replace(FAST, heartbeat_seconds=0.2)

    async def scenario() -> ScriptedCloud:
        hub = LocalHub()
        async with (
            ScriptedCloud(LocalChannel(hub), link_to(packages["1"])) as cloud,
            running_agent(hub, tmp_path / "edge", settings, smoke=SlowSmoke()),
        ):
            await cloud.deliver("d-slow", "1")
            await cloud.wait_terminal("d-slow")
        return cloud

    cloud = asyncio.run(scenario())
    beats = [r.attributes for r in cloud.reports if r.state == "Installing" and r.attributes]
    assert len(beats) >= 2, cloud.states("d-slow")
    assert beats[0]["step"] == "smoke prediction"
    assert cloud.states("d-slow")[-1] == "Success"


def test_a_second_version_keeps_the_first_for_rollback(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "edge"
    links = {"d-1": packages["1"], "d-2": packages["2"]}
    cloud = asyncio.run(
        deliver(root, lambda r, n: links[r.delivery_id].as_uri(), ("d-1", "1"), ("d-2", "2"))
    )

    success = cloud.reports[-1]
    assert (success.state, success.attributes["previousVersion"]) == ("Success", "1")
    assert success.attributes["previousPackageId"] == PACKAGE_ID
    assert installed(root) == (PACKAGE_ID, "2")
    assert versions_on_disk(root) == ["1", "2"]

    outcome = rollback(root)
    assert (outcome.current.version, outcome.previous and outcome.previous.version) == ("1", "2")
    assert installed(root) == (PACKAGE_ID, "1")
    assert versions_on_disk(root) == ["1", "2"]  # kept for a roll forward
    with pytest.raises(InstallError, match="no version before"):
        rollback(root)
    assert installed(root) == (PACKAGE_ID, "1")


def test_a_flipped_byte_is_an_error_naming_the_file_and_installs_nothing(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "edge"
    links = {"d-1": packages["1"], "d-2": packages["flipped"]}
    cloud = asyncio.run(
        deliver(root, lambda r, n: links[r.delivery_id].as_uri(), ("d-1", "1"), ("d-2", "2"))
    )

    error = cloud.reports[-1]
    assert error.state == "Error"
    assert error.attributes["stage"] == "verify"
    assert "score.py does not match its SHA-256" in error.attributes["reason"]
    assert cloud.states("d-2")[-3:] == ["Downloading", "Verifying", "Error"]
    assert installed(root) == (PACKAGE_ID, "1")
    assert versions_on_disk(root) == ["1"]
    assert leftovers(root) == []


def test_a_tampered_manifest_fails_the_signature(packages: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "edge"
    cloud = asyncio.run(deliver(root, link_to(packages["tampered"]), ("d-1", "2")))

    error = cloud.reports[-1]
    assert (error.state, error.attributes["stage"]) == ("Error", "verify")
    assert error.attributes["reason"] == INVALID_SIGNATURE
    assert installed(root) is None
    assert not (root / "current").exists()
    assert versions_on_disk(root) == []


def test_a_package_signed_by_an_untrusted_key_is_refused(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "edge"
    cloud = asyncio.run(deliver(root, link_to(packages["stranger"]), ("d-1", "5")))

    error = cloud.reports[-1]
    assert error.state == "Error"
    assert f"signed with key {STRANGER.key_id}, which is not trusted" in error.attributes["reason"]
    assert installed(root) is None


def test_a_package_other_than_announced_is_refused(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "edge"
    cloud = asyncio.run(deliver(root, link_to(packages["1"]), ("d-1", "2")))

    error = cloud.reports[-1]
    assert error.state == "Error"
    assert (
        "delivered breast-cancer/1, not the announced breast-cancer/2"
        in (error.attributes["reason"])
    )
    assert installed(root) is None


def test_an_expired_or_missing_link_is_asked_for_again(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "edge"
    store = LocalPackageStore(tmp_path / "store")
    stored = store.put(packages["1"], package_id=PACKAGE_ID, version="1")
    expired = store.link(stored, expires_in=timedelta(microseconds=1))
    script = {
        1: expired,  # the link says it has expired
        2: (tmp_path / "gone.zip").as_uri(),  # the file behind the link is gone
        3: store.link(stored),
    }
    cloud = asyncio.run(deliver(root, lambda r, n: script[n], ("d-1", "1")))

    assert "?expires=" in expired
    assert cloud.requests_for("d-1") == 3
    assert cloud.states("d-1")[-1] == "Success"
    assert installed(root) == (PACKAGE_ID, "1")


def test_links_that_keep_failing_end_in_an_error(tmp_path: Path) -> None:
    root = tmp_path / "edge"
    settings = AgentSettings(link_requests=2, link_timeout=5.0, send_backoff=0.01)
    cloud = asyncio.run(
        deliver(
            root, lambda r, n: (tmp_path / "gone.zip").as_uri(), ("d-1", "1"), settings=settings
        )
    )

    assert cloud.requests_for("d-1") == 2
    error = cloud.reports[-1]
    assert (error.state, error.attributes["stage"]) == ("Error", "download")
    assert "gave up after 2 link(s)" in error.attributes["reason"]


def test_no_answer_to_link_requests_ends_in_an_error(tmp_path: Path) -> None:
    root = tmp_path / "edge"
    settings = AgentSettings(link_requests=2, link_timeout=0.2, send_backoff=0.01)
    cloud = asyncio.run(deliver(root, lambda r, n: None, ("d-1", "1"), settings=settings))

    assert cloud.requests_for("d-1") == 2
    assert cloud.states("d-1") == ["Received", "Error"]
    assert "no presignedUrlResponse" in cloud.reports[-1].attributes["reason"]


def test_malformed_messages_are_skipped(packages: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "edge"
    new_delivery = {
        "type": "event",
        "kind": "newDelivery",
        "deliveryId": "bad",
        "projectId": PROJECT,
    }

    async def scenario() -> ScriptedCloud:
        hub = LocalHub()
        async with (
            ScriptedCloud(LocalChannel(hub), link_to(packages["1"])) as cloud,
            running_agent(hub, root),
        ):
            junk = [
                m.Message(DEVICE, new_delivery, b"not json"),
                m.Message(DEVICE, {**new_delivery, "deliveryId": ""}, b"{}"),
                m.Message(DEVICE, new_delivery, json.dumps({"packageId": PACKAGE_ID}).encode()),
                m.Message(DEVICE, {**new_delivery, "kind": "somethingElse"}, b"{}"),
                m.state_report(DEVICE, delivery_id="bad", project_id=PROJECT, state="Success"),
                m.presigned_url_response(
                    DEVICE, delivery_id="unknown", project_id=PROJECT, url="file:///x"
                ),
            ]
            for message in junk:
                await cloud.channel.send(message)
            await cloud.deliver("d-1", "1")
            await cloud.wait_terminal("d-1")
        return cloud

    cloud = asyncio.run(scenario())
    assert {r.delivery_id for r in cloud.reports} == {"d-1"}
    assert cloud.states("d-1")[-1] == "Success"


def test_a_repeated_delivery_is_answered_without_a_second_download(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "edge"

    async def scenario() -> ScriptedCloud:
        hub = LocalHub()
        async with (
            ScriptedCloud(LocalChannel(hub), link_to(packages["1"])) as cloud,
            running_agent(hub, root),
        ):
            await cloud.deliver("d-1", "1")
            await cloud.deliver("d-1", "1")  # a duplicate while the first is under way
            await cloud.wait_terminal("d-1")
            await cloud.deliver("d-1", "1")  # and once it has ended
            await cloud.wait_terminal("d-1", count=2)
        return cloud

    cloud = asyncio.run(scenario())
    assert cloud.requests_for("d-1") == 1
    states = cloud.states("d-1")
    assert states.count("Received") == 1
    assert states[-2:] == ["Success", "Success"]
    first, again = (r for r in cloud.reports if r.terminal)
    assert dict(again.attributes) == dict(first.attributes)


def test_a_failed_delivery_repeated_reports_the_same_error(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "edge"
    link = link_to(packages["tampered"])
    cloud = asyncio.run(deliver(root, link, ("d-1", "2")))
    again = asyncio.run(deliver(root, link, ("d-1", "2")))  # a restarted agent, too

    assert again.requests == []
    assert again.states("d-1") == ["Error"]
    assert dict(again.reports[0].attributes) == dict(cloud.reports[-1].attributes)


def test_the_current_version_again_is_a_success_without_reinstalling(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "edge"
    asyncio.run(deliver(root, link_to(packages["1"]), ("d-1", "1")))
    installed_at = StateStore(root).read().history[-1].installed_at

    cloud = asyncio.run(deliver(root, link_to(packages["1"]), ("d-2", "1")))

    assert cloud.requests == []
    assert cloud.states("d-2") == ["Received", "Success"]
    assert cloud.reports[-1].attributes["alreadyInstalled"] is True
    assert cloud.reports[-1].attributes["modelName"] == "bc-classifier"
    assert StateStore(root).read().history[-1].installed_at == installed_at


def test_a_failing_smoke_prediction_installs_nothing(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "edge"
    cloud = asyncio.run(deliver(root, link_to(packages["smoke-fails"]), ("d-1", "9")))

    error = cloud.reports[-1]
    assert (error.state, error.attributes["stage"]) == ("Error", "smoke")
    assert "missing column(s) ['mean radius']" in error.attributes["reason"]
    assert cloud.states("d-1")[-2:] == ["Installing", "Error"]
    assert installed(root) is None
    assert versions_on_disk(root) == []
    assert leftovers(root) == []


def test_deliveries_are_handled_one_at_a_time_in_order(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "edge"
    links = {"d-1": packages["1"], "d-2": packages["2"]}

    async def scenario() -> ScriptedCloud:
        hub = LocalHub()
        answer = lambda r, n: links[r.delivery_id].as_uri()  # noqa: E731
        async with ScriptedCloud(LocalChannel(hub), answer) as cloud, running_agent(hub, root):
            await cloud.deliver("d-1", "1")
            await cloud.deliver("d-2", "2")
            await cloud.wait_terminal("d-1")
            await cloud.wait_terminal("d-2")
        return cloud

    cloud = asyncio.run(scenario())
    order = [(r.delivery_id, r.state) for r in cloud.reports if r.state != "Received"]
    first_end = order.index(("d-1", "Success"))
    assert all(delivery == "d-1" for delivery, _ in order[:first_end])
    assert order[-1] == ("d-2", "Success")
    assert installed(root) == (PACKAGE_ID, "2")


class FlakyTransport(DeviceTransport):
    """A local device transport whose first `failures` sends raise ChannelError."""

    def __init__(self, inner: LocalDeviceTransport, failures: int) -> None:
        self.inner = inner
        self.device_id = inner.device_id
        self.failures = failures
        self.refused = 0

    async def open(self) -> None:
        await self.inner.open()

    async def send(self, message: m.Message) -> None:
        if self.refused < self.failures:
            self.refused += 1
            raise ChannelError("broker unreachable (reconnecting)")
        await self.inner.send(message)

    def receive(self) -> AsyncIterator[m.Message]:
        return self.inner.receive()

    async def close(self) -> None:
        await self.inner.close()


def test_send_failures_are_retried_and_do_not_end_the_agent(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "edge"

    async def scenario() -> tuple[ScriptedCloud, FlakyTransport]:
        hub = LocalHub()
        flaky = FlakyTransport(LocalDeviceTransport(DEVICE, hub), failures=4)
        async with (
            ScriptedCloud(LocalChannel(hub), link_to(packages["1"])) as cloud,
            running_agent(hub, root, transport=flaky),
        ):
            await cloud.deliver("d-1", "1")
            await cloud.wait_terminal("d-1")
        return cloud, flaky

    cloud, flaky = asyncio.run(scenario())
    assert flaky.refused == 4
    states = cloud.states("d-1")
    assert states[0] == "Received"
    assert states[-1] == "Success"


def test_a_delivery_cut_short_by_a_stop_is_resumed_by_the_next_run(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "edge"
    hub = LocalHub()

    async def first_run() -> ScriptedCloud:
        # The cloud never answers: the agent is stopped while it waits for a link.
        async with (
            ScriptedCloud(LocalChannel(hub), lambda r, n: None) as cloud,
            running_agent(hub, root),
        ):
            await cloud.deliver("d-1", "1")
            while not cloud.requests:
                await asyncio.sleep(0.01)
        return cloud

    async def second_run() -> ScriptedCloud:
        async with (
            ScriptedCloud(LocalChannel(hub), link_to(packages["1"])) as cloud,
            running_agent(hub, root),
        ):
            await cloud.wait_terminal("d-1")
        return cloud

    first = asyncio.run(first_run())
    assert first.states("d-1") == ["Received"]
    assert StateStore(root).read().deliveries["d-1"].state == "Received"
    second = asyncio.run(second_run())
    assert second.requests_for("d-1") == 1
    assert second.states("d-1")[-1] == "Success"
    assert installed(root) == (PACKAGE_ID, "1")


class RangeServer:
    """Serves one file over HTTP with Range support, on 127.0.0.1.

    The first full request is cut after half the bytes (the connection is dropped); links
    whose `sig` query is `old` are refused with 403, as Blob Storage refuses an expired SAS.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ranges: list[str | None] = []
        self.sent = 0
        self.refused = 0
        self._dropped = False
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{self.path.name}"

    def handle(self, request: http.server.BaseHTTPRequestHandler) -> None:
        if "sig=old" in request.path:
            self.refused += 1
            request.send_response(403)
            body = b"AuthenticationFailed: Signed expiry time has passed"
            request.send_header("Content-Length", str(len(body)))
            request.end_headers()
            request.wfile.write(body)
            return
        data = self.path.read_bytes()
        header = request.headers.get("Range")
        self.ranges.append(header)
        start = int(header.removeprefix("bytes=").rstrip("-")) if header else 0
        if header:
            request.send_response(206)
            request.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            request.send_response(200)
        request.send_header("Content-Length", str(len(data) - start))
        request.end_headers()
        body = data[start:]
        if not self._dropped:
            self._dropped = True
            body = body[: len(data) // 2]
            request.close_connection = True
        request.wfile.write(body)
        request.wfile.flush()
        self.sent += len(body)

    def __enter__(self) -> RangeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_an_http_download_cut_in_half_resumes_with_a_range_request(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "edge"
    size = packages["1"].stat().st_size
    with RangeServer(packages["1"]) as server:
        script = {1: server.url + "?sig=old", 2: server.url + "?sig=new"}
        cloud = asyncio.run(deliver(root, lambda r, n: script[n], ("d-1", "1")))

    assert cloud.states("d-1")[-1] == "Success"
    assert cloud.requests_for("d-1") == 2  # the 403 made it ask for a fresh link
    assert server.refused == 1
    assert server.ranges == [None, f"bytes={size // 2}-"]
    assert server.sent == size  # every byte once: the second request fetched only the rest
    assert installed(root) == (PACKAGE_ID, "1")
    assert leftovers(root) == []


def test_many_local_agents_run_on_one_background_thread(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    hub = LocalHub()
    fleet = tmp_path / "fleet"
    devices = ["edge-a", "edge-b", "edge-c"]

    async def cloud_side() -> ScriptedCloud:
        async with ScriptedCloud(LocalChannel(hub), link_to(packages["1"])) as cloud:
            for device in devices:
                await cloud.deliver(f"d-{device}", "1", device=device)
            for device in devices:
                await cloud.wait_terminal(f"d-{device}")
        return cloud

    with start_local_agents(devices, hub, fleet, [KEY.verify_key], FAST) as running:
        assert [agent.device_id for agent in running.agents] == devices
        assert {agent.smoke_runner for agent in running.agents} == {running.agents[0].smoke_runner}
        cloud = asyncio.run(cloud_side())

    assert {r.device_id for r in cloud.reports if r.state == "Success"} == set(devices)
    for device in devices:
        assert installed(fleet / device) == (PACKAGE_ID, "1")
    assert not any(agent.connected.is_set() for agent in running.agents)


def test_the_cloud_rollout_delivers_to_reference_agents(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    from modelferry.delivery.fleet import roll_out
    from modelferry.delivery.plan import DeliveryPlan, FleetPolicy

    hub = LocalHub()
    store = LocalPackageStore(tmp_path / "store")
    stored = store.put(packages["1"], package_id=PACKAGE_ID, version="1")
    good = ["edge-a", "edge-b", "edge-c"]
    tampered_device = "edge-t"
    fleet = tmp_path / "fleet"
    # One device trusts another key: its agent must refuse the package.
    agents = create_local_agents(good, hub, fleet, [KEY.verify_key], FAST)
    agents += create_local_agents([tampered_device], hub, fleet, [STRANGER.verify_key], FAST)
    for agent in agents:
        agent.smoke_runner = SMOKE
    plan = DeliveryPlan(package=stored, devices=[*good, tampered_device], project_id=PROJECT)
    policy = FleetPolicy(inactivity_timeout=60, deadline=120, retries=0, max_failure_share=1)

    async def scenario() -> FleetResult:
        stop = asyncio.Event()
        running = asyncio.create_task(run_agents(agents, stop))
        try:
            await asyncio.wait_for(wait_connected(agents), 10)
            return await roll_out(plan, LocalChannel(hub), store, policy=policy)
        finally:
            stop.set()
            await running

    result = asyncio.run(scenario())

    states = {row.device_id: row.state for row in result.rows}
    assert states == {**dict.fromkeys(good, "Success"), tampered_device: "Error"}
    error = next(row.error for row in result.rows if row.device_id == tampered_device)
    assert error is not None
    assert "not trusted here" in error
    for device in good:
        assert installed(fleet / device) == (PACKAGE_ID, "1")
    assert installed(fleet / tampered_device) is None


def test_the_agent_imports_no_orchestrator_mlflow_or_training_stack() -> None:
    code = (
        "import sys, json\n"
        "import modelferry.edge, modelferry.edge.agent, modelferry.edge.local_agents\n"
        "import modelferry.cli, modelferry.cli.agent\n"
        "modelferry.cli._build_parser()  # every subcommand registered, as `modelferry agent`\n"
        "heavy = ['prefect', 'mlflow', 'pandas', 'lightgbm', 'sklearn']\n"
        "print(json.dumps([name for name in heavy if name in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(result.stdout) == []


def test_a_deeply_nested_manifest_is_a_verify_error_naming_the_manifest(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    def nest(data: bytes) -> bytes:
        return data.rstrip()[:-1] + b', "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"

    # Format 1, whose manifest is read (bounded) before its signature is checked.
    nested = _rewrite(packages["2-format1"], tmp_path / "nested", "manifest.json", nest)
    root = tmp_path / "edge"
    cloud = asyncio.run(deliver(root, link_to(nested), ("d-1", "2")))

    error = cloud.reports[-1]
    assert (error.state, error.attributes["stage"]) == ("Error", "verify")
    assert error.attributes["reason"].startswith("manifest.json nests deeper than 32 levels")
    assert installed(root) is None
    assert leftovers(root) == []


# ------------------------------------------------------------- trust and anti-rollback


def test_an_installed_min_version_refuses_older_versions_after_a_restart(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "edge"
    first = asyncio.run(deliver(root, link_to(packages["2-floor"]), ("d-2", "2")))
    assert first.reports[-1].state == "Success"
    assert StateStore(root).read().version_floors == {"bc-classifier": "2"}

    # A new agent on the same root: the floor was kept in state.json.
    cloud = asyncio.run(deliver(root, link_to(packages["1"]), ("d-1", "1")))

    error = cloud.reports[-1]
    assert (error.state, error.attributes["stage"]) == ("Error", "verify")
    reason = error.attributes["reason"]
    assert "bc-classifier version 1 is below 2, the lowest version" in reason
    assert "deliver version 2 or newer" in reason
    assert installed(root) == (PACKAGE_ID, "2")
    assert leftovers(root) == []


def test_a_rollback_below_the_floor_needs_asking_for(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "edge"
    asyncio.run(deliver(root, link_to(packages["1"]), ("d-1", "1")))
    asyncio.run(deliver(root, link_to(packages["2-floor"]), ("d-2", "2")))
    assert installed(root) == (PACKAGE_ID, "2")

    with pytest.raises(VersionFloorError) as caught:
        rollback(root)
    assert (caught.value.floor, caught.value.model_version) == ("2", "1")
    assert "--below-floor" in str(caught.value)
    assert installed(root) == (PACKAGE_ID, "2")

    outcome = rollback(root, allow_below_floor=True)
    assert outcome.current.version == "1"
    assert StateStore(root).read().version_floors == {"bc-classifier": "2"}  # the floor stays


def test_a_device_requiring_format_2_refuses_format_1(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "edge"
    policy = TrustPolicy.from_keys([KEY.verify_key]).requiring_format(2)
    cloud = asyncio.run(deliver(root, link_to(packages["2-format1"]), ("d-1", "2"), keys=policy))

    error = cloud.reports[-1]
    assert (error.state, error.attributes["stage"]) == ("Error", "verify")
    assert "this device requires format 2" in error.attributes["reason"]
    assert installed(root) is None
    # Without the requirement the same package installs: format 1 stays readable.
    ok = asyncio.run(deliver(root, link_to(packages["2-format1"]), ("d-2", "2")))
    assert ok.reports[-1].state == "Success"


def test_a_revoked_key_is_an_error_naming_it(packages: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "edge"
    policy = TrustPolicy.from_keys([KEY.verify_key, STRANGER.verify_key])
    policy = TrustPolicy(policy.keys, revoked=frozenset({KEY.key_id}))
    cloud = asyncio.run(deliver(root, link_to(packages["1"]), ("d-1", "1"), keys=policy))

    error = cloud.reports[-1]
    assert error.state == "Error"
    assert (
        f"signed with key {KEY.key_id}, which this device's trust file revokes"
        in (error.attributes["reason"])
    )
    assert installed(root) is None


def test_every_record_of_a_delivery_carries_the_device_and_delivery_ids(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    """What `--log-format json` prints: each line of the delivery names both ids."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter())
    edge = logging.getLogger("modelferry.edge")
    edge.addHandler(handler)
    level = edge.level
    edge.setLevel(logging.INFO)
    try:
        asyncio.run(deliver(tmp_path / "edge", link_to(packages["1"]), ("d-log-1", "1")))
    finally:
        edge.removeHandler(handler)
        edge.setLevel(level)

    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    of_delivery = [r for r in records if "d-log-1" in r["message"]]
    assert of_delivery, records
    for record in of_delivery:
        assert record["device_id"] == DEVICE
        assert record["delivery_id"] == "d-log-1"
    assert all(record["device_id"] == DEVICE for record in records)
