"""The MQTT transport over a broker that restarts, devices that come and go, and a fleet of
a couple of hundred device clients in one process."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelferry.delivery.channels.mqtt.channel import (
    MqttBroker,
    MqttChannel,
    MqttDeviceTransport,
    MqttOptions,
)
from modelferry.delivery.protocol import messages
from modelferry.errors import ChannelError
from modelferry.testing.contracts.delivery import new_delivery, run, state, take
from modelferry.testing.mosquitto import Mosquitto

pytestmark = pytest.mark.integration

OPTIONS = MqttOptions(
    connect_timeout_s=5.0, publish_timeout_s=30.0, reconnect_min_s=0.1, reconnect_max_s=1.0
)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path) as broker:
        yield broker


def ids(received: list[messages.Message]) -> list[str | None]:
    return [message.delivery_id for message in received]


def test_messages_before_during_and_after_a_broker_restart_all_arrive(
    mosquitto: Mosquitto,
) -> None:
    broker = MqttBroker(mosquitto.host, mosquitto.port)

    async def scenario() -> None:
        async with (
            MqttChannel(broker, client_id="cloud", options=OPTIONS) as channel,
            MqttDeviceTransport("press-1", broker, options=OPTIONS) as device,
        ):
            await channel.send(new_delivery("press-1", "c2d-before"))
            await device.send(state("press-1", "Received", "d2c-before"))
            assert ids(await take(device, 1)) == ["c2d-before"]
            assert ids(await take(channel, 1)) == ["d2c-before"]

            await asyncio.to_thread(mosquitto.stop)
            # Sent while the broker is down: they wait in the clients for the reconnect.
            sending = [
                asyncio.create_task(channel.send(new_delivery("press-1", "c2d-during"))),
                asyncio.create_task(device.send(state("press-1", "Downloading", "d2c-during"))),
            ]
            await asyncio.sleep(0.5)
            assert not any(task.done() for task in sending)  # no PUBACK without a broker
            await asyncio.to_thread(mosquitto.start)
            await asyncio.gather(*sending)

            await channel.send(new_delivery("press-1", "c2d-after"))
            await device.send(state("press-1", "Success", "d2c-after"))
            c2d = await take(device, 2)
            d2c = await take(channel, 2)
        # At least once: a message whose PUBACK was lost in the restart may come twice.
        assert list(dict.fromkeys(ids(c2d))) == ["c2d-during", "c2d-after"]
        assert list(dict.fromkeys(ids(d2c))) == ["d2c-during", "d2c-after"]

    run(scenario)


def test_a_device_offline_across_a_restart_gets_its_c2d_message(mosquitto: Mosquitto) -> None:
    broker = MqttBroker(mosquitto.host, mosquitto.port)

    async def scenario() -> None:
        async with MqttDeviceTransport("press-2", broker, options=OPTIONS):
            pass  # the device's session exists from now on
        async with MqttChannel(broker, client_id="cloud", options=OPTIONS) as channel:
            await channel.send(new_delivery("press-2", "while-offline"))
        await asyncio.to_thread(mosquitto.restart)  # the queued message is persisted
        async with MqttDeviceTransport("press-2", broker, options=OPTIONS) as device:
            assert ids(await take(device, 1)) == ["while-offline"]

    run(scenario)


def test_a_send_the_broker_never_acknowledged_fails_and_is_delivered_later(
    mosquitto: Mosquitto,
) -> None:
    broker = MqttBroker(mosquitto.host, mosquitto.port)
    impatient = MqttOptions(publish_timeout_s=1.0, reconnect_min_s=0.1, reconnect_max_s=0.5)

    async def scenario() -> None:
        async with (
            MqttChannel(broker, client_id="cloud", options=OPTIONS) as channel,
            MqttDeviceTransport("press-3", broker, options=impatient) as device,
        ):
            await asyncio.to_thread(mosquitto.stop)
            with pytest.raises(ChannelError, match="did not acknowledge") as info:
                await device.send(state("press-3", "Error", "unconfirmed"))
            assert "disconnected, reconnecting" in str(info.value)
            await asyncio.to_thread(mosquitto.start)
            # The caller was told; the message still goes out once the broker is back.
            assert ids(await take(channel, 1)) == ["unconfirmed"]

    run(scenario)


def test_a_fleet_of_devices_on_one_channel_loses_nothing(mosquitto: Mosquitto) -> None:
    broker = MqttBroker(mosquitto.host, mosquitto.port)
    fleet = [f"edge-{index:03d}" for index in range(200)]
    threads: list[int] = []

    async def device_side(device: MqttDeviceTransport) -> int:
        """Answer each newDelivery with a URL request and a Success, as an agent would."""
        [received] = await take(device, 1, timeout_s=60)
        event = messages.parse(received)
        assert isinstance(event, messages.NewDelivery)
        await device.send(
            messages.presigned_url_request(
                device.device_id,
                delivery_id=event.delivery_id,
                project_id=event.project_id,
                package_id=event.package_id,
            )
        )
        await device.send(state(device.device_id, "Success", event.delivery_id))
        return 1

    async def scenario() -> None:
        devices = [MqttDeviceTransport(name, broker, options=OPTIONS) for name in fleet]
        await asyncio.gather(*(device.open() for device in devices))
        try:
            async with MqttChannel(broker, client_id="fleet-cloud", options=OPTIONS) as channel:
                threads.append(threading.active_count())
                agents = [asyncio.create_task(device_side(device)) for device in devices]
                await asyncio.gather(
                    *(channel.send(new_delivery(name, f"del-{name}")) for name in fleet)
                )
                answers = await take(channel, 2 * len(fleet), timeout_s=120)
                assert sum(await asyncio.gather(*agents)) == len(fleet)
        finally:
            await asyncio.gather(*(device.close() for device in devices))
        per_device = Counter(message.device_id for message in answers)
        assert per_device == dict.fromkeys(fleet, 2)
        assert all(message.delivery_id == f"del-{message.device_id}" for message in answers)
        kinds = Counter(type(messages.parse(message)).__name__ for message in answers)
        assert kinds == {"UrlRequest": len(fleet), "StateReport": len(fleet)}

    run(scenario, timeout_s=240)
    # 201 connections on the event loop; no network thread per client.
    assert threads[0] < 20
