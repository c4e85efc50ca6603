"""The MQTT transport keeps the delivery contract against a real Mosquitto, in MQTT 5 and in
MQTT 3.1.1 (what IoT Hub's MQTT endpoint speaks), and talks IoT Hub's topic dialect."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from modelferry.delivery.channels.mqtt.channel import (
    MqttBroker,
    MqttChannel,
    MqttDeviceTransport,
    MqttOptions,
)
from modelferry.delivery.protocol import messages
from modelferry.errors import ChannelError
from modelferry.testing.contracts.delivery import (
    DeliveryTransportContract,
    Transports,
    run,
    state,
    take,
)
from modelferry.testing.mosquitto import Mosquitto, free_port

pytestmark = pytest.mark.integration

FAST = MqttOptions(connect_timeout_s=5.0, publish_timeout_s=10.0, reconnect_min_s=0.1)


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker


class TestMqttTransportContract(DeliveryTransportContract):
    @pytest.fixture(params=["5", "3.1.1"])
    def transports(self, mosquitto: Mosquitto, request: pytest.FixtureRequest) -> Transports:
        broker = MqttBroker(mosquitto.host, mosquitto.port, protocol=request.param)
        nowhere = MqttBroker("127.0.0.1", free_port(), protocol=request.param)
        client_id = f"cloud-{uuid.uuid4().hex[:8]}"
        return Transports(
            channel=lambda: MqttChannel(broker, client_id=client_id, options=FAST),
            device=lambda device_id: MqttDeviceTransport(device_id, broker, options=FAST),
            unreachable_channel=lambda: MqttChannel(nowhere, client_id=client_id, options=FAST),
            unreachable_device=lambda device_id: MqttDeviceTransport(
                device_id, nowhere, options=FAST
            ),
        )


def raw_client(mosquitto: Mosquitto, client_id: str, subscribe: str | None = None) -> paho.Client:
    """A plain paho client with its own network thread, standing in for IoT Hub or a tool."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    subscribed = threading.Event()
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    if subscribe is not None:
        client.subscribe(subscribe, qos=1)
        assert subscribed.wait(5), "no SUBACK"
    return client


def test_d2c_topics_on_the_wire_are_iot_hub_device_topics(mosquitto: Mosquitto) -> None:
    seen: list[str] = []
    watcher = raw_client(mosquitto, "watcher", subscribe="devices/+/messages/events/#")
    watcher.on_message = lambda client, userdata, message: seen.append(message.topic)
    broker = MqttBroker(mosquitto.host, mosquitto.port)

    async def scenario() -> None:
        async with MqttDeviceTransport("press-7", broker) as device:
            await device.send(
                messages.Message("press-7", {"type": "state", "deliveryId": "a&b c/ü"}, b"{}")
            )
        for _ in range(100):
            if seen:
                return
            await asyncio.sleep(0.02)

    try:
        run(scenario)
    finally:
        watcher.loop_stop()
        watcher.disconnect()
    assert seen == [
        "devices/press-7/messages/events/"
        "$.ct=application%2Fjson&$.ce=utf-8&type=state&deliveryId=a%26b%20c%2F%C3%BC"
    ]


def test_a_device_reads_c2d_messages_as_iot_hub_writes_them(mosquitto: Mosquitto) -> None:
    broker = MqttBroker(mosquitto.host, mosquitto.port, protocol="3.1.1")
    hub = raw_client(mosquitto, "iot-hub-stand-in")
    topic = (
        "devices/press-8/messages/devicebound/%24.mid=0f1e&%24.to=%2Fdevices%2Fpress-8%2F"
        "messages%2FdeviceBound&%24.ct=application%2Fjson&%24.ce=utf-8"
        "&type=event&kind=newDelivery&deliveryId=d-9&projectId=p-1"
    )
    body = messages.new_delivery(
        "press-8", delivery_id="d-9", project_id="p-1", package_id="pkg", package_version="1"
    ).body

    async def scenario() -> messages.Message:
        async with MqttDeviceTransport("press-8", broker) as device:
            await asyncio.to_thread(lambda: hub.publish(topic, body, qos=1).wait_for_publish(5))
            [received] = await take(device, 1)
            return received

    try:
        received = run(scenario)
    finally:
        hub.loop_stop()
        hub.disconnect()
    assert received.properties == {
        "type": "event",
        "kind": "newDelivery",
        "deliveryId": "d-9",
        "projectId": "p-1",
    }
    assert isinstance(messages.parse(received), messages.NewDelivery)


def test_c2d_to_a_device_the_broker_never_saw_is_an_error_not_a_loss(
    mosquitto: Mosquitto,
) -> None:
    broker = MqttBroker(mosquitto.host, mosquitto.port)

    async def scenario() -> None:
        async with MqttChannel(broker, client_id="cloud-never-seen") as channel:
            with pytest.raises(ChannelError, match="never connected to this broker"):
                await channel.send(messages.Message("never-seen-device", {"type": "event"}, b"{}"))

    run(scenario)


def test_d2c_without_any_cloud_session_is_an_error_not_a_loss(tmp_path: Path) -> None:
    with Mosquitto(tmp_path) as private:
        broker = MqttBroker(private.host, private.port)

        async def scenario() -> None:
            async with MqttDeviceTransport("lonely", broker) as device:
                with pytest.raises(ChannelError, match="no cloud channel subscribes"):
                    await device.send(state("lonely", "Success"))

        run(scenario)
