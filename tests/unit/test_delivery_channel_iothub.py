"""The IoT Hub channel at the SDK boundary: the shared contract over `FakeIoTHub`, the fakes'
faithfulness to the SDKs, and what the channel does with what the services send."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.eventhub import EventData
from azure.eventhub.aio import EventHubConsumerClient
from azure.eventhub.exceptions import AuthenticationError, ConnectionLostError
from azure.iot.hub import IoTHubRegistryManager

from modelferry.delivery.channels.iothub.channel import IoTHubChannel
from modelferry.delivery.channels.iothub.sdk import message_from_event
from modelferry.delivery.protocol import messages
from modelferry.errors import ChannelError
from modelferry.testing.contracts.delivery import (
    DeliveryTransportContract,
    Transports,
    new_delivery,
    run,
    state,
    take,
)
from modelferry.testing.iothub.hub import FakeIoTHub, FakeIoTHubDevice
from modelferry.testing.iothub.sdk import (
    FakeEventHubConsumerClient,
    FakeIoTHubRegistryManager,
)


class TestIoTHubTransportContract(DeliveryTransportContract):
    # IoT Hub refuses C2D properties outside ASCII letters, digits and a few symbols.
    arbitrary_c2d_properties = False

    @pytest.fixture
    def transports(self) -> Transports:
        hub = FakeIoTHub()
        return Transports(
            channel=hub.channel,
            device=hub.device,
            unreachable_channel=lambda: channel_with_wrong_events_key(hub),
            # Not registered: the hub refuses the connection.
            unreachable_device=lambda device_id: FakeIoTHubDevice(hub, device_id),
        )


def channel_with_wrong_events_key(hub: FakeIoTHub) -> IoTHubChannel:
    wrong = hub.eventhub_connection_string.replace(hub.events_key, FakeIoTHub().events_key)
    return IoTHubChannel(
        hub.service_connection_string,
        wrong,
        registry_manager_factory=hub.RegistryManager.from_connection_string,
        consumer_client_factory=hub.ConsumerClient.from_connection_string,
    )


@pytest.mark.parametrize(
    ("fake", "real", "methods"),
    [
        (FakeIoTHubRegistryManager, IoTHubRegistryManager, ["from_connection_string"]),
        (FakeIoTHubRegistryManager, IoTHubRegistryManager, ["send_c2d_message"]),
        (
            FakeEventHubConsumerClient,
            EventHubConsumerClient,
            ["from_connection_string", "receive", "get_partition_ids", "close"],
        ),
    ],
)
def test_fakes_have_the_sdk_signatures(fake: type, real: type, methods: list[str]) -> None:
    def shape(function: Any) -> list[tuple[str, Any, Any]]:
        parameters = inspect.signature(function).parameters.values()
        return [(p.name, p.kind, p.default) for p in parameters]

    for method in methods:
        assert shape(getattr(fake, method)) == shape(getattr(real, method)), method


def test_c2d_goes_through_the_sdk_call_with_content_type_as_system_property() -> None:
    hub = FakeIoTHub()
    hub.register_device("press-7")

    async def scenario() -> None:
        async with hub.channel() as channel:
            await channel.send(new_delivery("press-7"))

    run(scenario)
    [sent] = hub.sent
    assert sent.device_id == "press-7"
    assert json.loads(sent.body)["packageId"] == "pkg-1"
    assert sent.properties == {
        "type": "event",
        "kind": "newDelivery",
        "deliveryId": "del-1",
        "projectId": "proj-1",
    }
    assert (sent.system["content_type"], sent.system["content_encoding"]) == (
        "application/json",
        "utf-8",
    )


@pytest.mark.parametrize(
    ("registered", "properties", "reason"),
    [
        (False, {"type": "event"}, "not registered"),
        (True, {"type": "event", "deliveryId": "a b"}, "characters IoT Hub refuses"),
        (True, {"type": "event", "projectId": "ü"}, "characters IoT Hub refuses"),
    ],
)
def test_c2d_the_hub_refuses_raises_channel_error(
    registered: bool, properties: dict[str, str], reason: str
) -> None:
    hub = FakeIoTHub()
    if registered:
        hub.register_device("press-7")

    async def scenario() -> None:
        async with hub.channel() as channel:
            with pytest.raises(ChannelError, match="refused a C2D message to 'press-7'"):
                await channel.send(messages.Message("press-7", properties, b"{}"))

    run(scenario)
    assert reason in hub.refusals[-1]
    assert hub.sent == []


def test_c2d_queue_limit_of_the_hub_is_reported() -> None:
    hub = FakeIoTHub()
    hub.register_device("press-7")

    async def scenario() -> None:
        async with hub.channel() as channel:
            for index in range(50):
                await channel.send(new_delivery("press-7", delivery_id=f"d{index}"))
            with pytest.raises(ChannelError):
                await channel.send(new_delivery("press-7", delivery_id="one-too-many"))

    run(scenario)
    assert hub.queued("press-7") == 50
    assert "50 messages queued" in hub.refusals[-1]


def test_a_wrong_service_key_fails_the_send_and_never_shows_the_key() -> None:
    hub, other = FakeIoTHub(), FakeIoTHub()
    hub.register_device("press-7")
    service = other.service_connection_string.replace(other.hostname, hub.hostname)
    channel = IoTHubChannel(
        service,
        hub.eventhub_connection_string,
        registry_manager_factory=hub.RegistryManager.from_connection_string,
        consumer_client_factory=hub.ConsumerClient.from_connection_string,
    )

    async def scenario() -> str:
        async with channel:
            with pytest.raises(ChannelError) as info:
                await channel.send(new_delivery("press-7"))
        return str(info.value)

    shown = run(scenario)
    assert other.service_key not in shown
    assert other.service_key not in repr(channel)
    assert "wrong" in hub.refusals[-1]


def test_events_credentials_refused_at_open_raise_without_the_key() -> None:
    hub = FakeIoTHub()
    channel = channel_with_wrong_events_key(hub)

    async def scenario() -> str:
        with pytest.raises(ChannelError, match="cannot open the IoT Hub channel") as info:
            await channel.open()
        return str(info.value)

    shown = run(scenario)
    assert "401" in shown
    assert "SharedAccessKey" not in shown
    assert "SharedAccessKey" not in repr(channel)


def test_receiver_failures_reach_the_reader() -> None:
    hub = FakeIoTHub()

    async def scenario() -> None:
        async with hub.channel() as channel:
            reader = asyncio.create_task(take(channel, 1))
            await asyncio.sleep(0.1)
            hub.fail_events(AuthenticationError("token expired"))
            with pytest.raises(ChannelError, match="refused the events credentials"):
                await reader
            with pytest.raises(ChannelError):  # and every later read
                await take(channel, 1)

    run(scenario)


def test_a_crashed_receiver_task_reaches_the_reader() -> None:
    hub = FakeIoTHub()

    async def scenario() -> None:
        async with hub.channel() as channel:
            hub.crash_receivers(RuntimeError("SDK bug"))
            with pytest.raises(ChannelError, match=r"receiver of fake-hub\.azure-devices\.net"):
                await take(channel, 1)

    run(scenario)


def test_transient_receive_errors_are_logged_and_reading_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = FakeIoTHub()
    device = hub.device("press-7")

    async def scenario() -> None:
        async with hub.channel() as channel, device:
            hub.fail_events(ConnectionLostError("link detached"))
            await asyncio.sleep(0.2)
            hub.fail_events(None)
            await device.send(state("press-7", "Success"))
            [received] = await take(channel, 1)
            assert received.delivery_id == "del-1"

    with caplog.at_level(logging.WARNING, logger="modelferry.delivery.channels.iothub.channel"):
        run(scenario)
    assert "link detached" in caplog.text


def test_on_event_exceptions_are_swallowed_by_the_sdk_fake_as_by_the_sdk() -> None:
    hub = FakeIoTHub()
    device = hub.device("press-7")
    seen: list[Exception] = []

    async def on_event(context: Any, event: EventData | None) -> None:
        raise ValueError("handler bug")

    async def on_error(context: Any, error: Exception) -> None:
        seen.append(error)

    async def scenario() -> None:
        client = hub.ConsumerClient.from_connection_string(
            hub.eventhub_connection_string, consumer_group="$Default"
        )
        receiving = asyncio.create_task(
            client.receive(on_event, starting_position="-1", on_error=on_error)
        )
        async with device:
            await device.send(state("press-7", "Success"))
        for _ in range(50):
            if seen:
                break
            await asyncio.sleep(0.02)
        assert not receiving.done()  # the exception did not end receive()
        await client.close()
        await asyncio.wait_for(receiving, 5)

    run(scenario)
    assert [str(error) for error in seen] == ["handler bug"]


def test_events_as_the_service_sends_them_become_messages() -> None:
    hub = FakeIoTHub()
    device = hub.device("press-7")
    events: list[EventData] = []

    async def on_event(context: Any, event: EventData | None) -> None:
        assert event is not None
        events.append(event)

    async def scenario() -> None:
        async with device:
            await device.send(state("press-7", "Verifying"))
        client = hub.ConsumerClient.from_connection_string(
            hub.eventhub_connection_string, consumer_group="$Default"
        )
        receiving = asyncio.create_task(client.receive(on_event, starting_position="-1"))
        while not events:
            await asyncio.sleep(0.01)
        await client.close()
        await receiving

    run(scenario)
    [event] = events
    assert event.properties[b"type"] == b"state"  # bytes keys and values, as the service sends
    assert event.system_properties[b"iothub-connection-device-id"] == b"press-7"
    assert event.content_type == "application/json"
    message = message_from_event(event)
    assert message is not None
    assert (message.device_id, message.delivery_id) == ("press-7", "del-1")
    assert message.enqueued_at == event.enqueued_time
    assert message.enqueued_at is not None
    assert abs(message.enqueued_at - datetime.now(UTC)) < timedelta(minutes=1)


def test_events_that_are_not_device_messages_are_skipped() -> None:
    hub = FakeIoTHub()
    device = hub.device("press-7")

    async def scenario() -> None:
        async with hub.channel() as channel, device:
            hub.append_event(b"{}", annotations={b"iothub-message-source": "twinChangeEvents"})
            hub.append_event(b"{}", properties={"type": "state"})  # no device id
            hub.append_event(
                b"{}",
                properties={b"type": b"\xff"},
                annotations={b"iothub-connection-device-id": "press-7"},
            )
            await device.send(state("press-7", "Success"))
            [received] = await take(channel, 1)
            assert received.delivery_id == "del-1"

    run(scenario)


def test_channel_reads_from_since_minus_the_clock_skew() -> None:
    hub = FakeIoTHub()
    device = hub.device("press-7")

    async def scenario() -> None:
        async with device:
            await device.send(state("press-7", "Received", delivery_id="old"))
        await asyncio.sleep(0.05)
        since = messages.utc_now()
        for skew, expected in ((timedelta(0), "new"), (timedelta(seconds=30), "old")):
            async with device:
                await device.send(state("press-7", "Received", delivery_id="new"))
            channel = hub.channel(clock_skew=skew)
            await channel.open(since)
            try:
                [first] = await take(channel, 1)
            finally:
                await channel.close()
            assert first.delivery_id == expected

    run(scenario)


def test_closing_releases_the_sdk_clients() -> None:
    hub = FakeIoTHub()
    made: list[Any] = []

    def registry(connection_string: str) -> Any:
        made.append(hub.RegistryManager.from_connection_string(connection_string))
        return made[-1]

    async def scenario() -> None:
        async with hub.channel(registry_manager_factory=registry):
            assert not made[0].amqp_svc_client.closed

    run(scenario)
    assert made[0].amqp_svc_client.closed


def test_sdk_errors_quoting_a_key_are_redacted() -> None:
    hub = FakeIoTHub()

    def leaky(connection_string: str) -> Any:
        raise ValueError(f"cannot use {connection_string}")

    async def scenario() -> str:
        with pytest.raises(ChannelError) as info:
            await hub.channel(registry_manager_factory=leaky).open()
        return str(info.value)

    shown = run(scenario)
    assert "cannot use ***" in shown
    assert hub.service_key not in shown
