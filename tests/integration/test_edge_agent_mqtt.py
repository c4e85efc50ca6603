"""Edge agents over MQTT against a private Mosquitto, with a scripted cloud side.

Several agents run in one process (one event loop, no thread per agent), receive a real
signed package through the broker's IoT Hub-style topics and install it; one of them
lives through a broker restart in the middle of its delivery.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from modelferry.delivery.channels.mqtt.channel import (
    MqttBroker,
    MqttChannel,
    MqttDeviceTransport,
    MqttOptions,
)
from modelferry.delivery.protocol import messages as m
from modelferry.edge import (
    AgentSettings,
    DownloadSettings,
    EdgeAgent,
    create_agents,
    current_version,
    run_agents,
)
from modelferry.packaging import PackageInputs, SigningKey, build_package
from modelferry.testing.mosquitto import Mosquitto
from tests.model_fixtures import save_small_lightgbm_model

pytestmark = pytest.mark.integration

KEY = SigningKey.from_base64(SecretStr(base64.b64encode(bytes(range(32))).decode()))
PACKAGE_ID = "breast-cancer"
PROJECT = "proj-mqtt"
OPTIONS = MqttOptions(connect_timeout_s=5.0, publish_timeout_s=10.0, reconnect_min_s=0.1)
SETTINGS = AgentSettings(
    link_timeout=30.0,
    send_backoff=0.05,
    download=DownloadSettings(backoff=0.01, progress_seconds=0.0),
)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A signed package of a small real LightGBM model."""
    folder = tmp_path_factory.mktemp("mlflow") / "model"
    save_small_lightgbm_model(folder, example_rows=2)
    inputs = PackageInputs(
        package_id=PACKAGE_ID,
        version="1",
        model_dir=folder,
        model_name="bc-classifier",
        model_version="1",
        run_id=None,
        dataset_digest=None,
        created_at=datetime(2026, 5, 1, tzinfo=UTC),
        class_names=("malignant", "benign"),
    )
    return build_package(inputs, KEY, tmp_path_factory.mktemp("packages")).path


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    folder = tmp_path / "broker"
    folder.mkdir()
    with Mosquitto(folder) as broker:
        yield broker


@dataclass
class MqttCloud:
    """The cloud side over MQTT: answers link requests via `answer`, records states."""

    channel: MqttChannel
    answer: Callable[[m.UrlRequest], str | None]
    requests: list[m.UrlRequest] = field(default_factory=list)
    reports: list[m.StateReport] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def read(self) -> None:
        async for message in self.channel.receive():
            event = m.parse(message)
            if isinstance(event, m.UrlRequest):
                self.requests.append(event)
                url = self.answer(event)
                if url is not None:
                    await self.respond(event, url)
            elif isinstance(event, m.StateReport):
                async with self._changed:
                    self.reports.append(event)
                    self._changed.notify_all()

    async def respond(self, request: m.UrlRequest, url: str) -> None:
        await self.channel.send(
            m.presigned_url_response(
                request.device_id,
                delivery_id=request.delivery_id,
                project_id=request.project_id,
                url=url,
            )
        )

    async def deliver(self, device_id: str, delivery_id: str) -> None:
        await self.channel.send(
            m.new_delivery(
                device_id,
                delivery_id=delivery_id,
                project_id=PROJECT,
                package_id=PACKAGE_ID,
                package_version="1",
            )
        )

    async def wait_for(self, done: Callable[[], bool], timeout: float = 120.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(done), timeout)

    async def wait_terminal(self, delivery_ids: list[str]) -> None:
        await self.wait_for(
            lambda: set(delivery_ids) <= {r.delivery_id for r in self.reports if r.terminal}
        )

    def states(self, delivery_id: str) -> list[str]:
        return [r.state for r in self.reports if r.delivery_id == delivery_id]


@contextlib.asynccontextmanager
async def cloud_and_agents(
    broker: MqttBroker,
    root: Path,
    devices: list[str],
    answer: Callable[[m.UrlRequest], str | None],
) -> AsyncIterator[tuple[MqttCloud, list[EdgeAgent]]]:
    channel = MqttChannel(broker, client_id=f"cloud-{uuid.uuid4().hex[:8]}", options=OPTIONS)
    async with channel:
        cloud = MqttCloud(channel, answer)
        reader = asyncio.create_task(cloud.read())
        agents = create_agents(
            devices,
            lambda device_id: MqttDeviceTransport(device_id, broker, options=OPTIONS),
            root,
            [KEY.verify_key],
            SETTINGS,
        )
        stop = asyncio.Event()
        running = asyncio.create_task(run_agents(agents, stop))
        try:
            for agent in agents:
                await asyncio.wait_for(agent.connected.wait(), 20)
            yield cloud, agents
        finally:
            stop.set()
            await asyncio.wait_for(running, 30)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


def test_agents_in_one_process_install_a_package_over_mqtt(
    mosquitto: Mosquitto, package: Path, tmp_path: Path
) -> None:
    broker = MqttBroker(mosquitto.host, mosquitto.port)
    devices = [f"edge-{number}" for number in range(4)]

    async def scenario() -> MqttCloud:
        async with cloud_and_agents(
            broker, tmp_path / "fleet", devices, lambda request: package.as_uri()
        ) as (cloud, _):
            for device in devices:
                await cloud.deliver(device, f"d-{device}")
            await cloud.wait_terminal([f"d-{device}" for device in devices])
            # A duplicate newDelivery (at-least-once) is answered from the agent's state.
            await cloud.deliver(devices[0], f"d-{devices[0]}")
            await cloud.wait_for(lambda: cloud.states("d-edge-0").count("Success") == 2, 30)
        return cloud

    cloud = asyncio.run(scenario())

    for device in devices:
        states = cloud.states(f"d-{device}")
        first_run = states[: states.index("Success") + 1]
        assert first_run[0] == "Received"
        assert first_run[-3:] == ["Verifying", "Installing", "Success"]
        assert {r.device_id for r in cloud.reports if r.delivery_id == f"d-{device}"} == {device}
        version = current_version(tmp_path / "fleet" / device)
        assert version is not None
        assert (version.package_id, version.version) == (PACKAGE_ID, "1")
    assert cloud.states("d-edge-0")[-2:] == ["Success", "Success"]  # the repeat: no download
    assert sum(r.delivery_id == "d-edge-0" for r in cloud.requests) == 1


def test_an_agent_lives_through_a_broker_restart_mid_delivery(
    mosquitto: Mosquitto, package: Path, tmp_path: Path
) -> None:
    broker = MqttBroker(mosquitto.host, mosquitto.port)

    async def scenario() -> MqttCloud:
        # The first link request goes unanswered until the broker has been restarted.
        async with cloud_and_agents(broker, tmp_path / "fleet", ["edge-r"], lambda r: None) as (
            cloud,
            _,
        ):
            await cloud.deliver("edge-r", "d-r")
            while not cloud.requests:
                await asyncio.sleep(0.05)
            await asyncio.to_thread(mosquitto.restart)
            await cloud.respond(cloud.requests[0], package.as_uri())
            await cloud.wait_terminal(["d-r"])
        return cloud

    cloud = asyncio.run(scenario())

    assert cloud.states("d-r")[-1] == "Success"
    version = current_version(tmp_path / "fleet" / "edge-r")
    assert version is not None
    assert version.version == "1"


def test_the_agent_command_serves_devices_from_a_file_over_mqtt(
    mosquitto: Mosquitto, package: Path, tmp_path: Path
) -> None:
    devices = ["cli-1", "cli-2"]
    ids = tmp_path / "devices.txt"
    ids.write_text("\n".join(devices) + "\n")
    root = tmp_path / "fleet"
    command = [
        sys.executable,
        "-m",
        "modelferry.cli",
        "agent",
        "--transport",
        "mqtt",
        "--broker-host",
        mosquitto.host,
        "--broker-port",
        str(mosquitto.port),
        "--device-ids-file",
        str(ids),
        "--root",
        str(root),
        "--public-key",
        KEY.verify_key.public_base64,
    ]
    agent = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    broker = MqttBroker(mosquitto.host, mosquitto.port)

    async def cloud_side() -> MqttCloud:
        channel = MqttChannel(broker, client_id="cloud-cli", options=OPTIONS)
        async with channel:
            cloud = MqttCloud(channel, lambda request: package.as_uri())
            reader = asyncio.create_task(cloud.read())
            for device in devices:
                await cloud.deliver(device, f"d-{device}")
            await cloud.wait_terminal([f"d-{device}" for device in devices])
            reader.cancel()
        return cloud

    try:
        assert agent.stderr is not None
        line = ""
        while "connected" not in line:
            line = agent.stderr.readline()
            assert line or agent.poll() is None, "the agent exited at start"
        cloud = asyncio.run(cloud_side())
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()

    for device in devices:
        assert cloud.states(f"d-{device}")[-1] == "Success"
        assert os.readlink(root / device / "current") == f"versions/{PACKAGE_ID}/1"
